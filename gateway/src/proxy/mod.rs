//! The request path of "The hot path", as one sequential function per request: route → key →
//! principal → bucket → agent/quota ([`Gateway::engine_checks`]), then forward
//! ([`Gateway::forward`]): header hygiene, stream the request body up and the response body
//! down, add the rate-limit headers, settle the quota, and log ([`Gateway::finish`], which runs
//! once on every path).
//!
//! The gateway is a pingora server application ([`ServerApp`]): pingora's listeners, server,
//! worker runtimes and graceful shutdown run it. The HTTP/1.1 exchange itself is this file and
//! [`h1`]: a head is parsed in place (httparse), the fields the gateway acts on are picked out
//! in the same pass, and the head sent on is written from the received bytes plus the gateway's
//! own fields; bodies are forwarded as received (chunked ones walked, not rewritten). Neither
//! pingora-proxy's `ProxyHttp` machine nor pingora's HTTP/1 sessions are used: on this product's
//! hot path (a small JSON request, a small JSON answer) the first cost three times nginx's CPU per
//! request and the second, which turns every head into two header maps and back, still twice —
//! more than everything the gateway itself does. BENCHMARKS.md has the measurements.

use crate::auth::{self, Auth, AuthCache, KeyProblem, Principal};
use crate::config::GatewayConfig;
use crate::errors::Reject;
use crate::h1::{self, Body, Chunked, Head, Invalid, Name, Part};
use crate::limits::{self, Decision, Limiter, LocalBuckets, Rate};
use crate::metrics;
use crate::quota::{self, AgentCheck, InFlight, Reserve};
use crate::routing::{self, BadTarget, EngineOp, Route};
use crate::tier_meta::{self, TierMeta, TierMetas};
use crate::upstream::{ConnectError, Upstream};
use crate::usage::Usage;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};
use stellar_common::{Db, Tiers};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

mod conns;
mod rewrite;

pub use conns::ConnsPerIp;

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
    /// Open client connections per IP (`gateway.max_connections_per_ip`).
    pub conns: Arc<ConnsPerIp>,
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
    /// Why the request line was refused ([`Route::Invalid`]).
    refused: Option<Reject>,
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
    /// The upstream answered before the request body was all sent: after the answer, read and
    /// discard what the client still sends for a moment before closing.
    linger: bool,
    /// The status written to the client (0: none yet).
    status: u16,
    /// Whether the client connection can take another request after this one.
    keep_alive: bool,
}

/// A failed connect is retried this many times: nothing was sent yet, so it is always safe,
/// and a loaded upstream's accept queue can drop a SYN under a burst of new connections.
const CONNECT_RETRIES: u8 = 2;

/// Downstream keep-alive: how long an idle client connection is kept. The deadline of a
/// request head, once it has started arriving, is `head_timeout_secs`
/// ([`GatewayConfig::head_timeout`]).
const KEEPALIVE: Duration = Duration::from_secs(75);

/// A per-connection buffer whose allocation is larger than this when its connection goes idle
/// is replaced by an empty one ([`shrink_idle`]), so that idle keep-alive connections hold
/// only small buffers. Chosen above what ordinary traffic grows them to, so that it never
/// reallocates: under 8 KiB for small requests and answers; for a streamed body of any size,
/// about 20 KiB (`ubuf`) and at most about 42 KiB (`out`, which doubles as it grows; 32 KiB
/// measured after a 5 MB answer). A head of more than about 28 KiB (up to [`h1::MAX_HEAD`])
/// grows `buf` to 64 KiB, and is let go of.
const IDLE_BUF_MAX: usize = 48 * 1024;

/// After a refusal whose request body was not read, how long the connection keeps reading and
/// discarding it before closing, so that a client still sending sees the answer instead of a
/// reset.
const LINGER: Duration = Duration::from_secs(2);

