//! Step 7: send the request to its upstream (head from [`rewrite`], body streamed or
//! re-framed) and relay the answer back as it arrives (SSE included), with the upstream's
//! deadlines, the connect retries and the one resend of a bodiless request on a reused
//! connection the upstream had closed.

use super::conn::{timed, ClientIo, Conn};
use super::request::{Ctx, Fail, Request};
use super::{rewrite, Gateway};
use crate::errors::Reject;
use crate::h1::{self, Body, Chunked, Invalid, Part};
use crate::metrics;
use crate::routing::{EngineOp, Route};
use crate::upstream::ConnectError;
use bytes::{Buf, BytesMut};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A failed connect is retried this many times: nothing was sent yet, so it is always safe,
/// and a loaded upstream's accept queue can drop a SYN under a burst of new connections.
const CONNECT_RETRIES: u8 = 2;

impl Gateway {
    /// Step 7: send the request to its upstream and stream the answer back.
    pub(super) async fn forward<S: ClientIo>(
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
                fixed_host: up.fixed_host.is_some(),
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
            metrics::UPSTREAM_SECONDS_BY_UPSTREAM[up.kind.index()]
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
            cors: ctx.cors.as_ref().map(|(o, g)| (o.as_bytes(), *g)),
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
    pub(super) async fn send_body<S: ClientIo>(
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
                            Invalid::Malformed(why) => Fail::Client(
                                "malformed chunked body",
                                Some(Reject::BadRequest(why)),
                            ),
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
        r = timed(t, wr.write_all(bytes)) => match r {
            Ok(()) => Ok(true),
            // An upstream that answered and closed without reading the rest makes the write
            // fail (its kernel resets the connection); its answer is still there to be read.
            Err(e) => match tokio::time::timeout(ANSWER_GRACE, rd.peek(&mut byte)).await {
                Ok(Ok(n)) if n > 0 => Ok(false),
                _ => Err(Fail::upstream_io("sending the request", e, false)),
            },
        },
        // A peek, not a readiness wait: readiness left over from the last answer read on this
        // connection would fire at once with nothing to read.
        _ = rd.peek(&mut byte) => Ok(false),
    }
}

/// How long a failed write to the upstream waits for an answer that may explain it.
const ANSWER_GRACE: Duration = Duration::from_millis(200);

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
