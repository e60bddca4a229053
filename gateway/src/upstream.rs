//! Connections to the upstreams (the engine and billing): connect with a deadline, and keep idle
//! keep-alive connections in a small pool per worker thread.
//!
//! Why our own pool instead of pingora's connector pool: pingora's pool watches every idle
//! connection with a spawned task, on a random worker thread, and checks the socket's peer
//! address on every reuse — about three extra system calls, a task spawn and two cross-thread
//! wake-ups per request, which on this product's hot path cost more than all of the gateway's own
//! work (see BENCHMARKS.md). Here an idle connection is just parked in a per-thread stack; on
//! reuse a zero-cost readiness poll tells whether the upstream closed or wrote to it meanwhile,
//! and connections idle longer than `idle_timeout` are dropped.
//!
//! Dropped on time, not only when next looked at: a thread that parks a connection starts one
//! sweeper task for its pools (on its own single-threaded runtime), which closes what has been
//! idle for `idle_timeout` and ends when the pools are empty. An upstream therefore never sees a
//! gateway hold an idle connection much past `upstream_idle_timeout_secs`, however quiet the
//! gateway is. (With `gateway.work_stealing = true` there is no per-thread runtime to pin the
//! sweeper to: idle connections are then dropped when their thread next uses its pool.)

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// Idle connections kept per upstream and worker thread.
const POOL_PER_THREAD: usize = 256;

/// One upstream: where it is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Which upstream this is; also which of the per-thread pools holds its idle connections.
    pub kind: UpstreamKind,
    pub addr: SocketAddr,
    /// `addr` as a `Host` value (sent when the client sent none).
    pub host: String,
    /// The `Host` every request to this upstream carries instead of the client's (an engine
    /// given as a URL: its authority).
    pub fixed_host: Option<String>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The two upstreams (a metric label, and the index of their per-thread pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    Engine,
    Billing,
}

impl UpstreamKind {
    /// Both, in [`index`](UpstreamKind::index) order.
    pub const ALL: [UpstreamKind; 2] = [UpstreamKind::Engine, UpstreamKind::Billing];

    pub fn index(self) -> usize {
        match self {
            UpstreamKind::Engine => 0,
            UpstreamKind::Billing => 1,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            UpstreamKind::Engine => "engine",
            UpstreamKind::Billing => "billing",
        }
    }
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    TimedOut,
}

struct Idle {
    addr: SocketAddr,
    expires: Instant,
    stream: TcpStream,
}

thread_local! {
    static POOLS: RefCell<[Vec<Idle>; UpstreamKind::ALL.len()]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    /// Whether this thread's pools have a sweeper task.
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

impl Upstream {
    /// Each upstream has its own pool.
    pub fn new(
        kind: UpstreamKind,
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Upstream {
        Upstream {
            kind,
            addr,
            host: addr.to_string(),
            fixed_host: None,
            connect_timeout,
            idle_timeout,
        }
    }

    /// A pooled connection that is still usable, if this thread has one.
    pub fn pooled(&self) -> Option<TcpStream> {
        loop {
            let idle = POOLS.with(|p| p.borrow_mut()[self.kind.index()].pop())?;
            if idle.addr != self.addr || Instant::now() >= idle.expires {
                continue;
            }
            if let Some(stream) = still_idle(idle.stream) {
                return Some(stream);
            }
        }
    }

    /// A new connection (TCP_NODELAY), within the connect timeout.
    pub async fn connect(&self) -> Result<TcpStream, ConnectError> {
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.addr),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Err(_) => return Err(ConnectError::TimedOut),
        };
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Park a connection whose last exchange finished cleanly and may be reused.
    pub fn release(&self, stream: TcpStream) {
        POOLS.with(|p| {
            let mut pools = p.borrow_mut();
            let pool = &mut pools[self.kind.index()];
            if pool.len() >= POOL_PER_THREAD {
                // The oldest idle connection goes; the hot ones stay at the top.
                pool.remove(0);
            }
            pool.push(Idle {
                addr: self.addr,
                expires: Instant::now() + self.idle_timeout,
                stream,
            });
        });
        if !SWEEPING.get() {
            self.start_sweeper();
        }
    }

    /// Close this thread's expired idle connections every `idle_timeout / 4` (at least 50 ms,
    /// at most 5 s) until its pools are empty.
    fn start_sweeper(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
            return;
        }
        SWEEPING.set(true);
        let tick = (self.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                if sweep(Instant::now()) == 0 {
                    SWEEPING.set(false);
                    return;
                }
            }
        });
    }
}

/// Drop this thread's idle connections that expired by `now`; how many are left.
fn sweep(now: Instant) -> usize {
    POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        pools.iter_mut().fold(0, |left, pool| {
            pool.retain(|i| i.expires > now);
            left + pool.len()
        })
    })
}

/// An idle keep-alive connection must have nothing to read: end-of-file means the upstream
/// closed it, bytes mean it is out of step. Polled once with a no-op waker, which costs no
/// system call unless the socket was signalled readable meanwhile.
fn still_idle(mut stream: TcpStream) -> Option<TcpStream> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    match Pin::new(&mut stream).poll_read(&mut cx, &mut buf) {
        Poll::Pending => Some(stream),
        Poll::Ready(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// An idle pooled connection is closed once `idle_timeout` has passed, with no traffic that
    /// would look at the pool; one still within it stays open.
    #[tokio::test(flavor = "current_thread")]
    async fn idle_connections_are_closed_on_time_without_traffic() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let short = Upstream::new(
            UpstreamKind::Engine,
            addr,
            Duration::from_secs(1),
            Duration::from_millis(300),
        );
        let long = Upstream::new(
            UpstreamKind::Billing,
            addr,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let a = short.connect().await.unwrap();
        let (mut a_peer, _) = listener.accept().await.unwrap();
        let b = long.connect().await.unwrap();
        let (mut b_peer, _) = listener.accept().await.unwrap();
        short.release(a);
        long.release(b);

        let started = Instant::now();
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), a_peer.read(&mut byte))
            .await
            .expect("the idle connection is closed by the sweeper")
            .unwrap();
        assert_eq!(n, 0, "end of file");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "not before its time"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), b_peer.read(&mut byte))
                .await
                .is_err(),
            "a connection within its idle time stays open"
        );
        assert!(
            SWEEPING.get(),
            "the sweeper runs while the pools hold connections"
        );
        assert!(long.pooled().is_some(), "and it is still usable");
    }
}
