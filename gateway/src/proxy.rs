//! The request path of "The hot path", as one sequential function per request: route → key →
//! principal → bucket → agent/quota ([`Gateway::checks`]), then forward ([`Gateway::forward`]):
//! header hygiene, stream the request body up and the response body down, add the rate-limit
//! headers, settle the quota, and log ([`Gateway::finish`], which runs once on every path).
//!
//! The gateway is a pingora server application ([`HttpServerApp`]) on pingora's listeners,
//! graceful shutdown and HTTP/1 sessions (downstream and upstream). It does not use
//! pingora-proxy's `ProxyHttp` state machine: on this product's hot path (a small JSON request,
//! a small JSON answer) that machinery — an upstream pool that spawns a watcher task per idle
//! connection on a random thread, a channel pair between the two halves of every request, the
//! cache phases — cost about three times the CPU of nginx per request, more than everything the
//! gateway itself does. BENCHMARKS.md has the measurements.

use crate::auth::{self, Auth, AuthCache, KeyProblem, Principal};
use crate::config::GatewayConfig;
use crate::errors::{self, Reject};
use crate::limits::{self, Decision, Limiter, LocalBuckets, Rate};
use crate::metrics;
use crate::quota::{self, AgentCheck, InFlight, Reserve};
use crate::routing::{self, EngineOp, Route};
use crate::tier_meta::{self, TierMeta, TierMetas};
use crate::upstream::{ConnectError, Upstream};
use crate::usage::Usage;
use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType, OrErr, Result};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use stellar_common::{Db, Tiers};
use uuid::Uuid;

/// Everything a request needs. Cheap-to-clone handles only.
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
    /// The two upstreams and their connection pools.
    pub upstreams: Upstreams,
    /// (user, agent) pairs known to be registered: steady agent traffic costs no query.
    pub agents: moka::future::Cache<(Uuid, String), ()>,
    pub usage: Arc<Usage>,
    pub inflight: Arc<InFlight>,
}

/// The engine and billing, with their timeouts.
pub struct Upstreams {
    engine: Upstream,
    billing: Upstream,
    /// Per read and per write (each resets the clock), except reads on the SSE route.
    read_timeout: Duration,
    events_read_timeout: Duration,
}

impl Upstreams {
    pub fn new(cfg: &GatewayConfig, engine: SocketAddr, billing: SocketAddr) -> Upstreams {
        let connect = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let idle = Duration::from_secs(cfg.upstream_idle_timeout_secs);
        Upstreams {
            engine: Upstream::new(0, engine, connect, idle),
            billing: Upstream::new(1, billing, connect, idle),
            read_timeout: Duration::from_secs(cfg.read_timeout_secs.max(1)),
            events_read_timeout: Duration::from_secs(cfg.events_read_timeout_secs.max(1)),
        }
    }
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
    reject: Option<&'static str>,
    forget_settled: bool,
}

/// A failed connect is retried this many times: nothing was sent yet, so it is always safe,
/// and a loaded upstream's accept queue can drop a SYN under a burst of new connections.
const CONNECT_RETRIES: u8 = 2;

/// Downstream keep-alive: idle seconds before a client connection is closed.
const KEEPALIVE_SECS: u64 = 75;

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

    /// Answer `r` instead of proxying.
    async fn reject(&self, session: &mut ServerSession, ctx: &mut Ctx, r: Reject) -> Result<()> {
        ctx.reject = Some(r.reason());
        if let Reject::BodyTooLarge { .. } = r {
            // Read and discard the unwanted upload for a bounded time before closing, so a
            // client still writing it sees the 413 instead of a broken pipe.
            session.set_close_on_response_before_downstream_finish(false);
            session.set_total_drain_timeout(Some(Duration::from_secs(2)));
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
        req: &RequestHeader,
        ctx: &mut Ctx,
        op: EngineOp,
    ) -> Option<Reject> {
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
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // The next request on this connection, unless the server is shutting down first (an
        // idle keep-alive connection is closed then; a request already arriving is served).
        let mut stop = shutdown.clone();
        let read = tokio::select! {
            biased;
            r = session.read_request() => r,
            _ = stop.changed() => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if e.etype() == &ErrorType::InvalidHTTPHeader {
                    // pingora-core's parser refused it: answer in our own shape, then close.
                    let id = RequestId::generate();
                    let _ =
                        errors::respond(&mut session, &Reject::BadRequest, id.as_str(), &[]).await;
                }
                return None;
            }
        }
        session.set_keepalive(if *shutdown.borrow() {
            None
        } else {
            Some(KEEPALIVE_SECS)
        });
        metrics::INFLIGHT.inc();
        let mut ctx = self.new_ctx(&session);
        let result = self.serve(&mut session, &mut ctx).await;
        self.finish(&session, &mut ctx, result.as_ref().err().map(|e| &**e))
            .await;
        metrics::INFLIGHT.dec();
        if result.is_err() {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        }
    }
}

