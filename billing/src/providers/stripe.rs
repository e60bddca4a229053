//! Stripe: Checkout Sessions in subscription mode (our user id as `client_reference_id` and in
//! both the session's and the subscription's metadata); webhooks signed with the timestamped
//! `Stripe-Signature: t=…,v1=…` scheme (HMAC-SHA256 of `"{t}.{raw body}"`, key = the whole
//! `whsec_…` string, any `v1` may match, older than the tolerance → rejected), checked by
//! [`stellar_proto::webhook::stripe`].

use super::{
    id_string, not_configured, provider_json, tier_for_id, unix, CheckoutRequest, Provider,
    Webhook, WebhookError,
};
use crate::accounts::User;
use crate::error::{ApiError, ApiResult};
use crate::money::Money;
use crate::settings::Settings;
use crate::subscription::{Change, Event, Refs, Status};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use stellar_proto::webhook::stripe as signature;
use uuid::Uuid;

pub struct Stripe {
    settings: Arc<Settings>,
    http: reqwest::Client,
}

fn user_in(meta: &Value) -> Option<Uuid> {
    meta["user_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
}

impl Stripe {
    pub fn new(settings: Arc<Settings>, http: reqwest::Client) -> Stripe {
        Stripe { settings, http }
    }

    fn cfg(&self) -> &crate::settings::StripeSection {
        &self.settings.stripe
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!(
                "{}{path}",
                self.cfg().api_base.trim_end_matches('/')
            ))
            .bearer_auth(self.cfg().secret_key.expose())
            .timeout(self.settings.provider_timeout())
    }

    fn tier_of_price(&self, price: &str) -> Option<String> {
        tier_for_id(price, &self.cfg().price_pro, &self.cfg().price_team)
    }

    /// A Subscription object as a snapshot (basil and later: period end on the items).
    fn subscription_event(
        &self,
        event_type: &str,
        event_id: String,
        at: DateTime<Utc>,
        sub: &Value,
        raw: Value,
    ) -> Event {
        let items = sub["items"]["data"].as_array().cloned().unwrap_or_default();
        let tier = items
            .iter()
            .filter_map(|i| i["price"]["id"].as_str())
            .find_map(|p| self.tier_of_price(p));
        if tier.is_none() {
            tracing::warn!(
                "Stripe subscription price is not mapped to a tier (stripe.price_pro/price_team)"
            );
        }
        let period_end = items
            .iter()
            .filter_map(|i| unix(&i["current_period_end"]))
            .max()
            .or_else(|| unix(&sub["current_period_end"]));
        let cancel_at_end =
            sub["cancel_at_period_end"].as_bool().unwrap_or(false) || !sub["cancel_at"].is_null();
        let change = match (event_type, sub["status"].as_str().unwrap_or("")) {
            ("customer.subscription.deleted", _)
            | (_, "canceled" | "incomplete_expired" | "paused") => Change::Snapshot {
                status: Status::Expired,
                tier,
                period_end,
            },
            (_, "active" | "trialing") if cancel_at_end => {
                let end = unix(&sub["cancel_at"]).or(period_end);
                Change::Snapshot {
                    status: Status::Cancelled,
                    tier,
                    period_end: end,
                }
            }
            (_, "active" | "trialing") => Change::Snapshot {
                status: Status::Active,
                tier,
                period_end,
            },
            (_, "past_due" | "unpaid") => Change::Snapshot {
                status: Status::PastDue,
                tier,
                period_end,
            },
            // incomplete: the first payment has not gone through yet.
            _ => Change::Link,
        };
        Event::new(
            "stripe",
            event_id,
            event_type,
            at,
            Refs {
                user_id: user_in(&sub["metadata"]),
                subscription_id: id_string(&sub["id"]),
                customer_id: id_string(&sub["customer"]),
            },
            change,
            raw,
        )
    }

    pub fn parse(&self, body: &[u8]) -> Result<Webhook, WebhookError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Rejected(format!("malformed JSON: {e}")))?;
        let ty = v["type"].as_str().unwrap_or("").to_string();
        let id = v["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WebhookError::Rejected("event without id".into()))?
            .to_string();
        let at = unix(&v["created"]).unwrap_or_else(Utc::now);
        let obj = &v["data"]["object"];
        // A checkout session or an invoice: the customer, the amount and its currency are named
        // alike on both.
        let object_event = |user_id: Option<Uuid>, sub: Option<String>, change, amount: &Value| {
            let refs = Refs {
                user_id,
                subscription_id: sub,
                customer_id: id_string(&obj["customer"]),
            };
            Event::new(
                "stripe",
                id.clone(),
                ty.clone(),
                at,
                refs,
                change,
                v.clone(),
            )
            .with_amount(Money::from_provider(amount, &obj["currency"]))
        };
        let events = match ty.as_str() {
            "checkout.session.completed" if obj["mode"].as_str() == Some("subscription") => {
                let user = obj["client_reference_id"]
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .or_else(|| user_in(&obj["metadata"]));
                let sub = id_string(&obj["subscription"]);
                vec![object_event(user, sub, Change::Link, &obj["amount_total"])]
            }
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.resumed"
            | "customer.subscription.paused" => {
                vec![self.subscription_event(&ty, id.clone(), at, obj, v.clone())]
            }
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                let details = if obj["parent"]["subscription_details"].is_object() {
                    &obj["parent"]["subscription_details"]
                } else {
                    &obj["subscription_details"]
                };
                let sub =
                    id_string(&details["subscription"]).or_else(|| id_string(&obj["subscription"]));
                let lines = obj["lines"]["data"].as_array().cloned().unwrap_or_default();
                let change = if ty == "invoice.payment_failed" {
                    Change::PaymentFailed
                } else {
                    let tier = lines
                        .iter()
                        .filter_map(|l| {
                            l["pricing"]["price_details"]["price"]
                                .as_str()
                                .or_else(|| l["price"]["id"].as_str())
                        })
                        .find_map(|p| self.tier_of_price(p));
                    let period_end = lines.iter().filter_map(|l| unix(&l["period"]["end"])).max();
                    Change::PaymentSucceeded { tier, period_end }
                };
                // What was paid, else (a failed payment) what was due.
                let amount = if obj["amount_paid"].as_i64().is_some() {
                    &obj["amount_paid"]
                } else {
                    &obj["amount_due"]
                };
                vec![object_event(
                    user_in(&details["metadata"]),
                    sub,
                    change,
                    amount,
                )]
            }
            _ => vec![],
        };
        Ok(Webhook {
            event_type: ty,
            events,
        })
    }

    fn ids(user: &User) -> ApiResult<(Option<&str>, Option<&str>)> {
        if user.provider.as_deref() != Some("stripe") {
            return Err(ApiError::NotFound(
                "No Stripe subscription for this account".into(),
            ));
        }
        Ok((
            user.provider_customer_id.as_deref(),
            user.provider_subscription_id.as_deref(),
        ))
    }
}

