//! The steps of `DELETE /auth/account` (the order and why: the module doc of `data_rights`):
//! sweeping an account's memories out of the engine, revoking (and, when the deletion cannot
//! finish, restoring) its keys, and removing its rows with the audit row that outlives them.

use super::engine::{Engine, EngineError};
use crate::identity::audit::Event;
use crate::identity::{Actor, IdTx};
use chrono::Utc;
use futures::StreamExt;
use std::collections::HashSet;
use stellar_common::feed::{kind, APPEND_SQL};
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// `audit_events.action` of a deletion (the row has no foreign key, so it outlives the account).
pub const ACCOUNT_DELETED: &str = "account_deleted";

/// Ids asked for per `GET /api/v1/memories` while erasing.
const LIST_PAGE: usize = 200;
/// `DELETE /api/v1/forget/{id}` requests in flight at once.
const FORGET_CONCURRENCY: usize = 8;
/// Sweeps after the keys are revoked before giving up on memories that keep appearing.
const FINAL_SWEEPS: usize = 3;

/// Forget every memory of one agent's space: list the first page, forget it, again until the
/// list is empty. Returns how many the engine removed (a 404 — already gone — is not counted).
pub async fn erase_agent(engine: &Engine, agent: Option<&str>) -> Result<u64, EngineError> {
    let mut removed = 0u64;
    let mut previous: HashSet<String> = HashSet::new();
    loop {
        let ids = engine.list_ids(agent, LIST_PAGE).await?;
        if ids.is_empty() {
            return Ok(removed);
        }
        if ids.iter().all(|id| previous.contains(id)) {
            return Err(EngineError::Stuck(format!(
                "the memory engine lists memories it answered as forgotten (agent {agent:?})"
            )));
        }
        // The futures are made first (none runs before it is polled): a stream of a closure
        // over borrowed ids is not `Send` for every lifetime, as axum's handlers must be.
        let forgets: Vec<_> = ids.iter().map(|id| engine.forget(agent, id)).collect();
        let results: Vec<Result<bool, EngineError>> = futures::stream::iter(forgets)
            .buffer_unordered(FORGET_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            removed += u64::from(r?);
        }
        previous = ids.into_iter().collect();
    }
}

/// [`erase_agent`] for each of `agents`; the total removed.
pub async fn erase_all(engine: &Engine, agents: &[Option<String>]) -> Result<u64, EngineError> {
    let mut n = 0;
    for a in agents {
        n += erase_agent(engine, a.as_deref()).await?;
    }
    Ok(n)
}

/// How many memories `agents` hold (`GET /api/v1/stats` for each).
pub async fn count_all(engine: &Engine, agents: &[Option<String>]) -> Result<u64, EngineError> {
    let mut n = 0;
    for a in agents {
        n += engine.count(a.as_deref()).await?;
    }
    Ok(n)
}

/// Sweep until the engine reports no memory in any of `agents` (a store admitted before the
/// revocation may still land), at most [`FINAL_SWEEPS`] times. Returns how many were removed.
pub async fn final_sweep(engine: &Engine, agents: &[Option<String>]) -> Result<u64, EngineError> {
    let mut n = 0;
    for _ in 0..FINAL_SWEEPS {
        n += erase_all(engine, agents).await?;
        if count_all(engine, agents).await? == 0 {
            return Ok(n);
        }
    }
    Err(EngineError::Stuck(format!(
        "memories keep appearing after {FINAL_SWEEPS} sweeps"
    )))
}

/// Give `n` forgotten memories back to the account's quota count (`account_usage`), as the
/// gateway does for each forget it proxies, so an account whose deletion stops short is not
/// held at its quota until the next reconciliation.
pub async fn release(db: &Db, account: Uuid, n: u64) -> sqlx::Result<()> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    with_db!(db, p => sqlx::query(
        "UPDATE account_usage SET memories_used = CASE WHEN memories_used > $2 THEN memories_used - $2 ELSE 0 END \
         WHERE user_id = $1")
        .bind(account).bind(n).execute(p).await.map(|_| ()))
}

