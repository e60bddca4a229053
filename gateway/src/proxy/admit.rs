//! Steps 2–6 of the hot path, as one plain function over the request and the gateway's handles:
//! key present and well-formed → hash → cached principal → the account's bucket → agent → memory
//! quota on stores. [`Gateway::admit`] answers `None` (admitted) or the refusal to write.

use super::request::{Ctx, Request};
use super::scope;
use super::Gateway;
use crate::auth::{self, Auth, KeyProblem};
use crate::errors::Reject;
use crate::h1::Name;
use crate::limits::{self, Rate};
use crate::metrics;
use crate::quota::{self, AgentCheck, Reserve};
use crate::routing::{EngineOp, Route};
use crate::usage_history::Family;
use stellar_common::Db;

impl Gateway {
    pub(super) fn db(&self) -> Option<&Db> {
        self.db.get()
    }

    /// The account DB, waiting up to `db_timeout_ms` for it when the gateway has just started
    /// and its pool is not connected yet (the listener opens first): a request arriving in that
    /// moment is served a little later instead of refused with 503. Costs nothing once connected.
    async fn db_ready(&self) -> Option<&Db> {
        if let Some(db) = self.db.get() {
            return Some(db);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.db_timeout();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Some(db) = self.db.get() {
                return Some(db);
            }
        }
        None
    }

    /// Per-IP bucket (unauthenticated routes, failed auth). `None` = allowed.
    pub(super) fn ip_take(&self, ctx: &mut Ctx) -> Option<Reject> {
        let ip = ctx.client_ip?;
        let d = self.ip_buckets.take(&ip, self.ip_rate);
        self.ip_meta
            .count_decision(d.allowed, limits::Backend::Local);
        ctx.rate = Some((self.ip_meta.clone(), d));
        (!d.allowed).then(|| Reject::RateLimited {
            policy: "ip".into(),
            rate: self.ip_rate,
            decision: d,
        })
    }

    /// The body limit of this request's upstream.
    pub(super) fn body_limit(&self, route: Route) -> u64 {
        if route.is_engine() {
            self.cfg.max_body_bytes
        } else {
            self.cfg.max_billing_body_bytes
        }
    }

