//! The floor under any proxy on this machine: a TCP relay that copies bytes between each client
//! connection and its own upstream connection and does nothing else (no HTTP parsing, no auth,
//! no pool). `stellar-bench gateway` runs it as a separate process, beside nginx, so the p99
//! that a second TCP hop alone adds at a given rate is measured in the same run as the gateway's.
//!
//! One single-threaded runtime per thread, each with its own `SO_REUSEPORT` listener: the
//! kernel spreads connections, and a connection never leaves the thread that accepted it.

use std::net::SocketAddr;

/// Relay `listen` to `upstream` on `threads` threads until killed.
pub fn run(listen: SocketAddr, upstream: SocketAddr, threads: usize) -> anyhow::Result<()> {
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        // The socket must be bound and listening inside its runtime.
        let listener = rt.block_on(async {
            socket.bind(listen)?;
            socket.listen(1024)
        })?;
        handles.push(std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(relay_one(client, upstream));
                }
            })
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

async fn relay_one(mut client: tokio::net::TcpStream, upstream: SocketAddr) {
    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
}
