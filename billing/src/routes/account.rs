//! `/auth/*`: registration, keys, usage.

use crate::accounts::{self, Revoked};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, Auth, JsonBody, QueryParams, RawBody};
use crate::key_scope::{self, ScopeFields};
use crate::openapi::schemas as s;
use crate::state::AppState;
use crate::usage_history;
use axum::extract::{Path, State};
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use stellar_common::accounts::KeyScope;
use uuid::Uuid;

#[utoipa::path(get, path = "/auth/api-keys", tag = "Accounts and keys", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses((status = 200, description = "The account's keys, active first, newest first.", body = s::ApiKeyList)))]
pub async fn list_keys(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let keys = accounts::list_keys(&st.db, auth.user_id).await?;
    Ok(Json(json!({ "keys": keys })))
}

/// An optional JSON body: none (or only whitespace) is `T::default()`.
fn optional_body<T: serde::de::DeserializeOwned + Default>(raw: &[u8]) -> ApiResult<T> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(raw)
    }
}

fn key_name(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(name) = raw.map(str::trim) else {
        return Ok(None);
    };
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "Key name must be 1–100 printable characters".into(),
        ));
    }
    Ok(Some(name.to_string()))
}

fn key_json(info: &accounts::KeyInfo, plaintext: Option<&str>) -> Value {
    let mut v = json!(info);
    if let Some(k) = plaintext {
        v["api_key"] = json!(k);
    }
    v
}

#[utoipa::path(post, path = "/auth/api-keys", tag = "Accounts and keys", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    request_body(content = Option<crate::key_scope::ScopeFields>,
        description = "Optional: no body is the name \"Default\" and an unrestricted key."),
    responses(
        (status = 201, description = "The key, shown once.", body = s::NewApiKey),
        (status = 403, description = "The tier's key limit is reached.", body = s::ApiErrorBody),
        (status = 422, description = "An invalid name or scope, or an unknown field.", body = s::ApiErrorBody)))]
pub async fn create_key(
    State(st): State<AppState>,
    auth: Auth,
    RawBody(raw): RawBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // The body is optional: no body means the default name and an unrestricted key.
    let body: ScopeFields = optional_body(&raw)?;
    let name = key_name(body.name.as_deref().filter(|n| !n.trim().is_empty()))?
        .unwrap_or_else(|| "Default".to_string());
    let tier = st.settings.tiers.get_or_default(&auth.tier).clone();
    let scope = key_scope::apply(&KeyScope::default(), &body, &tier, chrono::Utc::now())?;
    let tiers = st.settings.tiers.clone();
    let (info, key) = accounts::create_key(&st.db, auth.user_id, &name, &scope, &auth.actor, |t| {
        tiers.get_or_default(t).max_api_keys
    })
    .await?;
    st.metrics
        .accounts
        .with_label_values(&["key_created"])
        .inc();
    Ok((
        StatusCode::CREATED,
        Json(key_json(&info, Some(&key.plaintext))),
    ))
}

/// `PATCH /auth/api-keys/{id}`: change a key's name or scope; gateways apply it within a second.
#[utoipa::path(patch, path = "/auth/api-keys/{id}", tag = "Accounts and keys", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The key's id (anything else is 404).")),
    request_body = crate::key_scope::ScopeFields,
    responses(
        (status = 200, description = "The key as listed; gateways apply the change within a second.", body = s::ApiKeyInfo),
        (status = 403, description = "A member changing a key someone else created.", body = s::ApiErrorBody),
        (status = 404, description = "Not a key of the account.", body = s::ApiErrorBody),
        (status = 422, description = "An invalid name or scope, or an unknown field.", body = s::ApiErrorBody)))]
pub async fn update_key(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ScopeFields>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::NotFound("Key not found".into());
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let name = key_name(body.name.as_deref())?;
    accounts::may_change_key(&st.db, auth.user_id, id, &auth.actor, auth.role).await?;
    let (current, hash) = key_scope::current(&st.db, auth.user_id, id)
        .await?
        .ok_or_else(not_found)?;
    let tier = st.settings.tiers.get_or_default(&auth.tier).clone();
    let scope = key_scope::apply(&current, &body, &tier, chrono::Utc::now())?;
    key_scope::update(
        &st.db,
        auth.user_id,
        id,
        &hash,
        &scope,
        name.as_deref(),
        &auth.actor,
    )
    .await?;
    let info = accounts::list_keys(&st.db, auth.user_id)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(not_found)?;
    Ok(Json(key_json(&info, None)))
}

/// The answer to `DELETE` of the account's last active key (docs/billing-api.md).
pub const LAST_KEY_DETAIL: &str =
    "This is your last active key; rotate it instead (POST /auth/api-keys/{id}/rotate)";

#[utoipa::path(delete, path = "/auth/api-keys/{id}", tag = "Accounts and keys", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The key's id (anything else is 404).")),
    responses(
        (status = 200, description = "Revoked (also for a key already revoked).", body = s::Revoked),
        (status = 403, description = "A member revoking a key someone else created.", body = s::ApiErrorBody),
        (status = 404, description = "Not a key of the account.", body = s::ApiErrorBody),
        (status = 409, description = "The account's last active key: rotate it instead (nothing changes).", body = s::ApiErrorBody)))]
