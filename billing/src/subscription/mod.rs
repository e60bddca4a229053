//! The subscription state machine every provider feeds.
//!
//! Providers translate their events into an [`Event`]: who (ids we set at checkout, or the
//! provider's subscription/customer ids), when (the provider's own timestamp) and what
//! ([`Change`]). [`apply`] then, in ONE transaction:
//!
//! 1. inserts `(provider, event_id)` into `processed_webhooks` — a duplicate delivery conflicts
//!    here and the transaction is dropped (the first statement is a write, which also takes the
//!    writer lock on SQLite, so nothing is read before the lock is held);
//! 2. locks the user row and decides the new state; an event older than the newest one already
//!    applied (`provider_state_at`) changes nothing, so reordered deliveries never move an
//!    account back to a stale state;
//! 3. writes the new state, a `subscription_events` audit row and, when anything a gateway caches
//!    changed, a change-feed row.
//!
//! States (`users.subscription_status`): `none` → `active` ⇄ `past_due`, `active` ⇄ `cancelled`
//! (paid period still running, tier kept), and `expired` (tier back to the first tier). The
//! background sweep ([`sweep`]) ends cancelled subscriptions at their period end and past-due
//! ones after the grace period.

use crate::accounts::{User, USER_COLUMNS};
use chrono::{DateTime, Utc};
use serde_json::Value;
use stellar_common::feed::{self, APPEND_SQL};
use stellar_common::{with_db, Db};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Cancelled,
    PastDue,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Cancelled => "cancelled",
            Status::PastDue => "past_due",
            Status::Expired => "expired",
        }
    }
}

/// What an event says about the subscription.
#[derive(Debug, Clone)]
pub enum Change {
    /// The provider's current view of the subscription (created, updated, plan change,
    /// cancelled, resumed, expired). `tier` is mapped from the provider's price/variant id.
    Snapshot {
        status: Status,
        tier: Option<String>,
        period_end: Option<DateTime<Utc>>,
    },
    /// A payment went through: active again, dunning cleared, period extended when known.
    PaymentSucceeded {
        tier: Option<String>,
        period_end: Option<DateTime<Utc>>,
    },
    /// A renewal payment failed: past_due (tier kept until the grace period ends).
    PaymentFailed,
    /// Only links provider ids to the account (Stripe's checkout.session.completed).
    Link,
}

/// Who the event is about, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    /// Our user id, from data we attached at checkout (custom data, client_reference_id, metadata).
    pub user_id: Option<Uuid>,
    pub subscription_id: Option<String>,
    pub customer_id: Option<String>,
}

/// Toss bookkeeping committed together with the state change.
#[derive(Debug, Clone)]
pub struct ChargeRecord {
    pub order_id: String,
    /// `done`, `failed` or `canceled`.
    pub status: &'static str,
    pub payment_key: Option<String>,
    pub failure_code: Option<String>,
    /// When to retry a declined renewal; `None` when no retry is left.
    pub next_charge_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub provider: &'static str,
    /// Dedupe key (`processed_webhooks.event_id`).
    pub event_id: String,
    /// The provider's event name, for the audit row and metrics.
    pub event_type: String,
    /// The provider's timestamp of the state this event describes.
    pub occurred_at: DateTime<Utc>,
    pub refs: Refs,
    pub change: Change,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub raw: Value,
    pub charge: Option<ChargeRecord>,
    /// Toss `BILLING_DELETED`: the hash of the billing key Toss deleted. Ours is dropped in the
    /// same transaction as the state change, so renewals stop exactly when the change commits.
    pub drop_billing_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// State changed (or ids linked) and the audit row written.
    Applied,
    /// Recorded, but nothing to change (already in that state, or a payment note).
    Recorded,
    /// Older than what was already applied: recorded, state untouched.
    Stale,
    /// About a subscription that is not the account's current one: recorded, state untouched.
    NotCurrent,
    Duplicate,
    /// No account matches; nothing written.
    Unmapped,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Recorded => "recorded",
            Outcome::Stale => "stale",
            Outcome::NotCurrent => "not_current",
            Outcome::Duplicate => "duplicate",
            Outcome::Unmapped => "unmapped",
        }
    }
}

