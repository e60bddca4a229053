//! The people of an account: memberships, invitations, role changes and removal, with the role
//! rules of [`Role::manages`]. Each change is one transaction with its audit row; removing a
//! member ends their sessions and revokes the keys they created (gateways within a second).

use super::audit::{action, Event};
use super::tokens::{self, purpose};
use super::tx::TokenInsert;
use super::{Actor, IdTx, Role};
use crate::error::{ApiError, ApiResult};
use crate::mail::{self, Template};
use crate::settings::Settings;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use stellar_common::{with_db, Db};
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Member {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Invitation {
    pub id: Uuid,
    pub email: String,
    pub role: Option<String>,
    pub invited_by: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// One membership of an address.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Membership {
    pub account_id: Uuid,
    pub owner_email: String,
    pub role: String,
    pub tier: String,
}

/// "a member", "an admin", "an owner".
fn article(r: Role) -> String {
    match r {
        Role::Member => "a member".into(),
        _ => format!("an {}", r.as_str()),
    }
}

/// The 403 for something a role may not do.
pub fn forbidden(role: Role, what: &str) -> ApiError {
    ApiError::Forbidden(format!("Your role ({}) cannot {what}", role.as_str()))
}

pub async fn members(db: &Db, account: Uuid) -> sqlx::Result<Vec<Member>> {
    with_db!(db, p => sqlx::query_as::<_, Member>(
        "SELECT id, email, role, created_at FROM members WHERE account_id = $1 ORDER BY created_at, id")
        .bind(account).fetch_all(p).await)
}

/// Invitations not yet accepted, cancelled or expired.
pub async fn pending(db: &Db, account: Uuid, now: DateTime<Utc>) -> sqlx::Result<Vec<Invitation>> {
    with_db!(db, p => sqlx::query_as::<_, Invitation>(
        "SELECT t.id, t.email, t.role, m.email AS invited_by, t.expires_at FROM auth_tokens t \
         LEFT JOIN members m ON m.id = t.invited_by \
         WHERE t.account_id = $1 AND t.purpose = 'invitation' AND t.used_at IS NULL AND t.expires_at > $2 \
         ORDER BY t.created_at, t.id")
        .bind(account).bind(now).fetch_all(p).await)
}

/// Every account the address belongs to, oldest membership first.
pub async fn memberships(db: &Db, email: &str) -> sqlx::Result<Vec<Membership>> {
    with_db!(db, p => sqlx::query_as::<_, Membership>(
        "SELECT m.account_id, u.email AS owner_email, m.role, u.tier FROM members m \
         JOIN users u ON u.id = m.account_id WHERE m.email = $1 ORDER BY m.created_at, m.id")
        .bind(email).fetch_all(p).await)
}

/// Invite `email` as `role`; returns the invitation's id and expiry.
pub async fn invite(
    db: &Db,
    s: &Settings,
    by: &Actor,
    by_role: Role,
    account: Uuid,
    email: &str,
    role: Role,
) -> ApiResult<(Uuid, DateTime<Utc>)> {
    if !by_role.manages(role) {
        return Err(forbidden(by_role, &format!("invite {}", article(role))));
    }
    let (id, now, fresh) = (Uuid::new_v4(), Utc::now(), tokens::generate());
    let expires_at = now
        + Duration::seconds(i64::try_from(s.auth.invitation_ttl_secs).unwrap_or(i64::MAX / 1000));
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        // Written first: serialises changes to the account's people on both back-ends.
        let tier: String = sqlx::query_scalar("UPDATE users SET updated_at = $2 WHERE id = $1 RETURNING tier")
            .bind(account).bind(now).fetch_one(&mut *tx).await?;
        let already: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE account_id = $1 AND email = $2")
            .bind(account).bind(email).fetch_one(&mut *tx).await?;
        if already > 0 {
            tx.rollback().await?;
            return Err(ApiError::Conflict(format!("{email} is already a member of this account")));
        }
        // A new invitation to the same address replaces the pending one.
        sqlx::query("UPDATE auth_tokens SET used_at = $3 WHERE account_id = $1 AND email = $2 AND purpose = 'invitation' AND used_at IS NULL")
            .bind(account).bind(email).bind(now).execute(&mut *tx).await?;
        let seats: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM members WHERE account_id = $1) + \
             (SELECT COUNT(*) FROM auth_tokens WHERE account_id = $1 AND purpose = 'invitation' AND used_at IS NULL AND expires_at > $2)")
            .bind(account).bind(now).fetch_one(&mut *tx).await?;
        let max = s.tiers.get_or_default(&tier).max_members;
        if seats >= i64::from(max) {
            tx.rollback().await?;
            return Err(ApiError::Forbidden(format!(
                "Your plan ({tier}) allows {max} people, pending invitations included: upgrade or remove someone first")));
        }
        tx.insert_token(&TokenInsert {
            id, hash: &fresh.hash, purpose: purpose::INVITATION, email, account_id: Some(account),
            role: Some(role.as_str()), invited_by: Some(by.member_id), next: None, now, expires_at,
        }).await?;
        let link = tokens::link(s.public_url(), &fresh.plaintext);
        mail::enqueue(&mut tx, email, &Template::Invitation { link, invited_by: by.email.clone(), role: role.as_str().into() }).await?;
        tx.audit(&Event::by(by, account, action::MEMBER_INVITED, Some(format!("{email} as {}", role.as_str())))).await?;
        tx.commit().await?;
    });
    Ok((id, expires_at))
}

