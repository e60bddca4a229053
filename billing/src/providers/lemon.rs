//! Lemon Squeezy: hosted checkout through the checkouts API (JSON:API) with our user id and the
//! tier in custom data; webhooks signed with `X-Signature` = hex HMAC-SHA256 of the raw body,
//! checked by [`stellar_proto::webhook::lemon`].

use super::{
    id_string, not_configured, parse_rfc3339, provider_json, tier_for_id, CheckoutRequest,
    Provider, Webhook, WebhookError,
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
use stellar_proto::webhook::lemon as signature;

pub struct Lemon {
    settings: Arc<Settings>,
    http: reqwest::Client,
}

/// When the object was last changed (Lemon Squeezy's timestamp of the state it describes).
fn updated_at(attributes: &Value) -> DateTime<Utc> {
    parse_rfc3339(&attributes["updated_at"])
        .or_else(|| parse_rfc3339(&attributes["created_at"]))
        .unwrap_or_else(Utc::now)
}

impl Lemon {
    pub fn new(settings: Arc<Settings>, http: reqwest::Client) -> Lemon {
        Lemon { settings, http }
    }

    fn cfg(&self) -> &crate::settings::LemonSection {
        &self.settings.lemon
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg().api_base.trim_end_matches('/'))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(self.cfg().api_key.expose())
            .header("Accept", "application/vnd.api+json")
            .header("Content-Type", "application/vnd.api+json")
            .timeout(self.settings.provider_timeout())
    }

    fn tier_of_variant(&self, v: &Value) -> Option<String> {
        id_string(v)
            .and_then(|id| tier_for_id(&id, &self.cfg().variant_pro, &self.cfg().variant_team))
    }

    /// A subscription object (webhook `data` or API answer) as a snapshot event.
    fn subscription_event(
        &self,
        event_name: &str,
        event_id: String,
        data: &Value,
        user_hint: Option<uuid::Uuid>,
        raw: Value,
    ) -> Event {
        let a = &data["attributes"];
        let status = match a["status"].as_str().unwrap_or("") {
            "active" | "on_trial" => Status::Active,
            "cancelled" => Status::Cancelled,
            "past_due" | "unpaid" => Status::PastDue,
            // Expired, and paused (no payment is collected while paused).
            _ => Status::Expired,
        };
        let status = if event_name == "subscription_expired" {
            Status::Expired
        } else {
            status
        };
        let tier = self.tier_of_variant(&a["variant_id"]);
        if tier.is_none() {
            tracing::warn!(variant = %a["variant_id"], "Lemon Squeezy variant is not mapped to a tier (lemon.variant_pro/variant_team)");
        }
        let period_end = match status {
            Status::Cancelled | Status::Expired => {
                parse_rfc3339(&a["ends_at"]).or_else(|| parse_rfc3339(&a["renews_at"]))
            }
            _ => parse_rfc3339(&a["renews_at"]),
        };
        Event::new(
            "lemonsqueezy",
            event_id,
            event_name,
            updated_at(a),
            Refs {
                user_id: user_hint,
                subscription_id: id_string(&data["id"]),
                customer_id: id_string(&a["customer_id"]),
            },
            Change::Snapshot {
                status,
                tier,
                period_end,
            },
            raw,
        )
    }

    /// Translate a verified body.
    pub fn parse(&self, body: &[u8]) -> Result<Webhook, WebhookError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Rejected(format!("malformed JSON: {e}")))?;
        let meta = &v["meta"];
        let data = &v["data"];
        let name = meta["event_name"].as_str().unwrap_or("").to_string();
        let user_hint =
            id_string(&meta["custom_data"]["user_id"]).and_then(|s| uuid::Uuid::parse_str(&s).ok());
        let a = &data["attributes"];
        let event_id = meta["webhook_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{name}:{}:{}",
                    id_string(&data["id"]).unwrap_or_default(),
                    a["updated_at"].as_str().unwrap_or("")
                )
            });
        let events = match name.as_str() {
            "subscription_created"
            | "subscription_updated"
            | "subscription_cancelled"
            | "subscription_resumed"
            | "subscription_expired"
            | "subscription_paused"
            | "subscription_unpaused" => {
                vec![self.subscription_event(&name, event_id, data, user_hint, v.clone())]
            }
            "subscription_payment_success"
            | "subscription_payment_recovered"
            | "subscription_payment_failed" => {
                let change = if name == "subscription_payment_failed" {
                    Change::PaymentFailed
                } else {
                    // Invoices carry no variant and no period end: the stored subscription has them.
                    Change::PaymentSucceeded {
                        tier: None,
                        period_end: None,
                    }
                };
                vec![Event::new(
                    "lemonsqueezy",
                    event_id,
                    name.clone(),
                    updated_at(a),
                    Refs {
                        user_id: user_hint,
                        subscription_id: id_string(&a["subscription_id"]),
                        customer_id: id_string(&a["customer_id"]),
                    },
                    change,
                    v.clone(),
                )
                .with_amount(Money::from_provider(&a["total"], &a["currency"]))]
            }
            _ => vec![],
        };
        Ok(Webhook {
            event_type: name,
            events,
        })
    }

    fn subscription_id(user: &User) -> ApiResult<&str> {
        match (
            user.provider.as_deref(),
            user.provider_subscription_id.as_deref(),
        ) {
            (Some("lemonsqueezy"), Some(id)) => Ok(id),
            _ => Err(ApiError::NotFound(
                "No Lemon Squeezy subscription for this account".into(),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Provider for Lemon {
    fn name(&self) -> &'static str {
        "lemonsqueezy"
    }

    fn configured(&self) -> bool {
        let c = self.cfg();
        let has_variant = !c.variant_pro.is_empty() || !c.variant_team.is_empty();
        !c.api_key.is_empty()
            && !c.store_id.is_empty()
            && !c.webhook_secret.is_empty()
            && has_variant
    }

    async fn checkout(&self, req: CheckoutRequest<'_>) -> ApiResult<Value> {
        if !self.configured() {
            return Err(not_configured("lemonsqueezy"));
        }
        let c = self.cfg();
        let variant = super::plan_for(
            "Lemon Squeezy",
            &req.tier.name,
            &c.variant_pro,
            &c.variant_team,
        )?;
        let variant_num = variant
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(variant.to_string()));
        let body = json!({"data": {
            "type": "checkouts",
            "attributes": {
                "product_options": {"redirect_url": format!("{}/dashboard?checkout=success", self.settings.public_url()), "enabled_variants": [variant_num]},
                "checkout_options": {"embed": false},
                "checkout_data": {"email": req.email, "custom": {"user_id": req.user.id.to_string(), "tier": req.tier.name}},
                "test_mode": self.cfg().test_mode
            },
            "relationships": {
                "store": {"data": {"type": "stores", "id": self.cfg().store_id}},
                "variant": {"data": {"type": "variants", "id": variant}}
            }
        }});
        let v = provider_json(
            "lemonsqueezy",
            self.request(reqwest::Method::POST, "/v1/checkouts")
                .json(&body)
                .send()
                .await,
        )
        .await?;
        let url = v["data"]["attributes"]["url"]
            .as_str()
            .ok_or_else(|| ApiError::Provider("lemonsqueezy: checkout without url".into()))?;
        Ok(json!({"provider": "lemonsqueezy", "checkout_url": url}))
    }

    async fn webhook(&self, headers: &HeaderMap, body: &[u8]) -> Result<Webhook, WebhookError> {
        if self.cfg().webhook_secret.is_empty() {
            return Err(WebhookError::Unavailable(
                "lemonsqueezy is not configured".into(),
            ));
        }
        let sig = headers
            .get(signature::HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // The signature is checked before a byte of the body is parsed.
        if !signature::verify(self.cfg().webhook_secret.expose(), body, sig) {
            return Err(WebhookError::Rejected("Invalid signature".into()));
        }
        self.parse(body)
    }

    async fn portal(&self, user: &User) -> ApiResult<String> {
        let id = Self::subscription_id(user)?;
        let v = provider_json(
            "lemonsqueezy",
            self.request(reqwest::Method::GET, &format!("/v1/subscriptions/{id}"))
                .send()
                .await,
        )
        .await?;
        let urls = &v["data"]["attributes"]["urls"];
        urls["customer_portal"]
            .as_str()
            .or_else(|| urls["update_payment_method"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::Provider("lemonsqueezy: subscription without portal url".into())
            })
    }

    async fn cancel(&self, user: &User) -> ApiResult<Event> {
        let id = Self::subscription_id(user)?.to_string();
        let v = provider_json(
            "lemonsqueezy",
            self.request(reqwest::Method::DELETE, &format!("/v1/subscriptions/{id}"))
                .send()
                .await,
        )
        .await?;
        let updated = v["data"]["attributes"]["updated_at"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let event_id = format!(
            "api-cancel:{id}:{updated}:{}",
            Utc::now().timestamp_millis()
        );
        let mut ev = self.subscription_event(
            "subscription_cancelled",
            event_id,
            &v["data"],
            Some(user.id),
            v.clone(),
        );
        ev.event_type = "cancel_requested".into();
        Ok(ev)
    }
}