/// The state columns that [`apply`] may change.
#[derive(Debug, Clone, PartialEq)]
struct State {
    tier: String,
    status: String,
    period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    past_due_since: Option<DateTime<Utc>>,
}

impl State {
    fn of(u: &User) -> State {
        State {
            tier: u.tier.clone(),
            status: u.subscription_status.clone(),
            period_end: u.current_period_end,
            cancel_at_period_end: u.cancel_at_period_end,
            past_due_since: u.past_due_since,
        }
    }
}

/// The pure decision: the state after `ev` given the user's current row, or `None` when the
/// event must not touch the state. `free` is the tier a lapsed account drops to.
fn decide(u: &User, ev: &Event, free: &str, now: DateTime<Utc>) -> Result<Option<State>, Outcome> {
    let cur = State::of(u);
    let paid = u.tier != free;
    let same_sub = match (&ev.refs.subscription_id, &u.provider_subscription_id) {
        (Some(a), Some(b)) => a == b && u.provider.as_deref() == Some(ev.provider),
        _ => true,
    };
    let live = matches!(
        u.subscription_status.as_str(),
        "active" | "cancelled" | "past_due"
    );
    if matches!(ev.change, Change::Link) {
        return Ok(None);
    }
    if u.provider_state_at
        .is_some_and(|last| ev.occurred_at < last)
    {
        return Err(Outcome::Stale);
    }
    // An event about another subscription (e.g. the old one after switching provider) may start
    // a new subscription but never end or degrade the current one.
    let starts = matches!(
        ev.change,
        Change::Snapshot {
            status: Status::Active,
            ..
        } | Change::PaymentSucceeded { .. }
    );
    if !same_sub && live && !starts {
        return Err(Outcome::NotCurrent);
    }
    let mut next = cur.clone();
    match &ev.change {
        Change::Link => {}
        Change::Snapshot {
            status,
            tier,
            period_end,
        } => {
            let tier = tier.clone().or_else(|| paid.then(|| u.tier.clone()));
            let period_end = period_end.or(u.current_period_end);
            match status {
                Status::Active => {
                    let Some(t) = tier else { return Ok(None) };
                    next = State {
                        tier: t,
                        status: "active".into(),
                        period_end,
                        cancel_at_period_end: false,
                        past_due_since: None,
                    };
                }
                Status::Cancelled if period_end.is_some_and(|e| e > now) => {
                    let Some(t) = tier else { return Ok(None) };
                    next = State {
                        tier: t,
                        status: "cancelled".into(),
                        period_end,
                        cancel_at_period_end: true,
                        past_due_since: None,
                    };
                }
                Status::PastDue => {
                    let Some(t) = tier else { return Ok(None) };
                    let since = if u.subscription_status == "past_due" {
                        u.past_due_since
                    } else {
                        None
                    };
                    next = State {
                        tier: t,
                        status: "past_due".into(),
                        period_end,
                        cancel_at_period_end: u.cancel_at_period_end,
                        past_due_since: Some(since.unwrap_or(ev.occurred_at.min(now))),
                    };
                }
                // Cancelled with the period already over is the same as expired.
                Status::Cancelled | Status::Expired => {
                    next = State {
                        tier: free.into(),
                        status: "expired".into(),
                        period_end,
                        cancel_at_period_end: false,
                        past_due_since: None,
                    };
                }
            }
        }
        Change::PaymentSucceeded { tier, period_end } => {
            let Some(t) = tier.clone().or_else(|| paid.then(|| u.tier.clone())) else {
                return Ok(None);
            };
            let period_end = match (period_end, u.current_period_end) {
                (Some(a), Some(b)) if same_sub => Some((*a).max(b)),
                (Some(a), _) => Some(*a),
                (None, b) => b,
            };
            let status = if u.cancel_at_period_end && same_sub {
                "cancelled"
            } else {
                "active"
            };
            next = State {
                tier: t,
                status: status.into(),
                period_end,
                cancel_at_period_end: u.cancel_at_period_end && same_sub,
                past_due_since: None,
            };
        }
        Change::PaymentFailed => {
            if !paid || !live {
                return Ok(None);
            }
            let since = if u.subscription_status == "past_due" {
                u.past_due_since
            } else {
                None
            };
            next.status = "past_due".into();
            next.past_due_since = Some(since.unwrap_or(ev.occurred_at.min(now)));
        }
    }
    Ok((next != cur).then_some(next))
}

