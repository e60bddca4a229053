//! Accounts and API keys in the account DB: every write here appends its change-feed row in the
//! same transaction, so gateways evict within a second of the commit.

use crate::error::{ApiError, ApiResult};
use crate::identity::audit::{action, Event};
use crate::identity::{people, Actor, IdTx, Role};
use crate::subscription::Status;
use crate::webhooks::{event, key_data, WebhookTx};
use chrono::{DateTime, Utc};
use stellar_common::accounts::KeyScope;
use stellar_common::keys::{self, NewKey};
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// The columns of `users` billing works with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub tier: String,
    pub provider: Option<String>,
    pub provider_customer_id: Option<String>,
    pub provider_subscription_id: Option<String>,
    pub subscription_status: Status,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub past_due_since: Option<DateTime<Utc>>,
    pub provider_state_at: Option<DateTime<Utc>>,
    pub toss_customer_key: Option<String>,
    pub billing_key_enc: Option<String>,
    pub charge_attempts: i32,
    pub next_charge_at: Option<DateTime<Utc>>,
}

pub const USER_COLUMNS: &str = "id, email, tier, provider, provider_customer_id, provider_subscription_id, \
    subscription_status, current_period_end, cancel_at_period_end, past_due_since, provider_state_at, \
    toss_customer_key, billing_key_enc, charge_attempts, next_charge_at";

/// Trim and lowercase an e-mail address and check its form (RFC 5321 lengths, one `@`, a
/// dotted domain of letters, digits and hyphens). Returns the normalised address.
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_ascii_lowercase();
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return None;
    }
    let local_ok = local
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().any(|b| b.is_ascii_alphabetic()));
    (local_ok && domain_ok).then_some(e)
}

pub async fn user_by_id(db: &Db, id: Uuid) -> sqlx::Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    with_db!(db, p => sqlx::query_as::<_, User>(&sql).bind(id).fetch_optional(p).await)
}

pub async fn user_by_email(db: &Db, email: &str) -> sqlx::Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
    with_db!(db, p => sqlx::query_as::<_, User>(&sql).bind(email).fetch_optional(p).await)
}

/// The account whose Toss billing key has this SHA-256 hex (`BILLING_DELETED` names the key).
pub async fn user_by_billing_key_hash(db: &Db, hash: &str) -> sqlx::Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE billing_key_hash = $1");
    with_db!(db, p => sqlx::query_as::<_, User>(&sql).bind(hash).fetch_optional(p).await)
}

/// Outcome of registration.
pub enum Registered {
    Created {
        user_id: Uuid,
        tier: String,
        key: NewKey,
    },
    AlreadyExists,
}

/// Create a free account and its first key in one transaction. An existing e-mail gets nothing.
pub async fn register(db: &Db, email: &str, free_tier: &str) -> sqlx::Result<Registered> {
    create_account(db, Uuid::new_v4(), email, free_tier, None).await
}

/// What [`register`] does, with the user id chosen by the caller (checkout hands it to the
/// provider before the account exists) and, for Toss, the customerKey already handed out.
/// Whoever first names a new e-mail gets its first key; an existing e-mail gets nothing.
pub async fn create_account(
    db: &Db,
    uid: Uuid,
    email: &str,
    free_tier: &str,
    toss_customer_key: Option<&str>,
) -> sqlx::Result<Registered> {
    let (kid, now, key) = (Uuid::new_v4(), Utc::now(), keys::generate());
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, tier, toss_customer_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (email) DO NOTHING",
        )
        .bind(uid).bind(email).bind(free_tier).bind(toss_customer_key).bind(now)
        .execute(&mut *tx).await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Registered::AlreadyExists);
        }
        sqlx::query("INSERT INTO account_usage (user_id, memories_used, agents_used) VALUES ($1, 0, 0) ON CONFLICT (user_id) DO NOTHING")
            .bind(uid).execute(&mut *tx).await?;
        // The owner's membership has the account's id (identity::people).
        sqlx::query("INSERT INTO members (id, account_id, email, role, created_at) VALUES ($1, $1, $2, 'owner', $3)")
            .bind(uid).bind(email).bind(now).execute(&mut *tx).await?;
        let owner = Actor { member_id: uid, email: email.to_string(), label: email.to_string(), ip: None };
        tx.audit(&Event::by(&owner, uid, action::ACCOUNT_CREATED, None)).await?;
        tx.insert_key(kid, uid, &key, Some("Default"), &KeyScope::default(), &owner, now).await?;
        tx.audit(&Event::by(&owner, uid, action::KEY_CREATED, Some(key.display_prefix.clone()))).await?;
        tx.commit().await?;
    });
    Ok(Registered::Created {
        user_id: uid,
        tier: free_tier.to_string(),
        key,
    })
}

