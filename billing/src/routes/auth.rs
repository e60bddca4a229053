//! People (docs/billing-api.md, "People"): sign-up, sign-in links, opening a link, the
//! session and its list. The flows themselves are in `identity::flows`.

use crate::accounts::{self, normalize_email, Registered};
use crate::error::{ApiError, ApiResult};
use crate::extract::{client, Auth, JsonBody, Via};
use crate::identity::audit::{action, Event};
use crate::identity::flows::{self, Client};
use crate::identity::{people, sessions, IdTx};
use crate::openapi::schemas as s;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use stellar_common::with_db;
use uuid::Uuid;

/// The one answer to every valid sign-up or sign-in request: it reveals nothing.
pub const CHECK_MAIL: &str = "Check your e-mail to continue";

/// The request's client, as an extractor.
pub struct ClientInfo(pub Client);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientInfo(client(parts)))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EmailBody {
    /// Compared trimmed and lower-cased.
    email: String,
}

fn email_of(raw: &str) -> ApiResult<String> {
    normalize_email(raw).ok_or_else(|| ApiError::Unprocessable("Invalid email address".into()))
}

/// The abuse limits of a request that sends mail to `email`.
pub fn limit(st: &AppState, c: &Client, email: &str) -> ApiResult<()> {
    st.limits
        .check(c.ip.as_deref(), email, std::time::Instant::now())
        .map_err(|wait| {
            st.metrics
                .accounts
                .with_label_values(&["mail_limited"])
                .inc();
            ApiError::TooManyRequests(wait)
        })
}

pub fn accepted() -> (StatusCode, Json<Value>) {
    (StatusCode::ACCEPTED, Json(json!({ "detail": CHECK_MAIL })))
}

