//! One client connection: its socket, the buffers its requests reuse and its deadlines, with
//! the verbs the request path uses ([`Conn::next_head`], [`Conn::read_more`], [`Conn::send`],
//! [`Conn::send_out`], [`Conn::linger`]). Every wait on the client has a deadline here, and
//! nothing else in the gateway touches the client socket.

use super::request::{Fail, Request};
use crate::errors::Reject;
use crate::h1::{self, Invalid};
use bytes::{Buf, BytesMut};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::task::Poll;
use std::time::Duration;
// tokio's clock, so that the deadlines follow a paused clock in tests (the same as
// `std::time::Instant` otherwise).
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Downstream keep-alive: how long an idle client connection is kept. The deadline of a
/// request head, once it has started arriving, is `head_timeout_secs`
/// ([`GatewayConfig::head_timeout`]).
pub(super) const KEEPALIVE: Duration = Duration::from_secs(75);

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
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// The client deadlines of a connection (from `[gateway]`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    /// Per read and write of the client, once a request has started.
    pub io: Duration,
    /// One deadline for a whole request head ([`crate::GatewayConfig::head_timeout`]).
    pub head: Duration,
    /// One deadline for a whole request body ([`crate::GatewayConfig::body_timeout`]).
    pub body: Duration,
    /// A new connection's first byte ([`crate::GatewayConfig::first_byte_timeout`]).
    pub first_byte: Duration,
}

/// What a client connection can be: a TCP stream re-registered on the serving thread
/// ([`adopt`]), or pingora's stream as it came.
pub(super) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// One client connection and the buffers its requests reuse.
pub(super) struct Conn<S> {
    pub(super) io: S,
    pub(super) ip: Option<IpAddr>,
    /// Bytes received from the client and not used yet (a pipelined next request, body bytes).
    pub(super) buf: BytesMut,
    /// The head sent upstream, then the bytes written to the client.
    pub(super) out: Vec<u8>,
    /// Bytes received from the upstream.
    pub(super) ubuf: BytesMut,
    /// The upstream's response head.
    pub(super) resp: Request,
    pub(super) deadlines: Deadlines,
    /// When the gateway first waited for more of the current request's body.
    pub(super) body_since: Option<Instant>,
    /// A request has been read on this connection (the idle wait is then the keep-alive
    /// timeout, not the first-byte timeout).
    pub(super) served: bool,
}