pub async fn revoke_key(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("Key not found".into()))?;
    accounts::may_change_key(&st.db, auth.user_id, id, &auth.actor, auth.role).await?;
    match accounts::revoke_key(&st.db, auth.user_id, id, &auth.actor).await? {
        Revoked::Yes => {}
        Revoked::NotFound => return Err(ApiError::NotFound("Key not found".into())),
        Revoked::LastActiveKey => {
            st.metrics
                .accounts
                .with_label_values(&["last_key_kept"])
                .inc();
            return Err(ApiError::Conflict(LAST_KEY_DETAIL.into()));
        }
    }
    st.metrics
        .accounts
        .with_label_values(&["key_revoked"])
        .inc();
    Ok(Json(json!({"id": id, "revoked": true})))
}

/// Revoke a key and issue its replacement (same name) in one step: allowed at the tier's key
/// limit, and the way to replace the last key.
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RotateBody {
    /// Seconds the old key keeps working (default 0: revoked at once; at most 30 days).
    #[serde(default)]
    #[schema(nullable = false, minimum = 0, maximum = 2592000)]
    overlap_secs: Option<i64>,
}

#[utoipa::path(post, path = "/auth/api-keys/{id}/rotate", tag = "Accounts and keys", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The key's id (anything else is 404).")),
    request_body(content = Option<RotateBody>, description = "Optional (an unreadable body is ignored)."),
    responses(
        (status = 201, description = "Key `id` is revoked (after `overlap_secs`) and its replacement issued, shown once.", body = s::KeyRotated),
        (status = 403, description = "A member rotating a key someone else created.", body = s::ApiErrorBody),
        (status = 404, description = "Not an active key of the account.", body = s::ApiErrorBody),
        (status = 422, description = "`overlap_secs` out of range.", body = s::ApiErrorBody)))]
pub async fn rotate_key(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RawBody(raw): RawBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("Key not found".into()))?;
    // A body is optional (and was ignored before overlaps existed: an unreadable one still is).
    let body: RotateBody = optional_body(&raw).unwrap_or_default();
    let overlap = match body.overlap_secs {
        None | Some(0) => None,
        Some(n) if (1..=30 * 86_400).contains(&n) => Some(chrono::Duration::seconds(n)),
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "overlap_secs must be 0–2592000 (30 days)".into(),
            ))
        }
    };
    accounts::may_change_key(&st.db, auth.user_id, id, &auth.actor, auth.role).await?;
    let r = accounts::rotate_key(&st.db, auth.user_id, id, overlap, &auth.actor)
        .await?
        .ok_or_else(|| ApiError::NotFound("Key not found".into()))?;
    st.metrics
        .accounts
        .with_label_values(&["key_rotated"])
        .inc();
    tracing::info!(user_id = %auth.user_id, old_key_id = %r.replaces, new_key_id = %r.info.id, "key rotated");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": r.info.id,
            "name": r.info.name,
            "key_prefix": r.info.key_prefix,
            "api_key": r.key.plaintext,
            "created_at": r.info.created_at,
            "replaces": r.replaces,
        })),
    ))
}

#[utoipa::path(get, path = "/auth/usage", tag = "Accounts and keys", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses((status = 200, description = "The account's plan and its use.", body = s::Usage)))]
pub async fn usage(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let user = accounts::user_by_id(&st.db, auth.user_id)
        .await?
        .ok_or(ApiError::Unauthorized("Invalid API key"))?;
    let tier = st.settings.tiers.get_or_default(&user.tier);
    let u = accounts::usage(&st.db, user.id).await?;
    Ok(Json(json!({
        "user_id": user.id,
        "email": user.email,
        "tier": user.tier,
        "memories_used": u.memories_used,
        "memories_limit": tier.max_memories,
        "requests_per_minute": tier.requests_per_minute,
        "keys_used": u.keys_used,
        "keys_limit": tier.max_api_keys,
        "agents_used": u.agents_used,
        "agents_limit": tier.max_agents,
        "subscription_status": user.subscription_status,
        "current_period_end": user.current_period_end.map(|t| t.to_rfc3339()),
        "cancel_at_period_end": user.cancel_at_period_end,
        "provider": user.provider,
    })))
}

#[utoipa::path(get, path = "/auth/usage/history", tag = "Accounts and keys", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(usage_history::Query),
    responses(
        (status = 200, description = "Without parameters: requests per hour over the last 24 hours. With any: the usage history, as JSON or (`format=csv`) a CSV attachment `start,group,status_class,requests`.",
            content((s::UsageHistory = "application/json"), (String = "text/csv"))),
        (status = 422, description = "A malformed or out-of-range parameter (named).", body = s::ApiErrorBody)))]
pub async fn usage_history(
    State(st): State<AppState>,
    auth: Auth,
    QueryParams(q): QueryParams<usage_history::Query>,
) -> ApiResult<Response> {
    if q.is_empty() {
        // The original answer: requests per hour over the last 24 hours.
        let hours = accounts::usage_history(&st.db, auth.user_id, chrono::Utc::now()).await?;
        return Ok(Json(
            json!({"hours": hours.into_iter().map(|(h, r)| json!({"hour_start": h, "requests": r})).collect::<Vec<_>>()}),
        )
        .into_response());
    }
    let range = usage_history::range(&q, chrono::Utc::now())?;
    let rows = usage_history::rows(&st.db, auth.user_id, range, q.group_by).await?;
    match q.format.as_deref() {
        Some("csv") => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"stellar-usage.csv\"",
                ),
            ],
            usage_history::csv(&rows),
        )
            .into_response()),
        Some("json") | None => {
            let total: i64 = rows.iter().map(|r| r.requests).sum();
            Ok(Json(json!({
                "from": range.from,
                "to": range.to,
                "granularity": range.granularity,
                "group_by": q.group_by,
                "rows": rows,
                "total": total,
            }))
            .into_response())
        }
        Some(_) => Err(ApiError::Unprocessable("format must be json or csv".into())),
    }
}
