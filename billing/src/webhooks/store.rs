//! `webhook_endpoints`, `webhook_deliveries` and `webhook_attempts` as the API sees them, and
//! [`WebhookTx::emit_webhook`], which writes an event's deliveries inside the caller's
//! transaction. Every change to endpoints is one transaction with its audit row.

use super::{event, subscribed};
use crate::error::{ApiError, ApiResult};
use crate::identity::audit::Event;
use crate::identity::{Actor, IdTx};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Postgres, Sqlite, Transaction};
use std::future::Future;
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// `audit_events.action` values written here.
pub mod action {
    pub const WEBHOOK_CREATED: &str = "webhook_created";
    pub const WEBHOOK_DELETED: &str = "webhook_deleted";
    pub const WEBHOOK_SECRET_ROTATED: &str = "webhook_secret_rotated";
    pub const WEBHOOK_RESENT: &str = "webhook_resent";
}

/// `webhook_deliveries.status` values.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const DELIVERED: &str = "delivered";
    pub const FAILED: &str = "failed";
}

const INSERT_DELIVERY_SQL: &str = "INSERT INTO webhook_deliveries \
     (id, endpoint_id, account_id, event_id, event_type, payload, status, attempts, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)";

/// The JSON body of an event, as it is signed and sent.
pub fn event_body(
    id: Uuid,
    event_type: &str,
    at: DateTime<Utc>,
    account: Uuid,
    data: Value,
) -> String {
    json!({
        "id": id,
        "type": event_type,
        "created_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "account_id": account,
        "data": data,
    })
    .to_string()
}

/// The stored `events` column (a JSON array); unreadable text subscribes to nothing.
pub fn parse_events(stored: &str) -> Vec<String> {
    serde_json::from_str(stored).unwrap_or_default()
}

/// An open transaction on the account DB (either back-end) that events can be emitted in.
pub trait WebhookTx: Send {
    /// Queue `event_type` with `data` for every endpoint of `account` subscribed to it, in this
    /// transaction: the deliveries exist if and only if the change commits. Returns how many.
    fn emit_webhook(
        &mut self,
        account: Uuid,
        event_type: &'static str,
        data: Value,
    ) -> impl Future<Output = sqlx::Result<usize>> + Send;
}

macro_rules! webhook_tx {
    ($db:ty) => {
        impl WebhookTx for Transaction<'_, $db> {
            async fn emit_webhook(
                &mut self,
                account: Uuid,
                event_type: &'static str,
                data: Value,
            ) -> sqlx::Result<usize> {
                let endpoints: Vec<(Uuid, String)> =
                    sqlx::query_as("SELECT id, events FROM webhook_endpoints WHERE account_id = $1 ORDER BY created_at, id")
                        .bind(account)
                        .fetch_all(&mut **self)
                        .await?;
                let targets: Vec<Uuid> = endpoints
                    .into_iter()
                    .filter(|(_, ev)| subscribed(&parse_events(ev), event_type))
                    .map(|(id, _)| id)
                    .collect();
                if targets.is_empty() {
                    return Ok(0);
                }
                let (event_id, now) = (Uuid::new_v4(), Utc::now());
                let body = event_body(event_id, event_type, now, account, data);
                for endpoint in &targets {
                    sqlx::query(INSERT_DELIVERY_SQL)
                        .bind(Uuid::new_v4())
                        .bind(endpoint)
                        .bind(account)
                        .bind(event_id)
                        .bind(event_type)
                        .bind(&body)
                        .bind(now)
                        .execute(&mut **self)
                        .await?;
                }
                Ok(targets.len())
            }
        }
    };
}
webhook_tx!(Sqlite);
webhook_tx!(Postgres);

/// Check and normalise the `events` of a request: known types or `*`, at least one; `*` alone
/// stands for all. Sorted in the API's order, without repeats.
pub fn check_events(raw: &[String]) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err("events must name at least one event type (or \"*\" for all)".into());
    }
    let mut any = false;
    for e in raw {
        let e = e.trim();
        if e == event::ANY {
            any = true;
        } else if !event::ALL.contains(&e) {
            return Err(format!(
                "unknown event type {e:?}; known: {}, or \"*\"",
                event::ALL.join(", ")
            ));
        }
    }
    if any {
        return Ok(vec![event::ANY.to_string()]);
    }
    Ok(event::ALL
        .iter()
        .filter(|t| raw.iter().any(|e| e.trim() == **t))
        .map(|t| t.to_string())
        .collect())
}

