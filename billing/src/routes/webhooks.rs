//! `POST /webhook/{provider}`: verified over the raw body by the provider, then applied by the
//! subscription state machine. 200 for applied, duplicate and unknown events; 400 for a bad or
//! stale signature (nothing written); 503 when we cannot process it now (the provider retries).

use crate::error::{ApiError, ApiResult};
use crate::extract::RawBody;
use crate::openapi::schemas as s;
use crate::providers::WebhookError;
use crate::state::AppState;
use crate::subscription;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

#[utoipa::path(post, path = "/webhook/{provider}", tag = "Provider webhooks",
    params(("provider" = s::PaymentProvider, Path, description = "`lemonsqueezy`, `stripe` or `toss` (another is 404)."),
        ("X-Signature" = Option<String>, Header, description = "Lemon Squeezy: hex HMAC-SHA256 of the raw body with the webhook secret."),
        ("Stripe-Signature" = Option<String>, Header, description = "Stripe: `t=<unix s>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">`."),
        ("tosspayments-webhook-transmission-id" = Option<String>, Header, description = "TossPayments: the notice's transmission id (logged; Toss bodies are unsigned and verified by re-fetching the payment from the Toss API).")),
    request_body(content = Object, description = "The provider's event, verified over the raw bytes before it is parsed (at most `billing.webhook_body_limit_bytes`)."),
    responses(
        (status = 200, description = "Applied, or acknowledged: a duplicate, stale or unknown event changes nothing.", body = s::WebhookReceived),
        (status = 400, description = "A bad or stale signature, a malformed body, or (Toss) a payment the Toss API does not know; nothing is written.", body = s::ApiErrorBody),
        (status = 404, description = "An unknown payment provider.", body = s::ApiErrorBody),
        (status = 503, description = "The provider is not configured, or the Toss API is unreachable: the provider retries.", body = s::ApiErrorBody)))]
pub async fn webhook(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Json<Value>> {
    let p = st
        .providers
        .by_path(&provider)
        .ok_or_else(|| ApiError::NotFound(format!("Unknown payment provider: {provider}")))?;
    let name = p.name();
    let hook = match p.webhook(&headers, &body).await {
        Ok(h) => h,
        Err(WebhookError::Rejected(m)) => {
            st.metrics.webhook(name, "unverified", "rejected");
            tracing::warn!(provider = name, reason = %m, "webhook rejected");
            return Err(ApiError::BadRequest(m));
        }
        Err(WebhookError::Unavailable(m)) => {
            st.metrics.webhook(name, "unverified", "unavailable");
            tracing::warn!(provider = name, reason = %m, "webhook not processed now");
            return Err(ApiError::Unavailable(m));
        }
    };
    if hook.events.is_empty() {
        st.metrics.webhook(name, &hook.event_type, "ignored");
        tracing::info!(provider = name, event = %hook.event_type, "webhook acknowledged; nothing to change");
        return Ok(Json(json!({"received": true, "outcome": "ignored"})));
    }
    let free = st.settings.tiers.default_tier().name.clone();
    let mut last = "ignored";
    for ev in &hook.events {
        let outcome = match subscription::apply(&st.db, ev, &free).await {
            Ok(o) => o,
            Err(e) => {
                st.metrics.webhook(name, &hook.event_type, "error");
                return Err(e.into());
            }
        };
        st.metrics.webhook(name, &hook.event_type, outcome.label());
        last = outcome.label();
    }
    Ok(Json(json!({"received": true, "outcome": last})))
}