#[utoipa::path(post, path = "/auth/register", tag = "Accounts and keys",
    request_body = EmailBody,
    responses(
        (status = 201, description = "With `auth.immediate_key`: the new account and its first key (shown once).", body = s::Registered),
        (status = 202, description = "Verified sign-up (the default): the same answer for every valid address, new or known; a link is mailed.", body = s::CheckMail),
        (status = 409, description = "With `auth.immediate_key`: the address has an account (no key is issued).", body = s::ApiErrorBody),
        (status = 422, description = "An invalid e-mail address, or a body of the wrong shape.", body = s::ApiErrorBody),
        (status = 429, description = "An abuse limit (per client IP, or mails per address).", body = s::ApiErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait.")))))]
pub async fn register(
    State(st): State<AppState>,
    ClientInfo(c): ClientInfo,
    JsonBody(body): JsonBody<EmailBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let email = email_of(&body.email)?;
    if !st.settings.auth.immediate_key {
        limit(&st, &c, &email)?;
        flows::register(&st.db, &st.settings, &email, &c, None).await?;
        st.metrics
            .accounts
            .with_label_values(&["sign_up_mailed"])
            .inc();
        return Ok(accepted());
    }
    let free = st.settings.tiers.default_tier().name.clone();
    match accounts::register(&st.db, &email, &free).await? {
        Registered::Created { user_id, tier, key } => {
            st.metrics.accounts.with_label_values(&["registered"]).inc();
            tracing::info!(%user_id, "account registered");
            Ok((
                StatusCode::CREATED,
                Json(
                    json!({"user_id": user_id, "email": email, "tier": tier, "api_key": key.plaintext}),
                ),
            ))
        }
        Registered::AlreadyExists => {
            st.metrics
                .accounts
                .with_label_values(&["duplicate_email"])
                .inc();
            Err(ApiError::Conflict("Email already registered".into()))
        }
    }
}

#[utoipa::path(post, path = "/auth/sign-in", tag = "People",
    request_body = EmailBody,
    responses(
        (status = 202, description = "The same answer for every valid address; a sign-in link is mailed when the address is a member of some account.", body = s::CheckMail),
        (status = 422, description = "An invalid e-mail address, or a body of the wrong shape.", body = s::ApiErrorBody),
        (status = 429, description = "An abuse limit (per client IP, or mails per address).", body = s::ApiErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait.")))))]
pub async fn sign_in(
    State(st): State<AppState>,
    ClientInfo(c): ClientInfo,
    JsonBody(body): JsonBody<EmailBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let email = email_of(&body.email)?;
    limit(&st, &c, &email)?;
    if flows::sign_in(&st.db, &st.settings, &email, None).await? {
        st.metrics
            .accounts
            .with_label_values(&["sign_in_mailed"])
            .inc();
    }
    Ok(accepted())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TokenBody {
    token: String,
}

fn secure(st: &AppState) -> bool {
    sessions::secure_cookies(st.settings.public_url())
}

#[utoipa::path(post, path = "/auth/link", tag = "People",
    request_body(content = TokenBody, description = "The token from the mailed link's fragment (`#token=…`)."),
    responses(
        (status = 200, description = "Signed in: the session cookie is set (`Cache-Control: no-store`).", body = s::LinkOpened,
            headers(("Set-Cookie" = String, description = "`stellar_session=<token>; HttpOnly; SameSite=Lax; Path=/; Max-Age=…` (plus `Secure` unless the public URL is on a loopback host)."))),
        (status = 400, description = "An unknown or malformed token.", body = s::ApiErrorBody),
        (status = 403, description = "An invitation whose seat is gone (the plan's `max_members` reached).", body = s::ApiErrorBody),
        (status = 410, description = "The link has expired, or has already been used.", body = s::ApiErrorBody),
        (status = 422, description = "A body of the wrong shape.", body = s::ApiErrorBody)))]
pub async fn open_link(
    State(st): State<AppState>,
    ClientInfo(c): ClientInfo,
    JsonBody(body): JsonBody<TokenBody>,
) -> ApiResult<Response> {
    let o = flows::open(&st.db, &st.settings, body.token.trim(), &c).await?;
    st.metrics
        .accounts
        .with_label_values(&[match o.purpose.as_str() {
            "verification" => "verified",
            "invitation" => "joined",
            _ => "signed_in",
        }])
        .inc();
    let mut v = json!({
        "purpose": o.purpose,
        "email": o.email,
        "account_id": o.account_id,
        "role": o.role,
        "csrf_token": sessions::csrf_for(&o.session_token),
        "next": o.next,
    });
    if let Some(k) = &o.api_key {
        v["api_key"] = json!(k);
    }
    let cookie = sessions::set_cookie(
        &o.session_token,
        st.settings.auth.session_ttl_secs,
        secure(&st),
    );
    Ok(with_cookie(Json(v), &cookie))
}

fn with_cookie(body: impl IntoResponse, cookie: &str) -> Response {
    let mut r = body.into_response();
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The caller's session, with its CSRF token (recomputed from the cookie).
async fn session_json(st: &AppState, auth: &Auth, headers: &HeaderMap) -> ApiResult<Value> {
    let Via::Session { id } = auth.via else {
        return Err(ApiError::Unauthorized("Sign in to see your session"));
    };
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(sessions::token_from_cookie_header)
        .unwrap_or_default();
    let accounts = people::memberships(&st.db, &auth.actor.email).await?;
    Ok(json!({
        "session_id": id,
        "email": auth.actor.email,
        "account_id": auth.user_id,
        "role": auth.role,
        "tier": auth.tier,
        "csrf_token": sessions::csrf_for(token),
        "accounts": accounts,
    }))
}

#[utoipa::path(get, path = "/auth/session", tag = "People", security(("Session" = [])),
    responses(
        (status = 200, description = "The caller's session and every membership of its address.", body = s::Session),
        (status = 401, description = "No live session (also for a request with a key).", body = s::ApiErrorBody)))]
pub async fn session(
    State(st): State<AppState>,
    headers: HeaderMap,
    auth: Auth,
) -> ApiResult<Json<Value>> {
    session_json(&st, &auth, &headers).await.map(Json)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SwitchBody {
    /// One of the address's memberships (`accounts` of `GET /auth/session`).
    account_id: Uuid,
}

#[utoipa::path(post, path = "/auth/session/account", tag = "People", security(("Session" = [])),
    request_body = SwitchBody,
    responses(
        (status = 200, description = "The session, now acting in that account.", body = s::Session),
        (status = 401, description = "No live session (also for a request with a key).", body = s::ApiErrorBody),
        (status = 404, description = "The address is not a member of that account.", body = s::ApiErrorBody),
        (status = 422, description = "A body of the wrong shape.", body = s::ApiErrorBody)))]
pub async fn switch_account(
    State(st): State<AppState>,
    headers: HeaderMap,
    auth: Auth,
    JsonBody(body): JsonBody<SwitchBody>,
) -> ApiResult<Json<Value>> {
    let Via::Session { id } = auth.via else {
        return Err(ApiError::Unauthorized("Sign in to switch accounts"));
    };
    let moved = with_db!(&st.db, p => sqlx::query(
        "UPDATE sessions SET member_id = (SELECT m.id FROM members m WHERE m.account_id = $2 AND m.email = $3) \
         WHERE id = $1 AND EXISTS (SELECT 1 FROM members m WHERE m.account_id = $2 AND m.email = $3)")
        .bind(id).bind(body.account_id).bind(&auth.actor.email).execute(p).await.map(|r| r.rows_affected()))?;
    if moved == 0 {
        return Err(ApiError::NotFound(
            "You are not a member of that account".into(),
        ));
    }
    let membership = people::memberships(&st.db, &auth.actor.email)
        .await?
        .into_iter()
        .find(|m| m.account_id == body.account_id)
        .ok_or_else(|| ApiError::NotFound("You are not a member of that account".into()))?;
    let auth = Auth {
        user_id: body.account_id,
        tier: membership.tier,
        role: crate::identity::Role::parse(&membership.role)
            .unwrap_or(crate::identity::Role::Member),
        ..auth
    };
    session_json(&st, &auth, &headers).await.map(Json)
}

/// End a session of the caller's membership; `what` is the audit action.
async fn end_session(st: &AppState, auth: &Auth, id: Uuid, what: &'static str) -> ApiResult<bool> {
    let ended = with_db!(&st.db, p => {
        let mut tx = p.begin().await?;
        let n = sqlx::query("DELETE FROM sessions WHERE id = $1 AND member_id = $2")
            .bind(id).bind(auth.actor.member_id).execute(&mut *tx).await?.rows_affected();
        if n == 1 {
            tx.audit(&Event::by(&auth.actor, auth.user_id, what, Some(id.to_string()))).await?;
        }
        tx.commit().await?;
        n == 1
    });
    Ok(ended)
}

#[utoipa::path(post, path = "/auth/sign-out", tag = "People", security(("Session" = [])),
    responses(
        (status = 200, description = "The session is ended and its cookie cleared.", body = s::SignedOut,
            headers(("Set-Cookie" = String, description = "The session cookie with `Max-Age=0`."))),
        (status = 401, description = "Not signed in (also for a request with a key).", body = s::ApiErrorBody)))]
