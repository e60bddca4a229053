//! The HTTP surface (docs/billing-api.md): accounts and keys, plans and checkout, webhooks,
//! pages. Every error, including unknown paths and methods, is JSON.

pub(crate) mod account;
pub(crate) mod auth;
pub(crate) mod checkout;
pub(crate) mod data;
pub(crate) mod members;
pub(crate) mod pages;
pub(crate) mod toss;
pub(crate) mod webhooks;
pub(crate) mod webhooks_out;

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

/// `GET /healthz`: billing answers.
#[utoipa::path(get, path = "/healthz", tag = "Operations",
    responses((status = 200, description = "Billing is up.", body = crate::openapi::schemas::Health,
        example = json!({"status": "ok"}))))]
pub(crate) async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The router. Every route is in the OpenAPI document (`crate::openapi`, served here at
/// `/openapi.json` and browsable at `/docs`); a test reads this function's routes and fails
/// for one that is not documented.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.billing.body_limit_bytes;
    let webhook_limit = state.settings.billing.webhook_body_limit_bytes;
    let described = crate::openapi::serve::routes(state.settings.public_url());
    Router::new()
        .route("/healthz", get(health))
        .route("/auth/register", post(auth::register))
        .route("/auth/sign-in", post(auth::sign_in))
        .route("/auth/link", post(auth::open_link))
        .route("/auth/session", get(auth::session))
        .route("/auth/session/account", post(auth::switch_account))
        .route("/auth/sign-out", post(auth::sign_out))
        .route("/auth/sessions", get(auth::list_sessions))
        .route("/auth/sessions/{id}", delete(auth::revoke_session))
        .route("/auth/members", get(members::list).post(members::invite))
        .route(
            "/auth/members/{id}",
            axum::routing::patch(members::change_role).delete(members::remove),
        )
        .route("/auth/invitations/{id}", delete(members::cancel_invitation))
        .route("/auth/audit", get(members::audit_log))
        .route(
            "/auth/api-keys",
            get(account::list_keys).post(account::create_key),
        )
        .route(
            "/auth/api-keys/{id}",
            delete(account::revoke_key).patch(account::update_key),
        )
        .route("/auth/api-keys/{id}/rotate", post(account::rotate_key))
        .route("/auth/usage", get(account::usage))
        .route("/auth/export", get(data::export))
        .route("/auth/account", delete(data::delete_account))
        .route("/auth/usage/history", get(account::usage_history))
        .route(
            "/auth/webhooks",
            get(webhooks_out::list).post(webhooks_out::create),
        )
        .route("/auth/webhooks/{id}", delete(webhooks_out::delete))
        .route(
            "/auth/webhooks/{id}/rotate-secret",
            post(webhooks_out::rotate_secret),
        )
        .route(
            "/auth/webhooks/{id}/deliveries",
            get(webhooks_out::deliveries),
        )
        .route(
            "/auth/webhooks/deliveries/{id}/resend",
            post(webhooks_out::resend),
        )
        .route(
            "/auth/alerts",
            get(webhooks_out::get_alerts).put(webhooks_out::put_alerts),
        )
        .route("/billing/tiers", get(checkout::tiers))
        .route("/billing/toss/confirm", post(toss::confirm))
        .route("/billing/toss/pay", get(toss::page))
        .route("/billing/toss/success", get(toss::success))
        .route("/billing/toss/fail", get(toss::fail))
        .route(
            "/billing/{provider}/checkout",
            post(checkout::checkout_json).get(checkout::checkout_redirect),
        )
        .route("/billing/portal", get(checkout::portal))
        .route("/billing/cancel", post(checkout::cancel))
        .route(
            "/webhook/{provider}",
            // The route's own limit wins over the router-wide one below.
            post(webhooks::webhook).layer(DefaultBodyLimit::max(webhook_limit)),
        )
        .route("/", get(pages::index))
        .route("/dashboard", get(pages::dashboard))
        .route("/auth/link", get(pages::link))
        .route("/static/{*path}", get(pages::static_file))
        .merge(described)
        .fallback(|| async { ApiError::NotFound("Not found".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("Method not allowed".into())
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

#[cfg(test)]
mod tests;
