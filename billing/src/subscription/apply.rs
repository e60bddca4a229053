//! The transaction around [`decide`]: dedupe, row lock, decision, state, effects, audit and
//! change-feed rows, all committed together (see the module docs of [`super`]).

use super::decide::{decide, starts};
use super::{Change, Effect, Event, Outcome, Status};
use crate::accounts::{User, USER_COLUMNS};
use crate::identity::audit::{action, Event as AuditEvent};
use crate::identity::IdTx;
use crate::providers::toss::ledger::{self, ChargeStatus};
use crate::webhooks::{event, WebhookTx};
use chrono::{DateTime, Utc};
use serde_json::Value;
use stellar_common::feed::{self, APPEND_SQL};
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// Takes the account's row lock (PostgreSQL) and SQLite's writer lock without changing the row:
/// the first statement of a transaction that reads the account and then decides.
pub(crate) const LOCK_ACCOUNT_SQL: &str = "UPDATE users SET updated_at = updated_at WHERE id = $1";

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

/// Run one [`Effect`] on `$user` inside the open transaction `$tx`; evaluates to the number of
/// account rows it changed. A macro because each back-end has its own transaction type.
macro_rules! run_effect {
    ($tx:expr, $user:expr, $effect:expr, $now:expr) => {
        match $effect {
            Effect::IssueCustomerKey(key) => sqlx::query(
                "UPDATE users SET toss_customer_key = $2 WHERE id = $1 AND toss_customer_key IS NULL")
                .bind($user).bind(key).execute(&mut *$tx).await?.rows_affected(),
            Effect::StoreBillingKey { enc, hash } => sqlx::query(
                "UPDATE users SET billing_key_enc = $2, billing_key_hash = $3, updated_at = $4 WHERE id = $1")
                .bind($user).bind(enc).bind(hash).bind($now).execute(&mut *$tx).await?.rows_affected(),
            Effect::DropBillingKey { hash } => sqlx::query(
                "UPDATE users SET billing_key_enc = NULL, billing_key_hash = NULL WHERE id = $1 AND billing_key_hash = $2")
                .bind($user).bind(hash).execute(&mut *$tx).await?.rows_affected(),
            Effect::ClaimFor(provider) => sqlx::query(
                "UPDATE users SET provider = $2 WHERE id = $1 AND (provider IS NULL OR subscription_status IN ('none', 'expired'))")
                .bind($user).bind(*provider).execute(&mut *$tx).await?.rows_affected(),
            Effect::SettleCharge(c) => {
                sqlx::query(ledger::SETTLE_SQL)
                    .bind(&c.order_id).bind(c.status.as_str()).bind(c.payment_key.as_deref())
                    .bind(c.failure_code.as_deref()).bind($now)
                    .execute(&mut *$tx).await?;
                match c.status {
                    ChargeStatus::Done => sqlx::query(
                        "UPDATE users SET charge_attempts = 0, next_charge_at = NULL WHERE id = $1")
                        .bind($user).execute(&mut *$tx).await?.rows_affected(),
                    ChargeStatus::Failed => sqlx::query(
                        "UPDATE users SET charge_attempts = charge_attempts + 1, next_charge_at = $2 WHERE id = $1")
                        .bind($user).bind(c.next_charge_at).execute(&mut *$tx).await?.rows_affected(),
                    ChargeStatus::Pending | ChargeStatus::Canceled => 0,
                }
            }
        }
    };
}

/// Apply one effect that comes without an event, in its own transaction. Returns how many
/// account rows changed (0 when its condition did not hold, e.g. a customerKey already set).
pub async fn apply_effect(db: &Db, user_id: Uuid, effect: &Effect) -> sqlx::Result<u64> {
    let now = Utc::now();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let changed = run_effect!(tx, user_id, effect, now);
        tx.commit().await?;
        Ok(changed)
    })
}

