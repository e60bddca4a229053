//! What the OpenAPI document describes that is not one of the engine's own types: request
//! bodies and query strings (handlers parse them by hand, with pydantic's lax rules, in
//! `validate`), the tenant headers, the error shapes of `error`, a few small answers, and the
//! maps keyed by zone.
//!
//! The request structs are schema-only: nothing builds them; they say what `validate` accepts.

use crate::model::Weights;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// A schema written as JSON (for shapes the derive cannot express, such as maps keyed by zone).
fn schema(v: Value) -> Schema {
    serde_json::from_value(v).expect("a valid schema object")
}

/// `{"0": n, …, "4": n}`: every zone, each a count.
pub fn zone_counts() -> Schema {
    zone_map(json!({"type": "integer", "minimum": 0}))
}

/// `{"0": 20, "1": 100, "2": 1000, "3": null, "4": null}`: `null` is unbounded.
pub fn zone_capacities() -> Schema {
    zone_map(json!({"type": ["integer", "null"], "minimum": 0}))
}

fn zone_map(value: Value) -> Schema {
    let properties: serde_json::Map<String, Value> =
        (0..5).map(|z| (z.to_string(), value.clone())).collect();
    schema(json!({
        "type": "object",
        "properties": properties,
        "required": ["0", "1", "2", "3", "4"],
        "additionalProperties": false
    }))
}

/// `{"2": n, …}`: only the zones that hold at least one of the memories.
pub fn zone_distribution() -> Schema {
    schema(json!({
        "type": "object",
        "propertyNames": {"type": "string", "pattern": "^[0-4]$"},
        "additionalProperties": {"type": "integer", "minimum": 1}
    }))
}

/// A validation error's `loc`: strings and character offsets.
pub fn validation_loc() -> Schema {
    schema(json!({
        "type": "array",
        "minItems": 1,
        "items": {"type": ["string", "integer"]}
    }))
}

/// Any JSON value (`{}`).
pub fn any_value() -> Schema {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
        .into()
}

/// The tenant headers. The gateway sets them from the API key; the engine trusts them as sent
/// (it listens on loopback only) and checks nothing else.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // schema only
pub struct TenantHeaders {
    /// The tenant (user) every read and write is scoped to. Any value is accepted: surrounding
    /// whitespace is trimmed and bytes that are not UTF-8 are replaced; absent or empty means the
    /// default space, as in the original single-tenant server.
    #[param(rename = "X-Stellar-User", nullable = false)]
    user: Option<String>,
    /// A sub-space of the tenant (an agent). Same rules as `X-Stellar-User`: any value, trimmed;
    /// absent or empty means the tenant's default agent.
    #[param(rename = "X-Stellar-Agent", nullable = false)]
    agent: Option<String>,
}

/// `GET /api/v1/recall`. Integers are parsed as written (a sign and digits, spaces trimmed).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // schema only
pub struct RecallQuery {
    /// The query text (may be empty).
    q: String,
    /// How many hits at most. Any integer is accepted: values above 50 are capped at 50, zero or
    /// negative returns nothing.
    #[param(default = 5, nullable = false)]
    limit: Option<i64>,
    /// Keep only memories whose dominant emotion is this one (`joy`, `sadness`, `anger`, `fear`,
    /// `surprise`, `disgust`; case-insensitive). Another value matches nothing.
    #[param(nullable = false)]
    emotion: Option<String>,
}

/// `GET /api/v1/memories`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // schema only
pub struct MemoriesQuery {
    /// Only this zone (0–4). Any integer is accepted; one outside 0–4 gives an empty page.
    #[param(nullable = false)]
    zone: Option<i64>,
    /// Page size; zero or negative gives an empty page.
    #[param(default = 50, nullable = false)]
    limit: Option<i64>,
    /// Memories to skip; negative counts as 0.
    #[param(default = 0, nullable = false)]
    offset: Option<i64>,
}

/// `GET /api/v1/timeline`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // schema only
pub struct TimelineQuery {
    /// Earliest time: an ISO 8601 date (`YYYY-MM-DD`, the start of that day, UTC) or date-time
    /// (naive ones are UTC). Anything else is a 422 `value_error`.
    #[param(nullable = false)]
    start: Option<String>,
    /// Latest time, same forms; a date alone includes the whole day.
    #[param(nullable = false)]
    end: Option<String>,
    /// Entries at most; zero or negative gives none.
    #[param(default = 100, nullable = false)]
    limit: Option<i64>,
}

/// `GET /api/v1/introspect`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // schema only
pub struct IntrospectQuery {
    /// The topic (may be empty).
    topic: String,
    /// The original's graph-walk depth: validated as an integer, changes nothing.
    #[param(default = 1, nullable = false)]
    depth: Option<i64>,
}

/// `GET /api/v1/recall/confident`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // schema only
pub struct ConfidentQuery {
    /// The query text (may be empty).
    query: String,
    /// How many memories to recall; not capped; zero or negative recalls nothing.
    #[param(default = 5, nullable = false)]
    top_k: Option<i64>,
}

