//! The end of every request, on every path: the quota reservation settled exactly once, the
//! metrics, the log line.

use super::request::{Ctx, Fail};
use super::Gateway;
use crate::metrics;
use crate::quota;
use crate::routing::{EngineOp, Route};
use crate::tier_meta;
use uuid::Uuid;

impl Gateway {
    /// Runs once per request on every path: settle what is left of the quota, count, log.
    pub(super) async fn finish(&self, ctx: &mut Ctx, e: Option<&Fail>) {
        self.settle_quota(ctx).await;
        let status = ctx.status;
        let route = ctx.route.label();
        let elapsed = ctx.started.elapsed();
        match &ctx.principal {
            Some(p) => p.meta.count_request(ctx.route, status),
            None => self.metas.none().count_request(ctx.route, status),
        }
        metrics::REQUEST_SECONDS_BY_ROUTE[tier_meta::route_index(ctx.route)]
            .observe(elapsed.as_secs_f64());
        if let Some(p) = &ctx.principal {
            let now = chrono::Utc::now().timestamp();
            self.usage.record_key(p, now);
            self.usage.2.record(
                p.user_id,
                p.key_id,
                ctx.agent.take(),
                ctx.family,
                status,
                now,
            );
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        // Successful requests log at debug only: a line per request would cost more than the
        // rest of the request (errors stay at warn, refusals at info).
        let user = || ctx.principal.as_ref().map(|p| p.user_id.to_string());
        if status >= 500 || e.is_some() {
            let user = user();
            tracing::warn!(request_id = %ctx.request_id, route, status, user, upstream_status = ctx.upstream_status, ms,
                reason = ctx.reject, error = e.map(|e| e.to_string()), "request failed");
        } else if status >= 400 {
            let user = user();
            tracing::info!(request_id = %ctx.request_id, route, status, user, ms, reason = ctx.reject, "request refused");
        } else if tracing::enabled!(tracing::Level::DEBUG) {
            let user = user();
            tracing::debug!(request_id = %ctx.request_id, route, status, user, ms, "request");
        }
    }

    /// Commit or release this request's reservation, and free a slot on a successful forget.
    pub(super) async fn settle_quota(&self, ctx: &mut Ctx) {
        let ok = ctx.upstream_status.is_some_and(|s| (200..300).contains(&s));
        if let Some(user) = ctx.reserved.take() {
            if !ok {
                self.release(user).await;
            }
            self.inflight.end(user);
        }
        if ctx.route == Route::Engine(EngineOp::Forget) && ok && !ctx.forget_settled {
            ctx.forget_settled = true;
            if let Some(p) = &ctx.principal {
                self.release(p.user_id).await;
            }
        }
    }

    pub(super) async fn release(&self, user: Uuid) {
        if let Some(db) = self.db() {
            // On failure the periodic reconciliation corrects the count.
            let _ =
                tokio::time::timeout(self.cfg.db_timeout(), quota::release_memory(db, user)).await;
        }
    }
}
