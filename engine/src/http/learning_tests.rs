//! Router tests of the analysis routes that learn or measure: optimize, rollback-weights and
//! benchmark (shapes, defaults, 400s and 422s, tenant isolation, persistence, the busy 429).

use super::analysis_tests::{first_error, get, keys, post, store, tenant};
use super::tests::Fixture;
use crate::model::Weights;
use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn optimize_and_rollback_tune_each_tenants_weights_durably() {
    let f = Fixture::new().await;
    let defaults = serde_json::to_value(Weights::default()).unwrap();
    // Before any optimize, rollback is the original's 400.
    let (s, v) = post(&f, "/api/v1/rollback-weights", "u1", None).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Self-learning is not initialized"})
        )
    );
    // Too few recalls: 400 with the original's message; it still sets up self-learning.
    let (s, v) = post(&f, "/api/v1/optimize", "u1", None).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Need at least 50 recall logs, got 0"})
        )
    );
    let (s, v) = post(&f, "/api/v1/rollback-weights", "u1", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({ "weights": defaults })));

    for i in 0..60 {
        store(&f, "u1", &format!("topic{i} notes"), json!({})).await;
    }
    // Sixty different queries, two results each... except each topic matches one memory: the
    // diversity is what counts.
    for i in 0..60 {
        let (s, _) = get(&f, &format!("/api/v1/recall?q=topic{i}"), "u1").await;
        assert_eq!(s, StatusCode::OK);
    }
    // Another tenant's recalls are not u1's logs, and the other way round.
    let (s, v) = post(&f, "/api/v1/optimize", "u2", None).await;
    assert_eq!(
        (s, v["detail"].clone()),
        (
            StatusCode::BAD_REQUEST,
            json!("Need at least 50 recall logs, got 0")
        )
    );

    let (s, v) = post(&f, "/api/v1/optimize", "u1", Some("{}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        keys(&v),
        [
            "after_weights",
            "before_weights",
            "improvement",
            "pattern",
            "rolled_back",
            "simulation_score"
        ]
    );
    assert_eq!(v["before_weights"], defaults);
    assert_eq!(v["pattern"], "diverse_topics");
    assert_eq!(v["rolled_back"], false);
    let tuned = json!({"w_recall": 0.2885, "w_freshness": 0.2885, "w_arbitrary": 0.2404,
                       "w_context": 0.1731, "w_emotion": 0.0096});
    assert_eq!(v["after_weights"], tuned);
    assert!(v["improvement"]
        .as_str()
        .unwrap()
        .starts_with("Score improved: "));
    // The tuned weights score u1's new memories, not u2's: 0.2885 + 0.2404 * 0.5.
    let (_, s1) = post(
        &f,
        "/api/v1/store",
        "u1",
        Some(r#"{"content":"after tuning"}"#),
    )
    .await;
    assert_eq!(s1["score"], 0.4087);
    let (_, s2) = post(
        &f,
        "/api/v1/store",
        "u2",
        Some(r#"{"content":"untouched"}"#),
    )
    .await;
    assert_eq!(s2["score"], 0.425);

    // Restart: weights, history and the set-up survive.
    f.engine.storage().close().await;
    let g = Fixture::open(f.path.clone()).await;
    assert_eq!(
        serde_json::to_value(g.engine.weights(&tenant("u1"))).unwrap(),
        tuned
    );
    let (s, v) = post(&g, "/api/v1/rollback-weights", "u1", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({ "weights": defaults })));
    assert_eq!(g.engine.weights(&tenant("u1")), Weights::default());
    // As in the original, a second rollback steps back over the first (history: pre_optimize,
    // optimize, rollback): it returns to the tuned weights.
    let (_, v) = post(&g, "/api/v1/rollback-weights", "u1", None).await;
    assert_eq!(v["weights"], tuned);
    let (s, _) = post(&g, "/api/v1/rollback-weights", "u2", None).await;
    assert_eq!(s, StatusCode::OK, "u2 called optimize, so it is set up too");
    let (s, _) = post(&g, "/api/v1/rollback-weights", "u3", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    g.engine.storage().close().await;
}

#[tokio::test]
async fn benchmark_runs_on_a_scratch_copy() {
    let f = Fixture::new().await;
    store(&f, "u1", "a memory of the tenant's own", json!({})).await;
    let (s, v) = post(
        &f,
        "/api/v1/benchmark",
        "u1",
        Some(r#"{"dataset": "small", "queries": 5}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        keys(&v),
        [
            "avg_recall_latency_ms",
            "avg_reorbit_latency_ms",
            "avg_store_latency_ms",
            "dataset_name",
            "precision_at_5",
            "queries_run",
            "recall_at_10",
            "recall_at_5",
            "total_memories"
        ]
    );
    assert_eq!(v["dataset_name"], "small");
    assert_eq!(v["queries_run"], 5);
    // The dataset's 100 on top of the tenant's own one, in the copy only.
    assert_eq!(v["total_memories"], 101);
    assert!(v["recall_at_5"].as_f64().unwrap() <= v["recall_at_10"].as_f64().unwrap());
    f.assert_total("u1", 1).await;

    // Defaults: the standard dataset (1,000 memories); an unknown name is sized as standard
    // and reported as given. Queries are capped by the dataset's 100.
    let (s, v) = post(
        &f,
        "/api/v1/benchmark",
        "u2",
        Some(r#"{"dataset": "mine", "queries": 1000}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["total_memories"].clone(), v["queries_run"].clone()),
        (json!(1000), json!(100))
    );
    assert_eq!(v["dataset_name"], "mine");
    f.assert_total("u2", 0).await;

    // One at a time: a second benchmark while one runs is told to come back.
    let permit = f.engine.benchmark_gate().try_acquire().expect("free");
    let (s, v) = post(&f, "/api/v1/benchmark", "u1", Some("{}")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("already running"));
    drop(permit);

    let (s, v) = post(&f, "/api/v1/benchmark", "u1", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_error(&v), (json!("missing"), json!(["body"])));
    for (body, kind, field) in [
        (r#"{"queries": 0}"#, "greater_than_equal", "queries"),
        (r#"{"queries": 1001}"#, "less_than_equal", "queries"),
        (r#"{"dataset": 5}"#, "string_type", "dataset"),
        (r#"{"seed": 1.5}"#, "int_from_float", "seed"),
    ] {
        let (s, v) = post(&f, "/api/v1/benchmark", "u1", Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            first_error(&v),
            (json!(kind), json!(["body", field])),
            "{body}"
        );
    }
    f.engine.storage().close().await;
}
