//! The API router driven in-process with `tower::ServiceExt::oneshot`: no socket, a fresh SQLite
//! file per test. The engine has no authentication of its own (the gateway authenticates and
//! names the tenant in `X-Stellar-User` / `X-Stellar-Agent`), so what stands in for auth here is
//! tenant isolation. tests/tests/e2e/engine_api.rs covers the whole API through the real process.

use super::{metrics_router, router, AppState};
use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, Params};
use crate::metrics::Metrics;
use crate::storage::Storage;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The engine on a temporary SQLite file (removed on drop) and its API router.
pub(super) struct Fixture {
    pub app: Router,
    pub engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    pub path: PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let path = std::env::temp_dir().join(format!("stellar-engine-{}.db", uuid::Uuid::new_v4()));
        Fixture::open(path).await
    }

    /// The engine on the SQLite file at `path` (a restart, when another fixture used it).
    pub async fn open(path: PathBuf) -> Fixture {
        let metrics = Arc::new(Metrics::new());
        let storage = Storage::open(&format!("sqlite://{}", path.display()), metrics.clone())
            .await
            .expect("storage");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let params = Params {
            decay_after_days: 30.0,
            forget_after_days: 90.0,
        };
        let engine = Engine::open(storage, clock, params, metrics.clone())
            .await
            .expect("engine");
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let app = router(AppState {
            engine: engine.clone(),
            metrics: metrics.clone(),
            max_body_bytes: 4096,
            heartbeat: Duration::from_secs(15),
            shutdown,
            test_clock: None,
        });
        Fixture {
            app,
            engine,
            metrics,
            path,
            _stop: stop,
        }
    }

    pub async fn call(&self, req: Request<Body>) -> (StatusCode, Value) {
        call(&self.app, req).await
    }

    /// How many memories `user` holds, by `GET /api/v1/stats`.
    pub async fn assert_total(&self, user: &str, n: u64) {
        let (_, stats) = self
            .call(request(Method::GET, "/api/v1/stats", user, None))
            .await;
        assert_eq!(stats["total_memories"], n, "{stats}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let db = self.path.display().to_string();
        for file in [db.clone(), format!("{db}-wal"), format!("{db}-shm")] {
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub(super) fn request(method: Method, uri: &str, user: &str, body: Option<&str>) -> Request<Body> {
    let b = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-stellar-user", user)
        .header("x-stellar-agent", "default");
    match body {
        Some(s) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(s.to_string())),
        None => b.body(Body::empty()),
    }
    .unwrap()
}

#[tokio::test]
async fn store_recall_forget_on_a_fresh_db() {
    let f = Fixture::new().await;
    let (s, v) = f
        .call(request(
            Method::POST,
            "/api/v1/store",
            "u1",
            Some(r#"{"content":"User prefers dark mode in every editor"}"#),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["zone"].clone(), v["score"].clone()),
        (json!(2), json!(0.425))
    );
    let id = v["id"].as_str().expect("id").to_string();

    let (s, hits) = f
        .call(request(
            Method::GET,
            "/api/v1/recall?q=dark%20mode",
            "u1",
            None,
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hits[0]["id"], json!(id), "{hits}");
    assert_eq!(hits[0]["recall_count"], 1);

    // Another tenant sees nothing of it and cannot forget it.
    let (_, other) = f
        .call(request(Method::GET, "/api/v1/recall?q=dark", "u2", None))
        .await;
    assert_eq!(other, json!([]));
    let forget = format!("/api/v1/forget/{id}");
    let (s, v) = f.call(request(Method::DELETE, &forget, "u2", None)).await;
    assert_eq!(
        (s, v),
        (StatusCode::NOT_FOUND, json!({"detail": "Memory not found"}))
    );

    let (s, v) = f.call(request(Method::DELETE, &forget, "u1", None)).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"removed": true})));
    f.assert_total("u1", 0).await;
    f.engine.storage().close().await;
}

#[tokio::test]
async fn bad_input_is_422_in_fastapi_shape() {
    let f = Fixture::new().await;
    let store = |body: &str| request(Method::POST, "/api/v1/store", "u1", Some(body));

    // Every failing field at once, each with type, loc and msg.
    let (s, v) = f.call(store(r#"{"content":"","importance":2}"#)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let items = v["detail"].as_array().expect("detail items");
    let locs: Vec<&Value> = items.iter().map(|i| &i["loc"]).collect();
    assert_eq!(
        locs,
        [&json!(["body", "content"]), &json!(["body", "importance"])]
    );
    assert!(items
        .iter()
        .all(|i| i["type"].is_string() && i["msg"].is_string()));

    let (s, v) = f.call(store(r#"{"content": "x""#)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["detail"][0]["type"], "json_invalid", "{v}");
    let (s, v) = f.call(store("[1]")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["detail"][0]["type"], "model_attributes_type", "{v}");

    let (s, v) = f
        .call(request(Method::GET, "/api/v1/recall", "u1", None))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["detail"][0]["loc"], json!(["query", "q"]), "{v}");

    let big = format!(r#"{{"content":"{}"}}"#, "x".repeat(5000));
    let (s, v) = f.call(store(&big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains("4096")),
        "{v}"
    );

    // Nothing of it was stored.
    f.assert_total("u1", 0).await;
    f.engine.storage().close().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_like_fastapi() {
    let f = Fixture::new().await;
    let (s, v) = f
        .call(request(Method::GET, "/api/v1/nope", "u1", None))
        .await;
    assert_eq!(
        (s, v),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
    let (s, v) = f
        .call(request(Method::PUT, "/api/v1/store", "u1", None))
        .await;
    assert_eq!(
        (s, v),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"})
        )
    );
    // The test-clock routes exist only with test_clock = true.
    let (s, _) = f
        .call(request(Method::POST, "/_test/reorbit", "u1", None))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Requests are counted by matched route; the metrics router serves them.
    let metrics = metrics_router(f.engine.clone(), f.metrics.clone());
    let resp = metrics
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains(r#"route="/api/v1/store""#), "{text}");
    f.engine.storage().close().await;
}
