//! The TossPayments HTTP API and nothing else (no SQL, no account state): billing-key issue,
//! charges, lookups by orderId and by paymentKey, and how an answer is classified.
//!
//! A charge URL contains the billing key, so no error from here carries a URL.

use crate::crypto;
use crate::error::{ApiError, ApiResult};
use crate::money::Money;
use crate::settings::{Settings, TossSection};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub struct Client {
    settings: Arc<Settings>,
    http: reqwest::Client,
}

/// What Toss said about a charge.
#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    Done {
        payment_key: Option<String>,
        raw: Value,
    },
    Declined {
        code: String,
        message: String,
        raw: Value,
    },
    /// No answer we can trust (timeout, 5xx, request still processing): ask again later.
    Unknown(String),
    /// Lookup only: Toss has no payment for this orderId.
    NotFound,
}

impl ChargeOutcome {
    /// The `outcome` label of `stellar_billing_toss_charges_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ChargeOutcome::Done { .. } => "done",
            ChargeOutcome::Declined { .. } => "declined",
            ChargeOutcome::Unknown(_) => "unknown",
            ChargeOutcome::NotFound => "not_found",
        }
    }
}

/// A charge request: what `POST /v1/billing/{billingKey}` carries besides the key.
pub struct ChargeRequest<'a> {
    pub customer_key: &'a str,
    pub order_id: &'a str,
    pub order_name: String,
    pub amount: Money,
    pub email: &'a str,
}

/// Why a payment could not be read (webhook re-check).
pub enum PaymentError {
    /// Toss does not know this paymentKey.
    NotFound,
    /// No usable answer now.
    Unavailable(String),
}

/// The `Idempotency-Key` of a charge: derived from its orderId, so a resend is the same request.
pub fn idempotency_key(order_id: &str) -> String {
    format!("stellar-charge-{order_id}")
}

impl Client {
    pub fn new(settings: Arc<Settings>, http: reqwest::Client) -> Client {
        Client { settings, http }
    }

    fn cfg(&self) -> &TossSection {
        &self.settings.toss
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.cfg().timeout_secs.max(0.1))
    }

    /// `toss.api_base` with `segments` appended, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> ApiResult<url::Url> {
        let mut u = url::Url::parse(self.cfg().api_base.trim_end_matches('/'))
            .map_err(|e| ApiError::Internal(e.into()))?;
        u.path_segments_mut()
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("toss.api_base cannot be a base")))?
            .pop_if_empty()
            .extend(segments);
        Ok(u)
    }

    fn auth(&self) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:", self.cfg().secret_key.expose()))
        )
    }

    /// `POST /v1/billing/authorizations/issue`: the SDK's authKey for a billing key. A refusal
    /// of the card or the authKey (4xx other than 401) is 402; anything else (our key, Toss
    /// down, no answer) a provider error.
    pub async fn issue_billing_key(&self, auth_key: &str, customer_key: &str) -> ApiResult<String> {
        let url = self.url(&["v1", "billing", "authorizations", "issue"])?;
        let resp = self
            .http
            .post(url)
            .header("Authorization", self.auth())
            .json(&json!({"authKey": auth_key, "customerKey": customer_key}))
            .timeout(self.timeout())
            .send()
            .await
            .map_err(|e| ApiError::Provider(format!("toss: {}", e.without_url())))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body["code"].as_str().unwrap_or("UNKNOWN");
            return Err(if status.is_client_error() && status.as_u16() != 401 {
                ApiError::PaymentDeclined(format!("Card registration failed: {code}"))
            } else {
                ApiError::Provider(format!("toss billing key issue answered {status}: {code}"))
            });
        }
        body["billingKey"]
            .as_str()
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ApiError::Provider("toss: no billingKey".into()))
    }

    /// `POST /v1/billing/{billingKey}` with an `Idempotency-Key` derived from the orderId.
    pub async fn charge(
        &self,
        billing_key: &crypto::Secret,
        c: &ChargeRequest<'_>,
    ) -> ChargeOutcome {
        let url = match self.url(&["v1", "billing", billing_key.expose()]) {
            Ok(u) => u,
            Err(e) => return ChargeOutcome::Unknown(e.to_string()),
        };
        let body = json!({
            "customerKey": c.customer_key,
            "amount": c.amount.minor,
            "orderId": c.order_id,
            "orderName": c.order_name,
            "customerEmail": c.email,
        });
        let resp = self
            .http
            .post(url)
            .header("Authorization", self.auth())
            .header("Idempotency-Key", idempotency_key(c.order_id))
            .json(&body)
            .timeout(self.timeout())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let e = e.without_url();
                tracing::warn!(order_id = %c.order_id, error = %e, "toss charge: no answer; will look it up by orderId");
                return ChargeOutcome::Unknown(e.to_string());
            }
        };
        let status = resp.status();
        let v: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => {
                return ChargeOutcome::Unknown(format!("unreadable answer: {}", e.without_url()))
            }
        };
        classify_payment(status.as_u16(), v)
    }

    /// `GET /v1/payments/orders/{orderId}`.
    pub async fn lookup(&self, order_id: &str) -> ChargeOutcome {
        let url = match self.url(&["v1", "payments", "orders", order_id]) {
            Ok(u) => u,
            Err(e) => return ChargeOutcome::Unknown(e.to_string()),
        };
        match self
            .http
            .get(url)
            .header("Authorization", self.auth())
            .timeout(self.timeout())
            .send()
            .await
        {
            Err(e) => ChargeOutcome::Unknown(e.without_url().to_string()),
            Ok(r) => {
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if status == 404 {
                    ChargeOutcome::NotFound
                } else if status == 200 {
                    classify_payment(200, v)
                } else {
                    ChargeOutcome::Unknown(format!("lookup answered {status}"))
                }
            }
        }
    }

    /// `GET /v1/payments/{paymentKey}` (a webhook's re-check; at most 8 s, inside Toss's 10 s).
    pub async fn payment(&self, payment_key: &str) -> Result<Value, PaymentError> {
        let url = self
            .url(&["v1", "payments", payment_key])
            .map_err(|e| PaymentError::Unavailable(e.to_string()))?;
        let r = self
            .http
            .get(url)
            .header("Authorization", self.auth())
            .timeout(self.timeout().min(Duration::from_secs(8)))
            .send()
            .await
            .map_err(|e| {
                PaymentError::Unavailable(format!("toss lookup failed: {}", e.without_url()))
            })?;
        let status = r.status().as_u16();
        let payment: Value = r.json().await.unwrap_or(Value::Null);
        match status {
            200 => Ok(payment),
            404 => Err(PaymentError::NotFound),
            _ => Err(PaymentError::Unavailable(format!(
                "toss lookup answered {status}"
            ))),
        }
    }
}

