//! The one place errors become HTTP responses, in FastAPI's shapes: `{"detail": "..."}` for
//! errors and `{"detail": [{type, loc, msg, input[, ctx]}]}` with 422 for validation failures.

use crate::engine::EngineError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug)]
pub enum ApiError {
    /// 404 with a message (`Memory not found`, or FastAPI's `Not Found` for unknown routes).
    NotFound(&'static str),
    MethodNotAllowed,
    /// 422: pydantic-style error items.
    Validation(Vec<ValidationItem>),
    /// 413: the body is larger than `max_body_bytes`.
    PayloadTooLarge(usize),
    /// 400: the body could not be read at all.
    BadBody,
    Engine(EngineError),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::Engine(e)
    }
}

/// One validation error item, fields in FastAPI's order. `loc` mixes strings and indexes, as
/// pydantic's does.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ValidationError)]
pub struct ValidationItem {
    /// pydantic's error type: `missing`, `string_too_short`, `int_parsing`, `json_invalid`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Where: `["body", field]`, `["query", name]`, `["body"]`, or `["body", offset]` for JSON
    /// that does not parse.
    #[schema(schema_with = super::schemas::validation_loc)]
    pub loc: Vec<Value>,
    pub msg: String,
    /// The offending value (`null` for a missing query parameter, the whole body for a missing
    /// field).
    #[schema(schema_with = super::schemas::any_value)]
    pub input: Value,
    /// The rule that failed, e.g. `{"ge": 0.0}`, `{"min_length": 1}`, `{"error": "…"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub ctx: Option<Value>,
}

pub fn item(
    kind: &str,
    loc: Vec<Value>,
    msg: impl Into<String>,
    input: Value,
    ctx: Option<Value>,
) -> ValidationItem {
    ValidationItem {
        kind: kind.to_string(),
        loc,
        msg: msg.into(),
        input,
        ctx,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            ApiError::NotFound(msg) => (StatusCode::NOT_FOUND, json!(msg)),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, json!("Method Not Allowed"))
            }
            ApiError::Validation(items) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::to_value(items).expect("items serialise"),
            ),
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!(format!(
                    "Request body is larger than the limit of {limit} bytes"
                )),
            ),
            ApiError::BadBody => (
                StatusCode::BAD_REQUEST,
                json!("There was an error parsing the body"),
            ),
            ApiError::Engine(EngineError::BadRequest(msg)) => (StatusCode::BAD_REQUEST, json!(msg)),
            ApiError::Engine(EngineError::Conflict(msg)) => (StatusCode::CONFLICT, json!(msg)),
            ApiError::Engine(EngineError::Busy(msg)) => {
                let body = Json(json!({ "detail": msg }));
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, "5")],
                    body,
                )
                    .into_response();
            }
            ApiError::Engine(e) => {
                // Details (SQL errors, paths) go to the log, never to the client.
                tracing::error!(error = %e, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!("Internal Server Error"),
                )
            }
        };
        (status, Json(json!({ "detail": detail }))).into_response()
    }
}
