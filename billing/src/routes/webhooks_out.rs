//! `/auth/webhooks*` and `/auth/alerts`: the account's own webhook endpoints, their deliveries,
//! and its alert thresholds (docs/billing-api.md, "Webhooks and alerts"). Not to be confused
//! with `webhooks`, the payment providers' incoming webhooks. Managing endpoints and changing
//! thresholds needs an admin or the owner; any role reads the thresholds.

use crate::alerts::{self, ThresholdsUpdate};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::identity::Role;
use crate::openapi::schemas as s;
use crate::state::AppState;
use crate::webhooks::{store, target};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

fn manage(auth: &Auth) -> ApiResult<()> {
    auth.require(Role::Admin, "manage webhooks")
}

/// The id in the path (404 when it is not one), once the caller may manage webhooks.
fn managed_id(auth: &Auth, raw: &str, what: &str) -> ApiResult<Uuid> {
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("{what} not found")))?;
    manage(auth)?;
    Ok(id)
}

fn no_webhook() -> ApiError {
    ApiError::NotFound("Webhook not found".into())
}

/// A fresh secret and its encrypted form.
fn secret(st: &AppState) -> ApiResult<(String, String)> {
    let key = st.settings.webhooks.key().ok_or_else(|| {
        ApiError::Unavailable("Webhooks are not available: no encryption key".into())
    })?;
    let plain = store::new_secret();
    let enc = crate::crypto::encrypt(key, &plain);
    Ok((plain, enc))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// `https://` with a host (`http://` only on a loopback host, unless allowed).
    url: String,
    /// Event types (`GET /auth/webhooks` lists them), or `"*"` for all.
    events: Vec<String>,
}

#[utoipa::path(post, path = "/auth/webhooks", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "The endpoint and its secret (shown once).", body = s::WebhookEndpointWithSecret),
        (status = 403, description = "Not an admin or the owner, or `webhooks.max_endpoints` reached.", body = s::ApiErrorBody),
        (status = 422, description = "A URL that is not allowed, an unknown event type, an unknown field.", body = s::ApiErrorBody),
        (status = 503, description = "No encryption key for secrets.", body = s::ApiErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    manage(&auth)?;
    let url = target::check(&body.url, st.settings.webhooks.allow_http)
        .map_err(ApiError::Unprocessable)?;
    let events = store::check_events(&body.events).map_err(ApiError::Unprocessable)?;
    let (plain, enc) = secret(&st)?;
    let ep = store::create(
        &st.db,
        auth.user_id,
        url.as_str(),
        &events,
        &enc,
        st.settings.webhooks.max_endpoints,
        &auth.actor,
    )
    .await?;
    let mut v = json!(ep);
    v["secret"] = json!(plain);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/auth/webhooks", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses(
        (status = 200, description = "The account's endpoints (never a secret) and the event types.", body = s::WebhookList),
        (status = 403, description = "Not an admin or the owner.", body = s::ApiErrorBody)))]
pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    manage(&auth)?;
    let endpoints = store::list(&st.db, auth.user_id).await?;
    Ok(Json(
        json!({"webhooks": endpoints, "event_types": crate::webhooks::event::ALL}),
    ))
}

#[utoipa::path(delete, path = "/auth/webhooks/{id}", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The endpoint's id (anything else is 404).")),
    responses(
        (status = 200, description = "Deleted, with its deliveries (pending ones are never sent).", body = s::WebhookDeleted),
        (status = 403, description = "Not an admin or the owner.", body = s::ApiErrorBody),
        (status = 404, description = "Not an endpoint of the account.", body = s::ApiErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = managed_id(&auth, &id, "Webhook")?;
    if !store::delete(&st.db, auth.user_id, id, &auth.actor).await? {
        return Err(no_webhook());
    }
    Ok(Json(json!({"id": id, "deleted": true})))
}

#[utoipa::path(post, path = "/auth/webhooks/{id}/rotate-secret", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The endpoint's id (anything else is 404).")),
    responses(
        (status = 200, description = "The endpoint with its new secret (shown once).", body = s::WebhookEndpointWithSecret),
        (status = 403, description = "Not an admin or the owner.", body = s::ApiErrorBody),
        (status = 404, description = "Not an endpoint of the account.", body = s::ApiErrorBody),
        (status = 503, description = "No encryption key for secrets.", body = s::ApiErrorBody)))]
