//! The engine's OpenAPI 3.1 document, generated from the handlers and types with `utoipa`.
//! Billing merges it with its own routes and the gateway's answers into the public document
//! that `/openapi.json` serves through the gateway; the engine serves its own part at
//! `GET /openapi.json` too.
//!
//! Every `/api/v1` route of `super::router` is here (the router tests check both directions and
//! validate real answers against the documented schemas). Not here: `/openapi.json` itself, the
//! test-only `/_test/*` routes, and the fallbacks (404 `Not Found` for an unknown path, 405
//! `Method Not Allowed` for a known path with another method, both `HTTPError`).

use super::{analysis, schemas, sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::RefOr;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stellar Memory REST API",
        version = "1",
        description = "The memory engine (`stellar-engine`): the Stellar Memory REST API v1. \
            Errors are `{\"detail\": \"<message>\"}`; validation errors are 422 with \
            `{\"detail\": [{type, loc, msg, input[, ctx]}]}` (FastAPI's shapes). An unknown path \
            answers 404 `Not Found`, a known path with another method 405 `Method Not Allowed`. \
            Every route is scoped to the tenant named by `X-Stellar-User` / `X-Stellar-Agent`."
    ),
    paths(
        super::store,
        super::recall,
        super::forget,
        super::memories,
        super::timeline,
        super::narrate,
        super::stats,
        super::health,
        sse::events,
        analysis::introspect,
        analysis::recall_confident,
        analysis::optimize,
        analysis::rollback_weights,
        analysis::reason,
        analysis::contradictions,
        analysis::benchmark,
    ),
    components(schemas(
        crate::engine::Stored,
        crate::engine::RecallItem,
        crate::engine::ListItem,
        crate::engine::ListPage,
        crate::engine::TimelineItem,
        crate::engine::Stats,
        crate::engine::Health,
        crate::engine::ConfidentRecall,
        crate::model::Emotion,
        crate::model::Weights,
        crate::analysis::metacognition::Introspection,
        crate::analysis::learning::OptimizeReport,
        crate::analysis::reasoning::Reasoning,
        crate::analysis::reasoning::Contradiction,
        crate::analysis::benchmark::BenchmarkReport,
        schemas::StoreRequest,
        schemas::NarrateRequest,
        schemas::ReasonRequest,
        schemas::BenchmarkRequest,
        schemas::Removed,
        schemas::Narrative,
        schemas::WeightsAnswer,
        schemas::HTTPError,
        schemas::HTTPValidationError,
        super::error::ValidationItem,
        schemas::EventFrame,
    )),
    tags(
        (name = "memory", description = "Store, recall, forget and browse memories."),
        (name = "status", description = "The tenant's counts and the engine's health."),
        (name = "events", description = "The tenant's change events (Server-Sent Events)."),
        (name = "analysis", description = "Introspection, confident recall, self-learning of the score weights, reasoning, contradictions, benchmark."),
    )
)]
struct EngineApi;

/// Request bodies: unknown fields are ignored, so these stay open; every other object schema is
/// an answer the engine serialises from a struct, exactly those fields.
const OPEN_SCHEMAS: [&str; 4] = [
    "StoreRequest",
    "NarrateRequest",
    "ReasonRequest",
    "BenchmarkRequest",
];

/// The engine's document: every `/api/v1` route, its parameters, bodies and answers.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = EngineApi::openapi();
    if let Some(components) = doc.components.as_mut() {
        for (name, schema) in components.schemas.iter_mut() {
            if OPEN_SCHEMAS.contains(&name.as_str()) {
                continue;
            }
            if let RefOr::T(Schema::Object(object)) = schema {
                if !object.properties.is_empty() && object.additional_properties.is_none() {
                    object.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
    doc
}

/// `GET /openapi.json`.
pub(super) async fn serve() -> Response {
    Json(document()).into_response()
}
