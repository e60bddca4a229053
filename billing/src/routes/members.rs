//! `/auth/members`, `/auth/invitations`, `/auth/audit`: the people of an account and what
//! they did (docs/billing-api.md, "People"). The rules are in `identity::people`.

use crate::accounts::normalize_email;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::identity::{audit, people, Role};
use crate::openapi::schemas as s;
use crate::routes::auth::{limit, ClientInfo};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

fn id_of(raw: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("{what} not found")))
}

fn role_of(raw: &str) -> ApiResult<Role> {
    Role::parse(raw.trim()).ok_or_else(|| {
        ApiError::Unprocessable("role must be \"member\", \"admin\" or \"owner\"".into())
    })
}

#[utoipa::path(get, path = "/auth/members", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses((status = 200, description = "The account's members and pending invitations (any role).", body = s::Members)))]
pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let members = people::members(&st.db, auth.user_id).await?;
    let invitations = people::pending(&st.db, auth.user_id, chrono::Utc::now()).await?;
    let max = st.settings.tiers.get_or_default(&auth.tier).max_members;
    Ok(Json(
        json!({"members": members, "invitations": invitations, "max_members": max}),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct InviteBody {
    email: String,
    /// `member`, `admin` or `owner` (below the caller's).
    role: String,
}

#[utoipa::path(post, path = "/auth/members", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    request_body = InviteBody,
    responses(
        (status = 202, description = "An invitation link is mailed.", body = s::Invited),
        (status = 403, description = "Not an admin or the owner, a role not below the caller's, or the plan's `max_members` reached.", body = s::ApiErrorBody),
        (status = 409, description = "The address is already a member.", body = s::ApiErrorBody),
        (status = 422, description = "An invalid address or role, or a body of the wrong shape.", body = s::ApiErrorBody),
        (status = 429, description = "An abuse limit (per client IP, or mails per address).", body = s::ApiErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait.")))))]
pub async fn invite(
    State(st): State<AppState>,
    auth: Auth,
    ClientInfo(c): ClientInfo,
    JsonBody(body): JsonBody<InviteBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let email = normalize_email(&body.email)
        .ok_or_else(|| ApiError::Unprocessable("Invalid email address".into()))?;
    let role = role_of(&body.role)?;
    auth.require(Role::Admin, "invite people")?;
    limit(&st, &c, &email)?;
    let (id, expires_at) = people::invite(
        &st.db,
        &st.settings,
        &auth.actor,
        auth.role,
        auth.user_id,
        &email,
        role,
    )
    .await?;
    st.metrics.accounts.with_label_values(&["invited"]).inc();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"invitation_id": id, "email": email, "role": role, "expires_at": expires_at})),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RoleBody {
    /// `member`, `admin` or `owner`.
    role: String,
}

#[utoipa::path(patch, path = "/auth/members/{id}", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The member's id (anything else is 404).")),
    request_body = RoleBody,
    responses(
        (status = 200, description = "The member.", body = s::Member),
        (status = 403, description = "Unless both the member's current and new role are below the caller's.", body = s::ApiErrorBody),
        (status = 404, description = "Not a member of the account.", body = s::ApiErrorBody),
        (status = 422, description = "An invalid role, or a body of the wrong shape.", body = s::ApiErrorBody)))]
pub async fn change_role(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RoleBody>,
) -> ApiResult<Json<Value>> {
    let id = id_of(&id, "Member")?;
    let role = role_of(&body.role)?;
    auth.require(Role::Admin, "change roles")?;
    let m = people::change_role(&st.db, &auth.actor, auth.role, auth.user_id, id, role).await?;
    Ok(Json(json!(m)))
}

#[utoipa::path(delete, path = "/auth/members/{id}", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The member's id (anything else is 404).")),
    responses(
        (status = 200, description = "Removed: their sessions end and the keys they created are revoked.", body = s::MemberRemoved),
        (status = 403, description = "The owner, or a role not below the caller's (a member may remove itself).", body = s::ApiErrorBody),
        (status = 404, description = "Not a member of the account.", body = s::ApiErrorBody)))]
pub async fn remove(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = id_of(&id, "Member")?;
    people::remove(&st.db, &auth.actor, auth.role, auth.user_id, id).await?;
    st.metrics
        .accounts
        .with_label_values(&["member_removed"])
        .inc();
    Ok(Json(json!({"id": id, "removed": true})))
}

#[utoipa::path(delete, path = "/auth/invitations/{id}", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(("id" = Uuid, Path, description = "The invitation's id (anything else is 404).")),
    responses(
        (status = 200, description = "Cancelled: the link stops working.", body = s::InvitationCancelled),
        (status = 403, description = "Not an admin or the owner, or a role not below the caller's.", body = s::ApiErrorBody),
        (status = 404, description = "Not a pending invitation of the account.", body = s::ApiErrorBody)))]
pub async fn cancel_invitation(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = id_of(&id, "Invitation")?;
    auth.require(Role::Admin, "cancel invitations")?;
    people::cancel_invitation(&st.db, &auth.actor, auth.role, auth.user_id, id).await?;
    Ok(Json(json!({"id": id, "cancelled": true})))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1–200 (default 50).
    limit: Option<u32>,
    /// `next_before` of the previous page.
    before: Option<i64>,
}

#[utoipa::path(get, path = "/auth/audit", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Newest first.", body = s::AuditPage),
        (status = 403, description = "Not an admin or the owner.", body = s::ApiErrorBody),
        (status = 422, description = "`limit` out of range, or a malformed parameter.", body = s::ApiErrorBody)))]
pub async fn audit_log(
    State(st): State<AppState>,
    auth: Auth,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Value>> {
    auth.require(Role::Admin, "read the audit log")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Unprocessable("limit must be 1–200".into()));
    }
    let rows = audit::page(&st.db, auth.user_id, q.before, limit).await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({"events": rows, "next_before": next})))
}
