//! The OpenAPI document against the router: every `/api/v1` route the router serves is
//! documented and every documented operation is served; real answers (successes and errors)
//! have a documented status, the documented content type, and validate against the documented
//! schema (JSON Schema 2020-12, `jsonschema`), with the document's components for `$ref`s.

use super::openapi::document;
use super::tests::{request, Fixture};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tower::ServiceExt;

pub(super) const USER: &str = "oa-user";

/// A body every documented POST accepts (unknown fields are ignored), small enough to be quick.
const PROBE_BODY: &str =
    r#"{"content": "probe", "topic": "probe", "query": "probe", "dataset": "small", "queries": 1}"#;

pub(super) fn doc() -> Value {
    serde_json::to_value(document()).expect("the document serialises")
}

/// `(method, path)` of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// `(method, path)` of every `/api/v1` route in the router's source (`.route("…", get(…))`).
fn routed() -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for src in [include_str!("mod.rs"), include_str!("analysis.rs")] {
        for piece in src.split(".route(").skip(1) {
            let piece = piece.trim_start();
            let Some(rest) = piece.strip_prefix('"') else {
                continue;
            };
            let (path, rest) = rest.split_once('"').expect("a closed path literal");
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let handlers = &rest[..rest.find('\n').unwrap_or(rest.len())];
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = handlers
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric());
                if called {
                    ops.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
    }
    ops
}

/// A concrete URI for a documented path (`{id}` becomes a fresh UUID).
fn concrete(path: &str) -> String {
    path.replace("{id}", &uuid::Uuid::new_v4().to_string())
}