impl User {
    /// The account a checkout for a new e-mail will create (not in the DB yet): the provider
    /// is called with it first, so a refused checkout creates nothing.
    pub fn provisional(
        id: Uuid,
        email: &str,
        free_tier: &str,
        toss_customer_key: Option<String>,
    ) -> User {
        User {
            id,
            email: email.to_string(),
            tier: free_tier.to_string(),
            provider: None,
            provider_customer_id: None,
            provider_subscription_id: None,
            subscription_status: Status::None,
            current_period_end: None,
            cancel_at_period_end: false,
            past_due_since: None,
            provider_state_at: None,
            toss_customer_key,
            billing_key_enc: None,
            charge_attempts: 0,
            next_charge_at: None,
        }
    }
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: Option<String>,
    pub key_prefix: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The address of the person who created the key (null for keys from before teams).
    pub created_by_email: Option<String>,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub scope: KeyScope,
}

pub async fn list_keys(db: &Db, user: Uuid) -> sqlx::Result<Vec<KeyInfo>> {
    with_db!(db, p => sqlx::query_as::<_, KeyInfo>(
        "SELECT id, name, key_prefix, is_active, created_at, last_used_at, created_by_email, \
         read_only, agent, expires_at, requests_per_minute FROM api_keys WHERE user_id = $1 \
         ORDER BY is_active DESC, created_at DESC")
        .bind(user).fetch_all(p).await)
}

/// Create a key if the tier allows another active one. The first statement writes the user
/// row, which serialises concurrent creations for one account on both back-ends, so the count
/// that is checked is the count that holds at commit.
pub async fn create_key(
    db: &Db,
    user: Uuid,
    name: &str,
    scope: &KeyScope,
    by: &Actor,
    limit_for: impl Fn(&str) -> u32,
) -> ApiResult<(KeyInfo, NewKey)> {
    let (kid, now, key) = (Uuid::new_v4(), Utc::now(), keys::generate());
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let tier: Option<String> = sqlx::query_scalar("UPDATE users SET updated_at = $2 WHERE id = $1 RETURNING tier")
            .bind(user).bind(now).fetch_optional(&mut *tx).await?;
        let tier = tier.ok_or(ApiError::Unauthorized("Invalid API key"))?;
        let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND is_active = TRUE")
            .bind(user).fetch_one(&mut *tx).await?;
        let limit = limit_for(&tier);
        if active >= i64::from(limit) {
            tx.rollback().await?;
            return Err(ApiError::Forbidden(format!(
                "API key limit reached: the {tier} tier allows {limit} active key(s); revoke one or upgrade")));
        }
        tx.insert_key(kid, user, &key, Some(name), scope, by, now).await?;
        tx.audit(&Event::by(by, user, action::KEY_CREATED, Some(key.display_prefix.clone()))).await?;
        tx.emit_webhook(user, event::KEY_CREATED, key_data(kid, Some(scope), serde_json::json!({"name": name, "key_prefix": &key.display_prefix, "created_by": &by.email}))).await?;
        tx.commit().await?;
    });
    let info = KeyInfo {
        id: kid,
        name: Some(name.to_string()),
        key_prefix: key.display_prefix.clone(),
        is_active: true,
        created_at: now,
        last_used_at: None,
        created_by_email: Some(by.email.clone()),
        scope: scope.clone(),
    };
    Ok((info, key))
}

/// A member may revoke or rotate only the keys they created; admins and the owner any key of
/// the account. Keys from before teams (no creator) are the owner's. An unknown key passes
/// (the change itself answers 404).
pub async fn may_change_key(
    db: &Db,
    user: Uuid,
    key_id: Uuid,
    by: &Actor,
    role: Role,
) -> ApiResult<()> {
    if role >= Role::Admin {
        return Ok(());
    }
    let creator: Option<Option<Uuid>> = with_db!(db, p => sqlx::query_scalar(
        "SELECT created_by FROM api_keys WHERE id = $1 AND user_id = $2")
        .bind(key_id).bind(user).fetch_optional(p).await)?;
    match creator {
        Some(c) if c != Some(by.member_id) => {
            Err(people::forbidden(role, "change a key someone else created"))
        }
        _ => Ok(()),
    }
}

