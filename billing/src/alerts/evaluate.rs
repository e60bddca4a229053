//! The DB side of alerts: which accounts may have something to raise or re-arm (a few cheap
//! queries), then per account one transaction that locks the account's row, measures, runs
//! [`decide`] and writes the new state with the mails, webhook events and audit rows of what it
//! raised. The lock serialises evaluators of several billing instances: the second sees the
//! first's state and raises nothing twice.

use super::{decide, Alert, ExpiringKey, Measurements, Thresholds};
use crate::identity::audit::Event;
use crate::identity::IdTx;
use crate::mail::{self, Template};
use crate::settings::Settings;
use crate::webhooks::WebhookTx;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use stellar_common::{with_db, Db};
use tokio::sync::watch;
use uuid::Uuid;

/// `audit_events.action` values written here and by the alert routes.
pub mod action {
    pub const ALERT_RAISED: &str = "alert_raised";
    pub const ALERTS_CHANGED: &str = "alerts_changed";
}

type SettingsRow = (String, i32, i32, bool);

fn thresholds_of(row: Option<SettingsRow>) -> Thresholds {
    match row {
        None => Thresholds::default(),
        Some((memory, rate, days, payment)) => Thresholds {
            memory_percent: serde_json::from_str(&memory)
                .unwrap_or_else(|_| Thresholds::default().memory_percent),
            rate_limited_minutes: u32::try_from(rate).unwrap_or(0),
            key_expiring_days: u32::try_from(days).unwrap_or(0),
            payment_failed: payment,
        },
    }
}

const SETTINGS_SQL: &str =
    "SELECT memory_percent, rate_limited_minutes, key_expiring_days, payment_failed \
     FROM alert_settings WHERE account_id = $1";

/// An account's thresholds.
pub async fn thresholds(db: &Db, account: Uuid) -> sqlx::Result<Thresholds> {
    let row: Option<SettingsRow> = with_db!(db, p => sqlx::query_as(SETTINGS_SQL)
        .bind(account).fetch_optional(p).await)?;
    Ok(thresholds_of(row))
}

/// Store an account's thresholds, with its audit row.
pub async fn save(
    db: &Db,
    account: Uuid,
    t: &Thresholds,
    by: &crate::identity::Actor,
) -> sqlx::Result<()> {
    let now = Utc::now();
    let memory = serde_json::to_string(&t.memory_percent).unwrap_or_else(|_| "[]".into());
    let describe = format!(
        "memory {:?} %, rate limited {} min, key expiring {} d, payment failed {}",
        t.memory_percent, t.rate_limited_minutes, t.key_expiring_days, t.payment_failed
    );
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query(
            "INSERT INTO alert_settings (account_id, memory_percent, rate_limited_minutes, key_expiring_days, payment_failed, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id) DO UPDATE SET memory_percent = excluded.memory_percent, \
             rate_limited_minutes = excluded.rate_limited_minutes, key_expiring_days = excluded.key_expiring_days, \
             payment_failed = excluded.payment_failed, updated_at = excluded.updated_at")
            .bind(account).bind(&memory).bind(t.rate_limited_minutes as i32).bind(t.key_expiring_days as i32)
            .bind(t.payment_failed).bind(now).execute(&mut *tx).await?;
        tx.audit(&Event::by(by, account, action::ALERTS_CHANGED, Some(describe))).await?;
        tx.commit().await?;
    });
    Ok(())
}

/// An alert whose condition holds (raised, not yet re-armed).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Raised {
    pub alert: String,
    pub raised_at: DateTime<Utc>,
}

pub async fn raised(db: &Db, account: Uuid) -> sqlx::Result<Vec<Raised>> {
    with_db!(db, p => sqlx::query_as::<_, Raised>(
        "SELECT alert, raised_at FROM alert_state WHERE account_id = $1 ORDER BY raised_at, alert")
        .bind(account).fetch_all(p).await)
}

