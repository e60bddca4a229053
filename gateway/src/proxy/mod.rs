//! The request path, phase by phase, one file each, in the order a request meets them:
//!
//! 0. [`conns`] — a new connection is admitted if its IP holds fewer than
//!    `max_connections_per_ip` ([`ConnsPerIp`]).
//! 1. [`conn`] — [`Conn::next_head`] reads the next request head (keep-alive, first-byte and
//!    head deadlines); [`request`] reads the request line strictly and classifies it
//!    ([`Ctx::new`]).
//! 2. [`admit`] — steps 2–6: key, principal, a scoped key's limits ([`scope`]), bucket, agent,
//!    quota ([`Gateway::admit`]).
//! 3. [`rewrite`] — the upstream head from an allow-list, the client head from the upstream's.
//! 4. [`relay`] — step 7: the body up (streamed, or re-framed when chunked), the answer down.
//! 5. [`finish`] — the quota settled exactly once, metrics, the log line.
//!
//! Every answer the gateway writes itself is a [`Reject`] (`errors.rs` decides its status); a
//! request that cannot be carried through ends in a [`request::Fail`], which says which
//! `Reject`, if any, the client still gets.
//!
//! The gateway is a pingora server application ([`ServerApp`]): pingora's listeners, server,
//! worker runtimes and graceful shutdown run it. The HTTP/1.1 exchange itself is this folder and
//! `stellar_proto::h1`: a head is parsed in place (httparse), the fields the gateway acts on are
//! picked out in the same pass, and the head sent on is written from the received bytes plus the
//! gateway's own fields. Neither pingora-proxy's `ProxyHttp` machine nor pingora's HTTP/1
//! sessions are used: on this product's hot path (a small JSON request, a small JSON answer) the
//! first cost three times nginx's CPU per request and the second, which turns every head into
//! two header maps and back, still twice — more than everything the gateway itself does.
//! BENCHMARKS.md has the measurements.

use crate::auth::AuthCache;
use crate::config::GatewayConfig;
use crate::cors::Cors;
use crate::errors::Reject;
use crate::h1::{Body, Invalid, Name};
use crate::limits::{Limiter, LocalBuckets, Rate};
use crate::metrics;
use crate::quota::InFlight;
use crate::routing::{EngineOp, Route};
use crate::tier_meta::{TierMeta, TierMetas};
use crate::upstream::{Upstream, UpstreamKind};
use crate::usage::Usage;
use async_trait::async_trait;
use bytes::Buf;
use conn::{adopt, ClientIo, Conn, Deadlines, NextRequest, LINGER};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use request::{Ctx, Fail, Request, RequestId};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use stellar_common::{Db, Tiers};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

mod admit;
mod conn;
mod conns;
mod finish;
mod relay;
mod request;
mod rewrite;
mod scope;

pub use conns::ConnsPerIp;

/// Everything a request needs. Cheap-to-clone handles only.
pub struct Gateway {
    pub cfg: Arc<GatewayConfig>,
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
    /// Which web origins may call the API ([`crate::cors`]).
    pub cors: Cors,
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
    /// `engine_host`: the `Host` the engine must see (an engine given as a URL).
    pub fn new(
        cfg: &GatewayConfig,
        engine: SocketAddr,
        engine_host: Option<String>,
        billing: SocketAddr,
    ) -> Upstreams {
        let connect = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let idle = Duration::from_secs(cfg.upstream_idle_timeout_secs);
        let mut engine = Upstream::new(UpstreamKind::Engine, engine, connect, idle);
        if let Some(h) = engine_host {
            engine.host = h.clone();
            engine.fixed_host = Some(h);
        }
        Upstreams {
            engine,
            billing: Upstream::new(UpstreamKind::Billing, billing, connect, idle),
            read_timeout: Duration::from_secs(cfg.read_timeout_secs.max(1)),
            events_read_timeout: Duration::from_secs(cfg.events_read_timeout_secs.max(1)),
        }
    }
}

/// A refused request's body up to this size is read and discarded, keeping the connection.
const DISCARD_MAX: u64 = 64 * 1024;

#[async_trait]
impl ServerApp for Gateway {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let ip = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let deadlines = Deadlines {
            io: self.upstreams.read_timeout,
            head: self.cfg.head_timeout(),
            body: self.cfg.body_timeout(),
            first_byte: self.cfg.first_byte_timeout(),
        };
        // Held until the connection is done.
        let _admitted = match ip.map(|ip| self.conns.admit(ip)) {
            Some(None) => {
                let mut io = io;
                metrics::CONNECTIONS_REFUSED.inc();
                let mut out = Vec::new();
                Reject::TooManyConnections.write(
                    &mut out,
                    RequestId::generate().as_str(),
                    true,
                    b"",
                );
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
                self.serve_connection(&mut Conn::new(tcp, ip, deadlines), shutdown)
                    .await
            }
            Ok(None) => {}
            Err(io) => {
                self.serve_connection(&mut Conn::new(io, ip, deadlines), shutdown)
                    .await
            }
        }
        None
    }
}

impl Gateway {
    /// Requests on one client connection, one after the other, until it closes.
    async fn serve_connection<S: ClientIo>(&self, c: &mut Conn<S>, shutdown: &ShutdownWatch) {
        let mut stop = shutdown.clone();
        let mut req = Request::default();
        loop {
            match c.next_head(&mut req, &mut stop).await {
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
                    r.write(&mut c.out, id.as_str(), true, b"");
                    if c.send_out().await.is_ok() {
                        c.linger().await;
                    }
                    return;
                }
            }
            metrics::INFLIGHT.inc();
            let mut ctx = Ctx::new(&req, c.ip, !*stop.borrow());
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

    /// Steps 1–8 for one request. `Err`: the client connection must not be reused (an answer
    /// was written when one still could be).
    async fn serve<S: ClientIo>(
        &self,
        c: &mut Conn<S>,
        req: &Request,
        ctx: &mut Ctx,
    ) -> Result<(), Fail> {
        let limit = self.body_limit(ctx.route);
        let preflight = self.cors_of(req, ctx);
        let reject = match ctx.route {
            Route::Invalid => ctx.refused.take(),
            _ if preflight.is_some() => preflight,
            _ if matches!(req.head.body, Body::Length(n) if n > limit) => {
                Some(Reject::BodyTooLarge { limit })
            }
            // Health with a key answers for the caller's own space; without one, untenanted.
            Route::Health
                if req.get(Name::XApiKey).is_some() || req.get(Name::Authorization).is_some() =>
            {
                self.engine_checks(req, ctx, EngineOp::Other).await
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

    /// The CORS grant of the request's `Origin` (kept in `ctx` for the answer), and the answer
    /// to a preflight (`OPTIONS` with `Origin` and an `Access-Control-*` question).
    fn cors_of(&self, req: &Request, ctx: &mut Ctx) -> Option<Reject> {
        let origin = req.get(Name::Origin)?;
        let grant = self.cors.grant(origin);
        if let Some(g) = grant {
            ctx.cors = Some((String::from_utf8_lossy(origin).into_owned(), g));
        }
        let preflight = req.method() == "OPTIONS" && req.get(Name::AccessControl).is_some();
        preflight.then_some(match grant {
            Some(_) => Reject::Preflight,
            None => Reject::OriginNotAllowed,
        })
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
        let mut extra = Vec::new();
        if let Some((origin, g)) = &ctx.cors {
            Cors::write_fields(&mut extra, origin.as_bytes(), *g);
        }
        r.write(&mut c.out, ctx.request_id.as_str(), !ctx.keep_alive, &extra);
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
}
