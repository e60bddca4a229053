//! TossPayments: billing-key subscriptions we schedule ourselves.
//!
//! Checkout hands the JS SDK a client key and a `customerKey` (a random UUID we store on the
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
//! webhook is only a hint: its body is read by [`stellar_proto::webhook::toss`] (which event,
//! which key), then the payment is re-fetched from the API and only that answer counts.

use super::{not_configured, CheckoutRequest, Provider, Webhook, WebhookError};
use crate::accounts::{User, USER_COLUMNS};
use crate::crypto;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::subscription::{self, Change, ChargeRecord, Event, Outcome, Refs, Status};
use axum::http::HeaderMap;
use base64::Engine;
use chrono::{DateTime, Months, Utc};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stellar_common::{keys, with_db, Db, Tier};
use stellar_proto::webhook::toss as notice;
use uuid::Uuid;

pub struct Toss {
    settings: Arc<Settings>,
    http: reqwest::Client,
    db: Db,
    metrics: Arc<Metrics>,
    /// orderIds whose charge request is on the wire from this process; the reconciler leaves
    /// them alone. Held only for set operations, never across an await.
    in_flight: Mutex<HashSet<String>>,
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

/// A row of `toss_charges` still waiting for its outcome.
#[derive(Debug, Clone, sqlx::FromRow)]
struct PendingCharge {
    order_id: String,
    user_id: Uuid,
    tier: String,
    amount: i64,
}

pub fn valid_order_id(id: &str) -> bool {
    (6..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn idempotency_key(order_id: &str) -> String {
    format!("stellar-charge-{order_id}")
}

/// Where the paid period this charge buys starts: the end of the current Toss period when the
/// subscription is running or just lapsed (renewals keep their anniversary), otherwise now.
fn period_start(user: &User, now: DateTime<Utc>) -> DateTime<Utc> {
    let live = matches!(
        user.subscription_status.as_str(),
        "active" | "past_due" | "cancelled"
    );
    match user.current_period_end {
        Some(end)
            if live
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

impl Toss {
    pub fn new(
        settings: Arc<Settings>,
        http: reqwest::Client,
        db: Db,
        metrics: Arc<Metrics>,
    ) -> Toss {
        Toss {
            settings,
            http,
            db,
            metrics,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    fn cfg(&self) -> &crate::settings::TossSection {
        &self.settings.toss
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.cfg().timeout_secs.max(0.1))
    }

    fn url(&self, segments: &[&str]) -> ApiResult<url::Url> {
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
        let key = Uuid::new_v4().to_string();
        with_db!(&self.db, p => sqlx::query("UPDATE users SET toss_customer_key = $2 WHERE id = $1 AND toss_customer_key IS NULL")
            .bind(user.id).bind(&key).execute(p).await.map(|r| r.rows_affected()))?;
        let stored: Option<String> = with_db!(&self.db, p => sqlx::query_scalar("SELECT toss_customer_key FROM users WHERE id = $1")
            .bind(user.id).fetch_one(p).await)?;
        stored.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("customer key not stored")))
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
            "order_name": format!("Stellar Memory {} (monthly)", tier.name),
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
            return if status.is_client_error() && status.as_u16() != 401 {
                Err(ApiError::PaymentDeclined(format!(
                    "Card registration failed: {code}"
                )))
            } else {
                Err(ApiError::Provider(format!(
                    "toss billing key issue answered {status}: {code}"
                )))
            };
        }
        let billing_key = body["billingKey"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::Provider("toss: no billingKey".into()))?;
        let enc = crypto::encrypt(&enc_key, billing_key);
        let hash = keys::hash_hex(billing_key);
        with_db!(&self.db, p => sqlx::query("UPDATE users SET billing_key_enc = $2, billing_key_hash = $3, updated_at = $4 WHERE id = $1")
            .bind(user.id).bind(&enc).bind(&hash).bind(Utc::now()).execute(p).await.map(|r| r.rows_affected()))?;
        tracing::info!(user_id = %user.id, "toss billing key stored");

        let now = Utc::now();
        let running = user.provider.as_deref() == Some("toss")
            && matches!(user.subscription_status.as_str(), "active" | "cancelled")
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
            let fresh = crate::accounts::user_by_id(&self.db, user.id)
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
        let u = crate::accounts::user_by_id(&self.db, user.id)
            .await?
            .ok_or(ApiError::NotFound("Account not found".into()))?;
        Ok(
            json!({"tier": u.tier, "subscription_status": u.subscription_status, "current_period_end": u.current_period_end.map(|t| t.to_rfc3339())}),
        )
    }

    fn local_event(&self, user: &User, event_type: &str, change: Change) -> Event {
        let now = Utc::now();
        Event {
            provider: "toss",
            event_id: format!(
                "{event_type}:{}:{}",
                user.id.simple(),
                now.timestamp_micros()
            ),
            event_type: event_type.into(),
            occurred_at: now,
            refs: Refs {
                user_id: Some(user.id),
                subscription_id: None,
                customer_id: user.toss_customer_key.clone(),
            },
            change,
            amount_minor: None,
            currency: None,
            raw: json!({"source": "stellar"}),
            drop_billing_key: None,
            charge: None,
        }
    }

    /// Phase 1 of a charge: the pending row, committed before Toss is called. `None` when the
    /// account already has a charge whose outcome is not known yet: a second charge (a retried
    /// confirmation, two at once, a renewal racing a confirmation) must wait for that one to be
    /// settled, or a lost answer followed by a retry would charge the card twice. The check and
    /// the insert run under the account's row lock (the first statement writes the user row,
    /// which also takes SQLite's writer lock), so two attempts cannot both pass it.
    async fn record_attempt(
        &self,
        user: &User,
        tier: &Tier,
        period: &str,
    ) -> ApiResult<Option<String>> {
        let now = Utc::now();
        let amount = i64::try_from(tier.price_krw).unwrap_or(i64::MAX);
        let r: sqlx::Result<Option<String>> = with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
                .bind(user.id).execute(&mut *tx).await?;
            let pending: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM toss_charges WHERE user_id = $1 AND status = 'pending'")
                .bind(user.id).fetch_one(&mut *tx).await?;
            if pending > 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let max: Option<i32> = sqlx::query_scalar(
                "SELECT MAX(attempt) FROM toss_charges WHERE user_id = $1 AND period = $2")
                .bind(user.id).bind(period).fetch_one(&mut *tx).await?;
            let attempt = max.unwrap_or(0) + 1;
            let order_id = format!("sg-{}-{period}-{attempt}", user.id.simple());
            debug_assert!(valid_order_id(&order_id));
            // Marked in flight before the row commits, so the reconciler never resends it.
            self.in_flight
                .lock()
                .expect("in-flight set")
                .insert(order_id.clone());
            let inserted = sqlx::query(
                "INSERT INTO toss_charges (order_id, user_id, period, attempt, amount, tier, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)")
                .bind(&order_id).bind(user.id).bind(period).bind(attempt).bind(amount)
                .bind(&tier.name).bind(now).execute(&mut *tx).await
                .and(Ok(()));
            let committed = match inserted {
                Ok(()) => tx.commit().await,
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                self.forget_in_flight(&order_id);
                return Err(e.into());
            }
            Ok(Some(order_id))
        });
        Ok(r?)
    }

    fn forget_in_flight(&self, order_id: &str) {
        self.in_flight
            .lock()
            .expect("in-flight set")
            .remove(order_id);
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
        let Some(order_id) = self.record_attempt(user, tier, &period).await? else {
            tracing::info!(user_id = %user.id, kind, "toss charge not started: an earlier charge is still being settled");
            return Ok(ChargeOutcome::Unknown(
                "an earlier charge for this account is still being settled".into(),
            ));
        };
        let pending = PendingCharge {
            order_id: order_id.clone(),
            user_id: user.id,
            tier: tier.name.clone(),
            amount: i64::try_from(tier.price_krw).unwrap_or(0),
        };
        let outcome = self
            .send_charge(&billing_key, &customer_key, &user.email, &pending)
            .await;
        self.forget_in_flight(&order_id);
        self.metrics
            .charges
            .with_label_values(&[kind, outcome_label(&outcome)])
            .inc();
        self.record_outcome(&pending, &outcome).await?;
        Ok(outcome)
    }

    /// Phase 2: the charge request itself. Its URL contains the billing key, so errors are
    /// logged without it.
    async fn send_charge(
        &self,
        billing_key: &crypto::Secret,
        customer_key: &str,
        email: &str,
        c: &PendingCharge,
    ) -> ChargeOutcome {
        let url = match self.url(&["v1", "billing", billing_key.expose()]) {
            Ok(u) => u,
            Err(e) => return ChargeOutcome::Unknown(e.to_string()),
        };
        let body = json!({
            "customerKey": customer_key,
            "amount": c.amount,
            "orderId": c.order_id,
            "orderName": format!("Stellar Memory {} (monthly)", c.tier),
            "customerEmail": email,
        });
        let resp = self
            .http
            .post(url)
            .header("Authorization", self.auth())
            .header("Idempotency-Key", idempotency_key(&c.order_id))
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

    /// GET /v1/payments/orders/{orderId}.
    async fn lookup(&self, order_id: &str) -> ChargeOutcome {
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

    /// Phase 3: the outcome, the charge row and the subscription change in one transaction.
    async fn record_outcome(&self, c: &PendingCharge, outcome: &ChargeOutcome) -> ApiResult<()> {
        let Some(user) = crate::accounts::user_by_id(&self.db, c.user_id).await? else {
            return Ok(());
        };
        let now = Utc::now();
        let ev = match outcome {
            ChargeOutcome::Done { payment_key, raw } => {
                let tier = self.settings.tiers.get(&c.tier).map(|t| t.name.clone());
                Event {
                    provider: "toss",
                    event_id: format!("toss-charge:{}:done", c.order_id),
                    event_type: "billing_charge_done".into(),
                    occurred_at: now,
                    refs: Refs {
                        user_id: Some(c.user_id),
                        subscription_id: None,
                        customer_id: None,
                    },
                    change: Change::PaymentSucceeded {
                        tier,
                        period_end: Some(add_month(period_start(&user, now))),
                    },
                    amount_minor: Some(c.amount),
                    currency: Some("KRW".into()),
                    raw: raw.clone(),
                    drop_billing_key: None,
                    charge: Some(ChargeRecord {
                        order_id: c.order_id.clone(),
                        status: "done",
                        payment_key: payment_key.clone(),
                        failure_code: None,
                        next_charge_at: None,
                    }),
                }
            }
            ChargeOutcome::Declined { code, raw, .. } => {
                let attempts = usize::try_from(user.charge_attempts).unwrap_or(0);
                let next = self.cfg().retry_schedule_secs.get(attempts).map(|s| {
                    now + chrono::Duration::seconds(i64::try_from(*s).unwrap_or(i64::MAX / 4))
                });
                Event {
                    provider: "toss",
                    event_id: format!("toss-charge:{}:failed", c.order_id),
                    event_type: "billing_charge_failed".into(),
                    occurred_at: now,
                    refs: Refs {
                        user_id: Some(c.user_id),
                        subscription_id: None,
                        customer_id: None,
                    },
                    change: Change::PaymentFailed,
                    amount_minor: Some(c.amount),
                    currency: Some("KRW".into()),
                    raw: raw.clone(),
                    drop_billing_key: None,
                    charge: Some(ChargeRecord {
                        order_id: c.order_id.clone(),
                        status: "failed",
                        payment_key: None,
                        failure_code: Some(code.clone()),
                        next_charge_at: next,
                    }),
                }
            }
            ChargeOutcome::Unknown(_) | ChargeOutcome::NotFound => return Ok(()),
        };
        // The subscription is Toss's from now on (ids are linked by the state machine).
        with_db!(&self.db, p => sqlx::query("UPDATE users SET provider = 'toss' WHERE id = $1 AND (provider IS NULL OR subscription_status IN ('none', 'expired'))")
            .bind(c.user_id).execute(p).await.map(|r| r.rows_affected()))?;
        let outcome = self.apply(&ev).await?;
        tracing::info!(order_id = %c.order_id, outcome = outcome.label(), "toss charge recorded");
        Ok(())
    }

    /// Resolve every pending charge that is not on the wire from this process: at start-up these
    /// are the charges a crash interrupted. Never charges an order Toss already has.
    pub async fn reconcile_pending(&self) -> anyhow::Result<usize> {
        let rows: Vec<PendingCharge> = with_db!(&self.db, p => sqlx::query_as(
            "SELECT order_id, user_id, tier, amount FROM toss_charges WHERE status = 'pending' ORDER BY created_at").fetch_all(p).await)?;
        let mut resolved = 0;
        for c in rows {
            if self
                .in_flight
                .lock()
                .expect("in-flight set")
                .contains(&c.order_id)
            {
                continue;
            }
            let mut outcome = self.lookup(&c.order_id).await;
            self.metrics
                .charges
                .with_label_values(&["lookup", outcome_label(&outcome)])
                .inc();
            if outcome == ChargeOutcome::NotFound {
                // Toss never saw it (or is still processing it): send the very same request again;
                // the same orderId and Idempotency-Key make a second charge impossible.
                let Some(user) = crate::accounts::user_by_id(&self.db, c.user_id).await? else {
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
                self.in_flight
                    .lock()
                    .expect("in-flight set")
                    .insert(c.order_id.clone());
                outcome = self.send_charge(&bk, ck, &user.email, &c).await;
                self.forget_in_flight(&c.order_id);
                self.metrics
                    .charges
                    .with_label_values(&["resend", outcome_label(&outcome)])
                    .inc();
            }
            tracing::info!(order_id = %c.order_id, outcome = outcome_label(&outcome), "pending toss charge looked up");
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
                    tracing::info!(user_id = %u.id, outcome = outcome_label(&o), "toss renewal");
                    n += 1;
                }
                Err(e) => tracing::error!(user_id = %u.id, error = %e, "toss renewal failed"),
            }
        }
        Ok(n)
    }

    /// A webhook body (its shape checked by [`notice::parse`]), re-checked against the API.
    async fn handle_webhook(&self, n: &notice::Notice) -> Result<Vec<Event>, WebhookError> {
        match &n.kind {
            notice::Kind::PaymentStatusChanged { payment_key } => {
                let url = self
                    .url(&["v1", "payments", payment_key])
                    .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
                let r = self
                    .http
                    .get(url)
                    .header("Authorization", self.auth())
                    .timeout(self.timeout().min(Duration::from_secs(8)))
                    .send()
                    .await
                    .map_err(|e| {
                        WebhookError::Unavailable(format!(
                            "toss lookup failed: {}",
                            e.without_url()
                        ))
                    })?;
                let status = r.status().as_u16();
                let payment: Value = r.json().await.unwrap_or(Value::Null);
                if status == 404 {
                    return Err(WebhookError::Rejected(
                        "Toss does not know this payment".into(),
                    ));
                }
                if status != 200 {
                    return Err(WebhookError::Unavailable(format!(
                        "toss lookup answered {status}"
                    )));
                }
                // Only the API's answer counts from here on.
                let Some(order_id) = payment["orderId"].as_str() else {
                    return Ok(vec![]);
                };
                let row: Option<(PendingCharge, String)> = with_db!(&self.db, p => sqlx::query_as::<_, (String, Uuid, String, i64, String)>(
                    "SELECT order_id, user_id, tier, amount, status FROM toss_charges WHERE order_id = $1").bind(order_id).fetch_optional(p).await)
                    .map_err(|e| WebhookError::Unavailable(e.to_string()))?
                    .map(|(order_id, user_id, tier, amount, st)| (PendingCharge { order_id, user_id, tier, amount }, st));
                let Some((charge, row_status)) = row else {
                    return Ok(vec![]);
                };
                let api_status = payment["status"].as_str().unwrap_or("");
                match (api_status, row_status.as_str()) {
                    ("DONE", "pending" | "failed") => {
                        let outcome = classify_payment(200, payment.clone());
                        self.record_outcome(&charge, &outcome)
                            .await
                            .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
                        Ok(vec![])
                    }
                    ("ABORTED" | "EXPIRED", "pending") => {
                        let outcome = classify_payment(200, payment.clone());
                        self.record_outcome(&charge, &outcome)
                            .await
                            .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
                        Ok(vec![])
                    }
                    ("CANCELED" | "PARTIAL_CANCELED", "done") => {
                        // Refunded: the period it paid for is no longer paid.
                        Ok(vec![Event {
                            provider: "toss",
                            event_id: format!("toss-charge:{}:canceled", charge.order_id),
                            event_type: "payment_canceled".into(),
                            occurred_at: Utc::now(),
                            refs: Refs {
                                user_id: Some(charge.user_id),
                                subscription_id: None,
                                customer_id: None,
                            },
                            change: Change::Snapshot {
                                status: Status::Expired,
                                tier: None,
                                period_end: None,
                            },
                            amount_minor: payment["totalAmount"].as_i64(),
                            currency: Some("KRW".into()),
                            raw: payment.clone(),
                            drop_billing_key: None,
                            charge: Some(ChargeRecord {
                                order_id: charge.order_id.clone(),
                                status: "canceled",
                                payment_key: None,
                                failure_code: None,
                                next_charge_at: None,
                            }),
                        }])
                    }
                    _ => Ok(vec![]),
                }
            }
            notice::Kind::BillingDeleted {
                billing_key,
                reason,
            } => {
                let Some(bk) = billing_key else {
                    return Ok(vec![]);
                };
                let hash = keys::hash_hex(bk);
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE billing_key_hash = $1");
                let user: Option<User> = with_db!(&self.db, p => sqlx::query_as(&sql).bind(&hash).fetch_optional(p).await)
                    .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
                let Some(user) = user else { return Ok(vec![]) };
                // Knowing the billing key is the proof here: it is a secret only Toss and we hold.
                // Stop renewals: drop the key; the paid period runs out, then the account is free.
                if user.provider.as_deref() != Some("toss") {
                    // Not a Toss subscriber (any more): only forget the key.
                    with_db!(&self.db, p => sqlx::query("UPDATE users SET billing_key_enc = NULL, billing_key_hash = NULL WHERE id = $1 AND billing_key_hash = $2")
                        .bind(user.id).bind(&hash).execute(p).await.map(|r| r.rows_affected()))
                        .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
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
                ev.raw = json!({"eventType": "BILLING_DELETED", "createdAt": n.created_at, "reason": reason});
                // The key is dropped in the transaction that applies the cancellation.
                ev.drop_billing_key = Some(hash);
                Ok(vec![ev])
            }
            notice::Kind::Other => Ok(vec![]),
        }
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

fn outcome_label(o: &ChargeOutcome) -> &'static str {
    match o {
        ChargeOutcome::Done { .. } => "done",
        ChargeOutcome::Declined { .. } => "declined",
        ChargeOutcome::Unknown(_) => "unknown",
        ChargeOutcome::NotFound => "not_found",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_fit_toss_rules() {
        let id = format!("sg-{}-202607-12", Uuid::new_v4().simple());
        assert!(valid_order_id(&id), "{id}");
        assert!(id.len() <= 64);
        assert!(!valid_order_id("short"));
        assert!(!valid_order_id("has.dot.inside"));
        assert!(idempotency_key(&id).len() <= 300);
    }

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
