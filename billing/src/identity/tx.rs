//! The statements the identity flows (and key changes in `accounts`) write inside a caller's
//! transaction, on either back-end: one trait, implemented for both transaction types by one
//! macro, so each statement is written once.

use super::audit::Event;
use super::Actor;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite, Transaction};
use std::future::Future;
use stellar_common::accounts::KeyScope;
use stellar_common::feed::{self, APPEND_SQL};
use stellar_common::keys::NewKey;
use uuid::Uuid;

/// A single-use link to store (only its hash).
pub struct TokenInsert<'a> {
    pub id: Uuid,
    pub hash: &'a str,
    pub purpose: &'static str,
    pub email: &'a str,
    pub account_id: Option<Uuid>,
    pub role: Option<&'a str>,
    pub invited_by: Option<Uuid>,
    pub next: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A session to store (only its hash).
pub struct SessionInsert<'a> {
    pub id: Uuid,
    pub hash: &'a str,
    pub member_id: Uuid,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Statements on an open account-DB transaction (either back-end).
pub trait IdTx: Send {
    /// One `audit_events` row.
    fn audit(&mut self, ev: &Event<'_>) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn insert_token(
        &mut self,
        t: &TokenInsert<'_>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn insert_session(
        &mut self,
        s: &SessionInsert<'_>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Insert an active key created by `by` with `scope`, and its change-feed row
    /// (`key_created`).
    #[allow(clippy::too_many_arguments)]
    fn insert_key(
        &mut self,
        id: Uuid,
        account: Uuid,
        key: &NewKey,
        name: Option<&str>,
        scope: &KeyScope,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// The change-feed row that tells gateways a key hash is revoked.
    fn feed_revoked(
        &mut self,
        account: Uuid,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}

macro_rules! id_tx {
    ($db:ty) => {
        impl IdTx for Transaction<'_, $db> {
            async fn audit(&mut self, ev: &Event<'_>) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO audit_events (account_id, actor, action, target, ip, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(ev.account_id)
                .bind(ev.actor)
                .bind(ev.action)
                .bind(ev.target.as_deref())
                .bind(ev.ip)
                .bind(ev.at)
                .execute(&mut **self)
                .await
                .map(|_| ())
            }

            async fn insert_token(&mut self, t: &TokenInsert<'_>) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO auth_tokens (id, token_hash, purpose, email, account_id, role, invited_by, next, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(t.id)
                .bind(t.hash)
                .bind(t.purpose)
                .bind(t.email)
                .bind(t.account_id)
                .bind(t.role)
                .bind(t.invited_by)
                .bind(t.next)
                .bind(t.now)
                .bind(t.expires_at)
                .execute(&mut **self)
                .await
                .map(|_| ())
            }

            async fn insert_session(&mut self, s: &SessionInsert<'_>) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO sessions (id, token_hash, member_id, created_at, last_seen_at, expires_at, ip, user_agent) \
                     VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
                )
                .bind(s.id)
                .bind(s.hash)
                .bind(s.member_id)
                .bind(s.now)
                .bind(s.expires_at)
                .bind(s.ip)
                .bind(s.user_agent)
                .execute(&mut **self)
                .await
                .map(|_| ())
            }

            async fn insert_key(
                &mut self,
                id: Uuid,
                account: Uuid,
                key: &NewKey,
                name: Option<&str>,
                scope: &KeyScope,
                by: &Actor,
                now: DateTime<Utc>,
            ) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, is_active, created_at, created_by, created_by_email, \
                     read_only, agent, expires_at, requests_per_minute) \
                     VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(id)
                .bind(account)
                .bind(&key.hash)
                .bind(&key.display_prefix)
                .bind(name)
                .bind(now)
                .bind(by.member_id)
                .bind(&by.email)
                .bind(scope.read_only)
                .bind(scope.agent.as_deref())
                .bind(scope.expires_at)
                .bind(scope.requests_per_minute)
                .execute(&mut **self)
                .await?;
                sqlx::query(APPEND_SQL)
                    .bind(Some(account))
                    .bind(Some(key.hash.as_str()))
                    .bind(feed::kind::KEY_CREATED)
                    .bind(now)
                    .execute(&mut **self)
                    .await
                    .map(|_| ())
            }

            async fn feed_revoked(
                &mut self,
                account: Uuid,
                key_hash: &str,
                now: DateTime<Utc>,
            ) -> sqlx::Result<()> {
                sqlx::query(APPEND_SQL)
                    .bind(Some(account))
                    .bind(Some(key_hash))
                    .bind(feed::kind::KEY_REVOKED)
                    .bind(now)
                    .execute(&mut **self)
                    .await
                    .map(|_| ())
            }
        }
    };
}
id_tx!(Sqlite);
id_tx!(Postgres);
