//! Request extractors whose rejections are our JSON errors (never axum's plain text): bodies
//! over the limit → 413, malformed JSON → 400, JSON of the wrong shape → 422, bad key → 401.

use crate::error::ApiError;
use crate::identity::flows::Client;
use crate::identity::{self, sessions, Actor, Role};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::Method;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use stellar_common::keys;
use stellar_common::with_db;
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

/// Who is calling: the account, and the person acting in it with their role. Authenticated by
/// an API key (`X-API-Key` or `Authorization: Bearer`; the key acts with its creator's role) or,
/// without a key, by the session cookie; a cookie-authenticated request other than GET/HEAD
/// must carry the session's CSRF token. Identity headers are never trusted.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The account.
    pub user_id: Uuid,
    pub tier: String,
    pub role: Role,
    pub actor: Actor,
    pub via: Via,
}

#[derive(Debug, Clone)]
pub enum Via {
    Key { key_id: Uuid },
    Session { id: Uuid },
}

impl Auth {
    /// 403 naming `what` unless the caller's role is at least `min`.
    pub fn require(&self, min: Role, what: &str) -> Result<(), ApiError> {
        if self.role >= min {
            Ok(())
        } else {
            Err(identity::people::forbidden(self.role, what))
        }
    }

    pub fn session_id(&self) -> Option<Uuid> {
        match self.via {
            Via::Session { id } => Some(id),
            Via::Key { .. } => None,
        }
    }
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

/// The session token of the request's cookie, if any.
pub fn session_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(sessions::token_from_cookie_header)
        .map(str::to_string)
}

/// The client's address: the TCP peer, or, when the peer is on loopback (the gateway), the
/// `X-Forwarded-For` the gateway wrote (it drops any the client sent); and its user agent.
pub fn client(parts: &Parts) -> Client {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = || {
        parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
    };
    let ip = match peer {
        Some(p) if !p.is_loopback() => Some(p.to_string()),
        Some(p) => forwarded().or(Some(p.to_string())),
        None => forwarded(),
    };
    let user_agent = parts
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect());
    Client { ip, user_agent }
}

async fn by_key(parts: &Parts, state: &AppState, key: &str) -> Result<Auth, ApiError> {
    if !keys::is_well_formed(key) {
        return Err(ApiError::Unauthorized("Invalid API key"));
    }
    let p = stellar_common::accounts::principal_by_hash(&state.db, &keys::hash_hex(key))
        .await?
        .ok_or(ApiError::Unauthorized("Invalid API key"))?;
    if p.scope.expired(chrono::Utc::now()) {
        return Err(ApiError::Unauthorized("API key expired"));
    }
    // A scoped key reads the account but never changes it: otherwise a read-only, agent-bound
    // or expiring key could mint itself an unrestricted one.
    if !p.scope.is_unrestricted() && !matches!(parts.method, Method::GET | Method::HEAD) {
        return Err(ApiError::Forbidden(
            "This key is scoped: it cannot change the account (use an unrestricted key, or sign in)".into(),
        ));
    }
    type Row = (String, String, Option<Uuid>, Option<String>, Option<String>);
    let row: Option<Row> = with_db!(&state.db, pool => sqlx::query_as(
        "SELECT u.email, k.key_prefix, k.created_by, m.role, m.email FROM api_keys k \
         JOIN users u ON u.id = k.user_id LEFT JOIN members m ON m.id = k.created_by WHERE k.id = $1")
        .bind(p.key_id).fetch_optional(pool).await)?;
    let (owner_email, prefix, created_by, role, email) =
        row.ok_or(ApiError::Unauthorized("Invalid API key"))?;
    // Keys from before teams, and those issued at registration, act as the owner's.
    let (member_id, role, email) = match (created_by, role, email) {
        (None, _, _) => (p.user_id, Role::Owner, owner_email),
        (Some(m), Some(r), Some(e)) => (m, Role::parse(&r).unwrap_or(Role::Member), e),
        // The creator left the account (their keys were revoked then).
        _ => return Err(ApiError::Unauthorized("Invalid API key")),
    };
    Ok(Auth {
        user_id: p.user_id,
        tier: p.tier,
        role,
        actor: Actor {
            member_id,
            email,
            label: format!("key:{prefix}"),
            ip: client(parts).ip,
        },
        via: Via::Key { key_id: p.key_id },
    })
}

/// The session of the request's cookie; `Ok(None)` when there is no live session.
async fn by_session(parts: &Parts, state: &AppState) -> Result<Option<Auth>, ApiError> {
    let Some(token) = session_token(parts) else {
        return Ok(None);
    };
    let Some(live) =
        sessions::lookup(&state.db, &keys::hash_hex(&token), chrono::Utc::now()).await?
    else {
        return Ok(None);
    };
    let safe = matches!(parts.method, Method::GET | Method::HEAD);
    let header = parts
        .headers
        .get(sessions::CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    if !safe && !sessions::csrf_ok(&token, header) {
        return Err(ApiError::Forbidden("Missing or wrong CSRF token".into()));
    }
    Ok(Some(Auth {
        user_id: live.account_id,
        tier: live.tier,
        role: live.role,
        actor: Actor {
            member_id: live.member_id,
            label: live.email.clone(),
            email: live.email,
            ip: client(parts).ip,
        },
        via: Via::Session { id: live.id },
    }))
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(key) = key_from_parts(parts) {
            return by_key(parts, state, &key).await;
        }
        match by_session(parts, state).await? {
            Some(a) => Ok(a),
            None if session_token(parts).is_some() => Err(ApiError::Unauthorized(
                "Your session has ended: sign in again",
            )),
            None => Err(ApiError::Unauthorized("Missing API key")),
        }
    }
}

/// The caller when the request carries a key or a live session, for endpoints open to anyone
/// that do more for a signed-in caller (checkout). A key that is present but malformed,
/// unknown or revoked is a 401, never a fall-back to the anonymous path; a stale session cookie
/// is ignored (cookies are sent unasked).
pub struct MaybeAuth(pub Option<Auth>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(key) = key_from_parts(parts) {
            return by_key(parts, state, &key).await.map(|a| MaybeAuth(Some(a)));
        }
        by_session(parts, state).await.map(MaybeAuth)
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
