//! The routes of data rights against a fake engine (an axum server on a loopback port that
//! speaks the API and fails on demand), in-process: what the real engine cannot be made to do on
//! cue — fail in the middle of an export, after the keys are revoked, or not at all answer.

use crate::testing::{self, TempDb};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use stellar_common::with_db;
use tower::ServiceExt;

/// One tenant's memories, and the failures to play.
struct Fake {
    mems: Mutex<Vec<(String, f64, String)>>,
    timeline_calls: AtomicUsize,
    list_calls: AtomicUsize,
    /// Timeline (list) calls from this index on answer 500.
    fail_timeline_from: AtomicUsize,
    fail_list_from: AtomicUsize,
    /// Every call answers 500.
    down: AtomicBool,
}

type Q = Query<HashMap<String, String>>;

fn fail(f: &Fake, calls: &AtomicUsize, from: &AtomicUsize) -> bool {
    f.down.load(SeqCst) || calls.fetch_add(1, SeqCst) >= from.load(SeqCst)
}

fn err() -> (StatusCode, Json<Value>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"detail": "boom"})),
    )
}

async fn timeline(State(f): State<Arc<Fake>>, Query(q): Q) -> (StatusCode, Json<Value>) {
    if fail(&f, &f.timeline_calls, &f.fail_timeline_from) {
        return err();
    }
    let start = q.get("start").map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros() as f64
            / 1e6
    });
    let limit: usize = q.get("limit").map_or(100, |l| l.parse().unwrap());
    let items: Vec<Value> = f
        .mems
        .lock()
        .unwrap()
        .iter()
        .filter(|m| start.is_none_or(|s| m.1 >= s))
        .take(limit)
        .map(|(id, at, c)| json!({"timestamp": at, "memory_id": id, "content": c, "zone": 2, "importance": 0.5, "emotion": null}))
        .collect();
    (StatusCode::OK, Json(Value::Array(items)))
}

async fn memories(State(f): State<Arc<Fake>>, Query(q): Q) -> (StatusCode, Json<Value>) {
    if fail(&f, &f.list_calls, &f.fail_list_from) {
        return err();
    }
    let limit: usize = q.get("limit").map_or(50, |l| l.parse().unwrap());
    let m = f.mems.lock().unwrap();
    let items: Vec<Value> = m
        .iter()
        .take(limit)
        .map(|(id, _, c)| json!({"id": id, "content": c}))
        .collect();
    (
        StatusCode::OK,
        Json(json!({"total": m.len(), "items": items})),
    )
}

