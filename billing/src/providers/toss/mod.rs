//! TossPayments: billing-key subscriptions we schedule ourselves.
//!
//! Checkout hands the JS SDK a client key and a `customerKey` (a random UUID stored on the
//! account); the SDK's success redirect brings an `authKey` that [`Toss::confirm`] exchanges for a
//! billing key (stored AES-256-GCM encrypted, never logged) before making the first charge.
//!
//! Every charge runs in committed phases: (1) a `toss_charges` row in status `pending` with an
//! orderId unique per account and month (`sg-<user>-<YYYYMM>-<attempt>`, matching
//! `^[A-Za-z0-9_-]{6,64}$`); (2) `POST /v1/billing/{billingKey}` with `Idempotency-Key` derived
//! from that orderId; (3) the outcome, the row and the subscription change in one transaction.
//! A pending row whose answer was lost (timeout, crash, kill -9) is resolved by
//! `GET /v1/payments/orders/{orderId}`; only when Toss does not know the order is the request
//! sent again, with the same orderId and the same Idempotency-Key, so it cannot charge twice.
//!
//! Toss sends no webhook for billing charges and signs none of its payment webhooks, so a
//! webhook is only a hint, re-checked against the API (`webhook`).
//!
//! Like every provider, Toss writes no account state: the customerKey, the billing key, the
//! charge settlement and the subscription change are [`Effect`]s and [`Event`]s applied by the
//! state machine ([`crate::subscription`]).
//!
//! Files: `client` (the HTTP API, no SQL), `ledger` (`toss_charges` and the in-flight set),
//! `charges` (confirmation, charges, renewals, the reconciler), `webhook`; this file holds the
//! [`Provider`] side (checkout, portal, cancel).

pub mod charges;
pub mod client;
pub mod ledger;
mod webhook;

use super::{not_configured, CheckoutRequest, Provider, Webhook, WebhookError};
use crate::accounts::{self, User};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::settings::{Settings, TossSection};
use crate::subscription::{self, Change, Effect, Event, Outcome, Refs, Status};
use axum::http::HeaderMap;
use chrono::Utc;
use serde_json::{json, Value};
use std::sync::Arc;
use stellar_common::{Db, Tier};
use stellar_proto::webhook::toss as notice;
use uuid::Uuid;

pub struct Toss {
    settings: Arc<Settings>,
    client: client::Client,
    ledger: ledger::Ledger,
    db: Db,
    metrics: Arc<Metrics>,
}

/// The order name of a month of `tier` (checkout and charges).
fn order_name(tier: &str) -> String {
    format!("Stellar Memory {tier} (monthly)")
}

impl Toss {
    pub fn new(
        settings: Arc<Settings>,
        http: reqwest::Client,
        db: Db,
        metrics: Arc<Metrics>,
    ) -> Toss {
        Toss {
            client: client::Client::new(settings.clone(), http),
            ledger: ledger::Ledger::new(db.clone()),
            settings,
            db,
            metrics,
        }
    }

    fn cfg(&self) -> &TossSection {
        &self.settings.toss
    }

    fn free_tier(&self) -> &str {
        &self.settings.tiers.default_tier().name
    }

    async fn apply(&self, ev: &Event) -> sqlx::Result<Outcome> {
        subscription::apply(&self.db, ev, self.free_tier()).await
    }

