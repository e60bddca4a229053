//! What the gateway adds to every answer it gives or relays: how a caller authenticates, the
//! gateway's own errors, and the rate-limit headers. The gateway (pingora) does not link utoipa;
//! this is its part of the public document, checked against the live gateway by the contract
//! test (`tests/tests/e2e/contract.rs`).

/// Adds the gateway's part to `doc`.
pub fn apply(_doc: &mut utoipa::openapi::OpenApi) {}