async fn forget(State(f): State<Arc<Fake>>, Path(id): Path<String>) -> StatusCode {
    let mut m = f.mems.lock().unwrap();
    let before = m.len();
    m.retain(|x| x.0 != id);
    if m.len() < before {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn stats(State(f): State<Arc<Fake>>) -> (StatusCode, Json<Value>) {
    if f.down.load(SeqCst) {
        return err();
    }
    let n = f.mems.lock().unwrap().len();
    (StatusCode::OK, Json(json!({"total_memories": n})))
}

/// A fake engine holding `n` memories (one second apart, 300 characters each).
async fn fake(n: usize) -> (Arc<Fake>, String) {
    let f = Arc::new(Fake {
        mems: Mutex::new(
            (0..n)
                .map(|i| {
                    (
                        format!("{i:08}-0000-4000-8000-000000000000"),
                        1_717_000_000.0 + i as f64,
                        format!("{i:03}{}", "m".repeat(297)),
                    )
                })
                .collect(),
        ),
        timeline_calls: AtomicUsize::new(0),
        list_calls: AtomicUsize::new(0),
        fail_timeline_from: AtomicUsize::new(usize::MAX),
        fail_list_from: AtomicUsize::new(usize::MAX),
        down: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/api/v1/timeline", get(timeline))
        .route("/api/v1/memories", get(memories))
        .route("/api/v1/forget/{id}", delete(forget))
        .route("/api/v1/stats", get(stats))
        .with_state(f.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.ok() });
    (f, url)
}

/// The router over `t` with its engine at `url` (and no pause to speak of after revoking).
fn app(t: &TempDb, url: &str) -> Router {
    let settings = testing::settings(&[
        ("STELLAR_AUTH_IMMEDIATE_KEY", "true"),
        ("STELLAR_BILLING_ENGINE_URL", url),
        ("STELLAR_GATEWAY_USAGE_FLUSH_SECS", "0"),
    ]);
    crate::routes::router(testing::state(&t.db, settings))
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    key: &str,
    body: &str,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-api-key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

/// `DELETE /auth/account` with `{"confirm": confirm}`.
async fn delete_account(app: &Router, key: &str, confirm: &str) -> (StatusCode, Vec<u8>) {
    let body = json!({ "confirm": confirm }).to_string();
    call(app, Method::DELETE, "/auth/account", key, &body).await
}

/// The NDJSON lines of an export.
fn ndjson(body: &[u8]) -> Vec<Value> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// An account `email` with its key, a fake engine holding `n` memories, the router over both.
async fn setup(email: &str, n: usize) -> (TempDb, String, Arc<Fake>, Router) {
    let t = TempDb::new().await;
    let (_, key) = t.register(email).await;
    let (f, url) = fake(n).await;
    let app = app(&t, &url);
    (t, key, f, app)
}

async fn users(t: &TempDb) -> i64 {
    with_db!(&t.db, p => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(p).await)
        .unwrap()
}

async fn active_keys(t: &TempDb) -> i64 {
    with_db!(&t.db, p => sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE is_active = TRUE").fetch_one(p).await).unwrap()
}

#[tokio::test]
async fn an_engine_failing_mid_export_ends_the_file_with_an_error_line() {
    let (_t, key, f, app) = setup("export@example.com", 250).await;
    let (status, body) = call(&app, Method::GET, "/auth/export", &key, "").await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = ndjson(&body);
    assert_eq!(lines.len(), 250);
    assert_eq!(
        lines[0]["content"].as_str().unwrap().len(),
        300,
        "full content"
    );
    assert!(lines
        .iter()
        .all(|l| l["id"].is_string() && l["agent"].is_null()));

    // The second page fails: 100 lines, then the error line.
    f.fail_timeline_from
        .store(f.timeline_calls.load(SeqCst) + 1, SeqCst);
    let (status, body) = call(&app, Method::GET, "/auth/export", &key, "").await;
    assert_eq!(status, 200, "the answer had started");
    let lines: Vec<Value> = ndjson(&body);
    assert_eq!(lines.len(), 101);
    let last = lines.last().unwrap();
    assert!(
        last["error"].is_string() && last.get("id").is_none(),
        "{last}"
    );
    assert_eq!(last["exported"], 100);

    // An engine that does not answer at all: a JSON 503 before any line.
    f.down.store(true, SeqCst);
    let (status, body) = call(&app, Method::GET, "/auth/export", &key, "").await;
    assert_eq!(status, 503);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["detail"].is_string(), "{v}");
}

#[tokio::test]
async fn deletion_needs_the_address_and_an_answering_engine() {
    let (t, key, f, app) = setup("owner@example.com", 10).await;
    for body in [
        "",
        "  ",
        r#"{"confirm":"other@example.com"}"#,
        r#"{"confirm":""}"#,
        "{}",
    ] {
        let (status, _) = call(&app, Method::DELETE, "/auth/account", &key, body).await;
        assert_eq!(status, 422, "{body:?}");
    }
    f.down.store(true, SeqCst);
    let (status, _) = delete_account(&app, &key, "Owner@Example.com").await;
    assert_eq!(status, 503);
    assert_eq!(
        (users(&t).await, active_keys(&t).await),
        (1, 1),
        "nothing changed"
    );
    assert_eq!(f.mems.lock().unwrap().len(), 10);
}

#[tokio::test]
async fn an_engine_failing_after_the_revocation_gives_the_keys_back() {
    let (t, key, f, app) = setup("owner@example.com", 30).await;
    // The first sweep lists twice (30 ids, then none); the last sweep's list fails.
    f.fail_list_from.store(2, SeqCst);
    let (status, _) = delete_account(&app, &key, "owner@example.com").await;
    assert_eq!(status, 503);
    assert_eq!(f.mems.lock().unwrap().len(), 0, "the first sweep ran");
    assert_eq!(
        (users(&t).await, active_keys(&t).await),
        (1, 1),
        "the key works again"
    );
    let (status, _) = call(&app, Method::GET, "/auth/usage", &key, "").await;
    assert_eq!(status, 200);

    // The retry, with the same key, finishes.
    f.fail_list_from.store(usize::MAX, SeqCst);
    let (status, body) = delete_account(&app, &key, "owner@example.com").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, json!({"deleted": true, "memories_deleted": 0}));
    assert_eq!(users(&t).await, 0);
    let actions: Vec<String> = with_db!(&t.db, p => sqlx::query_scalar("SELECT action FROM audit_events WHERE action = 'account_deleted'").fetch_all(p).await).unwrap();
    assert_eq!(actions.len(), 1);
    let (status, _) = call(&app, Method::GET, "/auth/usage", &key, "").await;
    assert_eq!(status, 401);
}
