//! Upstreams that show what the gateway forwarded, and raw-socket helpers: the echo upstream
//! (axum), the [`Capture`] upstream (exact bytes), [`serve_raw`] for scripted ones, and a crude
//! HTTP/1 client ([`raw_exchange`], [`read_until`]) so a test controls every byte on the wire.

use axum::body::Bytes;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// Listen on a free loopback port and run `conn` on every connection accepted there, each in a
/// task of its own. Returns the address.
pub async fn serve_raw<F, Fut>(conn: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(conn(s));
        }
    });
    addr
}

/// A tiny upstream that shows what it received: `/api/v1/echo` (and every other path) answers
/// with the request body unchanged and the request line and headers as JSON in
/// `x-echo-request`; `?sleep_ms=N` delays the answer; `/api/v1/bytes?n=N` answers N bytes of
/// a fixed pseudo-random pattern.
pub async fn start_echo() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new()
        .route("/api/v1/bytes", axum::routing::get(bytes_handler))
        .fallback(echo_handler);
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    addr
}

pub fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect()
}

async fn bytes_handler(Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let n: usize = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(0);
    ([("content-type", "application/octet-stream")], pattern(n))
}

async fn echo_handler(req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let q: HashMap<String, String> = parts.uri.query().map(url_pairs).unwrap_or_default();
    if let Some(ms) = q.get("sleep_ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body: Bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = header_map(&parts.headers);
    let info = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
    });
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert("x-echo-request", info.to_string().parse().unwrap());
    resp.headers_mut()
        .insert("content-type", "application/octet-stream".parse().unwrap());
    resp
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn header_map(h: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in h {
        m.entry(k.as_str().to_string())
            .and_modify(|e| {
                if let serde_json::Value::String(s) = e {
                    *s = format!("{s}, {}", v.to_str().unwrap_or(""));
                }
            })
            .or_insert_with(|| serde_json::Value::String(v.to_str().unwrap_or("").to_string()));
    }
    m
}

/// The echo upstream's view of the request that produced `resp`.
pub fn echoed(resp: &reqwest::Response) -> serde_json::Value {
    serde_json::from_str(
        resp.headers()
            .get("x-echo-request")
            .expect("echo header")
            .to_str()
            .unwrap(),
    )
    .unwrap()
}

/// Send raw bytes, read what comes back until the peer closes or `until` is seen after a
/// complete head (a crude HTTP/1 client, so the test controls every byte on the wire).
pub async fn raw_exchange(addr: &str, req: &[u8], until: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    read_until(&mut s, until).await
}

/// Read from `s` until `until` has been seen (with an empty `until`: until the peer closes), or
/// 5 s pass.
pub async fn read_until(s: &mut (impl tokio::io::AsyncRead + Unpin), until: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !until.is_empty() && String::from_utf8_lossy(&out).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw upstream that records exactly the bytes it received. Each connection is read until
/// the peer closes or 300 ms pass without a byte, then answered `200 ok` and closed: it never
/// parses, so it shows the bytes a server with any parser would see.
pub struct Capture {
    pub addr: String,
    /// What each connection received, in order of connection.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Capture {
    pub async fn start() -> Capture {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let addr = serve_raw(move |mut s| {
            let log = log.clone();
            async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                log.lock().unwrap().push(got);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            }
        })
        .await;
        Capture { addr, seen }
    }

    /// Everything received so far, all connections, as text.
    pub fn text(&self) -> String {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n--\n")
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}