/// A new signing secret, as shown once: `whsec_` and 64 hex characters.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("whsec_{}", hex::encode(b))
}

/// An endpoint as listed (never its secret).
#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
}

type EndpointRow = (Uuid, String, String, DateTime<Utc>, Option<DateTime<Utc>>);

fn endpoint((id, url, events, created_at, secret_rotated_at): EndpointRow) -> Endpoint {
    Endpoint {
        id,
        url,
        events: parse_events(&events),
        created_at,
        secret_rotated_at,
    }
}

pub async fn list(db: &Db, account: Uuid) -> sqlx::Result<Vec<Endpoint>> {
    let rows: Vec<EndpointRow> = with_db!(db, p => sqlx::query_as(
        "SELECT id, url, events, created_at, secret_rotated_at FROM webhook_endpoints \
         WHERE account_id = $1 ORDER BY created_at, id")
        .bind(account).fetch_all(p).await)?;
    Ok(rows.into_iter().map(endpoint).collect())
}

/// Register an endpoint whose secret is `secret_enc` (already encrypted), unless the account
/// has `max` already. The account's row is written first, which serialises concurrent
/// registrations of one account on both back-ends.
pub async fn create(
    db: &Db,
    account: Uuid,
    url: &str,
    events: &[String],
    secret_enc: &str,
    max: u32,
    by: &Actor,
) -> ApiResult<Endpoint> {
    let (id, now) = (Uuid::new_v4(), Utc::now());
    let events_json = serde_json::to_string(events).map_err(anyhow::Error::from)?;
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1").bind(account).execute(&mut *tx).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = $1")
            .bind(account).fetch_one(&mut *tx).await?;
        if n >= i64::from(max) {
            tx.rollback().await?;
            return Err(ApiError::Forbidden(format!("Webhook endpoint limit reached: an account may have {max}; delete one first")));
        }
        sqlx::query("INSERT INTO webhook_endpoints (id, account_id, url, events, secret_enc, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id).bind(account).bind(url).bind(&events_json).bind(secret_enc).bind(now)
            .execute(&mut *tx).await?;
        tx.audit(&Event::by(by, account, action::WEBHOOK_CREATED, Some(format!("{id} {url}")))).await?;
        tx.commit().await?;
    });
    Ok(Endpoint {
        id,
        url: url.to_string(),
        events: events.to_vec(),
        created_at: now,
        secret_rotated_at: None,
    })
}

/// Delete endpoint `id` of `account` and its deliveries (pending ones are never sent).
/// `false` when there is no such endpoint.
pub async fn delete(db: &Db, account: Uuid, id: Uuid, by: &Actor) -> sqlx::Result<bool> {
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let url: Option<String> = sqlx::query_scalar("DELETE FROM webhook_endpoints WHERE id = $1 AND account_id = $2 RETURNING url")
            .bind(id).bind(account).fetch_optional(&mut *tx).await?;
        let Some(url) = url else {
            tx.rollback().await?;
            return Ok(false);
        };
        tx.audit(&Event::by(by, account, action::WEBHOOK_DELETED, Some(format!("{id} {url}")))).await?;
        tx.commit().await?;
    });
    Ok(true)
}