/// The start of the minute `now` is in, in Unix seconds.
fn minute_of(now: DateTime<Utc>) -> i64 {
    now.timestamp() - now.timestamp().rem_euclid(60)
}

/// Accounts worth a look: those with raised alerts (to re-arm), past due, with 429s in the last
/// complete minute, with keys expiring within the largest window any account asked for, and
/// those whose memories reach their lowest threshold.
pub async fn candidates(db: &Db, s: &Settings, now: DateTime<Utc>) -> sqlx::Result<Vec<Uuid>> {
    let mut out: BTreeSet<Uuid> = BTreeSet::new();
    let last_minute = minute_of(now) - 60;
    let max_days: Option<i32> = with_db!(db, p => sqlx::query_scalar(
        "SELECT MAX(key_expiring_days) FROM alert_settings").fetch_one(p).await)?;
    let days = i64::from(
        max_days
            .unwrap_or(0)
            .max(Thresholds::default().key_expiring_days as i32),
    );
    let ids: Vec<Uuid> = with_db!(db, p => sqlx::query_scalar(
        "SELECT account_id FROM alert_state \
         UNION SELECT id FROM users WHERE subscription_status = 'past_due' \
         UNION SELECT user_id FROM usage_minutes WHERE minute_start = $1 AND status_class = '429' AND requests > 0 \
         UNION SELECT user_id FROM api_keys WHERE is_active = TRUE AND expires_at > $2 AND expires_at <= $3")
        .bind(last_minute).bind(now).bind(now + Duration::days(days))
        .fetch_all(p).await)?;
    out.extend(ids);
    let memory: Vec<(Uuid, String, i64, Option<String>)> = with_db!(db, p => sqlx::query_as(
        "SELECT a.user_id, u.tier, a.memories_used, s.memory_percent FROM account_usage a \
         JOIN users u ON u.id = a.user_id LEFT JOIN alert_settings s ON s.account_id = a.user_id \
         WHERE a.memories_used > 0").fetch_all(p).await)?;
    for (id, tier, used, percent) in memory {
        let t = thresholds_of(percent.map(|m| (m, 0, 0, false)));
        let limit = i64::try_from(s.tiers.get_or_default(&tier).max_memories).unwrap_or(i64::MAX);
        if t.memory_may_alert(used, limit) {
            out.insert(id);
        }
    }
    Ok(out.into_iter().collect())
}

type KeyRow = (Uuid, String, Option<String>, DateTime<Utc>);