/// Apply one event atomically (see the module docs). An amount that does not fit the audit
/// row is an error before anything is written.
pub async fn apply(db: &Db, ev: &Event, free_tier: &str) -> sqlx::Result<Outcome> {
    let Some(user_id) = resolve(db, ev).await? else {
        tracing::warn!(provider = ev.provider, event = %ev.event_type, event_id = %ev.event_id, "event matches no account; ignored");
        return Ok(Outcome::Unmapped);
    };
    let amount_cents = ev
        .amount
        .map(|m| m.amount_cents())
        .transpose()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let currency = ev.amount.as_ref().map(|m| m.currency.as_str());
    let now = Utc::now();
    let select = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let raw = sqlx::types::Json(scrub(ev.raw.clone()));
    let (claims, others): (Vec<&Effect>, Vec<&Effect>) = ev
        .effects
        .iter()
        .partition(|e| matches!(e, Effect::ClaimFor(_)));
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
        sqlx::query(LOCK_ACCOUNT_SQL).bind(user_id).execute(&mut *tx).await?;
        for effect in claims {
            run_effect!(tx, user_id, effect, now);
        }
        let u: User = sqlx::query_as(&select).bind(user_id).fetch_one(&mut *tx).await?;
        let decision = decide(&u, ev, free_tier, now);
        let outcome = match &decision {
            Err(o) => o.clone(),
            Ok(Some(_)) => Outcome::Applied,
            Ok(None) if matches!(ev.change, Change::Link) => Outcome::Applied,
            Ok(None) => Outcome::Recorded,
        };
        let starts_or_links = matches!(ev.change, Change::Link) || starts(&ev.change);
        let link_ids = outcome == Outcome::Applied || (outcome == Outcome::Recorded && starts_or_links);
        if let Ok(Some(next)) = &decision {
            sqlx::query(
                "UPDATE users SET tier = $2, subscription_status = $3, current_period_end = $4, cancel_at_period_end = $5, \
                 past_due_since = $6, provider_state_at = $7, updated_at = $8 WHERE id = $1")
                .bind(user_id).bind(&next.tier).bind(next.status).bind(next.period_end).bind(next.cancel_at_period_end)
                .bind(next.past_due_since).bind(u.provider_state_at.map_or(ev.occurred_at, |l| l.max(ev.occurred_at))).bind(now)
                .execute(&mut *tx).await?;
            sqlx::query(APPEND_SQL).bind(Some(user_id)).bind(None::<String>).bind(feed::kind::TIER_CHANGED).bind(now)
                .execute(&mut *tx).await?;
            tx.emit_webhook(user_id, event::SUBSCRIPTION_UPDATED, serde_json::json!({"tier": &next.tier, "previous_tier": &u.tier, "status": next.status, "previous_status": u.subscription_status, "current_period_end": next.period_end, "cancel_at_period_end": next.cancel_at_period_end, "provider": ev.provider})).await?;
            let actor = format!("provider:{}", ev.provider);
            let audit = |action, target| AuditEvent { account_id: user_id, actor: &actor, action, target: Some(target), ip: None, at: now };
            if next.tier != u.tier {
                tx.audit(&audit(action::PLAN_CHANGED, format!("{} -> {}", u.tier, next.tier))).await?;
            }
            if next.status == Status::Cancelled && u.subscription_status != Status::Cancelled {
                tx.audit(&audit(action::SUBSCRIPTION_CANCELLED, format!("{} until {}", next.tier, next.period_end.map_or_else(|| "now".into(), |t| t.to_rfc3339())))).await?;
            }
        }
        if link_ids {
            sqlx::query(
                "UPDATE users SET provider = $2, provider_subscription_id = COALESCE($3, provider_subscription_id), \
                 provider_customer_id = COALESCE($4, provider_customer_id), updated_at = $5 WHERE id = $1")
                .bind(user_id).bind(ev.provider).bind(ev.refs.subscription_id.as_deref()).bind(ev.refs.customer_id.as_deref()).bind(now)
                .execute(&mut *tx).await?;
        }
        for effect in others {
            run_effect!(tx, user_id, effect, now);
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
            .bind(amount_cents).bind(currency)
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
    let due: Vec<(Uuid, Status, String)> = with_db!(db, p => sqlx::query_as(
        "SELECT id, subscription_status, tier FROM users WHERE (subscription_status = 'cancelled' AND current_period_end <= $1) \
         OR (subscription_status = 'past_due' AND past_due_since <= $2)")
        .bind(now).bind(grace_start).fetch_all(p).await)?;
    let mut n = 0;
    let tier_before: std::collections::HashMap<Uuid, String> =
        due.iter().map(|(id, _, t)| (*id, t.clone())).collect();
    for (id, status, _) in due {
        let reason = if status == Status::Cancelled {
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
                tx.audit(&AuditEvent { account_id: id, actor: "system", action: action::PLAN_CHANGED, target: Some(format!("{} -> {free_tier} ({reason})", tier_before.get(&id).map_or("?", String::as_str))), ip: None, at: now }).await?;
                sqlx::query(
                    "INSERT INTO subscription_events (id, user_id, provider, event_type, tier, raw_data, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(Uuid::new_v4()).bind(id).bind(provider.unwrap_or_else(|| "stellar".into())).bind(reason).bind(free_tier)
                    .bind(sqlx::types::Json(serde_json::json!({"reason": reason}))).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query(APPEND_SQL).bind(Some(id)).bind(None::<String>).bind(feed::kind::TIER_CHANGED).bind(now).execute(&mut *tx).await?;
                tx.emit_webhook(id, event::SUBSCRIPTION_UPDATED, serde_json::json!({"tier": free_tier, "previous_tier": tier_before.get(&id), "status": "expired", "reason": reason})).await?;
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
    use crate::money::{Currency, Money};
    use crate::subscription::Refs;
    use crate::testing::TempDb;

    #[test]
    fn scrub_hides_billing_keys() {
        let v = scrub(
            serde_json::json!({"a": {"billingKey": "bk_secret"}, "list": [{"secret": "s"}], "ok": 1}),
        );
        assert!(!v.to_string().contains("bk_secret"));
        assert_eq!(v["ok"], 1);
    }

    fn payment(user: Uuid, id: &str, minor: i64) -> Event {
        Event::new(
            "stripe",
            id.into(),
            "invoice.paid",
            Utc::now(),
            Refs {
                user_id: Some(user),
                ..Refs::default()
            },
            Change::PaymentSucceeded {
                tier: Some("pro".into()),
                period_end: None,
            },
            Value::Null,
        )
        .with_amount(Some(Money::new(minor, Currency::USD)))
    }

    async fn count(db: &Db, sql: &str) -> i64 {
        with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await).unwrap()
    }

    /// An amount the 32-bit `amount_cents` column cannot hold is an error, and nothing of the
    /// event is written (it was stored as NULL before).
    #[tokio::test]
    async fn amounts_over_the_column_are_errors_not_nulls() {
        let t = TempDb::new().await;
        let user = t.user("big@example.com").await;
        let over = i64::from(i32::MAX) + 1;
        let err = apply(&t.db, &payment(user, "evt_big", over), "free")
            .await
            .unwrap_err();
        assert!(matches!(err, sqlx::Error::Encode(_)), "{err:?}");
        assert!(err.to_string().contains("amount_cents"), "{err}");
        for table in ["processed_webhooks", "subscription_events"] {
            assert_eq!(
                count(&t.db, &format!("SELECT COUNT(*) FROM {table}")).await,
                0
            );
        }
        let u = crate::accounts::user_by_id(&t.db, user)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.tier.as_str(), u.subscription_status),
            ("free", Status::None)
        );

        // The largest amount that fits is stored as it is, with its currency.
        let max = i64::from(i32::MAX);
        assert_eq!(
            apply(&t.db, &payment(user, "evt_max", max), "free")
                .await
                .unwrap(),
            Outcome::Applied
        );
        let (cents, currency): (Option<i32>, Option<String>) = with_db!(&t.db, p => sqlx::query_as(
            "SELECT amount_cents, currency FROM subscription_events WHERE provider_event_id = 'evt_max'")
            .fetch_one(p).await).unwrap();
        assert_eq!((cents, currency.as_deref()), (Some(i32::MAX), Some("USD")));
    }
}
