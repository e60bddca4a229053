//! Card registration and charges: the first charge at confirmation, renewals when a period ends,
//! and the reconciler that settles charges whose answer was lost. Each outcome becomes an
//! [`Event`] for the state machine, carrying the ledger row's settlement as an effect.

use super::client::{ChargeOutcome, ChargeRequest};
use super::ledger::{Charge, ChargeRecord, ChargeStatus};
use super::{order_name, Toss};
use crate::accounts::{self, User, USER_COLUMNS};
use crate::crypto;
use crate::error::{ApiError, ApiResult};
use crate::money::{Currency, Money};
use crate::providers::{not_configured, Provider};
use crate::subscription::{self, Change, Effect, Event, Refs, Status};
use chrono::{DateTime, Months, Utc};
use serde_json::{json, Value};
use stellar_common::{keys, with_db, Tier};

/// Where the paid period this charge buys starts: the end of the current Toss period when the
/// subscription is running or just lapsed (renewals keep their anniversary), otherwise now.
fn period_start(user: &User, now: DateTime<Utc>) -> DateTime<Utc> {
    match user.current_period_end {
        Some(end)
            if user.subscription_status.is_live()
                && user.provider.as_deref() == Some("toss")
                && end > now - chrono::Duration::days(35) =>
        {
            end
        }
        _ => now,
    }
}

fn add_month(t: DateTime<Utc>) -> DateTime<Utc> {
    t.checked_add_months(Months::new(1))
        .unwrap_or(t + chrono::Duration::days(30))
}

fn request<'a>(c: &'a Charge, customer_key: &'a str, email: &'a str) -> ChargeRequest<'a> {
    ChargeRequest {
        customer_key,
        order_id: &c.order_id,
        order_name: order_name(&c.tier),
        amount: c.amount,
        email,
    }
}

impl Toss {
    /// Exchange the SDK's authKey for a billing key, store it encrypted, then make the first
    /// charge (unless a paid Toss period is still running: then only the card is replaced).
    pub async fn confirm(
        &self,
        user: &User,
        tier: &Tier,
        customer_key: &str,
        auth_key: &str,
    ) -> ApiResult<Value> {
        if !self.configured() {
            return Err(not_configured("toss"));
        }
        let Some(enc_key) = self.settings.toss_key else {
            return Err(not_configured("toss"));
        };
        let owned = user
            .toss_customer_key
            .as_deref()
            .is_some_and(|k| keys::ct_eq(k.as_bytes(), customer_key.as_bytes()));
        if !owned {
            return Err(ApiError::Forbidden(
                "customerKey does not belong to this account".into(),
            ));
        }
        if auth_key.is_empty() || auth_key.len() > 300 {
            return Err(ApiError::Unprocessable("Invalid authKey".into()));
        }
        let billing_key = self
            .client
            .issue_billing_key(auth_key, customer_key)
            .await?;
        let card = Effect::StoreBillingKey {
            enc: crypto::encrypt(&enc_key, &billing_key),
            hash: keys::hash_hex(&billing_key),
        };
        subscription::apply_effect(&self.db, user.id, &card).await?;
        tracing::info!(user_id = %user.id, "toss billing key stored");

        let now = Utc::now();
        let running = user.provider.as_deref() == Some("toss")
            && matches!(user.subscription_status, Status::Active | Status::Cancelled)
            && user.current_period_end.is_some_and(|e| e > now)
            && user.tier == tier.name;
        if running {
            // A new card for a running subscription: no charge now; renewals use the new key.
            if user.cancel_at_period_end {
                let ev = self.local_event(
                    user,
                    "resume_requested",
                    Change::Snapshot {
                        status: Status::Active,
                        tier: Some(tier.name.clone()),
                        period_end: user.current_period_end,
                    },
                );
                self.apply(&ev).await?;
            }
        } else {
            let fresh = accounts::user_by_id(&self.db, user.id)
                .await?
                .ok_or(ApiError::NotFound("Account not found".into()))?;
            match self.charge(&fresh, tier, "first").await? {
                ChargeOutcome::Done { .. } => {}
                ChargeOutcome::Declined { code, .. } => {
                    return Err(ApiError::PaymentDeclined(format!(
                        "The payment was declined ({code})"
                    )))
                }
                ChargeOutcome::Unknown(_) | ChargeOutcome::NotFound => {
                    return Ok(json!({"tier": user.tier, "subscription_status": "pending",
                        "detail": "The payment outcome is not known yet; it is confirmed automatically within minutes"}));
                }
            }
        }
        let u = accounts::user_by_id(&self.db, user.id)
            .await?
            .ok_or(ApiError::NotFound("Account not found".into()))?;
        Ok(
            json!({"tier": u.tier, "subscription_status": u.subscription_status, "current_period_end": u.current_period_end.map(|t| t.to_rfc3339())}),
        )
    }