/// Toss's answer to a charge or lookup. Errors that say nothing about the card (our key, rate
/// limits, the request still processing, Toss-side failures) are `Unknown`, never a decline.
pub fn classify_payment(status: u16, v: Value) -> ChargeOutcome {
    if status == 200 {
        return match v["status"].as_str() {
            Some("DONE") => ChargeOutcome::Done {
                payment_key: v["paymentKey"].as_str().map(str::to_string),
                raw: v,
            },
            Some("ABORTED" | "EXPIRED" | "CANCELED") => {
                let code = v["failure"]["code"]
                    .as_str()
                    .unwrap_or("ABORTED")
                    .to_string();
                let message = v["failure"]["message"].as_str().unwrap_or("").to_string();
                ChargeOutcome::Declined {
                    code,
                    message,
                    raw: v,
                }
            }
            other => ChargeOutcome::Unknown(format!("payment status {other:?}")),
        };
    }
    let code = v["code"].as_str().unwrap_or("").to_string();
    let transient = matches!(
        code.as_str(),
        "IDEMPOTENT_REQUEST_PROCESSING"
            | "PROVIDER_ERROR"
            | "FAILED_INTERNAL_SYSTEM_PROCESSING"
            | "ALREADY_PROCESSED_PAYMENT"
            | "DUPLICATED_ORDER_ID"
            | "INVALID_API_KEY"
            | "UNAUTHORIZED_KEY"
            | "FAILED_PAYMENT_INTERNAL_SYSTEM_PROCESSING"
    );
    if (400..500).contains(&status) && status != 401 && status != 409 && status != 429 && !transient
    {
        let message = v["message"].as_str().unwrap_or("").to_string();
        ChargeOutcome::Declined {
            code: if code.is_empty() {
                format!("HTTP_{status}")
            } else {
                code
            },
            message,
            raw: v,
        }
    } else {
        ChargeOutcome::Unknown(format!("HTTP {status} {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(matches!(
            classify_payment(200, json!({"status": "DONE", "paymentKey": "pk"})),
            ChargeOutcome::Done { .. }
        ));
        assert!(matches!(
            classify_payment(400, json!({"code": "REJECT_CARD_COMPANY"})),
            ChargeOutcome::Declined { .. }
        ));
        assert!(matches!(
            classify_payment(409, json!({"code": "IDEMPOTENT_REQUEST_PROCESSING"})),
            ChargeOutcome::Unknown(_)
        ));
        assert!(matches!(
            classify_payment(500, json!({})),
            ChargeOutcome::Unknown(_)
        ));
        assert!(matches!(
            classify_payment(401, json!({"code": "UNAUTHORIZED_KEY"})),
            ChargeOutcome::Unknown(_)
        ));
    }
}
