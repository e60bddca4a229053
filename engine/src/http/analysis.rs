//! The original's analysis routes (its "P9" block in `stellar_memory/server.py`): introspect,
//! confident recall, optimize and rollback of the score weights, reasoning, contradictions and
//! the benchmark. Parameters, defaults and validation are the original's; the work is in
//! `engine::analysis` and `crate::analysis`.

use super::schemas::{
    self, BodyErrors, ConfidentQuery, ContradictionsQuery, HTTPError, IntrospectQuery, QueryErrors,
    StorageErrors, TenantHeaders, WeightsAnswer,
};
use super::validate::{self, Fields, Query};
use super::{read_body, tenant, text_and_count, ApiError, AppState};
use crate::analysis::benchmark::BenchmarkParams;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/introspect", get(introspect))
        .route("/api/v1/recall/confident", get(recall_confident))
        .route("/api/v1/optimize", post(optimize))
        .route("/api/v1/rollback-weights", post(rollback_weights))
        .route("/api/v1/reason", post(reason))
        .route("/api/v1/contradictions", get(contradictions))
        .route("/api/v1/benchmark", post(benchmark))
}

/// A required string and an integer with a default, from the query string.
fn text_and_int(
    raw: Option<&str>,
    text: &str,
    int: (&str, i64),
) -> Result<(String, i64), ApiError> {
    let mut q = Query::parse(raw);
    let text = q.required_str(text);
    let n = q.int(int.0, int.1);
    q.finish()?;
    Ok((text.unwrap_or_default(), n))
}

/// `GET /api/v1/introspect?topic=…&depth=1`. `depth` is how far the original walks its memory
/// graph for gaps; validated as there, and without a graph it changes nothing (as in the
/// original's default install, whose graph stays empty).
#[utoipa::path(get, path = "/api/v1/introspect", tag = "analysis", params(TenantHeaders, IntrospectQuery),
    responses((status = 200, description = "What the memories recalled for the topic cover.",
        body = crate::analysis::metacognition::Introspection), QueryErrors,
        (status = 409, description = "A recalled memory has `metadata.tags` that cannot be read.", body = HTTPError),
        StorageErrors))]
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (topic, _depth) = text_and_int(raw.as_deref(), "topic", ("depth", 1))?;
    let result = state.engine.introspect(&tenant(&headers), &topic).await?;
    Ok(Json(result).into_response())
}

/// `GET /api/v1/recall/confident?query=…&top_k=5`. Unlike `/recall`, the original does not cap
/// `top_k`; a zero or negative `top_k` recalls nothing.
#[utoipa::path(get, path = "/api/v1/recall/confident", tag = "analysis", params(TenantHeaders, ConfidentQuery),
    responses((status = 200, description = "A recall with a confidence and, when low, a warning.",
        body = crate::engine::ConfidentRecall), QueryErrors, StorageErrors))]
async fn recall_confident(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (query, top_k) = text_and_int(raw.as_deref(), "query", ("top_k", 5))?;
    let top_k = usize::try_from(top_k.max(0)).unwrap_or(usize::MAX);
    let result = state
        .engine
        .recall_confident(&tenant(&headers), &query, top_k)
        .await?;
    Ok(Json(result).into_response())
}

/// `POST /api/v1/optimize` (no body): 400 until the tenant has 50 logged recalls.
#[utoipa::path(post, path = "/api/v1/optimize", tag = "analysis", params(TenantHeaders),
    responses((status = 200, description = "The weights before and after; applied only if no worse.",
        body = crate::analysis::learning::OptimizeReport),
        (status = 400, description = "`Need at least 50 recall logs, got N`.", body = HTTPError),
        StorageErrors))]
async fn optimize(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let report = state.engine.optimize(&tenant(&headers)).await?;
    Ok(Json(report).into_response())
}

/// `POST /api/v1/rollback-weights` (no body): `{"weights": {...}}`, or 400 before the tenant's
/// first optimize.
#[utoipa::path(post, path = "/api/v1/rollback-weights", tag = "analysis", params(TenantHeaders),
    responses((status = 200, description = "The weights now in use.", body = WeightsAnswer),
        (status = 400, description = "`Self-learning is not initialized` (before the tenant's first optimize).", body = HTTPError),
        StorageErrors))]
async fn rollback_weights(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let weights = state.engine.rollback_weights(&tenant(&headers)).await?;
    Ok(Json(WeightsAnswer { weights }).into_response())
}

/// `POST /api/v1/reason` with `{"query": …, "max_sources": 10}` (1–50).
#[utoipa::path(post, path = "/api/v1/reason", tag = "analysis", params(TenantHeaders),
    request_body(content = schemas::ReasonRequest, content_type = "application/json"),
    responses((status = 200, description = "Rule-based insights over the recalled memories.",
        body = crate::analysis::reasoning::Reasoning), BodyErrors, StorageErrors))]
async fn reason(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (query, max_sources) =
        text_and_count(&state, &headers, body, ("query", "max_sources")).await?;
    let result = state
        .engine
        .reason(&tenant(&headers), &query, max_sources)
        .await?;
    Ok(Json(result).into_response())
}

/// `GET /api/v1/contradictions[?scope=…]`.
#[utoipa::path(get, path = "/api/v1/contradictions", tag = "analysis", params(TenantHeaders, ContradictionsQuery),
    responses((status = 200, description = "Pairs of memories that seem to contradict each other.",
        body = Vec<crate::analysis::reasoning::Contradiction>), StorageErrors))]
async fn contradictions(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let scope = q.optional_str("scope");
    q.finish()?;
    let found = state
        .engine
        .contradictions(&tenant(&headers), scope.as_deref())
        .await?;
    Ok(Json(found).into_response())
}

/// `POST /api/v1/benchmark` with `{"queries": 100 (1–1000), "dataset": "standard", "seed": 42}`
/// (the body is required, even if empty: `{}`).
#[utoipa::path(post, path = "/api/v1/benchmark", tag = "analysis", params(TenantHeaders),
    request_body(content = schemas::BenchmarkRequest, content_type = "application/json"),
    responses((status = 200, description = "Recall quality and latencies on a scratch copy of the tenant's space.",
        body = crate::analysis::benchmark::BenchmarkReport), BodyErrors,
        (status = 429, description = "Another benchmark is running.", body = HTTPError,
            headers(("Retry-After" = i64, description = "Always 5 (seconds)."))),
        StorageErrors))]
async fn benchmark(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let obj = validate::json_body(&headers, &bytes)?;
    let mut f = Fields::body(&obj);
    let queries = f.int("queries", 100, 1, 1000);
    let dataset = f.string_or("dataset", "standard");
    let seed = f.int("seed", 42, i64::MIN, i64::MAX);
    f.finish()?;
    let (Some(queries), Some(dataset), Some(seed)) = (queries, dataset, seed) else {
        unreachable!("finish() reports any field that failed")
    };
    let params = BenchmarkParams {
        queries: queries as usize,
        dataset,
        seed,
    };
    let report = state.engine.benchmark(&tenant(&headers), params).await?;
    Ok(Json(report).into_response())
}