/// Replace endpoint `id`'s secret with `secret_enc`; every delivery from now on (retries of
/// older events included) is signed with it. `None` when there is no such endpoint.
pub async fn rotate(
    db: &Db,
    account: Uuid,
    id: Uuid,
    secret_enc: &str,
    by: &Actor,
) -> sqlx::Result<Option<Endpoint>> {
    let now = Utc::now();
    let row: Option<EndpointRow> = with_db!(db, p => {
        let mut tx = p.begin().await?;
        let row: Option<EndpointRow> = sqlx::query_as(
            "UPDATE webhook_endpoints SET secret_enc = $3, secret_rotated_at = $4 WHERE id = $1 AND account_id = $2 \
             RETURNING id, url, events, created_at, secret_rotated_at")
            .bind(id).bind(account).bind(secret_enc).bind(now).fetch_optional(&mut *tx).await?;
        if row.is_some() {
            tx.audit(&Event::by(by, account, action::WEBHOOK_SECRET_ROTATED, Some(id.to_string()))).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        row
    });
    Ok(row.map(endpoint))
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Attempt {
    #[serde(skip)]
    pub delivery_id: Uuid,
    pub attempt: i32,
    pub at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// A delivery as listed.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub attempt_log: Vec<Attempt>,
}

/// The newest `limit` deliveries to endpoint `id` of `account`, each with its attempts (oldest
/// first); `None` when there is no such endpoint.
pub async fn deliveries(
    db: &Db,
    account: Uuid,
    id: Uuid,
    limit: u32,
) -> sqlx::Result<Option<Vec<Delivery>>> {
    let found: Option<Uuid> = with_db!(db, p => sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints WHERE id = $1 AND account_id = $2")
        .bind(id).bind(account).fetch_optional(p).await)?;
    if found.is_none() {
        return Ok(None);
    }
    let limit = i64::from(limit);
    let mut list: Vec<Delivery> = with_db!(db, p => sqlx::query_as::<_, Delivery>(
        "SELECT id, event_id, event_type, status, attempts, last_status_code, last_error, created_at, last_attempt_at, \
         CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, delivered_at \
         FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2")
        .bind(id).bind(limit).fetch_all(p).await)?;
    let attempts: Vec<Attempt> = with_db!(db, p => sqlx::query_as::<_, Attempt>(
        "SELECT delivery_id, attempt, at, status_code, error, duration_ms FROM webhook_attempts WHERE delivery_id IN \
         (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2) \
         ORDER BY attempt")
        .bind(id).bind(limit).fetch_all(p).await)?;
    for a in attempts {
        if let Some(d) = list.iter_mut().find(|d| d.id == a.delivery_id) {
            d.attempt_log.push(a);
        }
    }
    Ok(Some(list))
}

/// Queue delivery `id` of `account` again as a new delivery (same event id and body, due now);
/// returns the new delivery's id and the event id, `None` when there is no such delivery.
pub async fn resend(
    db: &Db,
    account: Uuid,
    id: Uuid,
    by: &Actor,
) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    let (new_id, now) = (Uuid::new_v4(), Utc::now());
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let event_id: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries (id, endpoint_id, account_id, event_id, event_type, payload, status, attempts, next_attempt_at, created_at) \
             SELECT $1, endpoint_id, account_id, event_id, event_type, payload, 'pending', 0, $2, $2 FROM webhook_deliveries \
             WHERE id = $3 AND account_id = $4 RETURNING event_id")
            .bind(new_id).bind(now).bind(id).bind(account).fetch_optional(&mut *tx).await?;
        let Some(event_id) = event_id else {
            tx.rollback().await?;
            return Ok(None);
        };
        tx.audit(&Event::by(by, account, action::WEBHOOK_RESENT, Some(format!("{id} -> {new_id}")))).await?;
        tx.commit().await?;
        Ok(Some((new_id, event_id)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked_and_normalised() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_events(&s(&["key.revoked", "alert.memory_quota", "key.revoked"])).unwrap(),
            s(&["alert.memory_quota", "key.revoked"])
        );
        assert_eq!(check_events(&s(&["*", "key.created"])).unwrap(), s(&["*"]));
        assert!(check_events(&[]).is_err());
        assert!(check_events(&s(&["key.*"])).is_err());
        assert!(check_events(&s(&["KEY.CREATED"])).is_err());
        let secret = new_secret();
        assert!(secret.starts_with("whsec_") && secret.len() == 70);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn body_shape() {
        let (id, acct) = (Uuid::new_v4(), Uuid::new_v4());
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let b: Value =
            serde_json::from_str(&event_body(id, "key.created", t, acct, json!({"k": 1}))).unwrap();
        assert_eq!(b["id"], id.to_string());
        assert_eq!(b["type"], "key.created");
        assert_eq!(b["created_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(b["account_id"], acct.to_string());
        assert_eq!(b["data"]["k"], 1);
    }
}
