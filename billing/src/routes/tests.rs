//! The router driven in-process with `tower::ServiceExt::oneshot`: no socket, no provider, a
//! fresh migrated SQLite account DB per test. The end-to-end suites (tests/tests/billing_*.rs)
//! cover the same surface through real processes; these pin the HTTP contract of a few
//! representative routes where a failure points straight at the handler.

use crate::testing::{self, TempDb};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn app(t: &TempDb) -> Router {
    super::router(testing::state(&t.db, testing::settings(&[])))
}

/// One request through the router: status, headers and the body as JSON (`Null` if it is not).
async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn post(uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str, key: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    if let Some(k) = key {
        b = b.header("x-api-key", k);
    }
    b.body(Body::empty()).unwrap()
}

/// A JSON error: the status and a `detail` string.
fn assert_detail(got: &(StatusCode, HeaderMap, Value), status: StatusCode) {
    assert_eq!(got.0, status, "{:?}", got.2);
    assert!(got.2["detail"].is_string(), "{:?}", got.2);
    assert!(
        got.1[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        got.1
    );
}

#[tokio::test]
async fn register_then_usage_on_a_fresh_db() {
    let t = TempDb::new().await;
    let app = app(&t).await;
    let (status, _, v) = call(
        &app,
        post("/auth/register", r#"{"email":" Ann@Example.com "}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["email"].as_str(), v["tier"].as_str()),
        (Some("ann@example.com"), Some("free"))
    );
    let key = v["api_key"].as_str().expect("key shown once").to_string();

    let (status, _, u) = call(&app, get("/auth/usage", Some(&key))).await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["user_id"], v["user_id"]);
    assert_eq!(u["subscription_status"], "none");
    assert_eq!(u["keys_used"], 1);
    assert_eq!(u["current_period_end"], Value::Null);

    // The same e-mail again: 409, and no second key.
    let again = call(
        &app,
        post("/auth/register", r#"{"email":"ann@example.com"}"#),
    )
    .await;
    assert_detail(&again, StatusCode::CONFLICT);
    assert!(again.2.get("api_key").is_none());
}

#[tokio::test]
async fn bad_bodies_are_json_4xx_and_change_nothing() {
    let t = TempDb::new().await;
    let app = app(&t).await;
    for (body, status) in [
        (r#"{"email":"#, StatusCode::BAD_REQUEST),
        ("", StatusCode::BAD_REQUEST),
        (r#"["a@example.com"]"#, StatusCode::UNPROCESSABLE_ENTITY),
        (
            r#"{"mail":"a@example.com"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"email":"not an address"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let got = call(&app, post("/auth/register", body)).await;
        assert_detail(&got, status);
    }
    let big = format!(r#"{{"email":"{}@example.com"}}"#, "a".repeat(70 * 1024));
    assert_detail(
        &call(&app, post("/auth/register", &big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    let n: i64 = stellar_common::with_db!(&t.db, p => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(p).await).unwrap();
    assert_eq!(n, 0);
    // A query parameter that is missing is a JSON 422 too (never axum's plain text).
    let got = call(
        &app,
        get("/billing/stripe/checkout?email=a@example.com", None),
    )
    .await;
    assert_detail(&got, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn every_401_names_the_scheme() {
    let t = TempDb::new().await;
    let app = app(&t).await;
    let wrong = format!("sk-stellar-{}", "0".repeat(40));
    let requests = [
        get("/auth/usage", None),
        get("/auth/api-keys", Some("not-a-key")),
        get("/auth/api-keys", Some(&wrong)),
        Request::builder()
            .method(Method::POST)
            .uri("/billing/cancel")
            .header(header::AUTHORIZATION, "Bearer sk-stellar-nope")
            .body(Body::empty())
            .unwrap(),
        // A key that is present but invalid is 401 on checkout too, never the anonymous path.
        Request::builder()
            .method(Method::POST)
            .uri("/billing/stripe/checkout")
            .header("x-api-key", "nope")
            .body(Body::from(r#"{"tier":"pro"}"#))
            .unwrap(),
    ];
    for req in requests {
        let uri = req.uri().clone();
        let got = call(&app, req).await;
        assert_detail(&got, StatusCode::UNAUTHORIZED);
        assert_eq!(
            got.1[header::WWW_AUTHENTICATE],
            crate::error::WWW_AUTHENTICATE,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn plans_checkout_and_cancel_without_providers() {
    let t = TempDb::new().await;
    let app = app(&t).await;
    let (status, _, v) = call(&app, get("/billing/tiers", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["providers"],
        json!({"lemonsqueezy": false, "stripe": false, "toss": false})
    );
    assert!(v["tiers"].as_array().is_some_and(|t| t.len() >= 2), "{v}");

    // No provider configured: 503 before anything is created for the new e-mail; an unknown
    // provider is 404.
    let body = r#"{"tier":"pro","email":"new@example.com"}"#;
    for (provider, status) in [
        ("stripe", StatusCode::SERVICE_UNAVAILABLE),
        ("paypal", StatusCode::NOT_FOUND),
    ] {
        let got = call(&app, post(&format!("/billing/{provider}/checkout"), body)).await;
        assert_detail(&got, status);
    }
    let got = call(&app, post("/billing/stripe/checkout", body)).await;
    assert_eq!(got.2["detail"], "stripe is not configured");
    let created = crate::accounts::user_by_email(&t.db, "new@example.com").await;
    assert!(created.unwrap().is_none());
    let got = call(
        &app,
        post("/webhook/toss", r#"{"eventType":"PAYMENT_STATUS_CHANGED"}"#),
    )
    .await;
    assert_detail(&got, StatusCode::SERVICE_UNAVAILABLE);

    // A free account has nothing to cancel.
    let (_, key) = t.register("free@example.com").await;
    let mut req = get("/billing/cancel", Some(&key));
    *req.method_mut() = Method::POST;
    assert_detail(&call(&app, req).await, StatusCode::CONFLICT);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json() {
    let t = TempDb::new().await;
    let app = app(&t).await;
    assert_detail(&call(&app, get("/nope", None)).await, StatusCode::NOT_FOUND);
    let mut req = get("/auth/register", None);
    *req.method_mut() = Method::PUT;
    assert_detail(&call(&app, req).await, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, v) = call(&app, get("/healthz", None)).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"status": "ok"})));
}