/// Remove anything secret-looking (billing keys) from a payload before it is stored.
pub fn scrub(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, val) in m.iter_mut() {
                    let lk = k.to_ascii_lowercase();
                    if lk == "billingkey"
                        || lk == "billing_key"
                        || lk == "authkey"
                        || lk == "secret"
                    {
                        *val = Value::String("***".into());
                    } else {
                        walk(val);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

async fn resolve(db: &Db, ev: &Event) -> sqlx::Result<Option<Uuid>> {
    if let Some(id) = ev.refs.user_id {
        let found: Option<Uuid> = with_db!(db, p => sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(id).fetch_optional(p).await)?;
        if found.is_some() {
            return Ok(found);
        }
    }
    for (col, val) in [
        ("provider_subscription_id", &ev.refs.subscription_id),
        ("provider_customer_id", &ev.refs.customer_id),
    ] {
        if let Some(v) = val {
            let sql = format!("SELECT id FROM users WHERE {col} = $1 AND provider = $2");
            let found: Option<Uuid> = with_db!(db, p => sqlx::query_scalar(&sql).bind(v).bind(ev.provider).fetch_optional(p).await)?;
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    Ok(None)
}

/// Apply one event atomically (see the module docs).
pub async fn apply(db: &Db, ev: &Event, free_tier: &str) -> sqlx::Result<Outcome> {
    let Some(user_id) = resolve(db, ev).await? else {
        tracing::warn!(provider = ev.provider, event = %ev.event_type, event_id = %ev.event_id, "event matches no account; ignored");
        return Ok(Outcome::Unmapped);
    };
    let now = Utc::now();
    let select = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let raw = sqlx::types::Json(scrub(ev.raw.clone()));
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO processed_webhooks (provider, event_id, event_type, processed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (provider, event_id) DO NOTHING")
            .bind(ev.provider).bind(&ev.event_id).bind(&ev.event_type).bind(now)
            .execute(&mut *tx).await?;
        if fresh.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        // Lock the row (PostgreSQL) before reading the state the decision is based on.
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1").bind(user_id).execute(&mut *tx).await?;
        let u: User = sqlx::query_as(&select).bind(user_id).fetch_one(&mut *tx).await?;
        let decision = decide(&u, ev, free_tier, now);
        let outcome = match &decision {
            Err(o) => o.clone(),
            Ok(Some(_)) => Outcome::Applied,
            Ok(None) if matches!(ev.change, Change::Link) => Outcome::Applied,
            Ok(None) => Outcome::Recorded,
        };
        let starts_or_links = matches!(ev.change, Change::Link | Change::Snapshot { status: Status::Active, .. } | Change::PaymentSucceeded { .. });
        let link_ids = outcome == Outcome::Applied || (outcome == Outcome::Recorded && starts_or_links);
        if let Ok(Some(next)) = &decision {
            sqlx::query(
                "UPDATE users SET tier = $2, subscription_status = $3, current_period_end = $4, cancel_at_period_end = $5, \
                 past_due_since = $6, provider_state_at = $7, updated_at = $8 WHERE id = $1")
                .bind(user_id).bind(&next.tier).bind(&next.status).bind(next.period_end).bind(next.cancel_at_period_end)
                .bind(next.past_due_since).bind(u.provider_state_at.map_or(ev.occurred_at, |l| l.max(ev.occurred_at))).bind(now)
                .execute(&mut *tx).await?;
            sqlx::query(APPEND_SQL).bind(Some(user_id)).bind(None::<String>).bind(feed::kind::TIER_CHANGED).bind(now)
                .execute(&mut *tx).await?;
        }
        if link_ids {
            sqlx::query(
                "UPDATE users SET provider = $2, provider_subscription_id = COALESCE($3, provider_subscription_id), \
                 provider_customer_id = COALESCE($4, provider_customer_id), updated_at = $5 WHERE id = $1")
                .bind(user_id).bind(ev.provider).bind(ev.refs.subscription_id.as_deref()).bind(ev.refs.customer_id.as_deref()).bind(now)
                .execute(&mut *tx).await?;
        }
        if let Some(c) = &ev.charge {
            sqlx::query("UPDATE toss_charges SET status = $2, payment_key = COALESCE($3, payment_key), failure_code = $4, updated_at = $5 WHERE order_id = $1")
                .bind(&c.order_id).bind(c.status).bind(c.payment_key.as_deref()).bind(c.failure_code.as_deref()).bind(now)
                .execute(&mut *tx).await?;
            if c.status == "done" {
                sqlx::query("UPDATE users SET charge_attempts = 0, next_charge_at = NULL WHERE id = $1").bind(user_id).execute(&mut *tx).await?;
            } else if c.status == "failed" {
                sqlx::query("UPDATE users SET charge_attempts = charge_attempts + 1, next_charge_at = $2 WHERE id = $1")
                    .bind(user_id).bind(c.next_charge_at).execute(&mut *tx).await?;
            }
        }
        if let Some(hash) = &ev.drop_billing_key {
            sqlx::query("UPDATE users SET billing_key_enc = NULL, billing_key_hash = NULL WHERE id = $1 AND billing_key_hash = $2")
                .bind(user_id).bind(hash).execute(&mut *tx).await?;
        }
        let tier_after = match &decision { Ok(Some(n)) => n.tier.clone(), _ => u.tier.clone() };
        let event_type = match &outcome {
            Outcome::Stale => format!("{} (stale)", ev.event_type),
            Outcome::NotCurrent => format!("{} (other subscription)", ev.event_type),
            _ => ev.event_type.clone(),
        };
        let event_type: String = event_type.chars().take(50).collect();
        sqlx::query(
            "INSERT INTO subscription_events (id, user_id, provider, event_type, tier, amount_cents, currency, raw_data, created_at, provider_event_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(Uuid::new_v4()).bind(user_id).bind(ev.provider).bind(&event_type).bind(&tier_after)
            .bind(ev.amount_minor.and_then(|a| i32::try_from(a).ok())).bind(ev.currency.as_deref().map(|c| c.to_ascii_uppercase()))
            .bind(&raw).bind(now).bind(&ev.event_id)
            .execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(provider = ev.provider, event = %ev.event_type, user_id = %user_id, outcome = outcome.label(), tier = %tier_after, "subscription event");
        Ok(outcome)
    })
}

/// End what has run out: cancelled subscriptions whose paid period is over, and past-due ones
/// whose grace period is over. Each account in its own transaction with audit and feed rows.
/// Returns how many accounts dropped to the free tier.
pub async fn sweep(
    db: &Db,
    free_tier: &str,
    grace_secs: i64,
    now: DateTime<Utc>,
) -> sqlx::Result<usize> {
    let grace_start = now - chrono::Duration::seconds(grace_secs);
    let due: Vec<(Uuid, String)> = with_db!(db, p => sqlx::query_as(
        "SELECT id, subscription_status FROM users WHERE (subscription_status = 'cancelled' AND current_period_end <= $1) \
         OR (subscription_status = 'past_due' AND past_due_since <= $2)")
        .bind(now).bind(grace_start).fetch_all(p).await)?;
    let mut n = 0;
    for (id, status) in due {
        let reason = if status == "cancelled" {
            "period_ended"
        } else {
            "grace_expired"
        };
        let done = with_db!(db, p => {
            let mut tx = p.begin().await?;
            // Re-check under the lock: a payment may have landed in between.
            let r = sqlx::query(
                "UPDATE users SET tier = $2, subscription_status = 'expired', cancel_at_period_end = FALSE, past_due_since = NULL, \
                 next_charge_at = NULL, provider_state_at = $3, updated_at = $3 WHERE id = $1 AND ((subscription_status = 'cancelled' AND current_period_end <= $3) \
                 OR (subscription_status = 'past_due' AND past_due_since <= $4))")
                .bind(id).bind(free_tier).bind(now).bind(grace_start).execute(&mut *tx).await?;
            if r.rows_affected() == 1 {
                let provider: Option<String> = sqlx::query_scalar("SELECT provider FROM users WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO subscription_events (id, user_id, provider, event_type, tier, raw_data, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(Uuid::new_v4()).bind(id).bind(provider.unwrap_or_else(|| "stellar".into())).bind(reason).bind(free_tier)
                    .bind(sqlx::types::Json(serde_json::json!({"reason": reason}))).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query(APPEND_SQL).bind(Some(id)).bind(None::<String>).bind(feed::kind::TIER_CHANGED).bind(now).execute(&mut *tx).await?;
                tx.commit().await?;
                true
            } else {
                tx.rollback().await?;
                false
            }
        });
        if done {
            tracing::info!(user_id = %id, reason, "subscription ended; account back on the free tier");
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn user(tier: &str, status: &str) -> User {
        User {
            id: Uuid::nil(),
            email: "a@b.co".into(),
            tier: tier.into(),
            provider: Some("stripe".into()),
            provider_customer_id: Some("cus_1".into()),
            provider_subscription_id: Some("sub_1".into()),
            subscription_status: status.into(),
            current_period_end: Some(Utc::now() + Duration::days(10)),
            cancel_at_period_end: false,
            past_due_since: None,
            provider_state_at: Some(Utc::now() - Duration::hours(1)),
            toss_customer_key: None,
            billing_key_enc: None,
            charge_attempts: 0,
            next_charge_at: None,
        }
    }

    fn ev(change: Change, at: DateTime<Utc>, sub: &str) -> Event {
        Event {
            provider: "stripe",
            event_id: "e".into(),
            event_type: "t".into(),
            occurred_at: at,
            refs: Refs {
                user_id: None,
                subscription_id: Some(sub.into()),
                customer_id: None,
            },
            change,
            amount_minor: None,
            currency: None,
            raw: Value::Null,
            drop_billing_key: None,
            charge: None,
        }
    }

    #[test]
    fn transitions() {
        let now = Utc::now();
        let end = now + Duration::days(20);
        let u = user("free", "none");
        let s = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Active,
                    tier: Some("pro".into()),
                    period_end: Some(end),
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.tier.as_str(), s.status.as_str()), ("pro", "active"));

        let u = user("pro", "active");
        let s = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Cancelled,
                    tier: None,
                    period_end: Some(end),
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.tier.as_str(), s.status.as_str(), s.cancel_at_period_end),
            ("pro", "cancelled", true)
        );

        let s = decide(&u, &ev(Change::PaymentFailed, now, "sub_1"), "free", now)
            .unwrap()
            .unwrap();
        assert_eq!((s.tier.as_str(), s.status.as_str()), ("pro", "past_due"));
        assert!(s.past_due_since.is_some());

        let s = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Expired,
                    tier: None,
                    period_end: None,
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.tier.as_str(), s.status.as_str()), ("free", "expired"));
    }

    #[test]
    fn stale_and_foreign_events_change_nothing() {
        let now = Utc::now();
        let u = user("pro", "active");
        let old = now - Duration::hours(2);
        assert_eq!(
            decide(
                &u,
                &ev(
                    Change::Snapshot {
                        status: Status::Expired,
                        tier: None,
                        period_end: None
                    },
                    old,
                    "sub_1"
                ),
                "free",
                now
            ),
            Err(Outcome::Stale)
        );
        assert_eq!(
            decide(
                &u,
                &ev(
                    Change::Snapshot {
                        status: Status::Expired,
                        tier: None,
                        period_end: None
                    },
                    now,
                    "sub_old"
                ),
                "free",
                now
            ),
            Err(Outcome::NotCurrent)
        );
        // A payment without a known tier on a free account changes nothing.
        let f = user("free", "none");
        assert_eq!(
            decide(
                &f,
                &ev(
                    Change::PaymentSucceeded {
                        tier: None,
                        period_end: None
                    },
                    now,
                    "sub_1"
                ),
                "free",
                now
            ),
            Ok(None)
        );
        // Repeating the current state is not a change.
        let same = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Active,
                    tier: Some("pro".into()),
                    period_end: u.current_period_end,
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        );
        assert_eq!(same, Ok(None));
    }

    #[test]
    fn scrub_hides_billing_keys() {
        let v = scrub(
            serde_json::json!({"a": {"billingKey": "bk_secret"}, "list": [{"secret": "s"}], "ok": 1}),
        );
        assert!(!v.to_string().contains("bk_secret"));
        assert_eq!(v["ok"], 1);
    }
}
