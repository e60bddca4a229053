//! `audit_events`: one row per account action, written with [`super::IdTx::audit`] in the
//! transaction of the action (so a row exists if and only if the action happened), read back
//! newest first in pages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// `audit_events.action` values.
pub mod action {
    pub const ACCOUNT_CREATED: &str = "account_created";
    pub const EMAIL_VERIFIED: &str = "email_verified";
    pub const SIGN_IN: &str = "sign_in";
    pub const SIGN_OUT: &str = "sign_out";
    pub const SESSION_REVOKED: &str = "session_revoked";
    pub const KEY_CREATED: &str = "key_created";
    pub const KEY_REVOKED: &str = "key_revoked";
    pub const KEY_ROTATED: &str = "key_rotated";
    pub const MEMBER_INVITED: &str = "member_invited";
    pub const INVITATION_CANCELLED: &str = "invitation_cancelled";
    pub const MEMBER_JOINED: &str = "member_joined";
    pub const MEMBER_REMOVED: &str = "member_removed";
    pub const MEMBER_ROLE_CHANGED: &str = "member_role_changed";
    pub const PLAN_CHANGED: &str = "plan_changed";
    pub const SUBSCRIPTION_CANCELLED: &str = "subscription_cancelled";
}

/// One row to write.
pub struct Event<'a> {
    pub account_id: Uuid,
    /// The person's address, `key:<prefix>`, `provider:<name>` or `system`.
    pub actor: &'a str,
    pub action: &'static str,
    pub target: Option<String>,
    pub ip: Option<&'a str>,
    pub at: DateTime<Utc>,
}

impl<'a> Event<'a> {
    /// An action by `by` on `account`.
    pub fn by(
        by: &'a super::Actor,
        account: Uuid,
        action: &'static str,
        target: Option<String>,
    ) -> Event<'a> {
        Event {
            account_id: account,
            actor: &by.label,
            action,
            target,
            ip: by.ip.as_deref(),
            at: Utc::now(),
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Up to `limit` rows of `account` older than row `before` (all when `None`), newest first.
pub async fn page(
    db: &Db,
    account: Uuid,
    before: Option<i64>,
    limit: u32,
) -> sqlx::Result<Vec<Row>> {
    let before = before.unwrap_or(i64::MAX);
    with_db!(db, p => sqlx::query_as::<_, Row>(
        "SELECT id, actor, action, target, ip, created_at FROM audit_events \
         WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
        .bind(account).bind(before).bind(i64::from(limit)).fetch_all(p).await)
}
