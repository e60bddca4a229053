//! Payment providers, one module each behind one trait. A provider turns a checkout request into
//! its own API call, and a webhook delivery (verified over the raw body first) into
//! [`subscription::Event`]s that the state machine applies; none of them writes account state
//! itself.

pub mod lemon;
pub mod stripe;
pub mod toss;

use crate::accounts::User;
use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;
use crate::subscription::Event;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use stellar_common::Tier;

/// A checkout for an existing (possibly just created, key-less) account.
pub struct CheckoutRequest<'a> {
    pub user: &'a User,
    pub tier: &'a Tier,
    pub email: &'a str,
}

/// A verified webhook delivery.
#[derive(Debug)]
pub struct Webhook {
    pub event_type: String,
    /// Empty for event types that change nothing here (acknowledged and logged).
    pub events: Vec<Event>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Bad, missing or stale signature, or (Toss) a payment the API does not know: 400.
    #[error("{0}")]
    Rejected(String),
    /// The provider is not configured or its API is unreachable: 503, so it retries.
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    fn configured(&self) -> bool;
    /// Start a checkout; the JSON answer for `POST /billing/{provider}/checkout`. It always has a
    /// `checkout_url` member that a browser can be redirected to.
    async fn checkout(&self, req: CheckoutRequest<'_>) -> ApiResult<serde_json::Value>;
    /// Verify and translate a delivery.
    async fn webhook(&self, headers: &HeaderMap, body: &[u8]) -> Result<Webhook, WebhookError>;
    /// Where the customer manages the subscription.
    async fn portal(&self, user: &User) -> ApiResult<String>;
    /// Cancel at period end at the provider; the event to apply locally right away.
    async fn cancel(&self, user: &User) -> ApiResult<Event>;
}

pub struct Providers {
    pub lemon: lemon::Lemon,
    pub stripe: stripe::Stripe,
    pub toss: toss::Toss,
}

impl Providers {
    pub fn new(
        settings: Arc<Settings>,
        http: reqwest::Client,
        db: stellar_common::Db,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Providers {
        Providers {
            lemon: lemon::Lemon::new(settings.clone(), http.clone()),
            stripe: stripe::Stripe::new(settings.clone(), http.clone()),
            toss: toss::Toss::new(settings, http, db, metrics),
        }
    }

    /// By path name: `lemonsqueezy`, `stripe`, `toss`.
    pub fn by_path(&self, name: &str) -> Option<&dyn Provider> {
        match name {
            "lemonsqueezy" | "lemon" => Some(&self.lemon),
            "stripe" => Some(&self.stripe),
            "toss" => Some(&self.toss),
            _ => None,
        }
    }

    /// By the name stored in `users.provider`.
    pub fn by_stored(&self, name: &str) -> Option<&dyn Provider> {
        self.by_path(name)
    }
}

/// Map a provider price/variant id to our tier through configuration only.
pub fn tier_for_id(id: &str, pro: &str, team: &str) -> Option<String> {
    let id = id.trim();
    if id.is_empty() {
        None
    } else if !pro.trim().is_empty() && id == pro.trim() {
        Some("pro".into())
    } else if !team.trim().is_empty() && id == team.trim() {
        Some("team".into())
    } else {
        None
    }
}

/// The provider's plan id (Stripe price, Lemon Squeezy variant) configured for `tier`; a 422
/// naming the provider when that tier cannot be bought there (free, or no id configured).
pub fn plan_for<'a>(provider: &str, tier: &str, pro: &'a str, team: &'a str) -> ApiResult<&'a str> {
    match tier {
        "pro" if !pro.is_empty() => Ok(pro),
        "team" if !team.is_empty() => Ok(team),
        _ => Err(ApiError::Unprocessable(format!(
            "The {tier} tier cannot be bought with {provider}"
        ))),
    }
}

pub fn not_configured(name: &str) -> ApiError {
    ApiError::Unavailable(format!("{name} is not configured"))
}

/// A JSON value as a string id (providers send ids as numbers or strings).
pub fn id_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn parse_rfc3339(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

pub fn unix(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    v.as_i64().and_then(|t| DateTime::from_timestamp(t, 0))
}

/// Read a provider's JSON answer; non-2xx becomes [`ApiError::Provider`] with the body logged.
pub async fn provider_json(
    name: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> ApiResult<serde_json::Value> {
    let resp = resp.map_err(|e| ApiError::Provider(format!("{name}: {e}")))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| ApiError::Provider(format!("{name}: {e}")))?;
    if !status.is_success() {
        return Err(ApiError::Provider(format!(
            "{name} answered {status}: {}",
            text.chars().take(500).collect::<String>()
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| ApiError::Provider(format!("{name}: unreadable answer: {e}")))
}
