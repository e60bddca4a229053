//! Toss's card flow on billing's side: the page that loads the Toss SDK, its success and fail
//! redirects, and the confirmation that issues the billing key and makes the first charge. The
//! customerKey is the credential here (a browser redirect carries no API key header), compared
//! in constant time (docs/billing-api.md, "Who may check out for an account").

use super::checkout::{
    ask_provider, checkout_url, key_interstitial, paid_tier, sign_in_first, start_checkout,
    CheckoutBody, Started,
};
use crate::accounts::{self, normalize_email};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, MaybeAuth, QueryParams};
use crate::openapi::schemas as s;
use crate::routes::auth::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use stellar_common::keys;

#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfirmBody {
    /// The account's Toss customerKey (from its checkout).
    #[serde(rename = "customerKey")]
    customer_key: String,
    /// Toss's authKey from the card registration.
    #[serde(rename = "authKey")]
    auth_key: String,
    tier: String,
    email: String,
}

async fn confirm_card(st: &AppState, b: &ConfirmBody) -> ApiResult<Value> {
    let tier = paid_tier(st, &b.tier)?;
    let tier = st.providers.toss.tier_checked(&tier.name)?.clone();
    let email = normalize_email(&b.email)
        .ok_or_else(|| ApiError::Unprocessable("Invalid email address".into()))?;
    let user = accounts::user_by_email(&st.db, &email)
        .await?
        .ok_or_else(|| ApiError::Forbidden("customerKey does not belong to this account".into()))?;
    st.providers
        .toss
        .confirm(&user, &tier, b.customer_key.trim(), b.auth_key.trim())
        .await
}

#[utoipa::path(post, path = "/billing/toss/confirm", tag = "Plans and checkout",
    request_body(content = ConfirmBody, description = "The customerKey issued to the e-mail's account is the credential."),
    responses(
        (status = 200, description = "The billing key is issued and the first charge succeeded.", body = s::PlanState),
        (status = 402, description = "The card registration or the charge was declined.", body = s::ApiErrorBody),
        (status = 403, description = "The customerKey is not the one issued to that e-mail's account (also for an e-mail without an account).", body = s::ApiErrorBody),
        (status = 422, description = "An unknown or free tier, an invalid e-mail, or a body of the wrong shape.", body = s::ApiErrorBody),
        (status = 502, description = "Toss answered with an error billing cannot pass on.", body = s::ApiErrorBody),
        (status = 503, description = "Toss is not configured, or its answer to the charge was lost: billing settles it by itself; do not retry with a new authKey.", body = s::ApiErrorBody)))]
pub async fn confirm(
    State(st): State<AppState>,
    JsonBody(b): JsonBody<ConfirmBody>,
) -> ApiResult<Json<Value>> {
    let r = confirm_card(&st, &b).await;
    st.metrics
        .checkouts
        .with_label_values(&["toss_confirm", if r.is_ok() { "ok" } else { "error" }])
        .inc();
    let v = r?;
    if v["subscription_status"] == "pending" {
        return Err(ApiError::Unavailable(
            v["detail"].as_str().unwrap_or("pending").to_string(),
        ));
    }
    Ok(Json(v))
}

/// Toss's success redirect (`?customerKey=&authKey=` appended to our success_url): confirm on the
/// server, then send the browser to the dashboard.
#[utoipa::path(get, path = "/billing/toss/success", tag = "Plans and checkout",
    params(ConfirmBody),
    responses(
        (status = 303, description = "Toss's success redirect: confirmed on the server, then to `/dashboard?checkout=success|pending&provider=toss`, or `/?checkout=failed&provider=toss&reason=declined|error`.",
            headers(("Location" = String, description = "Where to go."))),
        (status = 422, description = "A missing parameter.", body = s::ApiErrorBody)))]
