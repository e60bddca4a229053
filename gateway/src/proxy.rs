//! The pingora hooks. Each one only calls the decisions of the other modules, in the order of
//! "The hot path": route → key → principal → bucket → agent/quota (`request_filter`), choose the
//! upstream (`upstream_peer`), header hygiene (`upstream_request_filter`), rate-limit headers
//! (`response_filter`), errors (`fail_to_proxy`), and settling the quota, metrics, usage and
//! the access log (`logging`, which runs once on every path).

use crate::auth::{self, Auth, AuthCache, KeyProblem, Principal};
use crate::config::GatewayConfig;
use crate::errors::{self, Reject};
use crate::limits::{self, Decision, Limiter, LocalBuckets, Rate};
use crate::metrics;
use crate::quota::{self, AgentCheck, InFlight, Reserve};
use crate::routing::{self, EngineOp, Route};
use crate::tier_meta::{self, TierMeta, TierMetas};
use crate::usage::Usage;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use stellar_common::{Db, Tiers};
use uuid::Uuid;

/// Everything the hooks share. Cheap to clone handles only.
pub struct Gateway {
    pub cfg: Arc<GatewayConfig>,
    pub engine: SocketAddr,
    pub billing: SocketAddr,
    /// Set by the maintenance service once connected (the pool must live on a runtime that
    /// outlives every request, see pingora.md §2).
    pub db: Arc<OnceLock<Db>>,
    pub tiers: Arc<Tiers>,
    pub auth: Arc<AuthCache>,
    pub limiter: Arc<dyn Limiter>,
    pub ip_buckets: Arc<LocalBuckets<IpAddr>>,
    pub ip_rate: Rate,
    /// Header values and metric handles of the per-IP policy and of every tier.
    pub ip_meta: Arc<TierMeta>,
    pub metas: Arc<TierMetas>,
    /// Upstream peers, built once (same pool key every time, so connections are reused).
    pub peers: Peers,
    /// (user, agent) pairs known to be registered: steady agent traffic costs no query.
    pub agents: moka::future::Cache<(Uuid, String), ()>,
    pub usage: Arc<Usage>,
    pub inflight: Arc<InFlight>,
}

/// Per-request state.
pub struct Ctx {
    started: Instant,
    request_id: RequestId,
    route: Route,
    client_ip: Option<IpAddr>,
    principal: Option<Arc<Principal>>,
    agent: Option<String>,
    /// The rate-limit decision to report on the response, under its policy.
    rate: Option<(Arc<TierMeta>, Decision)>,
    /// A memory reserved for this store, to commit (2xx) or release (anything else).
    reserved: Option<Uuid>,
    upstream_status: Option<u16>,
    upstream_sent: Option<Instant>,
    body_bytes: u64,
    reject: Option<&'static str>,
    counted: bool,
    forget_settled: bool,
    /// Connection attempts to the upstream that failed before anything was sent.
    connect_failures: u8,
}

/// A failed connect is retried this many times: nothing was sent yet, so it is always safe,
/// and a loaded upstream's accept queue can drop a SYN under a burst of new connections.
const CONNECT_RETRIES: u8 = 2;

/// The upstream peers, one per (upstream, read timeout).
pub struct Peers {
    engine: HttpPeer,
    events: HttpPeer,
    billing: HttpPeer,
}

impl Peers {
    pub fn new(cfg: &GatewayConfig, engine: SocketAddr, billing: SocketAddr) -> Peers {
        let peer = |addr, read| {
            let mut peer = HttpPeer::new(addr, false, String::new());
            peer.options.connection_timeout = Some(Duration::from_millis(cfg.connect_timeout_ms));
            peer.options.read_timeout = Some(Duration::from_secs(read));
            peer.options.write_timeout = Some(Duration::from_secs(cfg.read_timeout_secs));
            peer.options.idle_timeout = Some(Duration::from_secs(cfg.upstream_idle_timeout_secs));
            peer
        };
        Peers {
            engine: peer(engine, cfg.read_timeout_secs),
            events: peer(engine, cfg.events_read_timeout_secs),
            billing: peer(billing, cfg.read_timeout_secs),
        }
    }
}