pub async fn rotate_secret(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = managed_id(&auth, &id, "Webhook")?;
    let (plain, enc) = secret(&st)?;
    let ep = store::rotate(&st.db, auth.user_id, id, &enc, &auth.actor)
        .await?
        .ok_or_else(no_webhook)?;
    let mut v = json!(ep);
    v["secret"] = json!(plain);
    Ok(Json(v))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// 1–200 (default 50).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/auth/webhooks/{id}/deliveries", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])), params(("id" = Uuid, Path, description = "The endpoint's id (anything else is 404).")),
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "Newest first.", body = s::DeliveryList),
        (status = 403, description = "Not an admin or the owner.", body = s::ApiErrorBody),
        (status = 404, description = "Not an endpoint of the account.", body = s::ApiErrorBody),
        (status = 422, description = "`limit` out of range, or a malformed parameter.", body = s::ApiErrorBody)))]
pub async fn deliveries(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    let id = managed_id(&auth, &id, "Webhook")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Unprocessable("limit must be 1–200".into()));
    }
    let list = store::deliveries(&st.db, auth.user_id, id, limit)
        .await?
        .ok_or_else(no_webhook)?;
    Ok(Json(json!({"deliveries": list})))
}

#[utoipa::path(post, path = "/auth/webhooks/deliveries/{id}/resend", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(("id" = Uuid, Path, description = "The delivery's id (anything else is 404).")),
    responses(
        (status = 202, description = "A new delivery of the same event, due at once.", body = s::DeliveryResent),
        (status = 403, description = "Not an admin or the owner.", body = s::ApiErrorBody),
        (status = 404, description = "Not a delivery of the account.", body = s::ApiErrorBody)))]
pub async fn resend(
    State(st): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = managed_id(&auth, &id, "Delivery")?;
    let (new_id, event_id) = store::resend(&st.db, auth.user_id, id, &auth.actor)
        .await?
        .ok_or_else(|| ApiError::NotFound("Delivery not found".into()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"id": new_id, "resent_from": id, "event_id": event_id, "status": store::status::PENDING}),
        ),
    ))
}

async fn alerts_json(st: &AppState, account: Uuid, t: &alerts::Thresholds) -> ApiResult<Value> {
    let raised = alerts::evaluate::raised(&st.db, account).await?;
    let mut v = json!(t);
    v["raised"] = json!(raised);
    Ok(v)
}

#[utoipa::path(get, path = "/auth/alerts", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses((status = 200, description = "The thresholds (any role) and the alerts raised.", body = s::Alerts)))]
pub async fn get_alerts(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let t = alerts::evaluate::thresholds(&st.db, auth.user_id).await?;
    Ok(Json(alerts_json(&st, auth.user_id, &t).await?))
}

#[utoipa::path(put, path = "/auth/alerts", tag = "Webhooks and alerts", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    request_body = crate::alerts::ThresholdsUpdate,
    responses(
        (status = 200, description = "As `GET /auth/alerts`.", body = s::Alerts),
        (status = 403, description = "Not an admin or the owner.", body = s::ApiErrorBody),
        (status = 422, description = "A value out of range or an unknown field (nothing changes).", body = s::ApiErrorBody)))]
pub async fn put_alerts(
    State(st): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<ThresholdsUpdate>,
) -> ApiResult<Json<Value>> {
    auth.require(Role::Admin, "change alert thresholds")?;
    let current = alerts::evaluate::thresholds(&st.db, auth.user_id).await?;
    let t = current.apply(&body).map_err(ApiError::Unprocessable)?;
    alerts::evaluate::save(&st.db, auth.user_id, &t, &auth.actor).await?;
    Ok(Json(alerts_json(&st, auth.user_id, &t).await?))
}