/// Evaluate one account in one transaction; returns the alerts raised.
pub async fn evaluate_account(
    db: &Db,
    s: &Settings,
    account: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Alert>> {
    let minute = minute_of(now);
    let link = format!("{}/dashboard", s.public_url());
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        // Written first: the account's row lock (PostgreSQL) and SQLite's writer lock.
        let row: Option<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "UPDATE users SET updated_at = updated_at WHERE id = $1 RETURNING tier, subscription_status, past_due_since")
            .bind(account).fetch_optional(&mut *tx).await?;
        let Some((tier, status, past_due_since)) = row else {
            tx.rollback().await?;
            return Ok(vec![]);
        };
        let settings: Option<SettingsRow> = sqlx::query_as(SETTINGS_SQL).bind(account).fetch_optional(&mut *tx).await?;
        let t = thresholds_of(settings);
        let before: Vec<String> = sqlx::query_scalar("SELECT alert FROM alert_state WHERE account_id = $1")
            .bind(account).fetch_all(&mut *tx).await?;
        let before: BTreeSet<String> = before.into_iter().collect();
        let used: Option<i64> = sqlx::query_scalar("SELECT memories_used FROM account_usage WHERE user_id = $1")
            .bind(account).fetch_optional(&mut *tx).await?;
        let mut m = Measurements {
            memories_used: used.unwrap_or(0),
            memories_limit: i64::try_from(s.tiers.get_or_default(&tier).max_memories).unwrap_or(i64::MAX),
            past_due: status == "past_due",
            past_due_since,
            tier,
            ..Measurements::default()
        };
        if t.rate_limited_minutes > 0 {
            let from = minute - 60 * i64::from(t.rate_limited_minutes);
            let (minutes, refused): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(DISTINCT minute_start), CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM usage_minutes \
                 WHERE user_id = $1 AND status_class = '429' AND requests > 0 AND minute_start >= $2 AND minute_start < $3")
                .bind(account).bind(from).bind(minute).fetch_one(&mut *tx).await?;
            m.limited_minutes = u32::try_from(minutes).unwrap_or(0);
            m.refused_requests = refused;
        }
        if t.key_expiring_days > 0 {
            let horizon = now + Duration::days(i64::from(t.key_expiring_days));
            let keys: Vec<KeyRow> = sqlx::query_as(
                "SELECT id, key_prefix, name, expires_at FROM api_keys WHERE user_id = $1 AND is_active = TRUE \
                 AND expires_at > $2 AND expires_at <= $3 ORDER BY expires_at, id")
                .bind(account).bind(now).bind(horizon).fetch_all(&mut *tx).await?;
            m.keys = keys.into_iter().map(|(id, prefix, name, expires_at)| ExpiringKey { id, prefix, name, expires_at }).collect();
        }
        let d = decide(&t, &before, &m, now);
        for gone in before.difference(&d.state) {
            sqlx::query("DELETE FROM alert_state WHERE account_id = $1 AND alert = $2")
                .bind(account).bind(gone).execute(&mut *tx).await?;
        }
        for new in d.state.difference(&before) {
            sqlx::query("INSERT INTO alert_state (account_id, alert, raised_at) VALUES ($1, $2, $3) ON CONFLICT (account_id, alert) DO NOTHING")
                .bind(account).bind(new).bind(now).execute(&mut *tx).await?;
        }
        if !d.raise.is_empty() {
            let to: Vec<String> = sqlx::query_scalar(
                "SELECT email FROM members WHERE account_id = $1 AND role IN ('owner', 'admin') ORDER BY created_at, id")
                .bind(account).fetch_all(&mut *tx).await?;
            for alert in &d.raise {
                for email in &to {
                    mail::enqueue(&mut tx, email, &Template::Alert { link: link.clone(), alert: alert.clone() }).await?;
                }
                tx.emit_webhook(account, alert.event_type(), alert.data()).await?;
                tx.audit(&Event { account_id: account, actor: "system", action: action::ALERT_RAISED,
                    target: Some(alert.state_key()), ip: None, at: now }).await?;
            }
        }
        tx.commit().await?;
        Ok(d.raise)
    })
}

/// One evaluation of every candidate account; returns how many alerts were raised. An
/// account whose transaction fails is logged and left for the next evaluation.
pub async fn evaluate(db: &Db, s: &Settings, now: DateTime<Utc>) -> sqlx::Result<usize> {
    let mut raised = 0;
    for account in candidates(db, s, now).await? {
        match evaluate_account(db, s, account, now).await {
            Ok(list) => {
                for a in &list {
                    tracing::info!(account_id = %account, alert = %a.state_key(), "alert raised");
                }
                raised += list.len();
            }
            Err(e) => {
                tracing::warn!(account_id = %account, error = %e, "evaluating alerts failed; next time")
            }
        }
    }
    Ok(raised)
}

/// The evaluator: every `alerts.interval_secs`. Stops when `shutdown` turns true.
pub async fn run(db: Db, settings: Arc<Settings>, mut shutdown: watch::Receiver<bool>) {
    tracing::info!(
        interval_secs = settings.alerts.interval.as_secs_f64(),
        "alert evaluator started"
    );
    loop {
        if let Err(e) = evaluate(&db, &settings, Utc::now()).await {
            tracing::error!(error = %e, "alert evaluator: query failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.alerts.interval) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::debug!("alert evaluator stopped");
}
