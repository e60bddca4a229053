//! Real answers of every documented operation (successes and each documented error the router
//! can be made to give in-process) against the OpenAPI document: the status is the expected one
//! and documented, the content type is documented, the body validates against the schema; and
//! every documented status but the storage failures of most routes is seen at least once.

use super::openapi_tests::{check, doc, send, USER};
use super::tests::{request, Fixture};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A body stream that fails midway (400).
const BROKEN: &str = "<broken>";
/// Larger than the fixture's 4096-byte limit (413).
const BIG: &str = "<big>";

/// One request: `"METHOD uri"`, a JSON body (or "", `BROKEN`, `BIG`), the status wanted.
struct Case {
    user: &'static str,
    method: Method,
    uri: String,
    body: &'static str,
    want: u16,
}

fn case(line: &str, body: &'static str, want: u16) -> Case {
    let (method, uri) = line.split_once(' ').expect("METHOD uri");
    Case {
        user: USER,
        method: method.parse().expect("a method"),
        uri: uri.to_string(),
        body,
        want,
    }
}

fn build(c: &Case) -> Request<Body> {
    let json = |s: &str| request(c.method.clone(), &c.uri, c.user, Some(s));
    match c.body {
        "" => request(c.method.clone(), &c.uri, c.user, None),
        BIG => json(&format!("{{\"content\": \"{}\"}}", "x".repeat(5000))),
        BROKEN => {
            let chunks: Vec<Result<&'static str, std::io::Error>> =
                vec![Ok("{\"con"), Err(std::io::Error::other("connection reset"))];
            let mut req = json("");
            *req.body_mut() = Body::from_stream(futures::stream::iter(chunks));
            req
        }
        s => json(s),
    }
}

/// The documented path a URI belongs to.
fn path_of(doc: &Value, uri: &str) -> String {
    let path = uri.split('?').next().unwrap();
    if doc["paths"].get(path).is_some() {
        return path.to_string();
    }
    assert!(path.starts_with("/api/v1/forget/"), "{path}");
    "/api/v1/forget/{id}".to_string()
}

