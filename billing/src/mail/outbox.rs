//! The `outbox` table: [`enqueue`] inside the caller's transaction, and the worker's side —
//! claim one due row, then record the outcome.
//!
//! Claiming is one conditional `UPDATE`: it stamps a fresh claim token, counts the attempt and
//! moves `next_attempt_at` to the end of the lease, and only matches a row that is still pending
//! and due. On SQLite writers are serialised, so two workers cannot match the same row; on
//! PostgreSQL the inner `SELECT … FOR UPDATE SKIP LOCKED` lets concurrent workers pick different
//! rows, and the outer conditions are re-checked against the locked row, so a row another worker
//! has just claimed is not matched again. A worker that dies mid-send leaves a row whose lease
//! runs out; it is then due again (at-least-once: the only way one mail reaches the server twice
//! is a crash between the server's acceptance and [`mark_sent`]). Once `sent` is recorded, no
//! claim can match the row.

use super::templates::Template;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite, Transaction};
use std::future::Future;
use stellar_common::{with_db, Db};

/// `outbox.status` values.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const SENT: &str = "sent";
    pub const FAILED: &str = "failed";
}

const INSERT_SQL: &str = "INSERT INTO outbox (recipient, template, payload, status, attempts, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, 'pending', 0, $4, $4) RETURNING id";

/// An open transaction on the account DB (either back-end) that a mail can be enqueued in.
pub trait AccountTx: Send {
    /// Insert one outbox row; returns its id.
    fn insert_outbox(
        &mut self,
        to: &str,
        template: &'static str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<i64>> + Send;
}

macro_rules! account_tx {
    ($db:ty) => {
        impl AccountTx for Transaction<'_, $db> {
            async fn insert_outbox(
                &mut self,
                to: &str,
                template: &'static str,
                payload: &str,
                now: DateTime<Utc>,
            ) -> sqlx::Result<i64> {
                sqlx::query_scalar(INSERT_SQL)
                    .bind(to)
                    .bind(template)
                    .bind(payload)
                    .bind(now)
                    .fetch_one(&mut **self)
                    .await
            }
        }
    };
}
account_tx!(Sqlite);
account_tx!(Postgres);

/// Queue `template` for `to` in `tx`, the transaction that makes the change the mail is about:
/// the mail exists if and only if the change commits. It is due at once; the worker sends it
/// within `mail.poll_interval_secs`. Returns the outbox id.
///
/// `to` should be a normalised address (`accounts::normalize_email`); one the mail library
/// cannot parse is marked failed at the first attempt.
pub async fn enqueue(tx: &mut impl AccountTx, to: &str, template: &Template) -> sqlx::Result<i64> {
    let payload = serde_json::to_string(template)
        .map_err(|e| sqlx::Error::Encode(format!("outbox payload: {e}").into()))?;
    tx.insert_outbox(to, template.name(), &payload, Utc::now())
        .await
}

/// A row the worker has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub recipient: String,
    pub template: String,
    pub payload: Option<String>,
    /// Including this attempt.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

const DUE_SQL: &str =
    "SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1 LIMIT 1";

const CLAIM_SQLITE: &str = "UPDATE outbox SET claim_token = $1, attempts = attempts + 1, next_attempt_at = $2 \
     WHERE id = (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $3 ORDER BY next_attempt_at, id LIMIT 1) \
     AND status = 'pending' AND next_attempt_at <= $3 \
     RETURNING id, recipient, template, payload, attempts, created_at";

const CLAIM_POSTGRES: &str = "UPDATE outbox SET claim_token = $1, attempts = attempts + 1, next_attempt_at = $2 \
     WHERE id = (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $3 ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     AND status = 'pending' AND next_attempt_at <= $3 \
     RETURNING id, recipient, template, payload, attempts, created_at";

/// Claim the oldest due row for `lease_until` under `token`, if any. A cheap read first, so an
/// idle worker does not take SQLite's write lock every poll.
pub async fn claim_next(
    db: &Db,
    token: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> sqlx::Result<Option<Claimed>> {
    let due: Option<i64> =
        with_db!(db, p => sqlx::query_scalar(DUE_SQL).bind(now).fetch_optional(p).await)?;
    if due.is_none() {
        return Ok(None);
    }
    let sql = if db.is_postgres() {
        CLAIM_POSTGRES
    } else {
        CLAIM_SQLITE
    };
    with_db!(db, p => sqlx::query_as::<_, Claimed>(sql)
        .bind(token).bind(lease_until).bind(now)
        .fetch_optional(p).await)
}

/// Record a successful send. The payload (single-use links) is dropped. Recorded whatever the
/// claim token, since the mail did go out; a row already `sent` is left as it is.
pub async fn mark_sent(db: &Db, id: i64, now: DateTime<Utc>) -> sqlx::Result<()> {
    with_db!(db, p => sqlx::query(
        "UPDATE outbox SET status = 'sent', sent_at = $2, payload = NULL, claim_token = NULL WHERE id = $1 AND status = 'pending'")
        .bind(id).bind(now).execute(p).await.map(|_| ()))
}

/// Record a failed attempt: due again at `retry_at`, or `failed` for good when `give_up`. Only
/// the claim that made the attempt may record it.
pub async fn mark_failed(
    db: &Db,
    id: i64,
    token: &str,
    error: &str,
    retry_at: DateTime<Utc>,
    give_up: bool,
) -> sqlx::Result<()> {
    let status = if give_up {
        status::FAILED
    } else {
        status::PENDING
    };
    let error: String = error.chars().take(2000).collect();
    with_db!(db, p => sqlx::query(
        "UPDATE outbox SET status = $3, last_error = $4, next_attempt_at = $5, claim_token = NULL \
         WHERE id = $1 AND claim_token = $2 AND status = 'pending'")
        .bind(id).bind(token).bind(status).bind(error).bind(retry_at)
        .execute(p).await.map(|_| ()))
}

/// One outbox row as an operator (or a test) sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub recipient: String,
    pub template: String,
    pub payload: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub claim_token: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The row with id `id`.
pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Row>> {
    with_db!(db, p => sqlx::query_as::<_, Row>(
        "SELECT id, recipient, template, payload, status, attempts, next_attempt_at, claim_token, last_error, created_at, sent_at \
         FROM outbox WHERE id = $1")
        .bind(id).fetch_optional(p).await)
}