/// What [`revoke_key`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now, or it already was (revoking twice is fine).
    Yes,
    /// Not one of the user's keys.
    NotFound,
    /// It is the account's last active key: nothing changed (rotate it instead).
    LastActiveKey,
}

/// Revoke one of `user`'s keys, unless it is the account's last active key: an account must
/// keep a key it can sign in with (a known e-mail never gets a new one), so the last key can
/// only be rotated. The first statement writes the user row, which serialises this with
/// concurrent revocations, rotations and creations for the account on both back-ends, so two
/// revocations of an account's last two keys cannot both pass the check.
pub async fn revoke_key(db: &Db, user: Uuid, key_id: Uuid, by: &Actor) -> sqlx::Result<Revoked> {
    let now = Utc::now();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let found: Option<String> = sqlx::query_scalar("UPDATE users SET updated_at = $2 WHERE id = $1 RETURNING tier")
            .bind(user).bind(now).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            tx.rollback().await?;
            return Ok(Revoked::NotFound);
        }
        let hash: Option<String> = sqlx::query_scalar(
            "UPDATE api_keys SET is_active = FALSE WHERE id = $1 AND user_id = $2 AND is_active = TRUE RETURNING key_hash")
            .bind(key_id).bind(user).fetch_optional(&mut *tx).await?;
        match hash {
            Some(h) => {
                let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND is_active = TRUE")
                    .bind(user).fetch_one(&mut *tx).await?;
                if left == 0 {
                    tx.rollback().await?;
                    return Ok(Revoked::LastActiveKey);
                }
                tx.feed_revoked(user, &h, now).await?;
                tx.audit(&Event::by(by, user, action::KEY_REVOKED, Some(key_id.to_string()))).await?;
                tx.emit_webhook(user, event::KEY_REVOKED, key_data(key_id, None, serde_json::json!({"revoked_by": &by.email}))).await?;
                tx.commit().await?;
                Ok(Revoked::Yes)
            }
            None => {
                let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE id = $1 AND user_id = $2")
                    .bind(key_id).bind(user).fetch_one(&mut *tx).await?;
                tx.rollback().await?;
                Ok(if exists > 0 { Revoked::Yes } else { Revoked::NotFound })
            }
        }
    })
}

/// A key issued by [`rotate_key`] in place of `replaces`.
pub struct Rotated {
    pub info: KeyInfo,
    pub key: NewKey,
    pub replaces: Uuid,
}

