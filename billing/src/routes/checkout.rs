//! `/billing/*`: plans, checkout with each provider (who may check out for which account), the
//! key page of a checkout that created an account, portal and cancel. Toss's own card pages and
//! confirmation are in `toss`.

use crate::accounts::{self, normalize_email, Registered};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, JsonBody, MaybeAuth, QueryParams};
use crate::identity::flows::{self, Client};
use crate::identity::Role;
use crate::openapi::schemas as s;
use crate::providers::{CheckoutRequest, Provider};
use crate::routes::auth::{accepted, limit, ClientInfo, CHECK_MAIL};
use crate::state::AppState;
use crate::subscription::{self, Status};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use stellar_common::Tier;

#[utoipa::path(get, path = "/billing/tiers", tag = "Plans and checkout",
    responses((status = 200, description = "The plans, and which providers are configured.", body = s::Tiers)))]
pub async fn tiers(State(st): State<AppState>) -> Json<Value> {
    let p = &st.providers;
    Json(json!({
        "tiers": st.settings.tiers.all().iter().map(|t| json!({
            "name": t.name, "max_memories": t.max_memories, "max_agents": t.max_agents,
            "requests_per_minute": t.requests_per_minute, "max_api_keys": t.max_api_keys, "max_members": t.max_members,
            "price_usd": t.price_usd, "price_krw": t.price_krw,
        })).collect::<Vec<_>>(),
        "providers": {"lemonsqueezy": p.lemon.configured(), "stripe": p.stripe.configured(), "toss": p.toss.configured()},
    }))
}

#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckoutBody {
    /// A paid tier's name (`GET /billing/tiers`).
    pub(super) tier: String,
    /// Required without an API key; with one, optional and then the key's account's e-mail.
    #[serde(default)]
    pub(super) email: Option<String>,
}

pub(super) fn paid_tier(st: &AppState, name: &str) -> ApiResult<Arc<Tier>> {
    let name = name.trim().to_ascii_lowercase();
    let t = st
        .settings
        .tiers
        .get(&name)
        .ok_or_else(|| ApiError::Unprocessable(format!("Unknown tier: {name}")))?;
    if t.name == st.settings.tiers.default_tier().name {
        return Err(ApiError::Unprocessable(
            "The free tier needs no checkout; register instead".into(),
        ));
    }
    Ok(t.clone())
}

/// A started checkout: the provider's answer, and the first API key of the account the checkout
/// created (only when the e-mail had no account; shown once, never stored or logged).
pub(super) struct Started {
    pub answer: Value,
    pub new_key: Option<String>,
    /// No checkout yet: a link was mailed (verified sign-up), and `answer` says so.
    pub mailed: bool,
}

/// Without immediate keys, an anonymous checkout starts nothing at the provider: it mails the
/// address a link (verification for a new address, whose account is created unverified; sign-in
/// for a known one) whose page continues to this checkout signed in. So a subscription is only
/// ever attached to an account that someone who opened a link mailed to its address holds, the
/// key is shown only through that link, and the answer is the same for every address.
async fn mail_checkout_link(
    st: &AppState,
    provider: &str,
    tier: &Tier,
    email: &str,
    client: &Client,
) -> ApiResult<Started> {
    limit(st, client, email)?;
    let next = format!("/billing/{provider}/checkout?tier={}", tier.name);
    flows::register(&st.db, &st.settings, email, client, Some(&next)).await?;
    st.metrics
        .accounts
        .with_label_values(&["checkout_mailed"])
        .inc();
    Ok(Started {
        answer: json!({ "detail": CHECK_MAIL }),
        new_key: None,
        mailed: true,
    })
}

/// Where a GET checkout without a key or session goes when keys are not issued at once: the
/// landing page, which asks for the address (a GET never sends mail).
pub(super) fn sign_in_first(st: &AppState, provider: &str, tier: &str) -> Option<Response> {
    (!st.settings.auth.immediate_key).then(|| {
        let tier: String = tier
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let provider: String = provider
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        Redirect::to(&format!(
            "/?checkout=sign-in&provider={provider}&tier={tier}"
        ))
        .into_response()
    })
}

/// The answer to an anonymous checkout for an e-mail that has an account: what
/// `POST /auth/register` answers for it (409), so it reveals nothing register does not.
fn already_registered(st: &AppState) -> ApiError {
    st.metrics
        .accounts
        .with_label_values(&["duplicate_email"])
        .inc();
    ApiError::Conflict("Email already registered: sign in with its API key to check out".into())
}

