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

use std::cell::RefCell;
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
    /// Which of the per-thread pools holds its idle connections.
    slot: usize,
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Refused(std::io::Error),
    TimedOut,
}

struct Idle {
    addr: SocketAddr,
    since: Instant,
    stream: TcpStream,
}

thread_local! {
    static POOLS: RefCell<[Vec<Idle>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

impl Upstream {
    /// `slot` is 0 or 1: each upstream has its own pool.
    pub fn new(
        slot: usize,
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Upstream {
        assert!(slot < 2, "two upstream pools");
        Upstream {
            slot,
            addr,
            connect_timeout,
            idle_timeout,
        }
    }

    /// A pooled connection that is still usable, if this thread has one.
    pub fn pooled(&self) -> Option<TcpStream> {
        loop {
            let idle = POOLS.with(|p| p.borrow_mut()[self.slot].pop())?;
            if idle.addr != self.addr || idle.since.elapsed() >= self.idle_timeout {
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
            let pool = &mut pools[self.slot];
            if pool.len() >= POOL_PER_THREAD {
                // The oldest idle connection goes; the hot ones stay at the top.
                pool.remove(0);
            }
            pool.push(Idle {
                addr: self.addr,
                since: Instant::now(),
                stream,
            });
        });
    }
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