/// A key revoked by a deletion, kept to restore it if the deletion cannot finish.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevokedKey {
    pub id: Uuid,
    pub key_hash: String,
}

/// Revoke every active key of `account`, each with its `key_revoked` feed row (gateways refuse
/// it within a second), in one transaction. Returns the keys revoked.
pub async fn revoke_keys(db: &Db, account: Uuid) -> sqlx::Result<Vec<RevokedKey>> {
    let now = Utc::now();
    let keys = with_db!(db, p => {
        let mut tx = p.begin().await?;
        // The account's row first: key creation writes it too, so none is created meanwhile.
        sqlx::query("UPDATE users SET updated_at = $1 WHERE id = $2")
            .bind(now).bind(account).execute(&mut *tx).await?;
        let keys: Vec<RevokedKey> = sqlx::query_as(
            "SELECT id, key_hash FROM api_keys WHERE user_id = $1 AND is_active = TRUE")
            .bind(account).fetch_all(&mut *tx).await?;
        for k in &keys {
            sqlx::query("UPDATE api_keys SET is_active = FALSE WHERE id = $1")
                .bind(k.id).execute(&mut *tx).await?;
            tx.feed_revoked(account, &k.key_hash, now).await?;
        }
        tx.commit().await?;
        keys
    });
    Ok(keys)
}

/// Undo [`revoke_keys`] for a deletion that cannot finish: the keys work again (their
/// `key_changed` feed rows drop what gateways remembered about them).
pub async fn restore_keys(db: &Db, account: Uuid, keys: &[RevokedKey]) -> sqlx::Result<()> {
    let now = Utc::now();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        for k in keys {
            sqlx::query("UPDATE api_keys SET is_active = TRUE WHERE id = $1 AND user_id = $2")
                .bind(k.id).bind(account).execute(&mut *tx).await?;
            sqlx::query(APPEND_SQL).bind(Some(account)).bind(Some(k.key_hash.as_str()))
                .bind(kind::KEY_CHANGED).bind(now).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// Remove `account` and every row that refers to it, in one transaction with its audit row
/// ([`ACCOUNT_DELETED`], target `memories_deleted:<n>`): the `users` row, and through its
/// foreign keys (ON DELETE CASCADE) its keys, usage, agents, members and their sessions, links,
/// Toss charges, webhooks and alert state; explicitly the rows that refer to it without one
/// (subscription events, usage history, a case-conflict entry). A key still active (created
/// since the revocation) gets its `key_revoked` feed row, and the account a `tier_changed` one,
/// so gateways forget everything they cached for it. The feed and `audit_events` keep their
/// rows. Returns false when the account was already gone (nothing is written then).
pub async fn remove_account(
    db: &Db,
    account: Uuid,
    by: &Actor,
    memories_deleted: u64,
) -> sqlx::Result<bool> {
    let now = Utc::now();
    let removed = with_db!(db, p => {
        let mut tx = p.begin().await?;
        let late: Vec<String> = sqlx::query_scalar(
            "SELECT key_hash FROM api_keys WHERE user_id = $1 AND is_active = TRUE")
            .bind(account).fetch_all(&mut *tx).await?;
        for h in &late {
            tx.feed_revoked(account, h, now).await?;
        }
        for sql in [
            "DELETE FROM subscription_events WHERE user_id = $1",
            "DELETE FROM usage_minutes WHERE user_id = $1",
            "DELETE FROM usage_hours WHERE user_id = $1",
            "DELETE FROM email_case_conflicts WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(account).execute(&mut *tx).await?;
        }
        let n = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(account).execute(&mut *tx).await?.rows_affected();
        if n == 1 {
            sqlx::query(APPEND_SQL).bind(Some(account)).bind(None::<String>)
                .bind(kind::TIER_CHANGED).bind(now).execute(&mut *tx).await?;
            let mut ev = Event::by(by, account, ACCOUNT_DELETED, Some(format!("memories_deleted:{memories_deleted}")));
            ev.at = now;
            tx.audit(&ev).await?;
        }
        tx.commit().await?;
        n == 1
    });
    Ok(removed)
}
