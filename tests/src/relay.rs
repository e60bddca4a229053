//! A TCP relay a test puts between a service and one of its dependencies, to cut the
//! dependency (`sever`: every relayed connection is closed and new ones are closed on accept,
//! while the port stays bound) or slow it down (`set_delay`: each piece of the dependency's
//! answer is held back), without touching the dependency's process. Runs on the test's tokio
//! runtime; everything stops when the relay is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Shared {
    severed: AtomicBool,
    delay_ms: AtomicU64,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Relay {
    /// Where clients connect instead of the dependency (`127.0.0.1:port`).
    pub addr: String,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listen on a free port and relay each connection to `upstream`.
    pub async fn start(upstream: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay binds");
        let addr = listener.local_addr().expect("relay addr").to_string();
        let shared = Arc::new(Shared::default());
        let (s, upstream) = (shared.clone(), upstream.to_string());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.severed.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (s2, upstream) = (s.clone(), upstream.clone());
                let task = tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(n) if n > 0 => n,
                                _ => break,
                            };
                            let delay = s2.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
                let mut conns = s.conns.lock().unwrap();
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        Relay {
            addr,
            shared,
            accept,
        }
    }

    /// Cut the dependency: close every relayed connection, and close new ones at once.
    pub fn sever(&self) {
        self.shared.severed.store(true, Ordering::SeqCst);
        for t in self.shared.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Relay new connections again.
    pub fn restore(&self) {
        self.shared.severed.store(false, Ordering::SeqCst);
    }

    /// Hold back each piece of the dependency's answers by `d` (zero: none).
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Connections being relayed now.
    pub fn open_connections(&self) -> usize {
        let mut conns = self.shared.conns.lock().unwrap();
        conns.retain(|t| !t.is_finished());
        conns.len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}
