//! The engine's OpenAPI 3.1 document, generated from the handlers and types with `utoipa`.
//! Billing merges it with its own routes and the gateway's answers into the public document
//! that `/openapi.json` serves through the gateway.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(info(title = "Stellar Memory REST API", version = "1"))]
struct EngineApi;

/// The engine's document: every `/api/v1` route, its parameters, bodies and answers.
pub fn document() -> utoipa::openapi::OpenApi {
    EngineApi::openapi()
}
