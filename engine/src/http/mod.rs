//! The HTTP surface: routes of the Stellar Memory REST API v1, the metrics listener's router, and
//! the per-request middleware (tracing span, request counts, latency).
//!
//! Handlers are thin: parse and validate (`validate`), call the engine, serialise. Errors of every
//! kind become responses in `error`; unknown routes and methods answer like FastAPI.

mod analysis;
mod error;
pub mod openapi;
pub(crate) mod schemas;
mod sse;
mod validate;

#[cfg(test)]
mod analysis_tests;
#[cfg(test)]
mod learning_tests;
#[cfg(test)]
mod openapi_answers_tests;
#[cfg(test)]
mod openapi_tests;
#[cfg(test)]
mod tests;

use crate::clock::OffsetClock;
use crate::engine::{Engine, StoreInput, Tenant};
use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
pub use error::ApiError;
use schemas::{
    BodyErrors, HTTPError, MemoriesQuery, Narrative, QueryErrors, RecallQuery, Removed,
    StorageErrors, TenantHeaders, TimelineQuery,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use validate::{Fields, Query};

/// How far past `max_body_bytes` an oversized body is drained before answering 413.
const DRAIN_FACTOR: usize = 8;

/// The most a recall may return, whatever `limit` asks for (as in the original).
const RECALL_LIMIT_CAP: i64 = 50;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub heartbeat: Duration,
    /// Flips to true when the server starts shutting down; SSE streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// Present only when `test_clock = true`: enables the `/_test/*` routes.
    pub test_clock: Option<Arc<OffsetClock>>,
}

/// The API router.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/api/v1/store", post(store))
        .route("/api/v1/recall", get(recall))
        .route("/api/v1/forget/{id}", delete(forget))
        .route("/api/v1/memories", get(memories))
        .route("/api/v1/timeline", get(timeline))
        .route("/api/v1/narrate", post(narrate))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/health", get(health))
        .route("/api/v1/events", get(sse::events))
        .merge(analysis::routes())
        .route("/openapi.json", get(openapi::serve));
    if state.test_clock.is_some() {
        r = r
            .route("/_test/clock/advance", post(test_advance))
            .route("/_test/reorbit", post(test_reorbit));
    }
    r.fallback(|| async { ApiError::NotFound("Not Found") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The metrics listener's router.
pub fn metrics_router(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                engine.refresh_gauges();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }),
        )
        .fallback(|| async { ApiError::NotFound("Not Found") })
}

/// One span per request; request counts by route and status; latency per operation.
async fn track(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span = tracing::debug_span!("request", %method, %route);
    let started = Instant::now();
    let response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    if let Some(op) = operation(&route) {
        state
            .metrics
            .op_seconds
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
    }
    state
        .metrics
        .requests
        .with_label_values(&[&route, method.as_str(), status.as_str()])
        .inc();
    if status.is_server_error() {
        tracing::warn!(parent: &span, status = status.as_u16(), elapsed_us = elapsed.as_micros() as u64, "request failed");
    } else {
        tracing::debug!(parent: &span, status = status.as_u16(), elapsed_us = elapsed.as_micros() as u64, "request");
    }
    response
}

/// The operation label of a route (`None` for the event stream, whose "latency" is its lifetime).
fn operation(route: &str) -> Option<&'static str> {
    Some(match route {
        "/api/v1/store" => "store",
        "/api/v1/recall" => "recall",
        "/api/v1/forget/{id}" => "forget",
        "/api/v1/memories" => "memories",
        "/api/v1/timeline" => "timeline",
        "/api/v1/narrate" => "narrate",
        "/api/v1/stats" => "stats",
        "/api/v1/health" => "health",
        "/api/v1/introspect" => "introspect",
        "/api/v1/recall/confident" => "recall_confident",
        "/api/v1/optimize" => "optimize",
        "/api/v1/rollback-weights" => "rollback_weights",
        "/api/v1/reason" => "reason",
        "/api/v1/contradictions" => "contradictions",
        "/api/v1/benchmark" => "benchmark",
        _ => return None,
    })
}

