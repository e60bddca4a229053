//! TossPayments webhooks. Toss signs none of its payment webhooks (only payout and seller
//! events, which we do not use), so a delivery is a hint, never proof: billing re-fetches the
//! payment from Toss's API and acts on that answer alone. What is checked here, before anything
//! else looks at the delivery, is the shape of the body: which event it is, and the one key that
//! billing takes from it (a `paymentKey` to look up, or the `billingKey` that Toss says was
//! deleted, which proves itself: only Toss and we know it).

use serde_json::Value;

/// The delivery id header (`whtrans_…`), the same on every retry of one delivery.
pub const TRANSMISSION_ID: &str = "tosspayments-webhook-transmission-id";

/// Toss's limit on a `paymentKey` and on a `billingKey`.
pub const MAX_KEY: usize = 200;

/// A webhook body in the parts billing uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// `eventType`; `DEPOSIT_CALLBACK` bodies have none and are recognised by their `secret`.
    /// Empty when the body names no event.
    pub event_type: String,
    /// `createdAt` when it is a string (Toss sends it without an offset).
    pub created_at: Option<String>,
    pub kind: Kind,
}

/// The events billing acts on; everything else is acknowledged and ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `PAYMENT_STATUS_CHANGED`: only `data.paymentKey` is taken (1 to [`MAX_KEY`] characters);
    /// the payment itself is re-fetched.
    PaymentStatusChanged {
        payment_key: String,
    },
    /// `BILLING_DELETED`: `data.billingKey` (`None` when missing, empty or longer than
    /// [`MAX_KEY`]: no stored key can match it) and `data.reason` as sent.
    BillingDeleted {
        billing_key: Option<String>,
        reason: Value,
    },
    Other,
}

/// Why a body is refused (400; the reason is for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON (serde's message).
    Json(String),
    /// A `PAYMENT_STATUS_CHANGED` without a usable `data.paymentKey`.
    NoPaymentKey,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Json(e) => write!(f, "malformed JSON: {e}"),
            Invalid::NoPaymentKey => f.write_str("no paymentKey"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Read a webhook body.
pub fn parse(body: &[u8]) -> Result<Notice, Invalid> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Invalid::Json(e.to_string()))?;
    let event_type = match v["eventType"].as_str() {
        Some(t) => t.to_string(),
        None if v["secret"].is_string() => "DEPOSIT_CALLBACK".to_string(),
        None => String::new(),
    };
    let data = &v["data"];
    let kind = match event_type.as_str() {
        "PAYMENT_STATUS_CHANGED" => Kind::PaymentStatusChanged {
            payment_key: key(&data["paymentKey"])
                .ok_or(Invalid::NoPaymentKey)?
                .to_string(),
        },
        "BILLING_DELETED" => Kind::BillingDeleted {
            billing_key: key(&data["billingKey"]).map(str::to_string),
            reason: data["reason"].clone(),
        },
        _ => Kind::Other,
    };
    Ok(Notice {
        event_type,
        created_at: v["createdAt"].as_str().map(str::to_string),
        kind,
    })
}

/// The transmission id from its header value, when it is printable ASCII of a sane length
/// (for logs: it is not signed either).
pub fn transmission_id(value: &[u8]) -> Option<&str> {
    if value.is_empty() || value.len() > 100 || !value.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

fn key(v: &Value) -> Option<&str> {
    v.as_str().filter(|k| !k.is_empty() && k.len() <= MAX_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<Notice, Invalid> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn events() {
        let n = p(
            json!({"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2026-01-01T00:00:00.000000",
            "data": {"paymentKey": "pk_1", "orderId": "o", "status": "DONE"}}),
        )
        .unwrap();
        assert_eq!(n.event_type, "PAYMENT_STATUS_CHANGED");
        assert_eq!(n.created_at.as_deref(), Some("2026-01-01T00:00:00.000000"));
        assert_eq!(
            n.kind,
            Kind::PaymentStatusChanged {
                payment_key: "pk_1".into()
            }
        );
        for data in [
            json!({}),
            json!({"paymentKey": ""}),
            json!({"paymentKey": 5}),
            json!({"paymentKey": "x".repeat(201)}),
        ] {
            assert_eq!(
                p(json!({"eventType": "PAYMENT_STATUS_CHANGED", "data": data})),
                Err(Invalid::NoPaymentKey)
            );
        }
        let n =
            p(json!({"eventType": "BILLING_DELETED", "data": {"billingKey": "bk", "reason": "x"}}))
                .unwrap();
        assert_eq!(
            n.kind,
            Kind::BillingDeleted {
                billing_key: Some("bk".into()),
                reason: json!("x")
            }
        );
        let n = p(json!({"eventType": "BILLING_DELETED", "data": {"billingKey": ""}})).unwrap();
        assert_eq!(
            n.kind,
            Kind::BillingDeleted {
                billing_key: None,
                reason: Value::Null
            }
        );
        let n = p(json!({"secret": "s", "status": "DONE"})).unwrap();
        assert_eq!(
            (n.event_type.as_str(), n.kind),
            ("DEPOSIT_CALLBACK", Kind::Other)
        );
        let n = p(json!({"eventType": "SOMETHING_NEW", "data": {}})).unwrap();
        assert_eq!(
            (n.event_type.as_str(), n.kind),
            ("SOMETHING_NEW", Kind::Other)
        );
        assert_eq!(p(json!([1, 2])).unwrap().event_type, "");
        assert!(matches!(parse(b"{not json"), Err(Invalid::Json(_))));
    }

    #[test]
    fn transmission_ids() {
        assert_eq!(transmission_id(b"whtrans_1"), Some("whtrans_1"));
        assert_eq!(transmission_id(b""), None);
        assert_eq!(transmission_id(b"a b"), None);
        assert_eq!(transmission_id("é".as_bytes()), None);
        assert_eq!(transmission_id(&[b'a'; 101]), None);
    }
}
