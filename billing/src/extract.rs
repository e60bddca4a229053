//! Request extractors whose rejections are our JSON errors (never axum's plain text): bodies
//! over the limit → 413, malformed JSON → 400, JSON of the wrong shape → 422, bad key → 401.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use stellar_common::keys;
use uuid::Uuid;

/// The raw body, limited by `billing.body_limit_bytes`.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge("Request body too large".into()))
            }
            Err(e) => Err(ApiError::BadRequest(format!(
                "Cannot read request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// A JSON body decoded into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Syntax errors are 400, well-formed JSON of the wrong shape is 422. Every body billing reads
/// is a JSON object: anything else is refused before it is decoded, because serde would also
/// fill a struct from an array of its fields in order (`["a@b.co"]` as `{"email":"a@b.co"}`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use serde_json::error::Category;
    let classify = |e: serde_json::Error| match e.classify() {
        Category::Data => ApiError::Unprocessable(format!("Invalid request: {e}")),
        _ => ApiError::BadRequest(format!("Malformed JSON: {e}")),
    };
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::BadRequest("Request body must be JSON".into()));
    };
    if *first != b'{' {
        // Malformed stays 400; well-formed but not an object is 422.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(classify)?;
        return Err(ApiError::Unprocessable(
            "Invalid request: the body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(classify)
}

/// The account behind the request's API key (`X-API-Key` or `Authorization: Bearer`).
/// Looked up by SHA-256 through the shared crate; identity headers are never trusted.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user_id: Uuid,
    pub key_id: Uuid,
    pub tier: String,
}

pub fn key_from_parts(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = key_from_parts(parts).ok_or(ApiError::Unauthorized("Missing API key"))?;
        if !keys::is_well_formed(&key) {
            return Err(ApiError::Unauthorized("Invalid API key"));
        }
        let p = stellar_common::accounts::principal_by_hash(&state.db, &keys::hash_hex(&key))
            .await?
            .ok_or(ApiError::Unauthorized("Invalid API key"))?;
        Ok(Auth {
            user_id: p.user_id,
            key_id: p.key_id,
            tier: p.tier,
        })
    }
}

/// The account of the request's API key when the request carries one (`X-API-Key` or
/// `Authorization: Bearer`), for endpoints open to anyone that do more for a key holder
/// (checkout). A key that is present but malformed, unknown or revoked is a 401, never a
/// fall-back to the anonymous path.
pub struct MaybeAuth(pub Option<Auth>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if key_from_parts(parts).is_none() {
            return Ok(MaybeAuth(None));
        }
        Auth::from_request_parts(parts, state)
            .await
            .map(|a| MaybeAuth(Some(a)))
    }
}

/// Query parameters decoded into `T`; a missing or malformed parameter is a JSON 422 (never
/// axum's plain-text rejection).
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| QueryParams(v))
            .map_err(|e| ApiError::Unprocessable(format!("Invalid query: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_json;
    use crate::error::ApiError;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        email: String,
    }

    #[test]
    fn only_json_objects_are_bodies() {
        let status = |b: &str| parse_json::<Body>(b.as_bytes()).map_err(|e| e.status().as_u16());
        assert_eq!(
            status(r#" {"email":"a@b.co"} "#).map(|b| b.email),
            Ok("a@b.co".into())
        );
        // serde alone would take these as {"email": …}.
        for b in [
            r#"["a@b.co"]"#,
            " \n[\"a@b.co\"]",
            "[]",
            r#""a@b.co""#,
            "null",
            "1",
            "true",
        ] {
            assert_eq!(status(b).unwrap_err(), 422, "{b}");
        }
        for b in ["", "  ", "[", r#"["a@b.co""#, "[1,]", "nul", "{"] {
            assert_eq!(status(b).unwrap_err(), 400, "{b}");
        }
        assert!(matches!(
            parse_json::<Body>(br#"{"mail":"a@b.co"}"#),
            Err(ApiError::Unprocessable(_))
        ));
    }
}