impl Gateway {
    fn new_ctx(&self, session: &ServerSession) -> Ctx {
        let req = session.req_header();
        Ctx {
            started: Instant::now(),
            request_id: make_request_id(
                req.headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok()),
            ),
            route: routing::classify(req.method.as_str(), req.uri.path()),
            client_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            principal: None,
            agent: None,
            rate: None,
            reserved: None,
            upstream_status: None,
            upstream_sent: None,
            reject: None,
            forget_settled: false,
        }
    }

    /// Steps 1–8 for one request. `Err`: the downstream connection must not be reused (the
    /// error is logged; an answer was written when one still could be).
    async fn serve(&self, session: &mut ServerSession, ctx: &mut Ctx) -> Result<()> {
        let reject = match ctx.route {
            Route::Health | Route::Billing { ip_limited: false } => None,
            Route::Billing { ip_limited: true } => self.ip_take(ctx),
            Route::Engine(op) => self.engine_checks(session.req_header(), ctx, op).await,
        };
        if let Some(r) = reject {
            return self.reject(session, ctx, r).await;
        }
        match self.forward(session, ctx).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Release before answering, so a client that reads its usage next sees it.
                self.settle_quota(ctx).await;
                if session.response_written().is_none() {
                    if let Some(mut r) = errors::from_proxy_error(&e) {
                        if let Reject::BodyTooLarge { limit } = &mut r {
                            *limit = self.cfg.max_body_bytes;
                        }
                        ctx.reject = Some(r.reason());
                        if let Ok((h, body)) = r.response(ctx.request_id.as_str(), &[]) {
                            let _ = session.write_error_response(h, body).await;
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// Step 7: send the request to its upstream and stream the answer back.
    async fn forward(&self, session: &mut ServerSession, ctx: &mut Ctx) -> Result<()> {
        let ups = &self.upstreams;
        let (up, read_timeout) = match ctx.route {
            Route::Engine(EngineOp::Events) => (&ups.engine, ups.events_read_timeout),
            r if r.is_engine() => (&ups.engine, ups.read_timeout),
            _ => (&ups.billing, ups.read_timeout),
        };
        let has_body = !session.is_body_empty();
        if has_body && session.req_header().headers.contains_key(header::EXPECT) {
            // The checks passed: invite the body (the header itself is not forwarded).
            session.write_continue_response().await?;
        }
        let mut connect_failures = 0u8;
        // A pooled connection the upstream closed just as it was reused fails before any
        // answer byte; a request without a body is then sent once more on a new connection.
        let mut may_resend = !has_body;
        let mut resending = false;
        let mut upstream = loop {
            // A resend always goes on a new connection.
            let pooled = if resending { None } else { up.pooled() };
            let (stream, reused) = match pooled {
                Some(s) => (s, true),
                None => match up.connect().await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        connect_failures += 1;
                        if connect_failures <= CONNECT_RETRIES {
                            continue;
                        }
                        return Err(connect_error(e));
                    }
                },
            };
            let mut upstream = UpstreamSession::new(stream);
            upstream.read_timeout = Some(read_timeout);
            upstream.write_timeout = Some(ups.read_timeout);
            let head = self.upstream_request(session.req_header(), ctx, has_body)?;
            ctx.upstream_sent = Some(Instant::now());
            let sent = match upstream.write_request_header(head).await {
                Ok(_) if has_body => self.send_body(session, &mut upstream, ctx).await,
                Ok(_) => Ok(()),
                Err(e) => Err(e.into_up()),
            };
            if let Err(e) = sent {
                if reused && may_resend && e.esource() == &pingora::ErrorSource::Upstream {
                    (may_resend, resending) = (false, true);
                    continue;
                }
                return Err(e);
            }
            match read_response_head(&mut upstream).await {
                Ok(()) => break upstream,
                Err(e) if reused && may_resend && resendable(&e) => {
                    (may_resend, resending) = (false, true);
                }
                Err(e) => return Err(e),
            }
        };

        let Some(head) = upstream.resp_header() else {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header");
        };
        let status = head.status.as_u16();
        ctx.upstream_status = Some(status);
        // Settle before the client sees the answer, so a client that reads its usage right
        // after a forget (or a refused store) sees the new count.
        self.settle_quota(ctx).await;
        if let Some(t) = ctx.upstream_sent {
            metrics::UPSTREAM_SECONDS_BY_UPSTREAM[usize::from(!ctx.route.is_engine())]
                .observe(t.elapsed().as_secs_f64());
        }
        let mut resp = Box::new(head.clone());
        if let Some((meta, d)) = &ctx.rate {
            meta.write_headers(&mut resp, d, limits::unix_now())?;
        }
        resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        session
            .write_response_header(resp)
            .await
            .map_err(|e| e.into_down())?;

        // The body, chunk by chunk as it arrives (SSE included: chunked and close-delimited
        // bodies are flushed on every write).
        loop {
            let chunk = upstream.read_body_ref().await.map_err(|e| e.into_up())?;
            let Some(chunk) = chunk else { break };
            let written = match &mut *session {
                ServerSession::H1(h1) => h1.write_body(chunk).await.map(|_| ()),
                other => {
                    other
                        .write_response_body(Bytes::copy_from_slice(chunk), false)
                        .await
                }
            };
            written.map_err(|e| e.into_down())?;
        }
        session.finish_body().await.map_err(|e| e.into_down())?;
        upstream.respect_keepalive();
        if let Some(stream) = upstream.reuse().await {
            up.release(stream);
        }
        Ok(())
    }

    /// Stream the request body to the upstream, enforcing the body limit on engine routes.
    async fn send_body(
        &self,
        session: &mut ServerSession,
        upstream: &mut UpstreamSession,
        ctx: &Ctx,
    ) -> Result<()> {
        let limit = ctx.route.is_engine().then_some(self.cfg.max_body_bytes);
        let mut total = 0u64;
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|e| e.into_down())?
        {
            total += chunk.len() as u64;
            if limit.is_some_and(|l| total > l) {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
            upstream.write_body(&chunk).await.map_err(|e| e.into_up())?;
        }
        upstream.finish_body().await.map_err(|e| e.into_up())?;
        Ok(())
    }

    /// The request as the upstream sees it (step 7): nothing the client says about identity
    /// reaches an upstream, hop-by-hop fields stay on this hop, and the gateway's own
    /// `X-Stellar-User`, `X-Request-Id` and `X-Forwarded-For` are set.
    fn upstream_request(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        has_body: bool,
    ) -> Result<Box<RequestHeader>> {
        let mut up = Box::new(req.clone());
        up.set_version(http::Version::HTTP_11);
        strip_hop_by_hop(&mut up);
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
                    http::HeaderValue::from_bytes(&buf[..n])
                        .or_err(ErrorType::InternalError, "client address as header")?,
                )?
            }
            None => {
                up.remove_header("x-forwarded-for");
            }
        }
        if has_body
            && !up.headers.contains_key(header::CONTENT_LENGTH)
            && !up.headers.contains_key(header::TRANSFER_ENCODING)
        {
            up.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
        Ok(up)
    }

    /// Runs once per request on every path: settle what is left of the quota, count, log.
    async fn finish(&self, session: &ServerSession, ctx: &mut Ctx, e: Option<&Error>) {
        self.settle_quota(ctx).await;
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

/// Read the response head, passing over interim (1xx) answers: the gateway answers
/// `Expect: 100-continue` itself and does not forward it.
async fn read_response_head(upstream: &mut UpstreamSession) -> Result<()> {
    loop {
        upstream.read_response().await.map_err(|e| e.into_up())?;
        match upstream.resp_header() {
            Some(h) if h.status.is_informational() && h.status.as_u16() != 101 => continue,
            _ => return Ok(()),
        }
    }
}

/// Whether a failure to read the response head on a reused connection means the upstream had
/// closed it (so nothing was processed) rather than that it answered badly or too slowly.
fn resendable(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

fn connect_error(e: ConnectError) -> Box<Error> {
    match e {
        ConnectError::Refused(io) => {
            Error::because(ErrorType::ConnectRefused, "connecting to upstream", io).into_up()
        }
        ConnectError::TimedOut => {
            Error::explain(ErrorType::ConnectTimedout, "connecting to upstream").into_up()
        }
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and any field the client's `Connection` names.
fn strip_hop_by_hop(req: &mut RequestHeader) {
    if let Some(conn) = req.headers.get(header::CONNECTION) {
        let named: Vec<String> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive")
            .collect();
        for name in named {
            if name != "content-length" && name != "transfer-encoding" && name != "host" {
                req.remove_header(&name);
            }
        }
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ] {
        if req.headers.contains_key(name) {
            req.remove_header(name);
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