    /// Charge `user` for one month of `tier` (kind: `first` or `renewal`), recording every phase.
    pub async fn charge(&self, user: &User, tier: &Tier, kind: &str) -> ApiResult<ChargeOutcome> {
        let Some(enc_key) = self.settings.toss_key else {
            return Err(not_configured("toss"));
        };
        let enc = user
            .billing_key_enc
            .as_deref()
            .ok_or_else(|| ApiError::Conflict("No card registered".into()))?;
        let billing_key = crypto::decrypt(&enc_key, enc)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot decrypt billing key: {e}")))?;
        let customer_key = user
            .toss_customer_key
            .clone()
            .ok_or_else(|| ApiError::Conflict("No customerKey".into()))?;
        let period = period_start(user, Utc::now()).format("%Y%m").to_string();
        let amount = Money::from_price(tier.price_krw, Currency::KRW)
            .map_err(|e| ApiError::Internal(e.into()))?;
        let Some(charge) = self
            .ledger
            .open_attempt(user.id, &tier.name, amount, &period)
            .await?
        else {
            tracing::info!(user_id = %user.id, kind, "toss charge not started: an earlier charge is still being settled");
            return Ok(ChargeOutcome::Unknown(
                "an earlier charge for this account is still being settled".into(),
            ));
        };
        let outcome = self
            .client
            .charge(&billing_key, &request(&charge, &customer_key, &user.email))
            .await;
        self.ledger.send_ends(&charge.order_id);
        self.metrics
            .charges
            .with_label_values(&[kind, outcome.label()])
            .inc();
        self.record_outcome(&charge, &outcome).await?;
        Ok(outcome)
    }

    /// Phase 3: the outcome, the charge row and the subscription change in one transaction.
    pub(super) async fn record_outcome(
        &self,
        c: &Charge,
        outcome: &ChargeOutcome,
    ) -> ApiResult<()> {
        let Some(user) = accounts::user_by_id(&self.db, c.user_id).await? else {
            return Ok(());
        };
        let now = Utc::now();
        let refs = Refs {
            user_id: Some(c.user_id),
            ..Refs::default()
        };
        let (event_type, change, raw, record) = match outcome {
            ChargeOutcome::Done { payment_key, raw } => (
                "billing_charge_done",
                Change::PaymentSucceeded {
                    tier: self.settings.tiers.get(&c.tier).map(|t| t.name.clone()),
                    period_end: Some(add_month(period_start(&user, now))),
                },
                raw,
                ChargeRecord {
                    order_id: c.order_id.clone(),
                    status: ChargeStatus::Done,
                    payment_key: payment_key.clone(),
                    failure_code: None,
                    next_charge_at: None,
                },
            ),
            ChargeOutcome::Declined { code, raw, .. } => {
                let attempts = usize::try_from(user.charge_attempts).unwrap_or(0);
                let next = self.cfg().retry_schedule_secs.get(attempts).map(|s| {
                    now + chrono::Duration::seconds(i64::try_from(*s).unwrap_or(i64::MAX / 4))
                });
                (
                    "billing_charge_failed",
                    Change::PaymentFailed,
                    raw,
                    ChargeRecord {
                        order_id: c.order_id.clone(),
                        status: ChargeStatus::Failed,
                        payment_key: None,
                        failure_code: Some(code.clone()),
                        next_charge_at: next,
                    },
                )
            }
            ChargeOutcome::Unknown(_) | ChargeOutcome::NotFound => return Ok(()),
        };
        let event_id = format!("toss-charge:{}:{}", c.order_id, record.status.as_str());
        let ev = Event::new("toss", event_id, event_type, now, refs, change, raw.clone())
            .with_amount(Some(c.amount))
            // The subscription is Toss's from now on (ids are linked by the state machine).
            .with_effect(Effect::ClaimFor("toss"))
            .with_effect(Effect::SettleCharge(record));
        let outcome = self.apply(&ev).await?;
        tracing::info!(order_id = %c.order_id, outcome = outcome.label(), "toss charge recorded");
        Ok(())
    }

