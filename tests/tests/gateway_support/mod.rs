//! Shared set-up for the gateway end-to-end tests: an account DB (SQLite file or a fresh
//! PostgreSQL database), the real engine and gateway binaries on free ports, a small echo
//! upstream for what the real engine cannot show (exact headers and bytes it received, slow
//! answers), and a metrics reader.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use stellar_common::Db;
use stellar_tests::spawn::{free_addr, pg_url_for_test, Service, TempDir};

/// Which account DB a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run `$body(Backend)` as two tests, one per back-end.
#[macro_export]
macro_rules! both_dbs {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $body($crate::gateway_support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $body($crate::gateway_support::Backend::Postgres).await
            }
        }
    };
}

/// Tiers with limits big enough never to get in the way.
pub const ROOMY_TIERS: &str = "[free]\nmax_memories = 100000\nmax_agents = 3\nrequests_per_minute = 100000\nburst = 100000\nmax_api_keys = 5\nprice_usd = 0\nprice_krw = 0\n\n[pro]\nmax_memories = 200000\nmax_agents = 5\nrequests_per_minute = 200000\nburst = 200000\nmax_api_keys = 5\nprice_usd = 29\nprice_krw = 39000\n";

/// An account DB for one test.
pub struct AccountDb {
    pub url: String,
    pub db: Db,
    pub backend: Backend,
}

/// `None` (test skipped, reason printed) when PostgreSQL is wanted but unreachable outside CI.
pub async fn account_db(backend: Backend, dir: &TempDir) -> Option<AccountDb> {
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/accounts.db", dir.path().display()),
        Backend::Postgres => tokio::task::spawn_blocking(pg_url_for_test).await.ok()??,
    };
    let db = stellar_tests::accounts::open(&url).await;
    Some(AccountDb { url, db, backend })
}

pub struct Engine {
    pub svc: Service,
    pub addr: String,
}

pub fn start_engine(dir: &TempDir) -> Engine {
    let addr = free_addr();
    let data = dir.path().join("engine");
    std::fs::create_dir_all(&data).unwrap();
    let svc = Service::start(
        "stellar-engine",
        &[
            ("STELLAR_ENGINE_ADDR", addr.clone()),
            ("STELLAR_ENGINE_METRICS_ADDR", free_addr()),
            ("STELLAR_DATA_DIR", data.display().to_string()),
            ("STELLAR_ENGINE_DB_URL", String::new()),
        ],
        &format!("http://{addr}/api/v1/health"),
    )
    .expect("engine starts");
    Engine { svc, addr }
}

impl Engine {
    /// How many memories the engine holds for `user`, asked directly (not through a gateway).
    pub async fn total_memories(&self, user: uuid::Uuid) -> i64 {
        client()
            .get(format!("http://{}/api/v1/stats", self.addr))
            .header("X-Stellar-User", user.to_string())
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["total_memories"]
            .as_i64()
            .unwrap()
    }
}

pub struct Gateway {
    pub svc: Service,
    pub addr: String,
    pub metrics: String,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Start the gateway in front of `engine` (and `billing`), on `db_url`, with `tiers` and extra
/// environment. Waits until `/readyz` says the DB is reachable.
pub fn start_gateway(
    dir: &TempDir,
    db_url: &str,
    engine: &str,
    billing: &str,
    tiers: &str,
    extra: &[(&str, String)],
) -> Gateway {
    let addr = free_addr();
    let metrics = free_addr();
    let tiers_path = dir
        .path()
        .join(format!("tiers-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tiers_path, tiers).unwrap();
    let mut env = vec![
        ("STELLAR_GATEWAY_ADDR", addr.clone()),
        ("STELLAR_GATEWAY_METRICS_ADDR", metrics.clone()),
        ("STELLAR_GATEWAY_ENGINE_UPSTREAM", engine.to_string()),
        ("STELLAR_GATEWAY_BILLING_UPSTREAM", billing.to_string()),
        ("STELLAR_DB_URL", db_url.to_string()),
        ("STELLAR_DATA_DIR", dir.path().display().to_string()),
        ("STELLAR_TIERS_FILE", tiers_path.display().to_string()),
        ("STELLAR_GATEWAY_GRACE_PERIOD_SECS", "1".to_string()),
        ("STELLAR_GATEWAY_SHUTDOWN_TIMEOUT_SECS", "1".to_string()),
        ("STELLAR_GATEWAY_USAGE_FLUSH_SECS", "1".to_string()),
        (
            "RUST_LOG",
            "info,pingora_core=warn,pingora_proxy=warn,sqlx=warn".to_string(),
        ),
    ];
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k, v.clone()));
    }
    let svc = Service::start("stellar-gateway", &env, &format!("http://{metrics}/readyz"))
        .expect("gateway starts");
    Gateway { svc, addr, metrics }
}