/// A request id, stored inline (no allocation per request).
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; 64],
    len: u8,
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    fn from_ascii(s: &[u8]) -> RequestId {
        let mut buf = [0u8; 64];
        buf[..s.len()].copy_from_slice(s);
        RequestId {
            buf,
            len: s.len() as u8,
        }
    }

    /// A random (version 4) UUID from a per-thread generator seeded from the OS once: no
    /// system call per request.
    fn generate() -> RequestId {
        thread_local! {
            static STATE: Cell<u64> = Cell::new({
                let b = *Uuid::new_v4().as_bytes();
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            });
        }
        let (a, b) = STATE.with(|s| {
            let next = || {
                // splitmix64
                let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                s.set(x);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            (next(), next())
        });
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let s = id.hyphenated().encode_lower(&mut text);
        RequestId::from_ascii(s.as_bytes())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keep a client's request id if it is sane (≤ 64 of `A-Z a-z 0-9 - _ .`), else make one.
pub fn request_id(client: Option<&str>) -> String {
    make_request_id(client).as_str().to_string()
}

fn make_request_id(client: Option<&str>) -> RequestId {
    match client {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            RequestId::from_ascii(id.as_bytes())
        }
        _ => RequestId::generate(),
    }
}

impl Gateway {
    fn db(&self) -> Option<&Db> {
        self.db.get()
    }

    async fn reject(&self, session: &mut Session, ctx: &mut Ctx, r: Reject) -> Result<bool> {
        ctx.reject = Some(r.reason());
        if let (Reject::BodyTooLarge { .. }, pingora::protocols::http::ServerSession::H1(h1)) =
            (&r, session.as_downstream_mut())
        {
            // Read and discard the unwanted upload for a bounded time before closing, so a
            // client still writing it sees the 413 instead of a broken pipe.
            h1.set_close_on_response_before_downstream_finish(false);
            h1.set_total_drain_timeout(Some(Duration::from_secs(2)));
        }
        errors::respond(session, &r, ctx.request_id.as_str(), &[]).await
    }

    /// Per-IP bucket (unauthenticated routes, failed auth). `None` = allowed.
    fn ip_take(&self, ctx: &mut Ctx) -> Option<Reject> {
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

    /// Steps 2–6 for `/api/v1/*`. `Some` = answer with this instead of proxying.
    async fn engine_checks(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        op: EngineOp,
    ) -> Option<Reject> {
        let req = session.req_header();
        if let Some(len) = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > self.cfg.max_body_bytes {
                return Some(Reject::BodyTooLarge {
                    limit: self.cfg.max_body_bytes,
                });
            }
        }
        // Step 2: key present and well-formed, before any cache or DB access.
        let key = match auth::extract_key(&req.headers) {
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
                self.auth.resolve(key, self.db()).await
            }
        };
        metrics::AUTH_CACHE_BY_OUTCOME[match outcome {
            auth::CacheOutcome::Hit => 0,
            auth::CacheOutcome::Miss => 1,
            auth::CacheOutcome::NegativeHit => 2,
        }]
        .inc();
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
        let tier = principal.tier.clone();

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
        if let Some(v) = req.headers.get("x-stellar-agent") {
            let agent = match v.to_str() {
                Ok(a) if quota::valid_agent(a) => a.to_string(),
                _ => return Some(Reject::InvalidAgent),
            };
            let pair = (principal.user_id, agent.clone());
            if !self.agents.contains_key(&pair) {
                let Some(db) = self.db() else {
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
            let Some(db) = self.db() else {
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

    /// Commit or release this request's reservation, and free a slot on a successful forget.
    async fn settle_quota(&self, ctx: &mut Ctx) {
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

    async fn release(&self, user: Uuid) {
        if let Some(db) = self.db() {
            // On failure the periodic reconciliation corrects the count.
            let _ =
                tokio::time::timeout(self.cfg.db_timeout(), quota::release_memory(db, user)).await;
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            request_id: RequestId {
                buf: [0; 64],
                len: 0,
            },
            route: Route::Billing { ip_limited: false },
            client_ip: None,
            principal: None,
            agent: None,
            rate: None,
            reserved: None,
            upstream_status: None,
            upstream_sent: None,
            body_bytes: 0,
            reject: None,
            counted: false,
            forget_settled: false,
            connect_failures: 0,
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failures += 1;
        if ctx.connect_failures <= CONNECT_RETRIES {
            e.set_retry(true);
        }
        e
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        metrics::INFLIGHT.inc();
        ctx.counted = true;
        session.set_keepalive(Some(75));
        let req = session.req_header();
        ctx.request_id = make_request_id(
            req.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        );
        ctx.route = routing::classify(req.method.as_str(), req.uri.path());
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let reject = match ctx.route {
            Route::Health | Route::Billing { ip_limited: false } => None,
            Route::Billing { ip_limited: true } => self.ip_take(ctx),
            Route::Engine(op) => self.engine_checks(session, ctx, op).await,
        };
        match reject {
            Some(r) => self.reject(session, ctx, r).await,
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let peer = if ctx.route == Route::Engine(EngineOp::Events) {
            &self.peers.events
        } else if ctx.route.is_engine() {
            &self.peers.engine
        } else {
            &self.peers.billing
        };
        Ok(Box::new(peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Step 7: nothing the client says about identity reaches an upstream.
        let spoofed = |n: &http::HeaderName| n.as_str().starts_with("x-stellar-");
        if up.headers.keys().any(spoofed) {
            let spoofable: Vec<http::HeaderName> =
                up.headers.keys().filter(|n| spoofed(n)).cloned().collect();
            for name in &spoofable {
                up.remove_header(name);
            }
        }
        if ctx.route.is_engine() {
            up.remove_header("x-api-key");
            up.remove_header("authorization");
            if let Some(p) = &ctx.principal {
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                up.insert_header(
                    "X-Stellar-User",
                    &*p.user_id.hyphenated().encode_lower(&mut buf),
                )?;
            }
            if let Some(a) = &ctx.agent {
                up.insert_header("X-Stellar-Agent", a.as_str())?;
            }
            if !self.cfg.upstream_api_key.is_empty() {
                up.insert_header("X-API-Key", self.cfg.upstream_api_key.as_str())?;
            }
        }
        up.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        match ctx.client_ip {
            Some(ip) => {
                use std::io::Write;
                let mut buf = [0u8; 48];
                let mut w = &mut buf[..];
                let _ = write!(w, "{ip}");
                let n = 48 - w.len();
                up.insert_header(
                    "X-Forwarded-For",
                    http::HeaderValue::from_bytes(&buf[..n]).map_err(|_| {
                        Error::explain(ErrorType::InternalError, "client address as header")
                    })?,
                )?
            }
            None => {
                up.remove_header("x-forwarded-for");
            }
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _eos: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(b), true) = (body, ctx.route.is_engine()) {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > self.cfg.max_body_bytes {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        // Settle before the client sees the answer, so a client that reads its usage right
        // after a forget (or a refused store) sees the new count. Paths without an upstream
        // answer are settled in `logging`.
        self.settle_quota(ctx).await;
        if let Some(t) = ctx.upstream_sent {
            metrics::UPSTREAM_SECONDS_BY_UPSTREAM[usize::from(!ctx.route.is_engine())]
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some((meta, d)) = &ctx.rate {
            meta.write_headers(resp, d, crate::limits::unix_now())?;
        }
        resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let Some(mut r) = errors::from_proxy_error(e) else {
            self.settle_quota(ctx).await;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if let Reject::BodyTooLarge { limit } = &mut r {
            *limit = self.cfg.max_body_bytes;
        }
        ctx.reject = Some(r.reason());
        let code = r.status();
        // Release before answering (see upstream_response_filter).
        self.settle_quota(ctx).await;
        if session.response_written().is_none() {
            if let Ok((h, body)) = r.response(ctx.request_id.as_str(), &[]) {
                let _ = session
                    .as_downstream_mut()
                    .write_error_response(h, body)
                    .await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.settle_quota(ctx).await;
        if !ctx.counted {
            return;
        }
        metrics::INFLIGHT.dec();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route.label();
        let elapsed = ctx.started.elapsed();
        match &ctx.principal {
            Some(p) => p.meta.count_request(ctx.route, status),
            None => self.metas.none().count_request(ctx.route, status),
        }
        metrics::REQUEST_SECONDS_BY_ROUTE[tier_meta::route_index(ctx.route)]
            .observe(elapsed.as_secs_f64());
        if let Some(p) = &ctx.principal {
            self.usage.record_key(p, chrono::Utc::now().timestamp());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_ne!(request_id(Some("has space")), "has space");
        assert_eq!(request_id(Some(&"a".repeat(65))).len(), 36);
        assert_eq!(request_id(None).len(), 36);
    }
}