pub(super) async fn send(f: &Fixture, req: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let resp = tokio::time::timeout(Duration::from_secs(30), f.app.clone().oneshot(req))
        .await
        .expect("an answer in time")
        .expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        ct,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Problems with one real answer to `method path`: status not documented, another content type,
/// or a body the documented schema rejects.
pub(super) fn check(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    ct: &str,
    body: &Value,
) -> Vec<String> {
    let what = format!("{method} {path} → {status}");
    let op = &doc["paths"][path][method.to_lowercase()];
    if !op.is_object() {
        return vec![format!("{what}: the operation is not documented")];
    }
    let Some(resp) = op["responses"].get(status.to_string()) else {
        return vec![format!("{what}: status not documented")];
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    let Some(schema) = resp["content"].get(mime).map(|m| &m["schema"]) else {
        return vec![format!("{what}: content type {ct} not documented")];
    };
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
    validator
        .iter_errors(body)
        .map(|e| format!("{what}: {e} at {} in {body}", e.instance_path))
        .collect()
}

/// Every documented operation is served, every `/api/v1` route is documented, and a documented
/// path answers its other methods with the 405 fallback.
fn route_problems(doc: &Value, routed: &BTreeSet<(String, String)>) -> Vec<String> {
    let documented = documented(doc);
    let mut problems = Vec::new();
    for op in routed.difference(&documented) {
        problems.push(format!("{} {} is served but not documented", op.0, op.1));
    }
    for op in documented.difference(routed) {
        problems.push(format!("{} {} is documented but not routed", op.0, op.1));
    }
    problems
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_is_served() {
    let f = Fixture::new().await;
    let doc = doc();
    let routed = routed();
    assert!(routed.len() >= 16, "the route scan found only {routed:?}");
    let problems = route_problems(&doc, &routed);
    assert!(problems.is_empty(), "{problems:#?}");
    // The check can fail: drop one operation from the document, add a route it does not know.
    let mut fewer = doc.clone();
    fewer["paths"]
        .as_object_mut()
        .unwrap()
        .remove("/api/v1/stats");
    let mut more = routed.clone();
    more.insert(("PUT".into(), "/api/v1/store".into()));
    assert_eq!(route_problems(&fewer, &routed).len(), 1);
    assert_eq!(route_problems(&doc, &more).len(), 1);

    // Served, not the fallbacks: each documented operation, and 405 for every other method.
    let documented = documented(&doc);
    for (method, path) in &documented {
        let uri = concrete(path);
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let req = Request::builder()
                .method(m)
                .uri(&uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(PROBE_BODY))
                .unwrap();
            if m == "GET" && path == "/api/v1/events" {
                let resp = f.app.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                continue;
            }
            let (status, _, body) = send(&f, req).await;
            let is_documented = documented.contains(&(m.to_string(), path.clone()));
            if is_documented {
                assert!(
                    !(status == StatusCode::NOT_FOUND && body["detail"] == "Not Found")
                        && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {uri} ({method} documented) is not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    (status, &body),
                    (
                        StatusCode::METHOD_NOT_ALLOWED,
                        &json!({"detail": "Method Not Allowed"})
                    ),
                    "{m} {uri} is not documented but answers"
                );
            }
        }
    }
}

#[tokio::test]
async fn event_stream_frames_match_the_documented_schema() {
    use futures::StreamExt;
    let f = Fixture::new().await;
    let doc = doc();
    let resp = f
        .app
        .clone()
        .oneshot(request(Method::GET, "/api/v1/events", USER, None))
        .await
        .unwrap();
    let ct = resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(check(&doc, "GET", "/api/v1/events", 200, &ct, &json!("")).is_empty());
    let mut frames = resp.into_body().into_data_stream();
    f.call(request(
        Method::POST,
        "/api/v1/store",
        USER,
        Some(r#"{"content": "an event"}"#),
    ))
    .await;
    let frame = tokio::time::timeout(Duration::from_secs(5), frames.next())
        .await
        .expect("a frame")
        .expect("the stream is open")
        .expect("bytes");
    let text = std::str::from_utf8(&frame).unwrap();
    let data: Value = serde_json::from_str(
        text.strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one data frame"),
    )
    .unwrap();
    let mut schema = json!({"$ref": "#/components/schemas/EventFrame"});
    schema["components"] = doc["components"].clone();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    assert!(v.is_valid(&data), "{data}");
    assert!(v.is_valid(&json!({"event": "heartbeat"})));
    assert!(!v.is_valid(&json!({"event": "on_store"})), "ts is required");
    assert!(!v.is_valid(&json!({"event": "on_nothing", "ts": 1.0})));
}

/// The schemas are strict enough to catch a wrong answer.
#[test]
fn schemas_reject_wrong_answers() {
    let doc = doc();
    let id = uuid::Uuid::new_v4().to_string();
    let good = json!({"id": id, "zone": 1, "score": 0.6});
    assert!(check(
        &doc,
        "POST",
        "/api/v1/store",
        200,
        "application/json",
        &good
    )
    .is_empty());
    for bad in [
        json!({"id": id, "zone": 1}),
        json!({"id": id, "zone": 7, "score": 0.6}),
        json!({"id": id, "zone": 1, "score": "0.6"}),
        json!({"id": id, "zone": 1, "score": 0.6, "extra": true}),
    ] {
        assert!(
            !check(&doc, "POST", "/api/v1/store", 200, "application/json", &bad).is_empty(),
            "{bad}"
        );
    }
    let invalid = json!({"detail": [{"type": "missing", "loc": ["query", "q"], "msg": "Field required", "input": null}]});
    assert!(check(
        &doc,
        "GET",
        "/api/v1/recall",
        422,
        "application/json",
        &invalid
    )
    .is_empty());
    for bad in [
        json!({"detail": "Not Found"}),
        json!({"detail": []}),
        json!({"detail": [{"type": "missing"}]}),
    ] {
        assert!(
            !check(&doc, "GET", "/api/v1/recall", 422, "application/json", &bad).is_empty(),
            "{bad}"
        );
    }
    assert!(!check(
        &doc,
        "GET",
        "/api/v1/recall",
        404,
        "application/json",
        &json!({"detail": "x"})
    )
    .is_empty());
    assert!(!check(
        &doc,
        "GET",
        "/api/v1/stats",
        200,
        "text/plain",
        &json!(null)
    )
    .is_empty());
    let stats = json!({"total_memories": 0, "zones": {"0": 0, "1": 0, "2": 0, "3": 0}, "capacities": {"0": 20, "1": 100, "2": 1000, "3": null, "4": null}});
    assert!(!check(
        &doc,
        "GET",
        "/api/v1/stats",
        200,
        "application/json",
        &stats
    )
    .is_empty());
}

#[tokio::test]
async fn the_engine_serves_its_document() {
    let f = Fixture::new().await;
    let (status, ct, body) = send(&f, request(Method::GET, "/openapi.json", USER, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert_eq!(body, doc());
    assert_eq!(body["openapi"], "3.1.0");
}
