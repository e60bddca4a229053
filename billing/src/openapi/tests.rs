//! The document and the docs page, driven through billing's router with `oneshot`: every route
//! of the router is documented (read from `routes/mod.rs` itself, so a new route without docs
//! fails here), the engine's routes are merged in, Swagger UI is served from the binary only,
//! and real answers of representative operations validate against their documented schemas.

use crate::routes;
use crate::testing::{self, TempDb};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use tower::ServiceExt;

/// The router with the repository's landing pages (so a page route never answers the
/// fallback's 404) and the given extra settings.
fn app_with(t: &TempDb, env: &[(&str, &str)]) -> Router {
    let landing = concat!(env!("CARGO_MANIFEST_DIR"), "/../landing");
    let mut vars = vec![("STELLAR_BILLING_LANDING_DIR", landing)];
    vars.extend_from_slice(env);
    routes::router(testing::state(&t.db, testing::settings(&vars)))
}

/// Immediate keys (`auth.immediate_key`), as the router tests use.
fn app(t: &TempDb) -> Router {
    app_with(t, &[("STELLAR_AUTH_IMMEDIATE_KEY", "true")])
}

async fn raw(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    (parts.status, parts.headers, bytes.to_vec())
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let (s, h, b) = raw(app, req).await;
    (s, h, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn req(method: Method, uri: &str, key: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        b = b.header("x-api-key", k);
    }
    if !body.is_empty() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    req(Method::GET, uri, None, "")
}

async fn served_document(app: &Router) -> Value {
    let (status, headers, body) = raw(app, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    serde_json::from_slice(&body).expect("the document is JSON")
}

/// `(method, path)` of every route `routes::router` declares, read from its source: each
/// `.route("path", get(…).post(…))`, with axum's `{*rest}` written as OpenAPI's `{rest}`.
fn declared_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../routes/mod.rs");
    let body = &src[src.find("pub fn router(").expect("the router")..];
    let mut out = BTreeSet::new();
    let mut rest = body;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .expect("a closed .route(")
            .0;
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("the path literal");
        let path = path.replace("{*", "{");
        for method in ["get", "post", "put", "patch", "delete"] {
            let token = format!("{method}(");
            let named = call.match_indices(&token).any(|(i, _)| {
                i == 0
                    || !call[..i]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if named {
                out.insert((method.to_string(), path.clone()));
            }
        }
        rest = &rest[end..];
    }
    out
}

fn documented_billing_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if path.starts_with("/api/v1/") {
            continue;
        }
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_every_route_of_the_router() {
    let t = TempDb::new().await;
    let app = app(&t);
    let doc = served_document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Stellar Gate API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let settings = testing::settings(&[]);
    assert_eq!(
        doc["servers"][0]["url"],
        settings.public_url().trim_end_matches('/')
    );

    let declared = declared_routes();
    assert!(declared.len() >= 45, "the router's routes: {declared:?}");
    let documented = documented_billing_operations(&doc);
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes without docs: {undocumented:?}"
    );
    let not_routed: Vec<_> = documented.difference(&declared).collect();
    assert!(
        not_routed.is_empty(),
        "documented but not routed: {not_routed:?}"
    );

    // The list read from the source is the router's: each route answers something of its
    // own, never the fallback's 404 or 405.
    for (method, path) in &declared {
        let uri = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{provider}", "stripe")
            .replace("{path}", "style.css");
        let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let (status, _, v) = call(&app, req(m, &uri, None, "")).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(
            !(status == StatusCode::NOT_FOUND && v["detail"] == "Not found"),
            "{method} {uri} answered the fallback"
        );
    }

    // Every operation names its tag, and every error status has the JSON error body.
    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        assert!(op["tags"][0].is_string(), "{method} {path}: no tag");
        for (status, r) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') && status != "429" || status == "500" {
                assert!(
                    r["content"]["application/json"]["schema"].is_object(),
                    "{method} {path} {status}: no JSON error body"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_document_holds_the_engines_routes_and_the_security_schemes() {
    let t = TempDb::new().await;
    let doc = served_document(&app(&t)).await;
    let engine = serde_json::to_value(stellar_engine::http::openapi::document()).unwrap();
    let engine_paths = engine["paths"].as_object().cloned().unwrap_or_default();
    assert!(
        engine_paths.keys().any(|p| p == "/api/v1/store"),
        "the engine documents its routes: {:?}",
        engine_paths.keys().collect::<Vec<_>>()
    );
    for (path, item) in &engine_paths {
        assert!(path.starts_with("/api/v1/"), "{path}");
        for method in item.as_object().unwrap().keys() {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["ApiKey"]["in"], "header");
    assert_eq!(schemes["ApiKey"]["name"], "X-API-Key");
    assert_eq!(schemes["Bearer"]["scheme"], "bearer");
    assert_eq!(schemes["Session"]["in"], "cookie");
    assert_eq!(
        schemes["Session"]["name"],
        crate::identity::sessions::COOKIE
    );

    // Keyed routes take a key or the session; the session's state changes need the CSRF
    // header; open routes name no scheme.
    let usage = &doc["paths"]["/auth/usage"]["get"];
    assert_eq!(
        usage["security"],
        json!([{"ApiKey": []}, {"Bearer": []}, {"Session": []}])
    );
    assert!(usage["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
    let csrf = |op: &Value| {
        op["parameters"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["in"] == "header" && p["name"] == "X-CSRF-Token")
        })
    };
    assert!(csrf(&doc["paths"]["/auth/api-keys"]["post"]));
    assert!(csrf(&doc["paths"]["/auth/sign-out"]["post"]));
    assert!(!csrf(&doc["paths"]["/auth/api-keys"]["get"]));
    assert_eq!(
        doc["paths"]["/auth/session"]["get"]["security"],
        json!([{"Session": []}])
    );
    assert!(doc["paths"]["/auth/register"]["post"]["security"].is_null());
    let checkout = &doc["paths"]["/billing/{provider}/checkout"]["post"];
    assert_eq!(checkout["security"][0], json!({}), "a key is optional");
    assert_eq!(
        checkout["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CheckoutBody"
    );
    assert_eq!(
        doc["components"]["schemas"]["CheckoutBody"]["required"],
        json!(["tier"])
    );

    // The providers' signature headers are the ones billing reads.
    let hook = doc["paths"]["/webhook/{provider}"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header")
        .map(|p| p["name"].as_str().unwrap().to_ascii_lowercase())
        .collect::<BTreeSet<_>>();
    for h in [
        stellar_proto::webhook::lemon::HEADER,
        stellar_proto::webhook::stripe::HEADER,
        stellar_proto::webhook::toss::TRANSMISSION_ID,
    ] {
        assert!(hook.contains(&h.to_ascii_lowercase()), "{h}: {hook:?}");
    }
}

/// `src` and `href` values of a page.
fn references(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.match_indices(attr) {
            let v = &page[i + attr.len()..];
            out.push(v[..v.find('"').unwrap()].to_string());
        }
    }
    out
}

#[tokio::test]
async fn docs_are_served_from_the_binary_and_point_at_the_document() {
    let t = TempDb::new().await;
    let app = app(&t);
    for path in ["/docs", "/docs/", "/docs/index.html"] {
        let (status, headers, body) = raw(&app, get(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let page = String::from_utf8(body).unwrap();
        assert!(page.contains("swagger-ui"), "{page}");
        let refs = references(&page);
        assert!(refs.len() >= 4, "{refs:?}");
        for r in refs {
            assert!(r.starts_with("/docs/"), "{path}: {r} is not local");
            let (status, headers, body) = raw(&app, get(&r)).await;
            assert_eq!(status, StatusCode::OK, "{r}");
            assert!(!body.is_empty(), "{r}");
            assert!(headers.contains_key(header::CONTENT_TYPE), "{r}");
        }
    }
    let (status, _, init) = raw(&app, get("/docs/swagger-initializer.js")).await;
    assert_eq!(status, StatusCode::OK);
    let init = String::from_utf8(init).unwrap();
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
    let (_, _, css) = raw(&app, get("/docs/swagger-ui.css")).await;
    let css = String::from_utf8_lossy(&css);
    assert!(
        !css.contains("url(http") && !css.contains("@import"),
        "the stylesheet loads nothing from elsewhere"
    );

    // Anything else stays the JSON fallback.
    for (m, uri, status) in [
        (Method::GET, "/docs/nope.js", StatusCode::NOT_FOUND),
        (Method::GET, "/nope", StatusCode::NOT_FOUND),
        (
            Method::POST,
            "/openapi.json",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::DELETE, "/docs", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let (got, headers, v) = call(&app, req(m.clone(), uri, None, "")).await;
        assert_eq!(got, status, "{m} {uri}");
        assert!(v["detail"].is_string(), "{m} {uri}: {v}");
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }
}

/// The documented schema of `method path`'s `status` answer in `media`, as a JSON Schema with
/// the document's components beside it (for its `$ref`s).
fn schema_of(doc: &Value, method: &str, path: &str, status: u16, media: &str) -> Value {
    let s =
        &doc["paths"][path][method]["responses"][status.to_string()]["content"][media]["schema"];
    assert!(
        s.is_object(),
        "{method} {path} {status} {media}: not documented"
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [s],
        "components": doc["components"],
    })
}

fn validates(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
) -> Result<(), String> {
    let schema = schema_of(doc, method, path, status, "application/json");
    let v = jsonschema::draft202012::new(&schema).map_err(|e| format!("schema: {e}"))?;
    let errors: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{method} {path} {status}: {errors:?} in {body}"))
    }
}

/// A request's real answer, checked against the documented status and schema.
async fn check(
    app: &Router,
    doc: &Value,
    r: Request<Body>,
    path: &str,
    status: StatusCode,
) -> Value {
    let method = r.method().as_str().to_ascii_lowercase();
    let uri = r.uri().to_string();
    let (got, _, body) = call(app, r).await;
    assert_eq!(got, status, "{method} {uri}: {body}");
    validates(doc, &method, path, got.as_u16(), &body).unwrap();
    body
}

#[tokio::test]
async fn real_answers_validate_against_the_documented_schemas() {
    let t = TempDb::new().await;
    let app = app(&t);
    let doc = served_document(&app).await;
    let p = Method::POST;
    let ok = StatusCode::OK;

    check(&app, &doc, get("/healthz"), "/healthz", ok).await;
    check(&app, &doc, get("/billing/tiers"), "/billing/tiers", ok).await;
    check(
        &app,
        &doc,
        get("/auth/usage"),
        "/auth/usage",
        StatusCode::UNAUTHORIZED,
    )
    .await;
    check(
        &app,
        &doc,
        req(p.clone(), "/auth/register", None, r#"{"email":"#),
        "/auth/register",
        StatusCode::BAD_REQUEST,
    )
    .await;
    check(
        &app,
        &doc,
        req(
            p.clone(),
            "/auth/register",
            None,
            r#"{"email":"not an address"}"#,
        ),
        "/auth/register",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let reg = check(
        &app,
        &doc,
        req(
            p.clone(),
            "/auth/register",
            None,
            r#"{"email":"ann@example.com"}"#,
        ),
        "/auth/register",
        StatusCode::CREATED,
    )
    .await;
    let key = reg["api_key"].as_str().unwrap().to_string();
    let k = Some(key.as_str());
    let usage = check(
        &app,
        &doc,
        req(Method::GET, "/auth/usage", k, ""),
        "/auth/usage",
        ok,
    )
    .await;

    // The free tier's one key is in use: creating another is the documented 403.
    check(
        &app,
        &doc,
        req(
            p.clone(),
            "/auth/api-keys",
            k,
            r#"{"name":"ci","read_only":true}"#,
        ),
        "/auth/api-keys",
        StatusCode::FORBIDDEN,
    )
    .await;
    let list = check(
        &app,
        &doc,
        req(Method::GET, "/auth/api-keys", k, ""),
        "/auth/api-keys",
        ok,
    )
    .await;
    let id = list["keys"][0]["id"].as_str().unwrap().to_string();
    check(
        &app,
        &doc,
        req(
            Method::PATCH,
            &format!("/auth/api-keys/{id}"),
            k,
            r#"{"name":"ci"}"#,
        ),
        "/auth/api-keys/{id}",
        ok,
    )
    .await;
    check(
        &app,
        &doc,
        req(Method::DELETE, &format!("/auth/api-keys/{id}"), k, ""),
        "/auth/api-keys/{id}",
        StatusCode::CONFLICT,
    )
    .await;
    let rotated = check(
        &app,
        &doc,
        req(p.clone(), &format!("/auth/api-keys/{id}/rotate"), k, ""),
        "/auth/api-keys/{id}/rotate",
        StatusCode::CREATED,
    )
    .await;
    let key = rotated["api_key"].as_str().unwrap().to_string();
    let k = Some(key.as_str());
    for (uri, path) in [
        ("/auth/usage/history", "/auth/usage/history"),
        ("/auth/usage/history?group_by=key", "/auth/usage/history"),
        ("/auth/members", "/auth/members"),
        ("/auth/sessions", "/auth/sessions"),
        ("/auth/audit", "/auth/audit"),
        ("/auth/alerts", "/auth/alerts"),
        ("/auth/webhooks", "/auth/webhooks"),
    ] {
        check(&app, &doc, req(Method::GET, uri, k, ""), path, ok).await;
    }
    check(
        &app,
        &doc,
        req(Method::GET, "/auth/usage/history?granularity=week", k, ""),
        "/auth/usage/history",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    check(
        &app,
        &doc,
        req(Method::PUT, "/auth/alerts", k, r#"{"memory_percent":[50]}"#),
        "/auth/alerts",
        ok,
    )
    .await;
    check(
        &app,
        &doc,
        req(p.clone(), "/billing/cancel", k, ""),
        "/billing/cancel",
        StatusCode::CONFLICT,
    )
    .await;
    check(
        &app,
        &doc,
        req(
            p.clone(),
            "/billing/stripe/checkout",
            None,
            r#"{"tier":"pro","email":"b@example.com"}"#,
        ),
        "/billing/{provider}/checkout",
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    check(
        &app,
        &doc,
        req(p.clone(), "/webhook/stripe", None, "{}"),
        "/webhook/{provider}",
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;

    // The schemas are strict enough to catch a wrong answer.
    let mut wrong = usage.clone();
    wrong.as_object_mut().unwrap().remove("keys_used");
    assert!(validates(&doc, "get", "/auth/usage", 200, &wrong).is_err());
    wrong = usage.clone();
    wrong["subscription_status"] = json!("paid");
    assert!(validates(&doc, "get", "/auth/usage", 200, &wrong).is_err());
    wrong = usage;
    wrong["current_period_end"] = json!(5);
    assert!(validates(&doc, "get", "/auth/usage", 200, &wrong).is_err());
    assert!(validates(&doc, "get", "/auth/usage", 401, &json!({"detail": 1})).is_err());
    assert!(validates(&doc, "get", "/auth/usage", 401, &json!({})).is_err());
}

#[tokio::test]
async fn sign_up_link_and_session_answers_validate() {
    let t = TempDb::new().await;
    let app = app_with(&t, &[]);
    let doc = served_document(&app).await;
    let p = Method::POST;
    check(
        &app,
        &doc,
        req(
            p.clone(),
            "/auth/register",
            None,
            r#"{"email":"cy@example.com"}"#,
        ),
        "/auth/register",
        StatusCode::ACCEPTED,
    )
    .await;
    let payload: String = stellar_common::with_db!(&t.db, pool => sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE recipient = $1 ORDER BY id DESC LIMIT 1")
        .bind("cy@example.com").fetch_one(pool).await.unwrap());
    let link: Value = serde_json::from_str(&payload).unwrap();
    let token = link["link"]
        .as_str()
        .unwrap()
        .split_once("#token=")
        .unwrap()
        .1
        .to_string();
    let r = req(
        p.clone(),
        "/auth/link",
        None,
        &json!({ "token": token }).to_string(),
    );
    let (status, headers, opened) = call(&app, r).await;
    assert_eq!(status, StatusCode::OK, "{opened}");
    validates(&doc, "post", "/auth/link", 200, &opened).unwrap();
    assert!(
        opened["api_key"].is_string(),
        "a verification gives the first key"
    );
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut s = get("/auth/session");
    s.headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    check(&app, &doc, s, "/auth/session", StatusCode::OK).await;
    check(
        &app,
        &doc,
        req(
            p,
            "/auth/link",
            None,
            &json!({ "token": token }).to_string(),
        ),
        "/auth/link",
        StatusCode::GONE,
    )
    .await;
}

/// Billing's part reads back into utoipa's typed document, so the gateway's edit (made through
/// the typed document) is never dropped because of a billing schema.
#[test]
fn billing_part_survives_the_typed_round_trip() {
    use utoipa::OpenApi;
    let v = serde_json::to_value(super::BillingApi::openapi()).unwrap();
    let back: utoipa::openapi::OpenApi = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(back).unwrap(), v);
}