/// The tenant named by the trusted `X-Stellar-User` / `X-Stellar-Agent` headers.
fn tenant(headers: &HeaderMap) -> Tenant {
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .unwrap_or_default()
    };
    Tenant {
        user: get("x-stellar-user"),
        agent: get("x-stellar-agent"),
    }
}

/// Read the body up to the configured limit.
///
/// An oversized body is still read (and thrown away) up to a few times the limit before the 413
/// goes out: a client that is still sending when the connection closes sees a reset instead of
/// our answer. Past that, we stop reading and let the connection go.
async fn read_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, ApiError> {
    use futures::StreamExt;
    let limit = state.max_body_bytes;
    let drain_cap = limit.saturating_mul(DRAIN_FACTOR);
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadBody)?;
        total += chunk.len();
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > drain_cap {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(buf.into())
}

#[utoipa::path(post, path = "/api/v1/store", tag = "memory", params(TenantHeaders),
    request_body(content = schemas::StoreRequest, content_type = "application/json"),
    responses((status = 200, description = "Stored and placed in a zone.", body = crate::engine::Stored),
        BodyErrors, StorageErrors))]
async fn store(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let obj = validate::json_body(&headers, &bytes)?;
    let mut f = Fields::body(&obj);
    let content = f.string("content", Some(1), Some(10_000));
    let importance = f.float("importance", 0.5, 0.0, 1.0);
    let metadata = f.dict("metadata");
    let auto_evaluate = f.boolean("auto_evaluate", false);
    f.finish()?;
    let (Some(content), Some(importance), Some(metadata), Some(auto_evaluate)) =
        (content, importance, metadata, auto_evaluate)
    else {
        unreachable!("finish() reports any field that failed")
    };
    let stored = state
        .engine
        .store(
            &tenant(&headers),
            StoreInput {
                content,
                importance,
                metadata,
                auto_evaluate,
            },
        )
        .await?;
    Ok(Json(stored).into_response())
}

#[utoipa::path(get, path = "/api/v1/recall", tag = "memory", params(TenantHeaders, RecallQuery),
    responses((status = 200, description = "Hits ranked by relevance; each hit's `recall_count` goes up.",
        body = Vec<crate::engine::RecallItem>), QueryErrors, StorageErrors))]
async fn recall(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(raw.as_deref());
    let text = q.required_str("q");
    let limit = q.int("limit", 5);
    let emotion = q.optional_str("emotion");
    q.finish()?;
    let text = text.unwrap_or_default();
    // Like the original: min(limit, 50); a zero or negative limit returns nothing.
    let limit = limit.clamp(0, RECALL_LIMIT_CAP) as usize;
    let items = state
        .engine
        .recall(&tenant(&headers), &text, limit, emotion.as_deref())
        .await?;
    Ok(Json(items).into_response())
}

#[utoipa::path(delete, path = "/api/v1/forget/{id}", tag = "memory",
    params(("id" = String, Path, description = "The memory's id (a UUID; anything else is a 404)."), TenantHeaders),
    responses((status = 200, description = "Forgotten.", body = Removed),
        (status = 404, description = "`Memory not found` (unknown id, or not a UUID).", body = HTTPError),
        StorageErrors))]
async fn forget(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(ApiError::NotFound("Memory not found"));
    };
    if state.engine.forget(&tenant(&headers), &id).await? {
        Ok(Json(Removed { removed: true }).into_response())
    } else {
        Err(ApiError::NotFound("Memory not found"))
    }
}

#[utoipa::path(get, path = "/api/v1/memories", tag = "memory", params(TenantHeaders, MemoriesQuery),
    responses((status = 200, description = "One page, sorted by score, highest first.", body = crate::engine::ListPage),
        QueryErrors))]