/// A refused request's body up to this size is read and discarded, keeping the connection.
const DISCARD_MAX: u64 = 64 * 1024;

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

    /// The body limit of this request's upstream.
    fn body_limit(&self, route: Route) -> u64 {
        if route.is_engine() {
            self.cfg.max_body_bytes
        } else {
            self.cfg.max_billing_body_bytes
        }
    }

    /// Steps 2–6 for `/api/v1/*`. `Some` = answer with this instead of proxying.
    async fn engine_checks(&self, req: &Request, ctx: &mut Ctx, op: EngineOp) -> Option<Reject> {
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
        if let Some(v) = req.get(Name::XStellarAgent) {
            let agent = match std::str::from_utf8(v) {
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

/// A request head: its bytes (copied out of the connection's buffer) and what they say.
#[derive(Default)]
pub struct Request {
    bytes: Vec<u8>,
    head: Head,
}

impl Request {
    fn get(&self, name: Name) -> Option<&[u8]> {
        self.head.get(&self.bytes, name)
    }

    fn method(&self) -> &str {
        self.head.method(&self.bytes)
    }
}

/// What a client connection can be: a TCP stream re-registered on the serving thread
/// ([`adopt`]), or pingora's stream as it came.
trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// One client connection and the buffers its requests reuse.
struct Conn<S> {
    io: S,
    ip: Option<IpAddr>,
    /// Bytes received from the client and not used yet (a pipelined next request, body bytes).
    buf: BytesMut,
    /// The head sent upstream, then the bytes written to the client.
    out: Vec<u8>,
    /// Bytes received from the upstream.
    ubuf: BytesMut,
    /// The upstream's response head.
    resp: Request,
    /// Per read and write of the client, once a request has started.
    io_timeout: Duration,
    /// One deadline for a whole request body ([`GatewayConfig::body_timeout`]).
    body_timeout: Duration,
    /// When the gateway first waited for more of the current request's body.
    body_since: Option<Instant>,
    /// A request has been read on this connection (the idle wait is then the keep-alive
    /// timeout, not the first-byte timeout).
    served: bool,
}

/// Why a request could not be carried through. Displayed in logs (never with a key).
#[derive(Debug)]
enum Fail {
    /// The client went away, stalled or broke the body's framing: there is no one to answer, or
    /// (`Some`) the answer to give.
    Client(&'static str, Option<Reject>),
    /// The upstream could not be reached, failed or timed out. `resendable`: it failed before
    /// answering in a way that means a reused connection had been closed (nothing processed).
    Upstream {
        why: String,
        reject: Reject,
        resendable: bool,
    },
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Client(why, _) => write!(f, "client: {why}"),
            Fail::Upstream { why, .. } => write!(f, "upstream: {why}"),
        }
    }
}

impl Fail {
    fn upstream(why: impl Into<String>, reject: Reject) -> Fail {
        Fail::Upstream {
            why: why.into(),
            reject,
            resendable: false,
        }
    }

    /// An I/O error on the upstream connection; `fresh`: nothing has been received on it yet.
    fn upstream_io(what: &str, e: std::io::Error, fresh: bool) -> Fail {
        use std::io::ErrorKind::*;
        Fail::Upstream {
            why: format!("{what}: {e}"),
            reject: if e.kind() == TimedOut {
                Reject::GatewayTimeout
            } else {
                Reject::BadGateway
            },
            resendable: fresh
                && matches!(
                    e.kind(),
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                ),
        }
    }

    fn answer(&self) -> Option<Reject> {
        match self {
            Fail::Client(_, r) => r.clone(),
            Fail::Upstream { reject, .. } => Some(reject.clone()),
        }
    }
}

/// An I/O operation with a deadline. Most complete at the first poll (the socket was ready):
/// those never arm a timer.
async fn timed<T>(
    t: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let mut f = std::pin::pin!(f);
    let first = std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if let Some(r) = first {
        return r;
    }
    match tokio::time::timeout(t, f).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

impl<S: ClientIo> Conn<S> {
    /// Write all of `bytes` to the client and flush.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let io = &mut self.io;
        timed(self.io_timeout, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .map_err(|_| Fail::Client("write failed", None))
    }

    /// Write `self.out` to the client, flush, and empty it (its capacity stays).
    async fn send_out(&mut self) -> Result<(), Fail> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.send(&out).await;
        out.clear();
        self.out = out;
        r
    }

    /// Before closing with unread request bytes: end the answer (FIN), then read and discard
    /// for a moment, so the client reads the answer instead of a reset.
    async fn linger(&mut self) {
        let io = &mut self.io;
        let _ = tokio::time::timeout(LINGER, async {
            if io.shutdown().await.is_err() {
                return;
            }
            let mut sink = [0u8; 16 * 1024];
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    /// Read more of the request (body) from the client into `buf`.
    async fn read_more(&mut self) -> Result<(), Fail> {
        self.buf.reserve(8 * 1024);
        let since = *self.body_since.get_or_insert_with(Instant::now);
        let left = self.body_timeout.saturating_sub(since.elapsed());
        match timed(left.min(self.io_timeout), self.io.read_buf(&mut self.buf)).await {
            Ok(0) => Err(Fail::Client("closed during the request body", None)),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(Fail::Client(
                "timed out sending the request body",
                Some(Reject::RequestTimeout),
            )),
            Err(_) => Err(Fail::Client("read failed", None)),
        }
    }
}

/// What reading the next request head gave.
enum NextRequest {
    Ready,
    /// The client closed, went idle past the keep-alive, did not finish a head within
    /// `head_timeout_secs`, or the server is shutting down.
    Closed,
    Invalid(Invalid),
}

#[async_trait]
impl ServerApp for Gateway {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let ip = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let (timeout, body) = (self.upstreams.read_timeout, self.cfg.body_timeout());
        // Held until the connection is done.
        let _admitted = match ip.map(|ip| self.conns.admit(ip)) {
            Some(None) => {
                let mut io = io;
                metrics::CONNECTIONS_REFUSED.inc();
                let mut out = Vec::new();
                Reject::TooManyConnections.write(&mut out, RequestId::generate().as_str(), true);
                let _ = tokio::time::timeout(LINGER, async {
                    io.write_all(&out).await?;
                    io.shutdown().await
                })
                .await;
                return None;
            }
            admitted => admitted,
        };
        match adopt(io) {
            Ok(Some(tcp)) => {
                self.serve_connection(&mut Conn::new(tcp, ip, timeout, body), shutdown)
                    .await
            }
            Ok(None) => {}
            Err(io) => {
                self.serve_connection(&mut Conn::new(io, ip, timeout, body), shutdown)
                    .await
            }
        }
        None
    }
}

/// pingora's per-thread runtimes accept on one thread and hand each connection to a random
/// one, but the socket stays registered with the accepting thread's reactor: every readiness
/// event of a connection served elsewhere then crosses threads (an eventfd write and a wake-up
/// of the other thread, measured at ~0.8 per request). A plain TCP connection is registered
/// again here, with the reactor of the thread that serves it (its descriptor is duplicated and
/// pingora's closed). `Err`: not plain TCP, served as it is; `Ok(None)`: lost.
///
/// The project's only `unsafe` (the workspace denies it everywhere else): pingora's stream
/// exposes its descriptor only as a raw number, so borrowing it to duplicate takes one
/// `BorrowedFd::borrow_raw`.
#[allow(unsafe_code)]
fn adopt(io: Stream) -> Result<Option<TcpStream>, Stream> {
    if !io.as_any().is::<L4Stream>() {
        return Err(io);
    }
    let Ok(l4) = io.into_any().downcast::<L4Stream>() else {
        return Ok(None);
    };
    // SAFETY: the descriptor belongs to `l4`, which is alive for this borrow.
    let dup = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) }.try_clone_to_owned();
    let Ok(fd) = dup else {
        return Err(l4);
    };
    drop(l4);
    // The duplicate shares the open file, already non-blocking.
    Ok(TcpStream::from_std(std::net::TcpStream::from(fd)).ok())
}

impl<S: ClientIo> Conn<S> {
    fn new(io: S, ip: Option<IpAddr>, io_timeout: Duration, body_timeout: Duration) -> Conn<S> {
        Conn {
            io,
            ip,
            buf: BytesMut::new(),
            out: Vec::new(),
            ubuf: BytesMut::new(),
            resp: Request::default(),
            io_timeout,
            body_timeout,
            body_since: None,
            served: false,
        }
    }

    /// Idle between requests (no request bytes pending in `buf`): empty the connection's
    /// buffers and let go of those that have grown past [`IDLE_BUF_MAX`]. `req` is the last
    /// request's head, done with; what is left in `ubuf` is stale (a response head read starts
    /// by clearing it).
    fn shrink_buffers(&mut self, req: &mut Request) {
        debug_assert!(self.buf.is_empty());
        shrink_idle(&mut self.buf);
        shrink_idle(&mut self.ubuf);
        shrink_idle(&mut self.out);
        shrink_idle(&mut self.resp.bytes);
        shrink_idle(&mut req.bytes);
    }
}

/// A buffer of a connection, whose contents are no longer needed while the connection is idle.
trait IdleBuf: Default {
    /// Empty it, and say whether its allocation is larger than [`IDLE_BUF_MAX`]. Never
    /// allocates.
    fn clear_and_check(&mut self) -> bool;
}

impl IdleBuf for BytesMut {
    fn clear_and_check(&mut self) -> bool {
        self.clear();
        // `capacity()` leaves out what `advance` consumed from the front, which the allocation
        // still holds; an empty buffer gets that back without moving a byte (`try_reclaim`
        // never allocates), and says so only if the whole allocation is over the bound.
        self.try_reclaim(IDLE_BUF_MAX + 1)
    }
}

impl IdleBuf for Vec<u8> {
    fn clear_and_check(&mut self) -> bool {
        self.clear();
        self.capacity() > IDLE_BUF_MAX
    }
}

/// Empty `buf`, and replace it by a new one (no allocation until it is next used) if it has
/// grown past [`IDLE_BUF_MAX`]; a small one keeps its allocation.
fn shrink_idle<B: IdleBuf>(buf: &mut B) {
    if buf.clear_and_check() {
        *buf = B::default();
    }
}

impl Gateway {
    /// Requests on one client connection, one after the other, until it closes.
    async fn serve_connection<S: ClientIo>(&self, c: &mut Conn<S>, shutdown: &ShutdownWatch) {
        let mut stop = shutdown.clone();
        let mut req = Request::default();
        loop {
            match self.next_request(c, &mut req, &mut stop).await {
                NextRequest::Ready => c.body_since = None,
                NextRequest::Closed => return,
                NextRequest::Invalid(why) => {
                    let r = match why {
                        Invalid::TooLarge => Reject::HeadTooLarge,
                        Invalid::Malformed(why) => Reject::BadRequest(why),
                    };
                    tracing::info!(status = r.status(), reason = %why, "request refused");
                    let id = RequestId::generate();
                    c.out.clear();
                    r.write(&mut c.out, id.as_str(), true);
                    if c.send_out().await.is_ok() {
                        c.linger().await;
                    }
                    return;
                }
            }
            metrics::INFLIGHT.inc();
            let mut ctx = self.new_ctx(&req, c.ip, !*stop.borrow());
            let result = self.serve(c, &req, &mut ctx).await;
            self.finish(&mut ctx, result.as_ref().err()).await;
            metrics::INFLIGHT.dec();
            if result.is_err() {
                // An answer written after a failure may leave request bytes unread.
                if ctx.status != 0 {
                    c.linger().await;
                }
                return;
            }
            if !ctx.keep_alive {
                if ctx.linger {
                    c.linger().await;
                }
                return;
            }
        }
    }

    /// Read and parse the next request head into `req`.
    async fn next_request<S: ClientIo>(
        &self,
        c: &mut Conn<S>,
        req: &mut Request,
        stop: &mut ShutdownWatch,
    ) -> NextRequest {
        let mut started: Option<Instant> = None;
        loop {
            if !c.buf.is_empty() {
                match h1::parse_request(&c.buf, &mut req.head) {
                    Ok(Some(len)) => {
                        c.served = true;
                        req.bytes.clear();
                        req.bytes.extend_from_slice(&c.buf[..len]);
                        c.buf.advance(len);
                        return NextRequest::Ready;
                    }
                    Ok(None) => {}
                    Err(e) => return NextRequest::Invalid(e),
                }
            }
            let read = if c.buf.is_empty() {
                // Idle between requests: closed at shutdown (a request already arriving is
                // served, with `Connection: close`).
                if *stop.borrow() {
                    return NextRequest::Closed;
                }
                c.shrink_buffers(req);
                c.buf.reserve(4 * 1024);
                let idle = if c.served {
                    KEEPALIVE
                } else {
                    self.cfg.first_byte_timeout()
                };
                tokio::select! {
                    biased;
                    r = timed(idle, c.io.read_buf(&mut c.buf)) => r,
                    _ = stop.changed() => return NextRequest::Closed,
                }
            } else {
                // One deadline for the whole head, however slowly its bytes trickle in, from
                // the first wait for more of it (the idle wait above does not count).
                c.buf.reserve(4 * 1024);
                let since = *started.get_or_insert_with(Instant::now);
                let left = self.cfg.head_timeout().saturating_sub(since.elapsed());
                timed(left, c.io.read_buf(&mut c.buf)).await
            };
            match read {
                Ok(n) if n > 0 => {}
                _ => return NextRequest::Closed,
            }
        }
    }

    fn new_ctx(&self, req: &Request, client_ip: Option<IpAddr>, running: bool) -> Ctx {
        let (route, refused) =
            match routing::classify_target(req.method(), req.head.target(&req.bytes)) {
                Ok(r) => (r, None),
                Err(BadTarget::Method) => (Route::Invalid, Some(Reject::MethodNotAllowed)),
                Err(BadTarget::Target(why)) => (Route::Invalid, Some(Reject::BadRequest(why))),
            };
        Ctx {
            started: Instant::now(),
            request_id: make_request_id(req.head.get_str(&req.bytes, Name::XRequestId)),
            route,
            refused,
            client_ip,
            principal: None,
            agent: None,
            rate: None,
            reserved: None,
            upstream_status: None,
            upstream_sent: None,
            reject: None,
            forget_settled: false,
            linger: false,
            status: 0,
            // HTTP/1.0 clients get one request per connection.
            keep_alive: running && req.head.minor == 1 && !req.head.conn.close,
        }
    }

    /// Steps 1–8 for one request. `Err`: the client connection must not be reused (an answer
    /// was written when one still could be).
    async fn serve<S: ClientIo>(
        &self,
        c: &mut Conn<S>,
        req: &Request,
        ctx: &mut Ctx,
    ) -> Result<(), Fail> {
        let limit = self.body_limit(ctx.route);
        let reject = match ctx.route {
            Route::Invalid => ctx.refused.take(),
            _ if matches!(req.head.body, Body::Length(n) if n > limit) => {
                Some(Reject::BodyTooLarge { limit })
            }
            Route::Health | Route::Billing { ip_limited: false } => None,
            Route::Billing { ip_limited: true } => self.ip_take(ctx),
            Route::Engine(op) => self.engine_checks(req, ctx, op).await,
        };
        if let Some(r) = reject {
            return self.refuse(c, req, ctx, r).await;
        }
        match self.forward(c, req, ctx).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Release before answering, so a client that reads its usage next sees it.
                self.settle_quota(ctx).await;
                if ctx.status == 0 {
                    if let Some(mut r) = e.answer() {
                        if let Reject::BodyTooLarge { limit } = &mut r {
                            *limit = self.body_limit(ctx.route);
                        }
                        ctx.keep_alive = false;
                        let _ = self.answer(c, ctx, &r).await;
                    }
                }
                Err(e)
            }
        }
    }

    /// Write the gateway's own answer `r`.
    async fn answer<S: ClientIo>(
        &self,
        c: &mut Conn<S>,
        ctx: &mut Ctx,
        r: &Reject,
    ) -> Result<(), Fail> {
        ctx.reject = Some(r.reason());
        ctx.status = r.status();
        c.out.clear();
        r.write(&mut c.out, ctx.request_id.as_str(), !ctx.keep_alive);
        c.send_out().await
    }

    /// Answer `r` instead of proxying. The request's body, unread, is read and discarded when
    /// small; otherwise the connection closes after the answer (lingering briefly, so a client
    /// still sending sees the answer rather than a reset).
    async fn refuse<S: ClientIo>(
        &self,
        c: &mut Conn<S>,
        req: &Request,
        ctx: &mut Ctx,
        r: Reject,
    ) -> Result<(), Fail> {
        let discard = match req.head.body {
            Body::None => Some(0),
            Body::Length(n) if n <= DISCARD_MAX && !req.head.expect_continue => Some(n),
            _ => None,
        };
        if discard.is_none() {
            ctx.keep_alive = false;
        }
        self.answer(c, ctx, &r).await?;
        match discard {
            Some(mut left) => {
                while left > 0 {
                    if c.buf.is_empty() {
                        c.read_more().await?;
                    }
                    let n = left.min(c.buf.len() as u64);
                    c.buf.advance(n as usize);
                    left -= n;
                }
            }
            None => c.linger().await,
        }
        Ok(())
    }

    /// Step 7: send the request to its upstream and stream the answer back.
    async fn forward<S: ClientIo>(
        &self,
        c: &mut Conn<S>,
        req: &Request,
        ctx: &mut Ctx,
    ) -> Result<(), Fail> {
        let ups = &self.upstreams;
        let (up, read_timeout) = match ctx.route {
            Route::Engine(EngineOp::Events) => (&ups.engine, ups.events_read_timeout),
            r if r.is_engine() => (&ups.engine, ups.read_timeout),
            _ => (&ups.billing, ups.read_timeout),
        };
        let has_body = req.head.body != Body::None;
        if has_body && req.head.expect_continue {
            // The checks passed: invite the body (the field itself is not forwarded).
            c.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let mut connect_failures = 0u8;
        // A pooled connection the upstream closed just as it was reused fails before any
        // answer byte; a request without a body is then sent once more on a new connection.
        let mut may_resend = !has_body;
        let mut resending = false;
        let mut tcp = loop {
            // A resend always goes on a new connection.
            let pooled = if resending { None } else { up.pooled() };
            let (mut tcp, reused) = match pooled {
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
            let stamp = rewrite::Stamp {
                engine: ctx.route.is_engine(),
                user: ctx.principal.as_ref().map(|p| p.user_id),
                agent: ctx.agent.as_deref(),
                upstream_api_key: &self.cfg.upstream_api_key,
                request_id: ctx.request_id.as_str(),
                client_ip: ctx.client_ip,
                upstream_host: &up.host,
            };
            rewrite::upstream_head(&mut c.out, &req.bytes, &req.head, &stamp);
            ctx.upstream_sent = Some(Instant::now());
            let sent = if has_body {
                self.send_body(c, req, ctx, &mut tcp).await.map(|all| {
                    if !all {
                        // Answered before the whole body went up: the rest of it is still on
                        // the client connection, which closes after the answer.
                        (ctx.keep_alive, ctx.linger) = (false, true);
                    }
                })
            } else {
                timed(ups.read_timeout, tcp.write_all(&c.out))
                    .await
                    .map_err(|e| Fail::upstream_io("sending the request", e, true))
            };
            let result = match sent {
                Ok(()) => read_response_head(c, req, &mut tcp, read_timeout).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break tcp,
                Err(Fail::Upstream {
                    resendable: true, ..
                }) if reused && may_resend => {
                    (may_resend, resending) = (false, true);
                }
                Err(e) => return Err(e),
            }
        };

        let resp = &c.resp.head;
        let status = resp.status;
        ctx.upstream_status = Some(status);
        // Settle before the client sees the answer, so a client that reads its usage right
        // after a forget (or a refused store) sees the new count.
        self.settle_quota(ctx).await;
        if let Some(t) = ctx.upstream_sent {
            metrics::UPSTREAM_SECONDS_BY_UPSTREAM[usize::from(!ctx.route.is_engine())]
                .observe(t.elapsed().as_secs_f64());
        }
        let body = resp.body;
        // An HTTP/1.0 client cannot read chunked framing: it gets the data, delimited by close.
        let dechunk = body == Body::Chunked && req.head.minor == 0;
        let mut reusable =
            body != Body::Close && resp.minor == 1 && !resp.conn.close && !ctx.linger;
        if body == Body::Close {
            ctx.keep_alive = false;
        }
        c.out.clear();
        let answer = rewrite::Answer {
            rate: ctx.rate.as_ref().map(|(m, d)| (&**m, d)),
            request_id: ctx.request_id.as_str(),
            keep_alive: ctx.keep_alive,
            dechunk,
        };
        rewrite::client_head(&mut c.out, &c.resp.bytes, &c.resp.head, &answer);
        ctx.status = status;

        // The body, as it arrives (SSE included: every read is written and flushed at once).
        match body {
            Body::None => c.send_out().await?,
            Body::Length(mut left) => loop {
                let n = left.min(c.ubuf.len() as u64) as usize;
                c.out.extend_from_slice(&c.ubuf[..n]);
                c.ubuf.advance(n);
                left -= n as u64;
                c.send_out().await?;
                if left == 0 {
                    break;
                }
                if read_body_more(&mut tcp, &mut c.ubuf, read_timeout).await? == 0 {
                    return Err(Fail::upstream("closed mid-body", Reject::BadGateway));
                }
            },
            Body::Chunked => {
                let mut walker = Chunked::default();
                loop {
                    let ubuf = &c.ubuf;
                    let out = &mut c.out;
                    let n = walker
                        .walk(ubuf, |data| {
                            if dechunk {
                                out.extend_from_slice(&ubuf[data]);
                            }
                        })
                        .map_err(|e| Fail::upstream(e.to_string(), Reject::BadGateway))?;
                    if !dechunk {
                        out.extend_from_slice(&ubuf[..n]);
                    }
                    c.ubuf.advance(n);
                    if !c.out.is_empty() {
                        c.send_out().await?;
                    }
                    if walker.done() {
                        break;
                    }
                    if read_body_more(&mut tcp, &mut c.ubuf, read_timeout).await? == 0 {
                        return Err(Fail::upstream("closed mid-body", Reject::BadGateway));
                    }
                }
            }
            Body::Close => loop {
                c.out.extend_from_slice(&c.ubuf);
                c.ubuf.clear();
                if !c.out.is_empty() {
                    c.send_out().await?;
                }
                if read_body_more(&mut tcp, &mut c.ubuf, read_timeout).await? == 0 {
                    break;
                }
            },
        }
        // Bytes after the end of the answer: the upstream is out of step.
        reusable &= c.ubuf.is_empty();
        if reusable {
            up.release(tcp);
        }
        Ok(())
    }

    /// Send the head in `c.out` and the request body to the upstream, enforcing the body limit.
    /// A chunked body is re-framed: its data in chunks of the gateway's own, chunk extensions
    /// dropped, and only the trailers `gateway.allowed_trailers` lets through. `Ok(false)`: the
    /// upstream answered before the whole body was sent (the rest is not sent; neither
    /// connection can be reused).
    async fn send_body<S: ClientIo>(
        &self,
        c: &mut Conn<S>,
        req: &Request,
        ctx: &Ctx,
        tcp: &mut TcpStream,
    ) -> Result<bool, Fail> {
        let limit = self.body_limit(ctx.route);
        let t = self.upstreams.read_timeout;
        match req.head.body {
            Body::None => {}
            Body::Length(mut left) => loop {
                let n = left.min(c.buf.len() as u64) as usize;
                c.out.extend_from_slice(&c.buf[..n]);
                c.buf.advance(n);
                left -= n as u64;
                if !send_up(tcp, &c.out, t).await? {
                    return Ok(false);
                }
                c.out.clear();
                if left == 0 {
                    break;
                }
                c.read_more().await?;
            },
            Body::Chunked => {
                let mut walker = Chunked::default();
                let mut last_chunk_sent = false;
                let allowed = &self.cfg.allowed_trailers;
                loop {
                    let (buf, out) = (&c.buf, &mut c.out);
                    let n = walker
                        .walk_parts(buf, |part| match part {
                            Part::Data(r) => reframe_chunk(out, &buf[r]),
                            Part::Trailer { name, value } => {
                                if !last_chunk_sent {
                                    out.extend_from_slice(b"0\r\n");
                                    last_chunk_sent = true;
                                }
                                if rewrite::trailer_allowed(&buf[name.clone()], allowed) {
                                    h1::put_field(out, &buf[name], &buf[value]);
                                }
                            }
                        })
                        .map_err(|e| match e {
                            Invalid::Malformed(why) => {
                                Fail::Client("malformed chunked body", Some(Reject::BadRequest(why)))
                            }
                            Invalid::TooLarge => Fail::Client(
                                "malformed chunked body",
                                Some(Reject::BadRequest("chunked framing too large")),
                            ),
                        })?;
                    if walker.data > limit {
                        return Err(Fail::Client(
                            "request body too large",
                            Some(Reject::BodyTooLarge { limit }),
                        ));
                    }
                    c.buf.advance(n);
                    if walker.done() {
                        if !last_chunk_sent {
                            c.out.extend_from_slice(b"0\r\n");
                        }
                        c.out.extend_from_slice(b"\r\n");
                    }
                    if !c.out.is_empty() {
                        if !send_up(tcp, &c.out, t).await? {
                            return Ok(false);
                        }
                        c.out.clear();
                    }
                    if walker.done() {
                        break;
                    }
                    c.read_more().await?;
                }
            }
            Body::Close => unreachable!("requests are never close-delimited"),
        }
        Ok(true)
    }

    /// Runs once per request on every path: settle what is left of the quota, count, log.
    async fn finish(&self, ctx: &mut Ctx, e: Option<&Fail>) {
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

/// Read the response head into `c.resp`, passing over interim (1xx) answers: the gateway
/// answers `Expect: 100-continue` itself and does not forward it.
async fn read_response_head<S: ClientIo>(
    c: &mut Conn<S>,
    req: &Request,
    tcp: &mut TcpStream,
    read_timeout: Duration,
) -> Result<(), Fail> {
    c.ubuf.clear();
    let is_head = req.method() == "HEAD";
    let mut received = false;
    loop {
        if !c.ubuf.is_empty() {
            match h1::parse_response(&c.ubuf, &mut c.resp.head, is_head) {
                Ok(Some(len)) => {
                    let status = c.resp.head.status;
                    if (100..200).contains(&status) {
                        if status == 101 {
                            return Err(Fail::upstream(
                                "unexpected 101 Switching Protocols",
                                Reject::BadGateway,
                            ));
                        }
                        c.ubuf.advance(len);
                        continue;
                    }
                    c.resp.bytes.clear();
                    c.resp.bytes.extend_from_slice(&c.ubuf[..len]);
                    c.ubuf.advance(len);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => return Err(Fail::upstream(e.to_string(), Reject::BadGateway)),
            }
        }
        c.ubuf.reserve(4 * 1024);
        match timed(read_timeout, tcp.read_buf(&mut c.ubuf)).await {
            Ok(0) => {
                return Err(Fail::Upstream {
                    why: "closed before answering".into(),
                    reject: Reject::BadGateway,
                    resendable: !received,
                })
            }
            Ok(_) => received = true,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Fail::upstream("timed out", Reject::GatewayTimeout))
            }
            Err(e) => return Err(Fail::upstream_io("reading the response", e, !received)),
        }
    }
}

/// Write `bytes` (request head and body) to the upstream, unless it answers first: an upstream
/// that refuses a request early (billing's 413 on an oversized body) answers and closes without
/// reading the rest, and a gateway that kept writing would lose the answer to a reset.
/// `Ok(false)`: the upstream has something to say (or closed); stop sending and read it.
async fn send_up(tcp: &mut TcpStream, bytes: &[u8], t: Duration) -> Result<bool, Fail> {
    let (mut rd, mut wr) = tcp.split();
    let mut byte = [0u8; 1];
    tokio::select! {
        // Most writes complete at the first poll, before the other branch is looked at.
        biased;
        r = timed(t, wr.write_all(bytes)) => {
            r.map_err(|e| Fail::upstream_io("sending the request", e, false))?;
            Ok(true)
        }
        // A peek, not a readiness wait: readiness left over from the last answer read on this
        // connection would fire at once with nothing to read.
        _ = rd.peek(&mut byte) => Ok(false),
    }
}

/// Append one chunk holding `data` (none for empty data: that would end the body).
fn reframe_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    if !data.is_empty() {
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// Read more of a response body from the upstream into `ubuf`; `Ok(0)` at its end of stream.
async fn read_body_more(
    tcp: &mut TcpStream,
    ubuf: &mut BytesMut,
    read_timeout: Duration,
) -> Result<usize, Fail> {
    ubuf.reserve(16 * 1024);
    timed(read_timeout, tcp.read_buf(ubuf))
        .await
        .map_err(|e| Fail::upstream_io("reading the response body", e, false))
}

fn connect_error(e: ConnectError) -> Fail {
    match e {
        ConnectError::Refused(io) => Fail::upstream(format!("connect: {io}"), Reject::BadGateway),
        ConnectError::TimedOut => Fail::upstream("connect timed out", Reject::GatewayTimeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_buffers_over_the_bound_are_let_go_and_small_ones_kept() {
        // Small: emptied, the same allocation kept (nothing allocated on the request path).
        let mut small = BytesMut::with_capacity(4 * 1024);
        small.extend_from_slice(b"stale");
        let ptr = small.as_ptr();
        shrink_idle(&mut small);
        assert!(small.is_empty());
        assert_eq!((small.as_ptr(), small.capacity()), (ptr, 4 * 1024));
        let mut small = Vec::<u8>::with_capacity(IDLE_BUF_MAX);
        small.extend_from_slice(b"stale");
        shrink_idle(&mut small);
        assert!(small.is_empty());
        assert_eq!(small.capacity(), IDLE_BUF_MAX);

        // Grown past the bound: replaced by an empty, unallocated one.
        let mut big = BytesMut::with_capacity(IDLE_BUF_MAX + 1);
        big.extend_from_slice(b"stale response bytes");
        shrink_idle(&mut big);
        assert_eq!(big.capacity(), 0);
        let mut big = Vec::<u8>::with_capacity(IDLE_BUF_MAX + 1);
        big.extend_from_slice(b"a stale head");
        shrink_idle(&mut big);
        assert_eq!(big.capacity(), 0);

        // A large head read and consumed: `capacity()` says little is left, but the allocation
        // is still large, and is let go too.
        let mut consumed = BytesMut::with_capacity(h1::MAX_HEAD);
        consumed.extend_from_slice(&vec![b'x'; h1::MAX_HEAD - 1024]);
        consumed.advance(h1::MAX_HEAD - 1024);
        assert!(consumed.capacity() <= 1024);
        shrink_idle(&mut consumed);
        assert_eq!(consumed.capacity(), 0);
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_ne!(request_id(Some("has space")), "has space");
        assert_eq!(request_id(Some(&"a".repeat(65))).len(), 36);
        assert_eq!(request_id(None).len(), 36);
    }
}