/// Ask the provider for a checkout; an answer whose `checkout_url` a browser cannot be sent to
/// is a refusal too, so callers act only on a usable checkout.
pub(super) async fn ask_provider(
    st: &AppState,
    p: &dyn Provider,
    user: &accounts::User,
    tier: &Tier,
) -> ApiResult<Value> {
    let r = p
        .checkout(CheckoutRequest {
            user,
            tier,
            email: &user.email,
        })
        .await
        .and_then(|answer| checkout_url(&answer).map(|_| answer));
    st.metrics
        .checkouts
        .with_label_values(&[p.name(), if r.is_ok() { "ok" } else { "error" }])
        .inc();
    r
}

/// Start a checkout.
///
/// With an API key (`auth`), the checkout is for the key's account: bound to its provider
/// customer (Stripe customer, our user id for Lemon Squeezy, its Toss customerKey), no key
/// issued; an e-mail in the request must be that account's.
///
/// Without a key, only a new e-mail can check out: it gets an account exactly as
/// `POST /auth/register` would make it, with its first key. The provider is called first with
/// the id the account will have, and the account is created only once the provider accepted
/// with a usable checkout, so a refused checkout creates nothing and a created account always
/// comes with a key its buyer sees. An e-mail that has an account is answered as register
/// answers it (409) before anything is asked or written: an anonymous caller never binds to,
/// sees or reuses another account's provider customer. If someone else registers the same new
/// e-mail at the same moment, the first to commit wins and the other gets that 409 too.
pub(super) async fn start_checkout(
    st: &AppState,
    provider: &str,
    body: &CheckoutBody,
    auth: Option<&Auth>,
    client: &Client,
) -> ApiResult<Started> {
    let p = st
        .providers
        .by_path(provider)
        .ok_or_else(|| ApiError::NotFound(format!("Unknown payment provider: {provider}")))?;
    let tier = paid_tier(st, &body.tier)?;
    let email = match body.email.as_deref() {
        Some(raw) => Some(
            normalize_email(raw)
                .ok_or_else(|| ApiError::Unprocessable("Invalid email address".into()))?,
        ),
        None if auth.is_some() => None,
        None => return Err(ApiError::Unprocessable("Missing email".into())),
    };
    if !p.configured() {
        return Err(ApiError::Unavailable(format!(
            "{provider} is not configured"
        )));
    }
    if let Some(auth) = auth {
        auth.require(Role::Owner, "manage the account's billing")?;
        let user = accounts::user_by_id(&st.db, auth.user_id)
            .await?
            .ok_or(ApiError::Unauthorized("Invalid API key"))?;
        if email
            .as_deref()
            .is_some_and(|e| !e.eq_ignore_ascii_case(user.email.trim()))
        {
            return Err(ApiError::Forbidden(
                "This e-mail is not the one of the API key's account".into(),
            ));
        }
        let answer = ask_provider(st, p, &user, &tier).await?;
        return Ok(Started {
            answer,
            new_key: None,
            mailed: false,
        });
    }
    let email = email.unwrap_or_default();
    if !st.settings.auth.immediate_key {
        return mail_checkout_link(st, provider, &tier, &email, client).await;
    }
    if accounts::user_by_email(&st.db, &email).await?.is_some() {
        return Err(already_registered(st));
    }
    let free = st.settings.tiers.default_tier().name.clone();
    let toss_ck = (p.name() == "toss").then(|| uuid::Uuid::new_v4().to_string());
    let user = accounts::User::provisional(uuid::Uuid::new_v4(), &email, &free, toss_ck);
    let answer = ask_provider(st, p, &user, &tier).await?;
    match accounts::create_account(
        &st.db,
        user.id,
        &email,
        &free,
        user.toss_customer_key.as_deref(),
    )
    .await?
    {
        Registered::Created { user_id, key, .. } => {
            st.metrics
                .accounts
                .with_label_values(&["registered_at_checkout"])
                .inc();
            tracing::info!(%user_id, provider = p.name(), "account registered at checkout");
            Ok(Started {
                answer,
                new_key: Some(key.plaintext),
                mailed: false,
            })
        }
        // Registered meanwhile: the provisional checkout is dropped unseen.
        Registered::AlreadyExists => Err(already_registered(st)),
    }
}