pub async fn success(
    State(st): State<AppState>,
    QueryParams(b): QueryParams<ConfirmBody>,
) -> Redirect {
    let public = st.settings.public_url().to_string();
    match confirm_card(&st, &b).await {
        Ok(v) if v["subscription_status"] != "pending" => Redirect::to(&format!(
            "{public}/dashboard?checkout=success&provider=toss"
        )),
        Ok(_) => Redirect::to(&format!(
            "{public}/dashboard?checkout=pending&provider=toss"
        )),
        Err(e) => {
            tracing::warn!(error = %e, "toss confirmation failed");
            let reason = if matches!(e, ApiError::PaymentDeclined(_)) {
                "declined"
            } else {
                "error"
            };
            Redirect::to(&format!(
                "{public}/?checkout=failed&provider=toss&reason={reason}"
            ))
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FailQuery {
    /// Toss's error code (only `A-Z a-z 0-9 _` are kept).
    #[serde(default)]
    code: String,
}

#[utoipa::path(get, path = "/billing/toss/fail", tag = "Plans and checkout",
    params(FailQuery),
    responses(
        (status = 303, description = "Toss's fail redirect: to `/?checkout=failed&provider=toss&reason=<code>`.",
            headers(("Location" = String, description = "Where to go.")))))]
pub async fn fail(State(st): State<AppState>, QueryParams(q): QueryParams<FailQuery>) -> Redirect {
    let code: String = q
        .code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    Redirect::to(&format!(
        "{}/?checkout=failed&provider=toss&reason={code}",
        st.settings.public_url()
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TossPayQuery {
    tier: String,
    #[serde(default)]
    email: Option<String>,
    /// Put in this page's address by the Toss checkout (its `checkout_url`), which is only ever
    /// answered to the account's key holder or to the buyer who just created the account.
    #[serde(default, rename = "customerKey")]
    customer_key: Option<String>,
}

/// The Toss checkout of the account whose customerKey the caller holds: the same proof
/// `POST /billing/toss/confirm` asks for, and the same 403 for a wrong key or an unknown e-mail.
async fn toss_checkout_for_holder(
    st: &AppState,
    q: &TossPayQuery,
    customer_key: &str,
) -> ApiResult<Value> {
    let not_theirs = || ApiError::Forbidden("customerKey does not belong to this account".into());
    let tier = paid_tier(st, &q.tier)?;
    let email = q
        .email
        .as_deref()
        .and_then(normalize_email)
        .ok_or_else(|| ApiError::Unprocessable("Invalid email address".into()))?;
    let user = accounts::user_by_email(&st.db, &email)
        .await?
        .ok_or_else(not_theirs)?;
    let holds = user
        .toss_customer_key
        .as_deref()
        .is_some_and(|k| keys::ct_eq(k.as_bytes(), customer_key.trim().as_bytes()));
    if !holds {
        return Err(not_theirs());
    }
    ask_provider(st, &st.providers.toss, &user, &tier).await
}

/// Billing's own Toss page: loads the SDK and starts `requestBillingAuth`. Opened by the
/// account's key holder (a key, or the customerKey the Toss checkout put in its address), or,
/// for a new e-mail, as a checkout that creates the account (the key page comes first).
#[utoipa::path(get, path = "/billing/toss/pay", tag = "Plans and checkout", security((), ("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(TossPayQuery),
    responses(
        (status = 200, description = "Billing's Toss card page (loads the Toss SDK and calls `requestBillingAuth`), or, for an e-mail without an account (immediate keys), the key page first.",
            body = String, content_type = "text/html", headers(("Cache-Control" = String, description = "`no-store`."), ("Referrer-Policy" = String, description = "`no-referrer`."))),
        (status = 303, description = "Without a key, session or customerKey (verified sign-up): to `/?checkout=sign-in&provider=toss&tier=…`.",
            headers(("Location" = String, description = "Where to go."))),
        (status = 403, description = "The customerKey is not the e-mail's account's, or the caller is not the account's owner.", body = s::ApiErrorBody),
        (status = 409, description = "Without a key: the e-mail has an account.", body = s::ApiErrorBody),
        (status = 422, description = "An unknown or free tier, a missing or invalid e-mail.", body = s::ApiErrorBody),
        (status = 429, description = "Verified sign-up: an abuse limit of the mailed link.", body = s::ApiErrorBody),
        (status = 502, description = "Toss's base URL or the public URL is unusable.", body = s::ApiErrorBody),
        (status = 503, description = "Toss is not configured.", body = s::ApiErrorBody)))]
pub async fn page(
    State(st): State<AppState>,
    MaybeAuth(auth): MaybeAuth,
    ClientInfo(client): ClientInfo,
    QueryParams(q): QueryParams<TossPayQuery>,
) -> ApiResult<Response> {
    let Started {
        answer: v, new_key, ..
    } = match (&auth, q.customer_key.as_deref()) {
        (None, Some(ck)) => Started {
            answer: toss_checkout_for_holder(&st, &q, ck).await?,
            new_key: None,
            mailed: false,
        },
        _ => {
            if auth.is_none() {
                if let Some(r) = sign_in_first(&st, "toss", &q.tier) {
                    return Ok(r);
                }
            }
            let body = CheckoutBody {
                tier: q.tier.clone(),
                email: q.email.clone(),
            };
            start_checkout(&st, "toss", &body, auth.as_ref(), &client).await?
        }
    };
    if let Some(key) = new_key {
        // A new e-mail: the key first; the link (with the customerKey) comes back here.
        let url = checkout_url(&v)?;
        return Ok(key_interstitial(
            &normalize_email(q.email.as_deref().unwrap_or_default()).unwrap_or_default(),
            &q.tier.trim().to_ascii_lowercase(),
            &key,
            &url,
        ));
    }
    let data = serde_json::to_string(&v)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    let sdk = v["sdk_url"].as_str().unwrap_or_default().replace('"', "");
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Stellar Memory – card registration</title></head><body>
<main><h1>Registering your card with TossPayments…</h1><p id="status">Loading the payment window.</p></main>
<script src="{sdk}"></script>
<script>
const c = {data};
(async () => {{
  try {{
    const payment = TossPayments(c.client_key).payment({{ customerKey: c.customer_key }});
    await payment.requestBillingAuth({{ method: "CARD", successUrl: c.success_url, failUrl: c.fail_url, customerEmail: c.customer_email }});
  }} catch (e) {{
    document.getElementById("status").textContent = "The payment window could not be opened: " + (e && e.message ? e.message : e);
  }}
}})();
</script></body></html>"#
    );
    // The address holds the customerKey: never cached, never sent on as a referrer.
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response())
}
