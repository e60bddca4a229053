//! The router driven in-process with `tower::ServiceExt::oneshot`: no socket, no provider, a
//! fresh migrated SQLite account DB per test. The end-to-end suites (tests/tests/e2e/billing/)
//! cover the same surface through real processes; these pin the HTTP contract of a few
//! representative routes where a failure points straight at the handler.

use crate::testing::{self, TempDb};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The router with the original immediate keys (`auth.immediate_key`), as these tests were
/// written for.
async fn app(t: &TempDb) -> Router {
    let settings = testing::settings(&[("STELLAR_AUTH_IMMEDIATE_KEY", "true")]);
    super::router(testing::state(&t.db, settings))
}

/// The router with the defaults: verified sign-up.
async fn verified_app(t: &TempDb) -> Router {
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

/// The template and token of the newest mail queued for `to` (the token from the link's
/// fragment).
async fn mailed(db: &stellar_common::Db, to: &str) -> Option<(String, String)> {
    let row: Option<(String, String)> = stellar_common::with_db!(db, p => sqlx::query_as(
        "SELECT template, payload FROM outbox WHERE recipient = $1 ORDER BY id DESC LIMIT 1")
        .bind(to).fetch_optional(p).await.unwrap());
    row.map(|(template, payload)| {
        let v: Value = serde_json::from_str(&payload).unwrap();
        let link = v["link"].as_str().unwrap().to_string();
        let token = link
            .split_once("/auth/link#token=")
            .expect(&link)
            .1
            .to_string();
        (template, token)
    })
}

async fn outbox_rows(db: &stellar_common::Db) -> i64 {
    stellar_common::with_db!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(p).await.unwrap())
}

fn with_cookie(mut r: Request<Body>, cookie: &str, csrf: Option<&str>) -> Request<Body> {
    r.headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    if let Some(c) = csrf {
        r.headers_mut().insert("x-csrf-token", c.parse().unwrap());
    }
    r
}

#[tokio::test]
async fn verified_sign_up_links_sessions_and_csrf() {
    let t = TempDb::new().await;
    let app = verified_app(&t).await;
    // Sign-up: 202 for a new address, byte-identical for it again; no key in any answer.
    let first = call(
        &app,
        post("/auth/register", r#"{"email":"Ann@Example.com"}"#),
    )
    .await;
    let again = call(
        &app,
        post("/auth/register", r#"{"email":" ann@example.com"}"#),
    )
    .await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{:?}", first.2);
    assert_eq!(first.2, json!({"detail": "Check your e-mail to continue"}));
    assert_eq!((again.0, &again.2), (first.0, &first.2));
    let (template, token) = mailed(&t.db, "ann@example.com").await.expect("mail queued");
    assert_eq!(template, "verification");

    // Opening the link: the first key, once, and a session cookie.
    let (status, headers, v) = call(
        &app,
        post("/auth/link", &json!({"token": token}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["purpose"].as_str(), v["role"].as_str()),
        (Some("verification"), Some("owner"))
    );
    let key = v["api_key"].as_str().expect("first key").to_string();
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("stellar_session="), "{set_cookie}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "loopback public URL: {set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = v["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(
        call(&app, get("/auth/usage", Some(&key))).await.0,
        StatusCode::OK
    );

    // Single use; garbage is 400; neither changes anything.
    let used = call(
        &app,
        post("/auth/link", &json!({"token": token}).to_string()),
    )
    .await;
    assert_detail(&used, StatusCode::GONE);
    assert!(used.2["detail"]
        .as_str()
        .unwrap()
        .contains("already been used"));
    let bad = call(&app, post("/auth/link", r#"{"token":"nope"}"#)).await;
    assert_detail(&bad, StatusCode::BAD_REQUEST);

    // The session: readable with the cookie; a state change needs the CSRF token.
    let (status, _, s) = call(&app, with_cookie(get("/auth/session", None), &cookie, None)).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(
        (s["email"].as_str(), s["csrf_token"].as_str()),
        (Some("ann@example.com"), Some(csrf.as_str()))
    );
    let no_csrf = call(&app, with_cookie(post("/auth/sign-out", ""), &cookie, None)).await;
    assert_detail(&no_csrf, StatusCode::FORBIDDEN);
    let wrong = call(
        &app,
        with_cookie(post("/auth/sign-out", ""), &cookie, Some(&"0".repeat(64))),
    )
    .await;
    assert_detail(&wrong, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&app, with_cookie(get("/auth/session", None), &cookie, None))
            .await
            .0,
        StatusCode::OK
    );
    let (status, headers, _) = call(
        &app,
        with_cookie(post("/auth/sign-out", ""), &cookie, Some(&csrf)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let ended = call(&app, with_cookie(get("/auth/session", None), &cookie, None)).await;
    assert_detail(&ended, StatusCode::UNAUTHORIZED);

    // Verified now: the address gets a sign-in link; an unknown address gets nothing, and the
    // answers are the same.
    let known = call(
        &app,
        post("/auth/sign-in", r#"{"email":"ann@example.com"}"#),
    )
    .await;
    let before = outbox_rows(&t.db).await;
    let unknown = call(
        &app,
        post("/auth/sign-in", r#"{"email":"nobody@example.com"}"#),
    )
    .await;
    assert_eq!((known.0, &known.2), (unknown.0, &unknown.2));
    assert_eq!(
        outbox_rows(&t.db).await,
        before,
        "nothing mailed to an unknown address"
    );
    assert_eq!(mailed(&t.db, "ann@example.com").await.unwrap().0, "sign_in");
    let bad = call(&app, post("/auth/sign-in", r#"{"email":"not an address"}"#)).await;
    assert_detail(&bad, StatusCode::UNPROCESSABLE_ENTITY);
}