    /// Resolve every pending charge that is not on the wire from this process: at start-up these
    /// are the charges a crash interrupted. Never charges an order Toss already has.
    pub async fn reconcile_pending(&self) -> anyhow::Result<usize> {
        let mut resolved = 0;
        for c in self.ledger.pending().await? {
            if self.ledger.is_in_flight(&c.order_id) {
                continue;
            }
            let mut outcome = self.client.lookup(&c.order_id).await;
            self.metrics
                .charges
                .with_label_values(&["lookup", outcome.label()])
                .inc();
            if outcome == ChargeOutcome::NotFound {
                // Toss never saw it (or is still processing it): send the very same request again;
                // the same orderId and Idempotency-Key make a second charge impossible.
                let Some(user) = accounts::user_by_id(&self.db, c.user_id).await? else {
                    continue;
                };
                let (Some(key), Some(enc), Some(ck)) = (
                    self.settings.toss_key,
                    user.billing_key_enc.as_deref(),
                    user.toss_customer_key.as_deref(),
                ) else {
                    continue;
                };
                let Ok(bk) = crypto::decrypt(&key, enc) else {
                    continue;
                };
                self.ledger.send_starts(&c.order_id);
                outcome = self.client.charge(&bk, &request(&c, ck, &user.email)).await;
                self.ledger.send_ends(&c.order_id);
                self.metrics
                    .charges
                    .with_label_values(&["resend", outcome.label()])
                    .inc();
            }
            tracing::info!(order_id = %c.order_id, outcome = outcome.label(), "pending toss charge looked up");
            if matches!(
                outcome,
                ChargeOutcome::Done { .. } | ChargeOutcome::Declined { .. }
            ) {
                self.record_outcome(&c, &outcome).await?;
                resolved += 1;
            }
        }
        Ok(resolved)
    }

    /// Charge every Toss subscription whose period has ended (and whose retry time has come).
    pub async fn charge_due(&self) -> anyhow::Result<usize> {
        if !self.configured() {
            return Ok(0);
        }
        let now = Utc::now();
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE provider = 'toss' AND subscription_status IN ('active', 'past_due') \
             AND cancel_at_period_end = FALSE AND billing_key_enc IS NOT NULL AND current_period_end <= $1 \
             AND (charge_attempts = 0 OR next_charge_at <= $1) \
             AND NOT EXISTS (SELECT 1 FROM toss_charges c WHERE c.user_id = users.id AND c.status = 'pending')"
        );
        let due: Vec<User> =
            with_db!(&self.db, p => sqlx::query_as(&sql).bind(now).fetch_all(p).await)?;
        let mut n = 0;
        for u in due {
            let Some(tier) = self.settings.tiers.get(&u.tier).cloned() else {
                continue;
            };
            if tier.price_krw == 0 {
                continue;
            }
            match self.charge(&u, &tier, "renewal").await {
                Ok(o) => {
                    tracing::info!(user_id = %u.id, outcome = o.label(), "toss renewal");
                    n += 1;
                }
                Err(e) => tracing::error!(user_id = %u.id, error = %e, "toss renewal failed"),
            }
        }
        Ok(n)
    }
}