#[async_trait::async_trait]
impl Provider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn configured(&self) -> bool {
        let c = self.cfg();
        let has_price = !c.price_pro.is_empty() || !c.price_team.is_empty();
        !c.secret_key.is_empty() && !c.webhook_secret.is_empty() && has_price
    }

    async fn checkout(&self, req: CheckoutRequest<'_>) -> ApiResult<Value> {
        if !self.configured() {
            return Err(not_configured("stripe"));
        }
        let c = self.cfg();
        let price = super::plan_for("Stripe", &req.tier.name, &c.price_pro, &c.price_team)?;
        let uid = req.user.id.to_string();
        let public = self.settings.public_url();
        let mut form: Vec<(&str, String)> = vec![
            ("mode", "subscription".into()),
            ("line_items[0][price]", price.to_string()),
            ("line_items[0][quantity]", "1".into()),
            // Stripe substitutes {CHECKOUT_SESSION_ID} itself.
            (
                "success_url",
                format!("{public}/dashboard?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"),
            ),
            ("cancel_url", format!("{public}/?checkout=cancelled")),
            ("client_reference_id", uid.clone()),
            ("metadata[user_id]", uid.clone()),
            ("metadata[tier]", req.tier.name.clone()),
            ("subscription_data[metadata][user_id]", uid),
            ("subscription_data[metadata][tier]", req.tier.name.clone()),
        ];
        match (
            req.user.provider.as_deref(),
            req.user.provider_customer_id.as_deref(),
        ) {
            (Some("stripe"), Some(cus)) => form.push(("customer", cus.to_string())),
            _ => form.push(("customer_email", req.email.to_string())),
        }
        let v = provider_json(
            "stripe",
            self.post("/v1/checkout/sessions").form(&form).send().await,
        )
        .await?;
        let url = v["url"]
            .as_str()
            .ok_or_else(|| ApiError::Provider("stripe: session without url".into()))?;
        Ok(json!({"provider": "stripe", "checkout_url": url, "session_id": v["id"]}))
    }

    async fn webhook(&self, headers: &HeaderMap, body: &[u8]) -> Result<Webhook, WebhookError> {
        if self.cfg().webhook_secret.is_empty() {
            return Err(WebhookError::Unavailable("stripe is not configured".into()));
        }
        let header = headers
            .get(signature::HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // The signature is checked before a byte of the body is parsed.
        signature::verify(
            self.cfg().webhook_secret.expose(),
            body,
            header,
            Utc::now().timestamp(),
            self.cfg().webhook_tolerance_secs,
        )
        .map_err(|e| WebhookError::Rejected(format!("Invalid signature: {e}")))?;
        self.parse(body)
    }

    async fn portal(&self, user: &User) -> ApiResult<String> {
        let (Some(cus), _) = Self::ids(user)? else {
            return Err(ApiError::NotFound(
                "No Stripe customer for this account".into(),
            ));
        };
        let form = [
            ("customer", cus.to_string()),
            (
                "return_url",
                format!("{}/dashboard", self.settings.public_url()),
            ),
        ];
        let v = provider_json(
            "stripe",
            self.post("/v1/billing_portal/sessions")
                .form(&form)
                .send()
                .await,
        )
        .await?;
        v["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::Provider("stripe: portal session without url".into()))
    }

    async fn cancel(&self, user: &User) -> ApiResult<Event> {
        let (_, Some(sub)) = Self::ids(user)? else {
            return Err(ApiError::NotFound(
                "No Stripe subscription for this account".into(),
            ));
        };
        let v = provider_json(
            "stripe",
            self.post(&format!("/v1/subscriptions/{sub}"))
                .form(&[("cancel_at_period_end", "true")])
                .send()
                .await,
        )
        .await?;
        let now = Utc::now();
        let mut ev = self.subscription_event(
            "customer.subscription.updated",
            format!("api-cancel:{sub}:{}", now.timestamp_millis()),
            now,
            &v,
            v.clone(),
        );
        ev.event_type = "cancel_requested".into();
        ev.refs.user_id = Some(user.id);
        Ok(ev)
    }
}