fn cases(forget_id: &str) -> Vec<Case> {
    let forget = format!("DELETE /api/v1/forget/{forget_id}");
    vec![
        case(
            "POST /api/v1/store",
            r#"{"content": "I love dark mode, the editor looks good", "metadata": {"tags": ["ui"]}}"#,
            200,
        ),
        case(
            "POST /api/v1/store",
            r#"{"content": "Dark mode is not good for reading, the editor looks bad", "importance": "0.9"}"#,
            200,
        ),
        case(
            "POST /api/v1/store",
            r#"{"content": "A sad and angry day: dark mode failed", "auto_evaluate": true}"#,
            200,
        ),
        case(
            "POST /api/v1/store",
            r#"{"content": "", "importance": 2}"#,
            422,
        ),
        case("POST /api/v1/store", r#"{"content": "#, 422),
        case("POST /api/v1/store", "[1]", 422),
        case("POST /api/v1/store", "", 422),
        case("POST /api/v1/store", BROKEN, 400),
        case("POST /api/v1/store", BIG, 413),
        case("GET /api/v1/recall?q=dark%20mode&limit=3", "", 200),
        case("GET /api/v1/recall?q=nothing-like-it&emotion=joy", "", 200),
        case("GET /api/v1/recall?limit=x", "", 422),
        case(&forget, "", 200),
        case(&forget, "", 404),
        case("DELETE /api/v1/forget/not-a-uuid", "", 404),
        case("GET /api/v1/memories?limit=2&offset=1", "", 200),
        case("GET /api/v1/memories?zone=9", "", 200),
        case("GET /api/v1/memories?offset=first", "", 422),
        case(
            "GET /api/v1/timeline?start=2020-01-01&end=2100-01-01T00:00:00Z",
            "",
            200,
        ),
        case("GET /api/v1/timeline?start=yesterday&limit=x", "", 422),
        case(
            "POST /api/v1/narrate",
            r#"{"topic": "dark mode", "limit": 5}"#,
            200,
        ),
        case("POST /api/v1/narrate", r#"{"topic": "nothing known"}"#, 200),
        case("POST /api/v1/narrate", r#"{"limit": 0}"#, 422),
        case("POST /api/v1/narrate", BROKEN, 400),
        case("POST /api/v1/narrate", BIG, 413),
        case("GET /api/v1/stats", "", 200),
        case("GET /api/v1/health", "", 200),
        case("GET /api/v1/introspect?topic=dark%20mode&depth=2", "", 200),
        case("GET /api/v1/introspect?topic=unknown-topic", "", 200),
        case("GET /api/v1/introspect?depth=x", "", 422),
        case("GET /api/v1/recall/confident?query=dark%20mode", "", 200),
        case("GET /api/v1/recall/confident?query=zzz", "", 200),
        case("GET /api/v1/recall/confident?top_k=1", "", 422),
        case(
            "POST /api/v1/reason",
            r#"{"query": "dark mode editor", "max_sources": 5}"#,
            200,
        ),
        case(
            "POST /api/v1/reason",
            r#"{"query": 5, "max_sources": 51}"#,
            422,
        ),
        case("POST /api/v1/reason", BROKEN, 400),
        case("POST /api/v1/reason", BIG, 413),
        case("GET /api/v1/contradictions", "", 200),
        case("GET /api/v1/contradictions?scope=dark%20mode", "", 200),
        case(
            "POST /api/v1/benchmark",
            r#"{"queries": 5, "dataset": "small", "seed": 7}"#,
            200,
        ),
        case(
            "POST /api/v1/benchmark",
            r#"{"queries": 0, "seed": "x"}"#,
            422,
        ),
        case("POST /api/v1/benchmark", BROKEN, 400),
        case("POST /api/v1/benchmark", BIG, 413),
        // Rollback first: a failed optimize already initialises self-learning.
        case("POST /api/v1/rollback-weights", "", 400),
        case("POST /api/v1/optimize", "", 400),
    ]
}

/// What the answers showed: problems, and the statuses seen per documented operation.
#[derive(Default)]
struct Seen {
    problems: Vec<String>,
    statuses: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Seen {
    fn record(&mut self, doc: &Value, c: &Case, answer: (StatusCode, Option<String>, Value)) {
        let (status, ct, body) = answer;
        let path = path_of(doc, &c.uri);
        let method = c.method.as_str();
        if status.as_u16() != c.want {
            self.problems.push(format!(
                "{method} {}: wanted {}, got {status} {body}",
                c.uri, c.want
            ));
        }
        let ct = ct.unwrap_or_default();
        let status = status.as_u16();
        self.problems
            .extend(check(doc, method, &path, status, &ct, &body));
        self.statuses
            .entry((method.to_lowercase(), path))
            .or_default()
            .insert(status.to_string());
    }
}

#[tokio::test]
async fn real_answers_match_the_documented_statuses_and_schemas() {
    let f = Fixture::new().await;
    let doc = doc();
    let (_, stored) = f
        .call(request(
            Method::POST,
            "/api/v1/store",
            USER,
            Some(r#"{"content": "forget me"}"#),
        ))
        .await;
    let forget_id = stored["id"].as_str().expect("an id").to_string();
    let mut seen = Seen::default();
    for c in cases(&forget_id) {
        let answer = send(&f, build(&c)).await;
        seen.record(&doc, &c, answer);
    }
    // Another tenant whose memory has unreadable tags: introspect is 409.
    let tagged = Case {
        user: "oa-tags",
        ..case("GET /api/v1/introspect?topic=tagged", "", 409)
    };
    let body = r#"{"content": "tagged note", "metadata": {"tags": 5}}"#;
    f.call(request(
        Method::POST,
        "/api/v1/store",
        tagged.user,
        Some(body),
    ))
    .await;
    seen.record(&doc, &tagged, send(&f, build(&tagged)).await);
    // Self-learning: 50 logged recalls, then optimize and rollback succeed.
    for _ in 0..50 {
        f.call(request(Method::GET, "/api/v1/recall?q=dark", USER, None))
            .await;
    }
    for c in [
        case("POST /api/v1/optimize", "", 200),
        case("POST /api/v1/rollback-weights", "", 200),
    ] {
        seen.record(&doc, &c, send(&f, build(&c)).await);
    }
    // Two benchmarks at once: one is refused while the other runs. Which one, and whether they
    // overlap at all, is up to the scheduler: try again until one is refused.
    let mut refused = false;
    for _ in 0..20 {
        tokio::task::yield_now().await;
        let c = || case("POST /api/v1/benchmark", r#"{"dataset": "small"}"#, 200);
        let (a, b) = tokio::join!(send(&f, build(&c())), send(&f, build(&c())));
        for answer in [a, b] {
            let busy = answer.0 == StatusCode::TOO_MANY_REQUESTS;
            refused |= busy;
            let want = if busy { 429 } else { 200 };
            seen.record(&doc, &Case { want, ..c() }, answer);
        }
        if refused {
            break;
        }
    }
    assert!(refused, "two benchmarks at once never gave a 429");
    // A storage failure: the database closed under the engine.
    f.engine.storage().close().await;
    let lost = case("POST /api/v1/store", r#"{"content": "lost"}"#, 500);
    seen.record(&doc, &lost, send(&f, build(&lost)).await);

    assert!(seen.problems.is_empty(), "{:#?}", seen.problems);
    // Every documented status was seen (the event stream has its own test; only the store's
    // storage failure is provoked).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if path == "/api/v1/events" {
                continue;
            }
            let got = seen.statuses.get(&(method.clone(), path.clone()));
            for status in op["responses"].as_object().unwrap().keys() {
                let hit = got.is_some_and(|s| s.contains(status));
                assert!(
                    hit || status == "500",
                    "{method} {path} → {status} is documented but was never seen"
                );
            }
        }
    }
}