/// An I/O operation with a deadline. Most complete at the first poll (the socket was ready):
/// those never arm a timer.
pub(super) async fn timed<T>(
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
    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let io = &mut self.io;
        timed(self.deadlines.io, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .map_err(|_| Fail::Client("write failed", None))
    }

    /// Write `self.out` to the client, flush, and empty it (its capacity stays).
    pub(super) async fn send_out(&mut self) -> Result<(), Fail> {
        let mut out = std::mem::take(&mut self.out);
        let r = self.send(&out).await;
        out.clear();
        self.out = out;
        r
    }

    /// Before closing with unread request bytes: end the answer (FIN), then read and discard
    /// for a moment, so the client reads the answer instead of a reset.
    pub(super) async fn linger(&mut self) {
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
    pub(super) async fn read_more(&mut self) -> Result<(), Fail> {
        self.buf.reserve(8 * 1024);
        let since = *self.body_since.get_or_insert_with(Instant::now);
        let left = self.deadlines.body.saturating_sub(since.elapsed());
        match timed(left.min(self.deadlines.io), self.io.read_buf(&mut self.buf)).await {
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
pub(super) enum NextRequest {
    Ready,
    /// The client closed, went idle past the keep-alive, did not finish a head within
    /// `head_timeout_secs`, or the server is shutting down.
    Closed,
    Invalid(Invalid),
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
pub(super) fn adopt(io: Stream) -> Result<Option<TcpStream>, Stream> {
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
    pub(super) fn new(io: S, ip: Option<IpAddr>, deadlines: Deadlines) -> Conn<S> {
        Conn {
            io,
            ip,
            buf: BytesMut::new(),
            out: Vec::new(),
            ubuf: BytesMut::new(),
            resp: Request::default(),
            deadlines,
            body_since: None,
            served: false,
        }
    }

    /// Idle between requests (no request bytes pending in `buf`): empty the connection's
    /// buffers and let go of those that have grown past [`IDLE_BUF_MAX`]. `req` is the last
    /// request's head, done with; what is left in `ubuf` is stale (a response head read starts
    /// by clearing it).
    pub(super) fn shrink_buffers(&mut self, req: &mut Request) {
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

impl<S: ClientIo> Conn<S> {
    /// Read and parse the next request head into `req`: the verb that waits for a client.
    pub(super) async fn next_head(
        &mut self,
        req: &mut Request,
        stop: &mut ShutdownWatch,
    ) -> NextRequest {
        let mut started: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                match h1::parse_request(&self.buf, &mut req.head) {
                    Ok(Some(len)) => {
                        self.served = true;
                        req.bytes.clear();
                        req.bytes.extend_from_slice(&self.buf[..len]);
                        self.buf.advance(len);
                        return NextRequest::Ready;
                    }
                    Ok(None) => {}
                    Err(e) => return NextRequest::Invalid(e),
                }
            }
            let read = if self.buf.is_empty() {
                // Idle between requests: closed at shutdown (a request already arriving is
                // served, with `Connection: close`).
                if *stop.borrow() {
                    return NextRequest::Closed;
                }
                self.shrink_buffers(req);
                self.buf.reserve(4 * 1024);
                let idle = if self.served {
                    KEEPALIVE
                } else {
                    self.deadlines.first_byte
                };
                tokio::select! {
                    biased;
                    r = timed(idle, self.io.read_buf(&mut self.buf)) => r,
                    _ = stop.changed() => return NextRequest::Closed,
                }
            } else {
                // One deadline for the whole head, however slowly its bytes trickle in, from
                // the first wait for more of it (the idle wait above does not count).
                self.buf.reserve(4 * 1024);
                let since = *started.get_or_insert_with(Instant::now);
                let left = self.deadlines.head.saturating_sub(since.elapsed());
                timed(left, self.io.read_buf(&mut self.buf)).await
            };
            match read {
                Ok(n) if n > 0 => {}
                _ => return NextRequest::Closed,
            }
        }
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

    // -----------------------------------------------------------------------------------------
    // The verbs over an in-memory connection, on a paused clock: each deadline is checked to the
    // millisecond without waiting for it.
    // -----------------------------------------------------------------------------------------

    const DEADLINES: Deadlines = Deadlines {
        io: Duration::from_secs(30),
        head: Duration::from_secs(7),
        body: Duration::from_secs(11),
        first_byte: Duration::from_secs(3),
    };

    /// A connection over one end of a pipe; the other end is the client.
    fn piped() -> (Conn<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        (Conn::new(server, None, DEADLINES), client)
    }

    fn watch() -> (tokio::sync::watch::Sender<bool>, ShutdownWatch) {
        tokio::sync::watch::channel(false)
    }

    /// `next_head`'s outcome and how long (paused time) it took.
    async fn next(
        c: &mut Conn<tokio::io::DuplexStream>,
        stop: &mut ShutdownWatch,
    ) -> (&'static str, Duration) {
        let mut req = Request::default();
        let t = Instant::now();
        let what = match c.next_head(&mut req, stop).await {
            NextRequest::Ready => "ready",
            NextRequest::Closed => "closed",
            NextRequest::Invalid(_) => "invalid",
        };
        (what, t.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_is_closed_at_the_first_byte_deadline() {
        let (mut c, _client) = piped();
        let (_tx, mut stop) = watch();
        assert_eq!(
            next(&mut c, &mut stop).await,
            ("closed", DEADLINES.first_byte)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_request_an_idle_connection_gets_the_keep_alive_timeout() {
        let (mut c, mut client) = piped();
        let (_tx, mut stop) = watch();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(next(&mut c, &mut stop).await, ("ready", Duration::ZERO));
        assert_eq!(next(&mut c, &mut stop).await, ("closed", KEEPALIVE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_has_one_deadline_however_it_trickles_in() {
        let (mut c, mut client) = piped();
        let (_tx, mut stop) = watch();
        let trickle = tokio::spawn(async move {
            for b in b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: aaaaaaaaaaaa" {
                client.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            client
        });
        // The first byte arrives at once; from then on the whole head has `head` seconds.
        let (what, took) = next(&mut c, &mut stop).await;
        assert_eq!(what, "closed");
        assert!(
            took >= DEADLINES.head && took < DEADLINES.head + Duration::from_millis(250),
            "{took:?}"
        );
        drop(trickle);
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_heads_are_read_one_by_one_and_a_bad_one_is_invalid() {
        let (mut c, mut client) = piped();
        let (_tx, mut stop) = watch();
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut req = Request::default();
        for want in ["/a", "/b"] {
            assert!(matches!(
                c.next_head(&mut req, &mut stop).await,
                NextRequest::Ready
            ));
            assert_eq!(req.head.target(&req.bytes), want);
        }
        assert!(matches!(
            c.next_head(&mut req, &mut stop).await,
            NextRequest::Invalid(Invalid::Malformed("no Host in an HTTP/1.1 request"))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_at_shutdown() {
        let (mut c, _client) = piped();
        let (tx, mut stop) = watch();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(true).unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert_eq!(
            next(&mut c, &mut stop).await,
            ("closed", Duration::from_secs(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_has_one_deadline_and_ends_in_a_408() {
        let (mut c, mut client) = piped();
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                client.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let t = Instant::now();
        let err = loop {
            match c.read_more().await {
                Ok(()) => continue,
                Err(e) => break e,
            }
        };
        // Each read succeeds within its own timeout; the body as a whole runs out.
        let took = t.elapsed();
        assert!(
            took >= DEADLINES.body && took <= DEADLINES.body + Duration::from_secs(1),
            "{took:?}"
        );
        assert!(
            matches!(err, Fail::Client(_, Some(Reject::RequestTimeout))),
            "{err}"
        );
        assert!(
            c.buf.len() >= 10,
            "the bytes that came were kept: {}",
            c.buf.len()
        );
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn send_writes_and_linger_ends_with_a_fin() {
        let (mut c, mut client) = piped();
        c.out
            .extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        c.send_out().await.unwrap();
        assert!(c.out.is_empty(), "emptied, capacity kept");
        let t = Instant::now();
        c.linger().await;
        // The client neither sends nor closes: lingering ends at its bound.
        assert_eq!(t.elapsed(), LINGER);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
}