/// The member `id` of `account`, if any.
async fn member(db: &Db, account: Uuid, id: Uuid) -> sqlx::Result<Option<Member>> {
    with_db!(db, p => sqlx::query_as::<_, Member>(
        "SELECT id, email, role, created_at FROM members WHERE id = $1 AND account_id = $2")
        .bind(id).bind(account).fetch_optional(p).await)
}

fn role_of(m: &Member) -> Role {
    Role::parse(&m.role).unwrap_or(Role::Member)
}

/// Change member `id`'s role: both the current and the new role must be below the caller's.
pub async fn change_role(
    db: &Db,
    by: &Actor,
    by_role: Role,
    account: Uuid,
    id: Uuid,
    role: Role,
) -> ApiResult<Member> {
    let m = member(db, account, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("Member not found".into()))?;
    if !by_role.manages(role_of(&m)) || !by_role.manages(role) {
        return Err(forbidden(
            by_role,
            &format!("make {} {}", m.email, article(role)),
        ));
    }
    let now = Utc::now();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query("UPDATE members SET role = $3 WHERE id = $1 AND account_id = $2")
            .bind(id).bind(account).bind(role.as_str()).execute(&mut *tx).await?;
        tx.audit(&Event { at: now, ..Event::by(by, account, action::MEMBER_ROLE_CHANGED, Some(format!("{}: {} -> {}", m.email, m.role, role.as_str()))) }).await?;
        tx.commit().await?;
    });
    Ok(Member {
        role: role.as_str().into(),
        ..m
    })
}

/// Remove member `id` (a member may remove themselves; the owner cannot be removed): their
/// sessions end and the keys they created are revoked, in one transaction.
pub async fn remove(db: &Db, by: &Actor, by_role: Role, account: Uuid, id: Uuid) -> ApiResult<()> {
    let m = member(db, account, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("Member not found".into()))?;
    let own = m.id == by.member_id;
    if role_of(&m) == Role::Owner {
        return Err(ApiError::Forbidden(
            "The owner cannot be removed from the account".into(),
        ));
    }
    if !own && !by_role.manages(role_of(&m)) {
        return Err(forbidden(by_role, &format!("remove {}", m.email)));
    }
    let now = Utc::now();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1").bind(account).bind(now).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM sessions WHERE member_id = $1").bind(id).execute(&mut *tx).await?;
        let revoked: Vec<String> = sqlx::query_scalar(
            "UPDATE api_keys SET is_active = FALSE WHERE user_id = $1 AND created_by = $2 AND is_active = TRUE RETURNING key_hash")
            .bind(account).bind(id).fetch_all(&mut *tx).await?;
        for h in &revoked {
            tx.feed_revoked(account, h, now).await?;
        }
        sqlx::query("DELETE FROM members WHERE id = $1 AND account_id = $2").bind(id).bind(account).execute(&mut *tx).await?;
        tx.audit(&Event::by(by, account, action::MEMBER_REMOVED, Some(format!("{} ({} key(s) revoked)", m.email, revoked.len())))).await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Cancel a pending invitation of `account`.
pub async fn cancel_invitation(
    db: &Db,
    by: &Actor,
    by_role: Role,
    account: Uuid,
    id: Uuid,
) -> ApiResult<()> {
    let now = Utc::now();
    let inv = pending(db, account, now)
        .await?
        .into_iter()
        .find(|i| i.id == id);
    let inv = inv.ok_or_else(|| ApiError::NotFound("Invitation not found".into()))?;
    let role = inv
        .role
        .as_deref()
        .and_then(Role::parse)
        .unwrap_or(Role::Member);
    if !by_role.manages(role) {
        return Err(forbidden(by_role, "cancel this invitation"));
    }
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query("UPDATE auth_tokens SET used_at = $3 WHERE id = $1 AND account_id = $2 AND used_at IS NULL")
            .bind(id).bind(account).bind(now).execute(&mut *tx).await?;
        tx.audit(&Event::by(by, account, action::INVITATION_CANCELLED, Some(inv.email.clone()))).await?;
        tx.commit().await?;
    });
    Ok(())
}
