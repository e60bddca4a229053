//! Router tests of the analysis routes that read a tenant's memories (introspect,
//! recall/confident, reason, contradictions): answer shapes and defaults, FastAPI 422s, tenant
//! isolation, and the 409 where the original crashes. The helpers serve `learning_tests` too.

use super::tests::{request, Fixture};
use crate::engine::Tenant;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

pub(super) async fn store(f: &Fixture, user: &str, content: &str, metadata: Value) -> String {
    let body = json!({ "content": content, "metadata": metadata }).to_string();
    let (s, v) = f
        .call(request(Method::POST, "/api/v1/store", user, Some(&body)))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["id"].as_str().expect("id").to_string()
}

pub(super) async fn get(f: &Fixture, uri: &str, user: &str) -> (StatusCode, Value) {
    f.call(request(Method::GET, uri, user, None)).await
}

pub(super) async fn post(
    f: &Fixture,
    uri: &str,
    user: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    f.call(request(Method::POST, uri, user, body)).await
}

pub(super) fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

pub(super) fn tenant(user: &str) -> Tenant {
    Tenant {
        user: user.into(),
        agent: "default".into(),
    }
}

/// The first validation item's (type, loc).
pub(super) fn first_error(v: &Value) -> (Value, Value) {
    (
        v["detail"][0]["type"].clone(),
        v["detail"][0]["loc"].clone(),
    )
}

#[tokio::test]
async fn introspect_describes_the_tenants_knowledge() {
    let f = Fixture::new().await;
    store(
        &f,
        "u1",
        "Rust compiles quickly with incremental builds",
        json!({"tags": ["rust", "tooling"]}),
    )
    .await;
    store(
        &f,
        "u1",
        "Cargo caches Rust builds in the target folder",
        json!({}),
    )
    .await;
    store(
        &f,
        "u2",
        "Rust secrets of another tenant",
        json!({"tags": ["private"]}),
    )
    .await;

    let (s, v) = get(&f, "/api/v1/introspect?topic=rust", "u1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        keys(&v),
        [
            "avg_freshness",
            "confidence",
            "coverage",
            "gaps",
            "memory_count",
            "topic",
            "zone_distribution"
        ]
    );
    assert_eq!(v["topic"], "rust");
    assert_eq!(v["memory_count"], 2);
    assert_eq!(v["gaps"], json!([]));
    let coverage: Vec<&str> = v["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(&coverage[..3], ["rust", "tooling", "builds"], "{v}");
    assert!(!coverage.contains(&"private") && !coverage.contains(&"secrets"));
    // Just stored, so fresh: 0.4 * min(cov/10, 1) + 0.3 * 1 + 0.3 * 0.2.
    assert_eq!(v["avg_freshness"], 1.0);
    let cov = coverage.len().min(10) as f64 / 10.0;
    let expected = ((0.4 * cov + 0.3 + 0.06) * 1000.0).round() / 1000.0;
    assert_eq!(v["confidence"], expected, "{v}");
    assert_eq!(v["zone_distribution"], json!({"2": 2}));
    // Introspection recalls, as in the original: the memories were counted.
    let (_, list) = get(&f, "/api/v1/memories", "u1").await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["recall_count"] == 1),
        "{list}"
    );

    // Another tenant, or nothing known: the topic itself is the gap.
    let (s, v) = get(&f, "/api/v1/introspect?topic=volcano&depth=3", "u1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"topic": "volcano", "confidence": 0.0, "coverage": [], "gaps": ["volcano"],
               "memory_count": 0, "avg_freshness": 0.0, "zone_distribution": {}})
    );
    let (_, v) = get(&f, "/api/v1/introspect?topic=cargo", "u3").await;
    assert_eq!(v["memory_count"], 0);

    // Validation: topic required, depth an integer.
    let (s, v) = get(&f, "/api/v1/introspect", "u1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        first_error(&v),
        (json!("missing"), json!(["query", "topic"]))
    );
    let (s, v) = get(&f, "/api/v1/introspect?topic=x&depth=deep", "u1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        first_error(&v),
        (json!("int_parsing"), json!(["query", "depth"]))
    );
    f.engine.storage().close().await;
}