    /// The account's customerKey, created on first use.
    async fn customer_key(&self, user: &User) -> ApiResult<String> {
        if let Some(k) = &user.toss_customer_key {
            return Ok(k.clone());
        }
        let key = Effect::IssueCustomerKey(Uuid::new_v4().to_string());
        subscription::apply_effect(&self.db, user.id, &key).await?;
        // Whichever key was stored first (a concurrent checkout may have won).
        accounts::user_by_id(&self.db, user.id)
            .await?
            .and_then(|u| u.toss_customer_key)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("customer key not stored")))
    }

    fn checkout_answer(&self, user_email: &str, customer_key: &str, tier: &Tier) -> Value {
        let public = self.settings.public_url();
        let q = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let success_url = format!(
            "{public}/billing/toss/success?tier={}&email={}",
            q(&tier.name),
            q(user_email)
        );
        json!({
            "provider": "toss",
            "client_key": self.cfg().client_key,
            "customer_key": customer_key,
            "amount": tier.price_krw,
            "currency": "KRW",
            "order_name": order_name(&tier.name),
            "customer_email": user_email,
            "success_url": success_url,
            "fail_url": format!("{public}/billing/toss/fail"),
            "sdk_url": self.cfg().sdk_url,
            // The customerKey lets the card page open without an API key header (a browser
            // follows this link); this answer only ever goes to the account's key holder or to
            // the buyer who just created the account.
            "checkout_url": format!("{public}/billing/toss/pay?tier={}&email={}&customerKey={}", q(&tier.name), q(user_email), q(customer_key)),
        })
    }

    /// An event billing itself originates for `user` (cancel, resume, a deleted billing key).
    fn local_event(&self, user: &User, event_type: &str, change: Change) -> Event {
        let now = Utc::now();
        Event::new(
            "toss",
            format!(
                "{event_type}:{}:{}",
                user.id.simple(),
                now.timestamp_micros()
            ),
            event_type,
            now,
            Refs {
                user_id: Some(user.id),
                subscription_id: None,
                customer_id: user.toss_customer_key.clone(),
            },
            change,
            json!({"source": "stellar"}),
        )
    }

    pub fn tier_checked<'a>(&'a self, name: &str) -> ApiResult<&'a Arc<Tier>> {
        let tier = self
            .settings
            .tiers
            .get(name)
            .ok_or_else(|| ApiError::Unprocessable(format!("Unknown tier: {name}")))?;
        if tier.price_krw == 0 {
            return Err(ApiError::Unprocessable(format!(
                "The {} tier cannot be bought",
                tier.name
            )));
        }
        Ok(tier)
    }
}

#[async_trait::async_trait]
impl Provider for Toss {
    fn name(&self) -> &'static str {
        "toss"
    }

    fn configured(&self) -> bool {
        !self.cfg().secret_key.is_empty()
            && !self.cfg().client_key.is_empty()
            && self.settings.toss_key.is_some()
    }

    async fn checkout(&self, req: CheckoutRequest<'_>) -> ApiResult<Value> {
        if !self.configured() {
            return Err(not_configured("toss"));
        }
        let tier = self.tier_checked(&req.tier.name)?;
        // Toss is not called before the card step, so check now that it could be: a checkout
        // whose card registration cannot work is refused before anything is written.
        if !self
            .client
            .url(&["v1"])
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
        {
            return Err(ApiError::Provider(
                "toss: toss.api_base is not usable".into(),
            ));
        }
        let ck = self.customer_key(req.user).await?;
        Ok(self.checkout_answer(req.email, &ck, tier))
    }

    async fn webhook(&self, headers: &HeaderMap, body: &[u8]) -> Result<Webhook, WebhookError> {
        if !self.configured() {
            return Err(WebhookError::Unavailable("toss is not configured".into()));
        }
        let notice = notice::parse(body).map_err(|e| WebhookError::Rejected(e.to_string()))?;
        let transmission = headers
            .get(notice::TRANSMISSION_ID)
            .and_then(|v| notice::transmission_id(v.as_bytes()));
        tracing::debug!(event = %notice.event_type, transmission, "toss webhook");
        let events = self.handle_webhook(&notice).await?;
        Ok(Webhook {
            event_type: notice.event_type,
            events,
        })
    }

    async fn portal(&self, _user: &User) -> ApiResult<String> {
        Ok(format!("{}/dashboard#billing", self.settings.public_url()))
    }

    async fn cancel(&self, user: &User) -> ApiResult<Event> {
        if user.provider.as_deref() != Some("toss") {
            return Err(ApiError::NotFound(
                "No Toss subscription for this account".into(),
            ));
        }
        Ok(self.local_event(
            user,
            "cancel_requested",
            Change::Snapshot {
                status: Status::Cancelled,
                tier: None,
                period_end: user.current_period_end,
            },
        ))
    }
}