/// A gateway on a SQLite account DB in front of the echo upstream (as engine and billing), with
/// extra environment; also the echo's address. `None` as [`account_db`].
pub async fn echo_gateway(
    name: &str,
    extra: &[(&str, String)],
) -> Option<(TempDir, AccountDb, Gateway, String)> {
    let dir = TempDir::new(name);
    let adb = account_db(Backend::Sqlite, &dir).await?;
    let echo = start_echo().await;
    let gw = start_gateway(&dir, &adb.url, &echo, &echo, ROOMY_TIERS, extra);
    Some((dir, adb, gw, echo))
}

/// What most gateway tests run on: a temp directory, the account DB on `backend`, the engine,
/// and a gateway in front of it (no billing behind it) with `tiers` and extra environment.
pub struct Stack {
    pub dir: TempDir,
    pub adb: AccountDb,
    pub engine: Engine,
    pub gw: Gateway,
}

/// Start a [`Stack`]; `None` as [`account_db`].
pub async fn stack(
    backend: Backend,
    name: &str,
    tiers: &str,
    extra: &[(&str, String)],
) -> Option<Stack> {
    let dir = TempDir::new(name);
    let adb = account_db(backend, &dir).await?;
    let engine = start_engine(&dir);
    let gw = start_gateway(&dir, &adb.url, &engine.addr, &free_addr(), tiers, extra);
    Some(Stack {
        dir,
        adb,
        engine,
        gw,
    })
}

pub struct Billing {
    pub svc: Service,
    pub addr: String,
}

/// Start the real billing binary on `db_url` with `tiers` (so its key limits match the
/// gateway's), without payment providers: enough for `/auth/*`.
pub fn start_billing(dir: &TempDir, db_url: &str, tiers: &str) -> Billing {
    let addr = free_addr();
    let tiers_path = dir.path().join(format!(
        "billing-tiers-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&tiers_path, tiers).unwrap();
    let env = [
        ("STELLAR_BILLING_ADDR", addr.clone()),
        ("STELLAR_BILLING_METRICS_ADDR", free_addr()),
        ("STELLAR_DB_URL", db_url.to_string()),
        ("STELLAR_DATA_DIR", dir.path().display().to_string()),
        ("STELLAR_TIERS_FILE", tiers_path.display().to_string()),
        ("RUST_LOG", "info,sqlx=warn".to_string()),
    ];
    let svc = Service::start("stellar-billing", &env, &format!("http://{addr}/healthz"))
        .expect("billing starts");
    Billing { svc, addr }
}

/// Through the gateway `gw`: register a new account at billing (`POST /auth/register`), then
/// give it a second key (`POST /auth/api-keys`). Returns (first key, second key, second key's id).
pub async fn register_with_two_keys(gw: &Gateway) -> (String, String, String) {
    let c = client();
    let email = format!("{}@gw-test.example", uuid::Uuid::new_v4().simple());
    let r = c
        .post(gw.url("/auth/register"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register through the gateway");
    let first = r.json::<serde_json::Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .post(gw.url("/auth/api-keys"))
        .header("X-API-Key", &first)
        .json(&serde_json::json!({ "name": "second" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "second key through the gateway");
    let v = r.json::<serde_json::Value>().await.unwrap();
    (
        first,
        v["api_key"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// Revoke key `id` through the gateway with billing's `DELETE /auth/api-keys/{id}`,
/// authenticated by `with_key`. Returns when billing has answered 200.
pub async fn revoke_through_billing(gw: &Gateway, id: &str, with_key: &str) {
    let r = client()
        .delete(gw.url(&format!("/auth/api-keys/{id}")))
        .header("X-API-Key", with_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "billing revokes the key");
    let v = r.json::<serde_json::Value>().await.unwrap();
    assert_eq!(v["revoked"], true);
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The `/metrics` text.
pub async fn metrics_text(gw: &Gateway) -> String {
    client()
        .get(format!("http://{}/metrics", gw.metrics))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sum of all samples of `name` whose labels contain every `filters` pair (`k="v"`).
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Poll `f` until it returns true or `within` passes; returns the time it took.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
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
                });
            }
        });
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