    /// Steps 2–6 for `/api/v1/*`. `Some` = answer with this instead of proxying.
    pub(super) async fn engine_checks(
        &self,
        req: &Request,
        ctx: &mut Ctx,
        op: EngineOp,
    ) -> Option<Reject> {
        // Step 2: key present and well-formed, before any cache or DB access.
        let key = match auth::extract_key(req.get(Name::XApiKey), req.get(Name::Authorization)) {
            Ok(k) => k,
            Err(p) => {
                metrics::AUTH_REJECTIONS
                    .with_label_values(&[if p == KeyProblem::Missing {
                        "missing"
                    } else {
                        "malformed"
                    }])
                    .inc();
                return Some(self.ip_take(ctx).unwrap_or(if p == KeyProblem::Missing {
                    Reject::MissingKey
                } else {
                    Reject::MalformedKey
                }));
            }
        };
        // Steps 3–4: hash → cached principal. An IP that keeps failing gets no more DB lookups.
        let cached = self.auth.cached(key).await;
        let (result, outcome) = match cached {
            Some(p) => (Auth::Ok(p), auth::CacheOutcome::Hit),
            None => {
                if let Some(ip) = ctx.client_ip {
                    if !self.ip_buckets.has_token(&ip, self.ip_rate) {
                        metrics::AUTH_REJECTIONS
                            .with_label_values(&["ip_throttled"])
                            .inc();
                        return self.ip_take(ctx);
                    }
                }
                self.auth.resolve(key, self.db_ready().await).await
            }
        };
        metrics::AUTH_CACHE_BY_OUTCOME[outcome.index()].inc();
        let principal = match result {
            Auth::Ok(p) => p,
            Auth::Unknown => {
                metrics::AUTH_REJECTIONS
                    .with_label_values(&["unknown"])
                    .inc();
                return Some(self.ip_take(ctx).unwrap_or(Reject::UnknownKey));
            }
            Auth::Unavailable => {
                metrics::AUTH_REJECTIONS
                    .with_label_values(&["unavailable"])
                    .inc();
                return Some(Reject::AuthUnavailable);
            }
        };
        ctx.principal = Some(principal.clone());
        let tier = principal.tier().clone();

        let path = stellar_proto::route::origin_path(req.head.target(&req.bytes)).unwrap_or("");
        ctx.family = Family::of(req.method(), path);

        // A scoped key: expiry, read-only, bound agent, then its own bucket.
        let mut bound_agent = None;
        if let Some(s) = principal.scope.as_deref() {
            let agent = req.get(Name::XStellarAgent);
            match scope::check(s, req.method(), path, agent, scope::unix_now()) {
                Ok(a) => bound_agent = a,
                Err(r) => return Some(r),
            }
            if let Some(rate) = s.rate {
                let (d, backend) = match self.limiter.check_now(principal.key_id, rate) {
                    Some(r) => r,
                    None => self.limiter.check(principal.key_id, rate).await,
                };
                principal.meta.count_decision(d.allowed, backend);
                if !d.allowed {
                    ctx.rate = Some((principal.meta.clone(), d));
                    return Some(Reject::RateLimited {
                        policy: "key".into(),
                        rate,
                        decision: d,
                    });
                }
            }
        }

        // Step 5: the account's bucket.
        let rate = Rate {
            per_minute: tier.requests_per_minute,
            burst: tier.burst,
        };
        let (d, backend) = match self.limiter.check_now(principal.user_id, rate) {
            Some(r) => r,
            None => self.limiter.check(principal.user_id, rate).await,
        };
        principal.meta.count_decision(d.allowed, backend);
        ctx.rate = Some((principal.meta.clone(), d));
        if !d.allowed {
            return Some(Reject::RateLimited {
                policy: tier.name.clone(),
                rate,
                decision: d,
            });
        }

        // The agent (tenancy sub-space): validated, and at most the tier's number per account.
        if let Some(v) = bound_agent
            .map(str::as_bytes)
            .or(req.get(Name::XStellarAgent))
        {
            let agent = match std::str::from_utf8(v) {
                Ok(a) if quota::valid_agent(a) => a.to_string(),
                _ => return Some(Reject::InvalidAgent),
            };
            let pair = (principal.user_id, agent.clone());
            if !self.agents.contains_key(&pair) {
                let Some(db) = self.db_ready().await else {
                    return Some(Reject::QuotaUnavailable);
                };
                match tokio::time::timeout(
                    self.cfg.db_timeout(),
                    quota::ensure_agent(db, principal.user_id, &agent, tier.max_agents),
                )
                .await
                {
                    Ok(Ok(AgentCheck::Known | AgentCheck::Added)) => {
                        self.agents.insert(pair, ()).await
                    }
                    Ok(Ok(AgentCheck::Full(used))) => {
                        metrics::QUOTA_REJECTIONS
                            .with_label_values(&["agents", tier.name.as_str()])
                            .inc();
                        return Some(Reject::AgentLimit {
                            used,
                            limit: tier.max_agents,
                            tier: tier.name.clone(),
                            next_tier: self.tiers.next_after(&tier.name).map(|t| t.name.clone()),
                        });
                    }
                    _ => return Some(Reject::QuotaUnavailable),
                }
            }
            ctx.agent = Some(agent);
        }

        // Step 6: the memory quota, on stores only.
        if op == EngineOp::Store {
            let Some(db) = self.db_ready().await else {
                return Some(Reject::QuotaUnavailable);
            };
            let user = principal.user_id;
            self.inflight.begin(user);
            match tokio::time::timeout(
                self.cfg.db_timeout(),
                quota::reserve_memory(db, user, tier.max_memories),
            )
            .await
            {
                Ok(Ok(Reserve::Reserved(_))) => ctx.reserved = Some(user),
                Ok(Ok(Reserve::Full(used))) => {
                    self.inflight.end(user);
                    metrics::QUOTA_REJECTIONS
                        .with_label_values(&["memories", tier.name.as_str()])
                        .inc();
                    return Some(Reject::MemoryQuota {
                        used,
                        limit: tier.max_memories,
                        tier: tier.name.clone(),
                        next_tier: self.tiers.next_after(&tier.name).map(|t| t.name.clone()),
                    });
                }
                _ => {
                    self.inflight.end(user);
                    return Some(Reject::QuotaUnavailable);
                }
            }
        }
        None
    }
}