/// Revoke one of `user`'s active keys and issue a replacement with the same name, in one
/// transaction (both change-feed rows included). The number of active keys does not change,
/// so this is allowed at the tier's key limit, and it is how the last key is replaced.
/// `None` when the key is not the user's or is already revoked (nothing changes).
pub async fn rotate_key(
    db: &Db,
    user: Uuid,
    key_id: Uuid,
    overlap: Option<chrono::Duration>,
    by: &Actor,
) -> sqlx::Result<Option<Rotated>> {
    let (kid, now, key) = (Uuid::new_v4(), Utc::now(), keys::generate());
    type Old = (
        String,
        Option<String>,
        bool,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i32>,
    );
    let (name, scope) = with_db!(db, p => {
        let mut tx = p.begin().await?;
        // Written first, as in create_key/revoke_key: serialises key changes of the account.
        let found: Option<String> = sqlx::query_scalar("UPDATE users SET updated_at = $2 WHERE id = $1 RETURNING tier")
            .bind(user).bind(now).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        let old: Option<Old> = sqlx::query_as(
            "SELECT key_hash, name, read_only, agent, expires_at, requests_per_minute FROM api_keys \
             WHERE id = $1 AND user_id = $2 AND is_active = TRUE")
            .bind(key_id).bind(user).fetch_optional(&mut *tx).await?;
        let Some((old_hash, name, read_only, agent, expires_at, requests_per_minute)) = old else {
            tx.rollback().await?;
            return Ok(None);
        };
        // The replacement has the old key's scope; the old key stops now, or at the end of the
        // overlap (never later than its own expiry).
        let scope = KeyScope { read_only, agent, expires_at, requests_per_minute };
        match overlap.filter(|d| *d > chrono::Duration::zero()) {
            None => {
                sqlx::query("UPDATE api_keys SET is_active = FALSE WHERE id = $1").bind(key_id).execute(&mut *tx).await?;
                tx.feed_revoked(user, &old_hash, now).await?;
            }
            Some(d) => {
                let until = expires_at.map_or(now + d, |t| t.min(now + d));
                sqlx::query("UPDATE api_keys SET expires_at = $2 WHERE id = $1").bind(key_id).bind(until).execute(&mut *tx).await?;
                sqlx::query(stellar_common::feed::APPEND_SQL).bind(Some(user)).bind(Some(old_hash.as_str()))
                    .bind(stellar_common::feed::kind::KEY_CHANGED).bind(now).execute(&mut *tx).await?;
            }
        }
        tx.insert_key(kid, user, &key, name.as_deref(), &scope, by, now).await?;
        tx.audit(&Event::by(by, user, action::KEY_ROTATED, Some(format!("{key_id} -> {}", key.display_prefix)))).await?;
        tx.emit_webhook(user, event::KEY_ROTATED, key_data(key_id, None, serde_json::json!({"new_key_id": kid, "new_key_prefix": &key.display_prefix, "overlap_secs": overlap.map_or(0, |d| d.num_seconds().max(0)), "rotated_by": &by.email}))).await?;
        tx.commit().await?;
        (name, scope)
    });
    let info = KeyInfo {
        id: kid,
        name,
        key_prefix: key.display_prefix.clone(),
        is_active: true,
        created_at: now,
        last_used_at: None,
        created_by_email: Some(by.email.clone()),
        scope,
    };
    Ok(Some(Rotated {
        info,
        key,
        replaces: key_id,
    }))
}

#[derive(Debug, Default)]
pub struct Usage {
    pub memories_used: i64,
    pub agents_used: i64,
    pub keys_used: i64,
}

pub async fn usage(db: &Db, user: Uuid) -> sqlx::Result<Usage> {
    let row: Option<(i64, i32)> = with_db!(db, p => sqlx::query_as(
        "SELECT memories_used, agents_used FROM account_usage WHERE user_id = $1").bind(user).fetch_optional(p).await)?;
    let agents: i64 = with_db!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM account_agents WHERE user_id = $1")
        .bind(user).fetch_one(p).await)?;
    let keys_used: i64 = with_db!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND is_active = TRUE")
        .bind(user).fetch_one(p).await)?;
    let (memories_used, agents_used) = row.map(|(m, a)| (m, i64::from(a))).unwrap_or((0, 0));
    Ok(Usage {
        memories_used,
        agents_used: agents_used.max(agents),
        keys_used,
    })
}

/// Requests per hour for the 24 hours ending with the current one, oldest first, zero-filled.
pub async fn usage_history(
    db: &Db,
    user: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<(i64, i64)>> {
    let current = now.timestamp() - now.timestamp().rem_euclid(3600);
    let first = current - 23 * 3600;
    let rows: Vec<(i64, i64)> = with_db!(db, p => sqlx::query_as(
        "SELECT hour_start, requests FROM usage_hourly WHERE user_id = $1 AND hour_start >= $2 AND hour_start <= $3")
        .bind(user).bind(first).bind(current).fetch_all(p).await)?;
    Ok((0..24)
        .map(|i| {
            let h = first + i * 3600;
            (
                h,
                rows.iter().filter(|(s, _)| *s == h).map(|(_, r)| *r).sum(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::normalize_email as n;

    #[test]
    fn emails() {
        assert_eq!(
            n("  Alice@Example.COM ").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            n("a.b+tag@sub.example.co").as_deref(),
            Some("a.b+tag@sub.example.co")
        );
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@-b.com",
            "a@b..com",
            ".a@b.com",
            "a..b@c.com",
            "a@b.c",
        ] {
            assert!(n(bad).is_none(), "{bad}");
        }
        assert!(n(&format!("{}@example.com", "a".repeat(65))).is_none());
    }
}