/// `GET /api/v1/contradictions`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // schema only
pub struct ContradictionsQuery {
    /// Look among the 20 memories recalled for this text; absent or empty: among the first 50.
    #[param(nullable = false)]
    scope: Option<String>,
}

/// `POST /api/v1/store`'s body. Values are read as pydantic does (lax): `"0.5"` is a number,
/// `1`, `"yes"` and `"on"` are `true`. Unknown fields are ignored.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only
pub struct StoreRequest {
    /// Length in characters.
    #[schema(min_length = 1, max_length = 10000)]
    content: String,
    #[schema(minimum = 0.0, maximum = 1.0, default = 0.5, nullable = false)]
    importance: Option<f64>,
    /// Any object, stored as given (`tags` is read by introspect); default `{}`.
    #[schema(value_type = Option<Object>, default = json!({}), nullable = false)]
    metadata: Option<Value>,
    /// Rate the importance from the content instead of using `importance`.
    #[schema(default = false, nullable = false)]
    auto_evaluate: Option<bool>,
}

/// `POST /api/v1/narrate`'s body (lax, like the store's; unknown fields ignored).
#[derive(ToSchema)]
#[allow(dead_code)] // schema only
pub struct NarrateRequest {
    topic: String,
    /// How many memories to narrate from.
    #[schema(minimum = 1, maximum = 50, default = 10, nullable = false)]
    limit: Option<i64>,
}

/// `POST /api/v1/reason`'s body (lax, like the store's; unknown fields ignored).
#[derive(ToSchema)]
#[allow(dead_code)] // schema only
pub struct ReasonRequest {
    query: String,
    /// How many memories to recall (the reasoner reads at most 10 of them).
    #[schema(minimum = 1, maximum = 50, default = 10, nullable = false)]
    max_sources: Option<i64>,
}

/// `POST /api/v1/benchmark`'s body: required, `{}` for all defaults (lax; unknown fields
/// ignored).
#[derive(ToSchema)]
#[allow(dead_code)] // schema only
pub struct BenchmarkRequest {
    #[schema(minimum = 1, maximum = 1000, default = 100, nullable = false)]
    queries: Option<i64>,
    /// `small`, `standard` or `large`; any other name gets the standard sizes.
    #[schema(default = "standard", nullable = false)]
    dataset: Option<String>,
    #[schema(default = 42, nullable = false)]
    seed: Option<i64>,
}

/// `DELETE /api/v1/forget/{id}`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Removed {
    /// Always `true` (an unknown id is a 404).
    pub removed: bool,
}

/// `POST /api/v1/narrate`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Narrative {
    pub narrative: String,
}

/// `POST /api/v1/rollback-weights`'s answer: the weights now in use.
#[derive(Serialize, ToSchema)]
pub struct WeightsAnswer {
    pub weights: Weights,
}

/// An error: `{"detail": "<message>"}` (FastAPI's shape).
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: `error` writes it
pub struct HTTPError {
    detail: String,
}

/// A request that failed validation (422): every failing field at once, pydantic's items.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: `error` writes it
pub struct HTTPValidationError {
    #[schema(min_items = 1)]
    detail: Vec<super::error::ValidationItem>,
}

/// One `data:` frame of `GET /api/v1/events`: a change, or a heartbeat when idle.
pub struct EventFrame;

impl PartialSchema for EventFrame {
    fn schema() -> RefOr<Schema> {
        let change = [
            "on_store",
            "on_recall",
            "on_forget",
            "on_reorbit",
            "on_decay",
        ];
        RefOr::T(schema(json!({
            "description": "The JSON of one `data:` line of the event stream.",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "event": {"type": "string", "enum": change},
                        "ts": {"type": "number", "description": "Unix seconds."}
                    },
                    "required": ["event", "ts"],
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "properties": {"event": {"type": "string", "enum": ["heartbeat"]}},
                    "required": ["event"],
                    "additionalProperties": false
                }
            ]
        })))
    }
}

impl ToSchema for EventFrame {}

/// The answers every route that reads a JSON body may give before the handler runs.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // schema only
pub enum BodyErrors {
    #[response(
        status = 400,
        description = "The body could not be read (the connection failed mid-body)."
    )]
    Unreadable(HTTPError),
    #[response(
        status = 413,
        description = "The body is larger than the engine's `max_body_bytes`."
    )]
    TooLarge(HTTPError),
    #[response(
        status = 422,
        description = "No body, JSON that does not parse or is not an object (or a content type that is not JSON), or fields that fail validation; every failing field is listed."
    )]
    Invalid(HTTPValidationError),
}

/// A route whose query string is validated.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // schema only
pub enum QueryErrors {
    #[response(
        status = 422,
        description = "A required parameter is missing, or an integer or a date does not parse."
    )]
    Invalid(HTTPValidationError),
}

/// A route that writes to (or reads from) the database.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // schema only
pub enum StorageErrors {
    #[response(
        status = 500,
        description = "A storage failure; details are logged, the body is always `{\"detail\": \"Internal Server Error\"}`."
    )]
    Internal(HTTPError),
}
