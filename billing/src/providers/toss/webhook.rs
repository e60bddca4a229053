//! Toss webhooks. Toss signs none of its payment webhooks, so a delivery is only a hint: its body
//! is read by [`stellar_proto::webhook::toss`] (which event, which key), then the payment is
//! re-fetched from the API and only that answer counts. A `BILLING_DELETED` names the billing key
//! in clear, and knowing it is the proof: it is a secret only Toss and we hold.

use super::client::{classify_payment, PaymentError};
use super::ledger::{ChargeRecord, ChargeStatus};
use super::Toss;
use crate::accounts;
use crate::money::{Currency, Money};
use crate::providers::WebhookError;
use crate::subscription::{self, Change, Effect, Event, Refs, Status};
use chrono::Utc;
use serde_json::json;
use stellar_common::keys;
use stellar_proto::webhook::toss as notice;

fn unavailable(e: impl std::fmt::Display) -> WebhookError {
    WebhookError::Unavailable(e.to_string())
}

impl Toss {
    /// A webhook body (its shape checked by [`notice::parse`]), re-checked against the API.
    pub(super) async fn handle_webhook(
        &self,
        n: &notice::Notice,
    ) -> Result<Vec<Event>, WebhookError> {
        match &n.kind {
            notice::Kind::PaymentStatusChanged { payment_key } => {
                self.payment_changed(payment_key).await
            }
            notice::Kind::BillingDeleted {
                billing_key,
                reason,
            } => match billing_key {
                Some(bk) => self.billing_deleted(n, bk, reason).await,
                None => Ok(vec![]),
            },
            notice::Kind::Other => Ok(vec![]),
        }
    }

    async fn payment_changed(&self, payment_key: &str) -> Result<Vec<Event>, WebhookError> {
        let payment = self
            .client
            .payment(payment_key)
            .await
            .map_err(|e| match e {
                PaymentError::NotFound => {
                    WebhookError::Rejected("Toss does not know this payment".into())
                }
                PaymentError::Unavailable(m) => WebhookError::Unavailable(m),
            })?;
        // Only the API's answer counts from here on.
        let Some(order_id) = payment["orderId"].as_str() else {
            return Ok(vec![]);
        };
        let Some((charge, row_status)) =
            self.ledger.by_order(order_id).await.map_err(unavailable)?
        else {
            return Ok(vec![]);
        };
        let api_status = payment["status"].as_str().unwrap_or("");
        match (api_status, row_status) {
            ("DONE", Some(ChargeStatus::Pending | ChargeStatus::Failed))
            | ("ABORTED" | "EXPIRED", Some(ChargeStatus::Pending)) => {
                let outcome = classify_payment(200, payment.clone());
                self.record_outcome(&charge, &outcome)
                    .await
                    .map_err(unavailable)?;
                Ok(vec![])
            }
            ("CANCELED" | "PARTIAL_CANCELED", Some(ChargeStatus::Done)) => {
                // Refunded: the period it paid for is no longer paid.
                let ev = Event::new(
                    "toss",
                    format!("toss-charge:{}:canceled", charge.order_id),
                    "payment_canceled",
                    Utc::now(),
                    Refs {
                        user_id: Some(charge.user_id),
                        ..Refs::default()
                    },
                    Change::Snapshot {
                        status: Status::Expired,
                        tier: None,
                        period_end: None,
                    },
                    payment.clone(),
                )
                .with_amount(
                    payment["totalAmount"]
                        .as_i64()
                        .map(|won| Money::new(won, Currency::KRW)),
                )
                .with_effect(Effect::SettleCharge(ChargeRecord {
                    order_id: charge.order_id.clone(),
                    status: ChargeStatus::Canceled,
                    payment_key: None,
                    failure_code: None,
                    next_charge_at: None,
                }));
                Ok(vec![ev])
            }
            _ => Ok(vec![]),
        }
    }

    /// Toss deleted a billing key: stop renewals (the key is dropped with the cancellation);
    /// the paid period runs out, then the account is free.
    async fn billing_deleted(
        &self,
        n: &notice::Notice,
        billing_key: &str,
        reason: &serde_json::Value,
    ) -> Result<Vec<Event>, WebhookError> {
        let hash = keys::hash_hex(billing_key);
        let user = accounts::user_by_billing_key_hash(&self.db, &hash)
            .await
            .map_err(unavailable)?;
        let Some(user) = user else { return Ok(vec![]) };
        let drop_key = Effect::DropBillingKey { hash: hash.clone() };
        if user.provider.as_deref() != Some("toss") {
            // Not a Toss subscriber (any more): only forget the key.
            subscription::apply_effect(&self.db, user.id, &drop_key)
                .await
                .map_err(unavailable)?;
            return Ok(vec![]);
        }
        let mut ev = self.local_event(
            &user,
            "BILLING_DELETED",
            Change::Snapshot {
                status: Status::Cancelled,
                tier: None,
                period_end: user.current_period_end,
            },
        );
        ev.event_id = format!(
            "toss-billing-deleted:{}:{}",
            &hash[..16],
            n.created_at.as_deref().unwrap_or("")
        );
        ev.raw =
            json!({"eventType": "BILLING_DELETED", "createdAt": n.created_at, "reason": reason});
        // The key is dropped in the transaction that applies the cancellation.
        Ok(vec![ev.with_effect(drop_key)])
    }
}