#[utoipa::path(post, path = "/billing/{provider}/checkout", tag = "Plans and checkout", security((), ("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(("provider" = s::PaymentProvider, Path, description = "`lemonsqueezy`, `stripe` or `toss` (another is 404).")),
    request_body = CheckoutBody,
    responses(
        (status = 200, description = "The provider's checkout (`Cache-Control: no-store`), with `api_key` when the checkout created the account (immediate keys).", body = s::Checkout),
        (status = 202, description = "Without a key or session (verified sign-up): nothing is started, a link is mailed.", body = s::CheckMail),
        (status = 403, description = "The e-mail is not the key's account's, or the caller is not the account's owner.", body = s::ApiErrorBody),
        (status = 404, description = "An unknown payment provider.", body = s::ApiErrorBody),
        (status = 409, description = "Without a key: the e-mail has an account (nothing is asked or written).", body = s::ApiErrorBody),
        (status = 422, description = "An unknown or free tier, a missing or invalid e-mail.", body = s::ApiErrorBody),
        (status = 429, description = "Without a key or session (verified sign-up): an abuse limit of the mailed link.", body = s::ApiErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 502, description = "The provider refused, or answered without a usable checkout URL (nothing is created).", body = s::ApiErrorBody),
        (status = 503, description = "The provider is not configured.", body = s::ApiErrorBody)))]
pub async fn checkout_json(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    MaybeAuth(auth): MaybeAuth,
    ClientInfo(client): ClientInfo,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> ApiResult<Response> {
    let Started {
        mut answer,
        new_key,
        mailed,
    } = start_checkout(&st, &provider, &body, auth.as_ref(), &client).await?;
    if mailed {
        return Ok(accepted().into_response());
    }
    if let Some(key) = new_key {
        answer["api_key"] = Value::String(key);
    }
    // The answer may hold a key shown once: never cached.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The provider's checkout URL, only if it is an http(s) URL a browser may be sent to.
pub(super) fn checkout_url(answer: &Value) -> ApiResult<String> {
    answer["checkout_url"]
        .as_str()
        .and_then(|u| url::Url::parse(u).ok())
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .map(String::from)
        .ok_or_else(|| ApiError::Provider("checkout without a usable url".into()))
}

/// The page a GET checkout for a new e-mail answers with instead of the redirect: the account's
/// first key, shown once, and a link on to the provider.
pub(super) fn key_interstitial(email: &str, tier: &str, key: &str, continue_url: &str) -> Response {
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>Stellar Memory – your API key</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main class="wrap" style="max-width:42rem;margin:3rem auto">
<h1>Your account is ready</h1>
<p>We created an account for <strong>{email}</strong>. This is its API key; your <strong>{tier}</strong> plan applies to it once the payment goes through.</p>
<p class="warning-line"><strong>Save it now: it is shown only once.</strong> We store only its hash and cannot show it again.</p>
<div class="key-box"><code id="new-key">{key}</code> <button id="copy-key" class="btn btn-sm" type="button">Copy key</button></div>
<p><a id="continue" class="btn btn-primary" href="{url}" rel="noreferrer">Continue to payment</a></p>
</main>
<script>
document.getElementById("copy-key").addEventListener("click", async (e) => {{
  const key = document.getElementById("new-key").textContent;
  try {{ await navigator.clipboard.writeText(key); e.currentTarget.textContent = "Copied"; }}
  catch (err) {{ const r = document.createRange(); r.selectNodeContents(document.getElementById("new-key")); const s = getSelection(); s.removeAllRanges(); s.addRange(r); }}
}});
</script></body></html>"#,
        email = html_escape(email),
        tier = html_escape(tier),
        key = html_escape(key),
        url = html_escape(continue_url),
    );
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}

/// The GET form the landing page can link to: 303 to the provider's checkout; for an e-mail
/// without an account, a page with the new account's key (shown once) and a link onwards.
#[utoipa::path(get, path = "/billing/{provider}/checkout", tag = "Plans and checkout", security((), ("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    params(("provider" = s::PaymentProvider, Path, description = "`lemonsqueezy`, `stripe` or `toss` (another is 404)."), CheckoutBody),
    responses(
        (status = 200, description = "For an e-mail without an account (immediate keys): a page with the new account's key (shown once) and a link on to the checkout.", body = String, content_type = "text/html"),
        (status = 303, description = "To the provider's checkout; without a key or session (verified sign-up), to `/?checkout=sign-in&provider=…&tier=…`.",
            headers(("Location" = String, description = "Where to go."))),
        (status = 403, description = "The e-mail is not the key's account's, or the caller is not the account's owner.", body = s::ApiErrorBody),
        (status = 404, description = "An unknown payment provider.", body = s::ApiErrorBody),
        (status = 409, description = "Without a key: the e-mail has an account (nothing is asked or written).", body = s::ApiErrorBody),
        (status = 422, description = "An unknown or free tier, a missing or invalid e-mail.", body = s::ApiErrorBody),
        (status = 429, description = "Without a key or session (verified sign-up): an abuse limit of the mailed link.", body = s::ApiErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 502, description = "The provider refused, or answered without a usable checkout URL (nothing is created).", body = s::ApiErrorBody),
        (status = 503, description = "The provider is not configured.", body = s::ApiErrorBody)))]