pub async fn sign_out(State(st): State<AppState>, auth: Auth) -> ApiResult<Response> {
    let Via::Session { id } = auth.via else {
        return Err(ApiError::Unauthorized("Not signed in"));
    };
    end_session(&st, &auth, id, action::SIGN_OUT).await?;
    Ok(with_cookie(
        Json(json!({"signed_out": true})),
        &sessions::clear_cookie(secure(&st)),
    ))
}

#[utoipa::path(get, path = "/auth/sessions", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses((status = 200, description = "The caller's own sessions in this account (with a key: the key creator's).", body = s::SessionList)))]
pub async fn list_sessions(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let list = sessions::list(
        &st.db,
        auth.actor.member_id,
        auth.session_id(),
        chrono::Utc::now(),
    )
    .await?;
    Ok(Json(json!({ "sessions": list })))
}

#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "People", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(("id" = Uuid, Path, description = "The session's id (anything else is 404).")),
    responses(
        (status = 200, description = "The session is ended.", body = s::Revoked),
        (status = 404, description = "Not one of the caller's sessions.", body = s::ApiErrorBody)))]
pub async fn revoke_session(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::NotFound("Session not found".into());
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    if !end_session(&st, &auth, id, action::SESSION_REVOKED).await? {
        return Err(not_found());
    }
    Ok(Json(json!({"id": id, "revoked": true})))
}