async fn memories(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(raw.as_deref());
    let zone = q.optional_int("zone");
    let limit = q.int("limit", 50);
    let offset = q.int("offset", 0);
    q.finish()?;
    let page = state.engine.list(
        &tenant(&headers),
        zone,
        offset.max(0) as usize,
        limit.max(0) as usize,
    );
    Ok(Json(page).into_response())
}

#[utoipa::path(get, path = "/api/v1/timeline", tag = "memory", params(TenantHeaders, TimelineQuery),
    responses((status = 200, description = "Memories stored in the range, in time order.",
        body = Vec<crate::engine::TimelineItem>), QueryErrors))]
async fn timeline(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut q = Query::parse(raw.as_deref());
    let bound = |q: &mut Query, name: &str, end: bool| {
        let raw = q.optional_str(name)?;
        let t = validate::iso_time(&raw, end);
        if t.is_none() {
            q.value_error(name, "expected an ISO 8601 date (YYYY-MM-DD) or date-time");
        }
        t
    };
    let start = bound(&mut q, "start", false);
    let end = bound(&mut q, "end", true);
    let limit = q.int("limit", 100);
    q.finish()?;
    Ok(Json(
        state
            .engine
            .timeline(&tenant(&headers), start, end, limit.max(0) as usize),
    )
    .into_response())
}

/// A body of one required string and one count in 1–50, 10 by default: narrate's `topic` and
/// `limit`, reason's `query` and `max_sources`.
async fn text_and_count(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    (text, count): (&str, &str),
) -> Result<(String, usize), ApiError> {
    let bytes = read_body(state, body).await?;
    let obj = validate::json_body(headers, &bytes)?;
    let mut f = Fields::body(&obj);
    let text = f.string(text, None, None);
    let count = f.int(count, 10, 1, 50);
    f.finish()?;
    let (Some(text), Some(count)) = (text, count) else {
        unreachable!("finish() reports any field that failed")
    };
    Ok((text, count as usize))
}

#[utoipa::path(post, path = "/api/v1/narrate", tag = "memory", params(TenantHeaders),
    request_body(content = schemas::NarrateRequest, content_type = "application/json"),
    responses((status = 200, description = "A summary stitched from the most relevant memories.", body = Narrative),
        BodyErrors))]
async fn narrate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (topic, limit) = text_and_count(&state, &headers, body, ("topic", "limit")).await?;
    let narrative = state.engine.narrate(&tenant(&headers), &topic, limit);
    Ok(Json(Narrative { narrative }).into_response())
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "status", params(TenantHeaders),
    responses((status = 200, description = "The tenant's memories per zone.", body = crate::engine::Stats)))]
async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    Json(state.engine.stats(&tenant(&headers))).into_response()
}

#[utoipa::path(get, path = "/api/v1/health", tag = "status", params(TenantHeaders),
    responses((status = 200, description = "Always 200; `healthy` is false when the database is unreachable or the last write failed.",
        body = crate::engine::Health)))]
async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    Json(state.engine.health(&tenant(&headers)).await).into_response()
}

/// Test-only (`test_clock = true`): move the engine's clock forward by `secs`.
async fn test_advance(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let obj = validate::json_body(&headers, &bytes)?;
    let mut f = Fields::body(&obj);
    let secs = f.float("secs", 0.0, 0.0, f64::MAX);
    f.finish()?;
    let clock = state
        .test_clock
        .as_ref()
        .expect("route exists only with a test clock");
    clock.advance(secs.unwrap_or(0.0));
    Ok(Json(json!({ "now": crate::clock::Clock::now(&**clock) })).into_response())
}

/// Test-only (`test_clock = true`): run a reorbit now instead of waiting for the interval.
async fn test_reorbit(State(state): State<AppState>) -> Result<Response, ApiError> {
    let totals = state.engine.reorbit().await?;
    Ok((StatusCode::OK, Json(totals)).into_response())
}
