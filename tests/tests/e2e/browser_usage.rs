//! Scoped keys and the usage history (issue 15) in a real browser: Debian's Chromium, headless,
//! driven by `tests/browser/usage.mjs` (playwright-core) against the real engine, billing and
//! gateway (usage flushed every second).
//!
//! Billing runs with `immediate_key` on: this test registers the account and hands its key to the
//! flow, which signs in with it and creates a read-only, agent-bound key in the page. The flow then
//! asks this test for traffic (`POST /traffic {"owner","reader"}` on a small loopback server):
//! requests through the gateway with both keys, answered with what was sent and how the gateway
//! answered (`{"requests":[{"key","route","status"}]}`); the page must then count exactly those.
//! The same server is the webhook endpoint the flow registers (`POST /hook`, listed by
//! `GET /hooks`), before it exports the account's memories and deletes the account.
//!
//! Needs `/usr/bin/chromium` and Node.js, as `browser.rs` does (`npm ci` in `tests/browser` when
//! its node_modules are missing). Screenshots land in `tests/browser/artifacts/usage/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::browser::{ensure_node_modules, tail, CHROMIUM};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stellar_tests::harness::{browser_stack, client, ROOMY_TIERS};
use stellar_tests::spawn::repo_root;

/// The requests the flow asks for: (which key, method, path, route family). The free tier of
/// `ROOMY_TIERS` has room for the keys the flow creates and never rate-limits them.
const TRAFFIC: &[(&str, &str, &str, &str)] = &[
    ("owner", "POST", "/api/v1/store", "store"),
    ("owner", "POST", "/api/v1/store", "store"),
    ("owner", "POST", "/api/v1/store", "store"),
    ("owner", "POST", "/api/v1/store", "store"),
    ("owner", "POST", "/api/v1/store", "store"),
    ("owner", "GET", "/api/v1/stats", "read"),
    ("owner", "GET", "/api/v1/stats", "read"),
    ("owner", "GET", "/api/v1/stats", "read"),
    ("reader", "GET", "/api/v1/recall?q=counted", "recall"),
    ("reader", "GET", "/api/v1/recall?q=counted", "recall"),
    ("reader", "GET", "/api/v1/recall?q=counted", "recall"),
    ("reader", "GET", "/api/v1/recall?q=counted", "recall"),
    // Read-only: refused with 403 (counted as 4xx).
    ("reader", "POST", "/api/v1/store", "store"),
    ("reader", "POST", "/api/v1/store", "store"),
];

/// The test's server: the gateway's URL, and the webhook deliveries received.
#[derive(Clone)]
struct Driver {
    gateway: String,
    hooks: Arc<Mutex<Vec<Value>>>,
}

/// `POST /traffic {"owner","reader"}`: the requests above through the gateway, one by one.
async fn traffic(State(d): State<Driver>, Json(keys): Json<Value>) -> Json<Value> {
    let (gateway, client) = (d.gateway, client());
    let mut sent = Vec::new();
    for (who, method, path, route) in TRAFFIC {
        let key = keys[*who].as_str().unwrap_or_default();
        let url = format!("{gateway}{path}");
        let req = if *method == "POST" {
            client
                .post(url)
                .json(&json!({"content": "counted by the usage history"}))
        } else {
            client.get(url)
        };
        let status = req
            .header("X-API-Key", key)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        sent.push(json!({"key": who, "method": method, "route": route, "status": status}));
    }
    Json(json!({ "requests": sent }))
}

/// `POST /hook`: a webhook endpoint; what it got is listed by `GET /hooks` as
/// `{"hooks":[{"event_id","signature","body"}]}` (the body as received, for the signature).
async fn hook(State(d): State<Driver>, headers: HeaderMap, body: String) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    d.hooks.lock().unwrap().push(json!({
        "event_id": h("stellar-event-id"),
        "signature": h("stellar-signature"),
        "body": body,
    }));
    StatusCode::OK
}

async fn hooks(State(d): State<Driver>) -> Json<Value> {
    Json(json!({ "hooks": *d.hooks.lock().unwrap() }))
}

async fn driver(gateway: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind traffic server");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/traffic", post(traffic))
        .route("/hook", post(hook))
        .route("/hooks", get(hooks))
        .with_state(Driver {
            gateway,
            hooks: Arc::default(),
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scoped_keys_and_usage_history_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `apt-get install -y chromium` (the browser tests never download one)"
    );
    let dir = repo_root().join("tests").join("browser");
    ensure_node_modules(&dir).await;

    // The harness's browser stack (billing's engine_url is the stack's engine; usage is
    // flushed every second), billing without payment providers.
    let s = browser_stack(ROOMY_TIERS, false, &[]).await;
    let public = s.gw().url("");
    let (engine, billing, gateway) = (s.engine(), &s.billing().svc, s.gw());

    let email = format!("usage-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered: Value = client()
        .post(format!("{public}/auth/register"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("register")
        .error_for_status()
        .expect("register: 201")
        .json()
        .await
        .expect("register: JSON");
    let key = registered["api_key"]
        .as_str()
        .expect("register answers with the first key")
        .to_string();
    let traffic_url = driver(public.clone()).await;

    let artifacts = std::env::var("STELLAR_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("artifacts").join("usage"));
    let _ = std::fs::remove_dir_all(&artifacts);

    let run = tokio::process::Command::new("node")
        .arg(dir.join("usage.mjs"))
        .current_dir(&dir)
        .env("STELLAR_BASE_URL", &public)
        .env("STELLAR_KEY", &key)
        .env("STELLAR_TRAFFIC_URL", &traffic_url)
        .env("STELLAR_ARTIFACTS_DIR", &artifacts)
        .env("STELLAR_CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "usage.mjs did not finish within 180 s\n--- billing log ---\n{}",
                tail(&billing.log(), 60)
            )
        })
        .expect("node must be installed (apt-get install -y nodejs npm)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "usage.mjs failed ({}); screenshots in {}\n--- billing log (tail) ---\n{}\n--- gateway log (tail) ---\n{}\n--- engine log (tail) ---\n{}",
        out.status,
        artifacts.display(),
        tail(&billing.log(), 60),
        tail(&gateway.svc.log(), 30),
        tail(&engine.svc.log(), 10),
    );
}