pub async fn checkout_redirect(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    MaybeAuth(auth): MaybeAuth,
    ClientInfo(client): ClientInfo,
    QueryParams(q): QueryParams<CheckoutBody>,
) -> ApiResult<Response> {
    if auth.is_none() {
        if let Some(r) = sign_in_first(&st, &provider, &q.tier) {
            return Ok(r);
        }
    }
    let Started {
        answer, new_key, ..
    } = start_checkout(&st, &provider, &q, auth.as_ref(), &client).await?;
    let url = checkout_url(&answer)?;
    Ok(match new_key {
        Some(key) => key_interstitial(
            &normalize_email(q.email.as_deref().unwrap_or_default()).unwrap_or_default(),
            &q.tier.trim().to_ascii_lowercase(),
            &key,
            &url,
        ),
        None => Redirect::to(&url).into_response(),
    })
}

#[utoipa::path(get, path = "/billing/portal", tag = "Plans and checkout", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses(
        (status = 200, description = "The provider's customer portal.", body = s::Portal),
        (status = 403, description = "Not the account's owner.", body = s::ApiErrorBody),
        (status = 404, description = "The account has no subscription.", body = s::ApiErrorBody),
        (status = 502, description = "The provider refused.", body = s::ApiErrorBody)))]
pub async fn portal(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(Role::Owner, "manage the account's billing")?;
    let user = accounts::user_by_id(&st.db, auth.user_id)
        .await?
        .ok_or(ApiError::Unauthorized("Invalid API key"))?;
    let p = user
        .provider
        .as_deref()
        .and_then(|n| st.providers.by_stored(n))
        .ok_or_else(|| ApiError::NotFound("No subscription for this account".into()))?;
    Ok(Json(json!({"url": p.portal(&user).await?})))
}

#[utoipa::path(post, path = "/billing/cancel", tag = "Plans and checkout", security(("ApiKey" = []), ("Bearer" = []), ("Session" = [])),
    responses(
        (status = 200, description = "Cancelled at the period's end: the tier stays until then.", body = s::Cancelled),
        (status = 403, description = "Not the account's owner.", body = s::ApiErrorBody),
        (status = 404, description = "No provider subscription for this account.", body = s::ApiErrorBody),
        (status = 409, description = "No active subscription.", body = s::ApiErrorBody),
        (status = 502, description = "The provider refused.", body = s::ApiErrorBody)))]
pub async fn cancel(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(Role::Owner, "cancel the subscription")?;
    let user = accounts::user_by_id(&st.db, auth.user_id)
        .await?
        .ok_or(ApiError::Unauthorized("Invalid API key"))?;
    if !user.subscription_status.is_live() {
        return Err(ApiError::Conflict("No active subscription".into()));
    }
    if user.subscription_status == Status::Cancelled {
        return Ok(Json(
            json!({"subscription_status": "cancelled", "current_period_end": user.current_period_end.map(|t| t.to_rfc3339())}),
        ));
    }
    let p = user
        .provider
        .as_deref()
        .and_then(|n| st.providers.by_stored(n))
        .ok_or_else(|| ApiError::NotFound("No subscription for this account".into()))?;
    let mut ev = p.cancel(&user).await?;
    // The provider's answer to our own call is the newest state there is, whatever its clock says.
    if let Some(last) = user.provider_state_at {
        ev.occurred_at = ev.occurred_at.max(last);
    }
    subscription::apply(&st.db, &ev, &st.settings.tiers.default_tier().name).await?;
    let u = accounts::user_by_id(&st.db, user.id)
        .await?
        .ok_or(ApiError::Unauthorized("Invalid API key"))?;
    Ok(Json(
        json!({"subscription_status": u.subscription_status, "current_period_end": u.current_period_end.map(|t| t.to_rfc3339())}),
    ))
}
