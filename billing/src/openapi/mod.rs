//! The public OpenAPI 3.1 document: billing's routes (generated from its handlers and types with
//! `utoipa`), the engine's `/api/v1` routes (`stellar_engine::http::openapi`), and what the
//! gateway adds in front of both (`gateway`: the security scheme, its own errors, the rate-limit
//! headers). Served at `/openapi.json`, browsable at `/docs`, both through the gateway.

pub mod gateway;

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(info(title = "Stellar Gate", version = "1"))]
struct BillingApi;

/// The whole public API as one document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = BillingApi::openapi();
    doc.merge(stellar_engine::http::openapi::document());
    gateway::apply(&mut doc);
    doc
}
