//! Your data (docs/billing-api.md, "Your data"): `GET /auth/export` streams every memory of the
//! account as NDJSON; `DELETE /auth/account` deletes the account and everything of it. The steps
//! and their order are in `data_rights`.

use super::checkout;
use crate::accounts;
use crate::data_rights::engine::Engine;
use crate::data_rights::export::Export;
use crate::data_rights::{self, erase};
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, Auth, RawBody, Via};
use crate::identity::{sessions, Role};
use crate::openapi::schemas as s;
use crate::state::AppState;
use crate::subscription::Status;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use stellar_common::with_db;

#[utoipa::path(get, path = "/auth/export", tag = "Your data", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses(
        (status = 200, description = "Every memory of the account, streamed, one JSON object per line (`Content-Disposition: attachment`, `Cache-Control: no-store`).",
            body = s::ExportLine, content_type = "application/x-ndjson"),
        (status = 403, description = "Not an admin or the owner, or a key bound to an agent.", body = s::ApiErrorBody),
        (status = 503, description = "The memory engine does not answer (before any line).", body = s::ApiErrorBody)))]
pub async fn export(State(st): State<AppState>, auth: Auth) -> ApiResult<Response> {
    auth.require(Role::Admin, "export the account's memories")?;
    if let Via::Key { key_id } = auth.via {
        let bound: Option<Option<String>> = with_db!(&st.db, p => sqlx::query_scalar(
            "SELECT agent FROM api_keys WHERE id = $1").bind(key_id).fetch_optional(p).await)?;
        if let Some(agent) = bound.flatten() {
            return Err(ApiError::Forbidden(format!(
                "This key is bound to agent {agent}: exporting every agent needs a key that is not, or a session"
            )));
        }
    }
    let agents = data_rights::agents(&st.db, auth.user_id).await?;
    let n_agents = agents.len();
    let export = Export::start(Engine::for_account(&st.settings, auth.user_id)?, agents).await?;
    data_rights::audit(
        &st.db,
        &auth.actor,
        auth.user_id,
        data_rights::MEMORIES_EXPORTED,
        Some(format!("agents:{n_agents}")),
    )
    .await?;
    st.metrics
        .accounts
        .with_label_values(&["memories_exported"])
        .inc();
    let name = format!(
        "attachment; filename=\"stellar-memories-{}.ndjson\"",
        chrono::Utc::now().format("%Y%m%d-%H%M%S")
    );
    let mut r = Body::from_stream(export.into_stream()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct Confirm {
    /// The account's e-mail address (compared trimmed, case-insensitively).
    confirm: String,
}

const CONFIRM: &str =
    "To delete the account, send {\"confirm\": \"<the account's e-mail address>\"}";

#[utoipa::path(delete, path = "/auth/account", tag = "Your data", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    request_body = Confirm,
    responses(
        (status = 200, description = "The account and everything of it are deleted; the session cookie is cleared.", body = s::AccountDeleted,
            headers(("Set-Cookie" = String, description = "The session cookie with `Max-Age=0`."))),
        (status = 403, description = "Not the owner.", body = s::ApiErrorBody),
        (status = 422, description = "A missing or different `confirm` (also an empty body); nothing changes.", body = s::ApiErrorBody),
        (status = 502, description = "The provider refused to cancel the subscription (nothing else happens).", body = s::ApiErrorBody),
        (status = 503, description = "The memory engine does not answer (see docs/billing-api.md for what then holds).", body = s::ApiErrorBody)))]
pub async fn delete_account(
    State(st): State<AppState>,
    auth: Auth,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    auth.require(Role::Owner, "delete the account")?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Unprocessable(CONFIRM.into()));
    }
    let Confirm { confirm } = parse_json(&body)?;
    let user = accounts::user_by_id(&st.db, auth.user_id)
        .await?
        .ok_or(ApiError::Unauthorized("Invalid API key"))?;
    if !confirm.trim().eq_ignore_ascii_case(user.email.trim()) {
        return Err(ApiError::Unprocessable(CONFIRM.into()));
    }
    let engine = Engine::for_account(&st.settings, user.id)?;
    let agents = data_rights::agents(&st.db, user.id).await?;

    // 1. The engine answers, or nothing happens.
    erase::count_all(&engine, &agents).await?;
    // 2. No further charge: a live subscription is cancelled at its provider.
    if matches!(user.subscription_status, Status::Active | Status::PastDue) {
        match checkout::cancel(State(st.clone()), auth.clone()).await {
            Ok(_) | Err(ApiError::Conflict(_)) => {}
            Err(ApiError::NotFound(m)) => return Err(ApiError::Provider(m)),
            Err(e) => return Err(e),
        }
    }
    // 3. The memories, while the keys still work (a failure here is retried with them).
    let mut deleted = erase::erase_all(&engine, &agents).await?;
    erase::release(&st.db, user.id, deleted).await?;
    // 4. The keys.
    let revoked = erase::revoke_keys(&st.db, user.id).await?;
    // 5. What was stored before the revocation reached every gateway.
    tokio::time::sleep(st.settings.billing.erase_settle).await;
    let last = async {
        let agents = data_rights::agents(&st.db, user.id).await?;
        let n = erase::final_sweep(&engine, &agents).await?;
        // 6. The rows, and the audit row that stays.
        let removed = erase::remove_account(&st.db, user.id, &auth.actor, deleted + n).await?;
        Ok::<_, ApiError>((n, removed))
    }
    .await;
    match last {
        Ok((n, removed)) => {
            deleted += n;
            if removed {
                st.metrics
                    .accounts
                    .with_label_values(&["account_deleted"])
                    .inc();
                tracing::info!(user_id = %user.id, memories_deleted = deleted, "account deleted");
            }
        }
        Err(e) => {
            if let Err(re) = erase::restore_keys(&st.db, user.id, &revoked).await {
                tracing::error!(error = %re, user_id = %user.id, "account deletion failed and its keys could not be restored");
            }
            return Err(e);
        }
    }
    let mut r = (
        StatusCode::OK,
        Json(json!({"deleted": true, "memories_deleted": deleted})),
    )
        .into_response();
    let cookie = sessions::clear_cookie(sessions::secure_cookies(st.settings.public_url()));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