#[tokio::test]
async fn introspect_answers_409_where_the_original_crashes_on_tags() {
    let f = Fixture::new().await;
    let bad = store(&f, "u1", "Kettle descaling schedule", json!({"tags": 7})).await;
    // A string is one tag (the original would split it into letters).
    store(
        &f,
        "u1",
        "Kettle brand preference",
        json!({"tags": "kitchen"}),
    )
    .await;
    let (s, v) = get(&f, "/api/v1/introspect?topic=brand", "u1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["coverage"][0], "kitchen");
    let (s, v) = get(&f, "/api/v1/introspect?topic=kettle", "u1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let detail = v["detail"].as_str().expect("string detail");
    assert!(
        detail.contains(&bad) && detail.contains("a number"),
        "{detail}"
    );
    // A list holding a non-string is just as unreadable.
    store(&f, "u2", "Kettle list", json!({"tags": ["ok", null]})).await;
    let (s, v) = get(&f, "/api/v1/introspect?topic=kettle", "u2").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(v["detail"]
        .as_str()
        .unwrap()
        .contains("a list holding null"));
    f.engine.storage().close().await;
}

#[tokio::test]
async fn recall_confident_scores_the_recall() {
    let f = Fixture::new().await;
    for i in 0..7 {
        store(&f, "u1", &format!("espresso shot number {i}"), json!({})).await;
    }
    store(&f, "u2", "espresso of the other tenant", json!({})).await;

    let (s, v) = get(&f, "/api/v1/recall/confident?query=espresso", "u1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(keys(&v), ["confidence", "memories", "warning"]);
    let memories = v["memories"].as_array().unwrap();
    // top_k defaults to 5; items are /recall's items.
    assert_eq!(memories.len(), 5);
    assert_eq!(
        keys(&memories[0]),
        [
            "content",
            "emotion",
            "id",
            "importance",
            "recall_count",
            "zone"
        ]
    );
    assert!(memories
        .iter()
        .all(|m| m["content"].as_str().unwrap().contains("shot")));
    // 5 results in zone 2 scored 0.425: 0.3 * 0.5 + 0.4 * 0.5 + 0.3 * 0.425 = 0.4775 → 0.477 or
    // 0.478 (Python rounding of the binary value); no warning above 0.3.
    let c = v["confidence"].as_f64().unwrap();
    assert!((c - 0.4775).abs() < 0.001, "{v}");
    assert_eq!(v["warning"], Value::Null);

    // top_k is not capped at 5 and may exceed the hits.
    let (_, v) = get(
        &f,
        "/api/v1/recall/confident?query=espresso&top_k=100",
        "u1",
    )
    .await;
    assert_eq!(v["memories"].as_array().unwrap().len(), 7);

    // Nothing found (another tenant's words, or top_k ≤ 0): confidence 0 and the warning.
    let (_, v) = get(&f, "/api/v1/recall/confident?query=tenant", "u1").await;
    assert_eq!(
        v,
        json!({"memories": [], "confidence": 0.0, "warning": "No memories found for 'tenant'"})
    );
    let (_, v) = get(&f, "/api/v1/recall/confident?query=espresso&top_k=-1", "u1").await;
    assert_eq!(v["memories"], json!([]));
    let (_, v) = get(&f, "/api/v1/recall/confident?query=espresso", "u3").await;
    assert_eq!(v["confidence"], 0.0);

    let (s, v) = get(&f, "/api/v1/recall/confident?q=espresso", "u1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        first_error(&v),
        (json!("missing"), json!(["query", "query"]))
    );
    let (s, v) = get(&f, "/api/v1/recall/confident?query=x&top_k=five", "u1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        first_error(&v),
        (json!("int_parsing"), json!(["query", "top_k"]))
    );
    f.engine.storage().close().await;
}

#[tokio::test]
async fn reason_derives_insights_from_the_tenants_memories() {
    let f = Fixture::new().await;
    store(
        &f,
        "u1",
        "The deploy pipeline runs integration tests",
        json!({}),
    )
    .await;
    store(
        &f,
        "u1",
        "The deploy pipeline does not run integration tests on Fridays",
        json!({}),
    )
    .await;
    store(&f, "u2", "deploy pipeline of someone else", json!({})).await;

    let (s, v) = post(
        &f,
        "/api/v1/reason",
        "u1",
        Some(r#"{"query": "deploy pipeline"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        keys(&v),
        [
            "confidence",
            "contradictions",
            "insights",
            "query",
            "reasoning_chain",
            "source_count"
        ]
    );
    assert_eq!(v["query"], "deploy pipeline");
    assert_eq!(v["source_count"], 2);
    assert_eq!(v["reasoning_chain"][0], "Rule-based reasoning (no LLM)");
    assert!(
        v["insights"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "2 of 2 memories directly mention query terms"),
        "{v}"
    );
    let c = &v["contradictions"][0];
    assert_eq!(
        keys(c),
        ["description", "memory_a_id", "memory_b_id", "severity"]
    );
    assert_eq!(c["severity"], 0.5);
    assert!(v["confidence"].as_f64().unwrap() > 0.0);

    let (_, v) = post(
        &f,
        "/api/v1/reason",
        "u3",
        Some(r#"{"query": "deploy pipeline", "max_sources": 50}"#),
    )
    .await;
    assert_eq!(
        v,
        json!({"query": "deploy pipeline", "insights": ["No relevant memories found for reasoning."],
               "contradictions": [], "confidence": 0.0, "reasoning_chain": ["No data available"],
               "source_count": 0})
    );

    let (s, v) = post(&f, "/api/v1/reason", "u1", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&v), (json!("missing"), json!(["body"])));
    let (s, v) = post(&f, "/api/v1/reason", "u1", Some(r#"{"max_sources": 3}"#)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        first_error(&v),
        (json!("missing"), json!(["body", "query"]))
    );
    for (bad, kind) in [
        ("0", "greater_than_equal"),
        ("51", "less_than_equal"),
        ("\"many\"", "int_parsing"),
    ] {
        let body = format!(r#"{{"query": "x", "max_sources": {bad}}}"#);
        let (s, v) = post(&f, "/api/v1/reason", "u1", Some(&body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            first_error(&v),
            (json!(kind), json!(["body", "max_sources"]))
        );
    }
    f.engine.storage().close().await;
}

#[tokio::test]
async fn contradictions_are_found_within_a_tenant_only() {
    let f = Fixture::new().await;
    let a = store(&f, "u1", "Alice always drinks green tea", json!({})).await;
    let b = store(&f, "u1", "Alice never drinks green tea anymore", json!({})).await;
    store(&f, "u1", "The office moved downtown", json!({})).await;
    store(&f, "u2", "Alice drinks green tea, not coffee", json!({})).await;

    let (s, v) = get(&f, "/api/v1/contradictions", "u1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["memory_a_id"], json!(a));
    assert_eq!(list[0]["memory_b_id"], json!(b));
    assert_eq!(
        list[0]["description"],
        "Potential contradiction on 'alice, drinks, green' (negation pattern)"
    );
    assert_eq!(list[0]["severity"], 0.5);
    // Scoped: among the memories recalled for the scope.
    let (_, v) = get(&f, "/api/v1/contradictions?scope=office", "u1").await;
    assert_eq!(v, json!([]));
    let (_, v) = get(&f, "/api/v1/contradictions?scope=tea", "u1").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    // u2's one memory contradicts nothing; a tenant with none gets an empty list.
    let (_, v) = get(&f, "/api/v1/contradictions", "u2").await;
    assert_eq!(v, json!([]));
    let (_, v) = get(&f, "/api/v1/contradictions?scope=", "u3").await;
    assert_eq!(v, json!([]));
    f.engine.storage().close().await;
}
