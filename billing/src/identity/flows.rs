//! The flows that mail a link and the one that opens it, each a single transaction: the
//! account change, the link's row, the mail (outbox) and the audit rows commit together or not
//! at all.
//!
//! - [`register`]: a new address gets an unverified account without keys and a verification
//!   link; a known one a sign-in link (a verification link while unverified).
//! - [`sign_in`]: a sign-in link to an address that owns or belongs to an account; nothing
//!   for an unknown address (the caller answers the same either way).
//! - [`open`]: consume a link; verify, join or sign in; start a session.

use super::audit::{action, Event};
use super::tokens::{self, purpose, Consumed};
use super::tx::{SessionInsert, TokenInsert};
use super::{Actor, IdTx, Role};
use crate::error::{ApiError, ApiResult};
use crate::mail::{self, Template};
use crate::settings::Settings;
use chrono::{DateTime, Duration, Utc};
use stellar_common::accounts::KeyScope;
use stellar_common::keys;
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// Where a request came from, for sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

fn secs(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000))
}

/// A link to mail: its row and the mail that carries it.
struct Link<'a> {
    purpose: &'static str,
    email: &'a str,
    account: Uuid,
    next: Option<&'a str>,
}

/// `POST /auth/register` without immediate keys (docs/billing-api.md, "People").
pub async fn register(
    db: &Db,
    s: &Settings,
    email: &str,
    client: &Client,
    next: Option<&str>,
) -> sqlx::Result<()> {
    let (uid, now) = (Uuid::new_v4(), Utc::now());
    let free = s.tiers.default_tier().name.clone();
    let fresh = tokens::generate();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) ON CONFLICT (email) DO NOTHING")
            .bind(uid).bind(email).bind(&free).bind(now).execute(&mut *tx).await?;
        let (account, verified) = if inserted.rows_affected() == 1 {
            sqlx::query("INSERT INTO account_usage (user_id, memories_used, agents_used) VALUES ($1, 0, 0) ON CONFLICT (user_id) DO NOTHING")
                .bind(uid).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO members (id, account_id, email, role, created_at) VALUES ($1, $1, $2, 'owner', $3)")
                .bind(uid).bind(email).bind(now).execute(&mut *tx).await?;
            tx.audit(&Event { account_id: uid, actor: email, action: action::ACCOUNT_CREATED, target: None, ip: client.ip.as_deref(), at: now }).await?;
            (uid, false)
        } else {
            let (id, at): (Uuid, Option<DateTime<Utc>>) = sqlx::query_as(
                "SELECT id, email_verified_at FROM users WHERE email = $1")
                .bind(email).fetch_one(&mut *tx).await?;
            (id, at.is_some())
        };
        let purpose = if verified { purpose::SIGN_IN } else { purpose::VERIFICATION };
        let link = Link { purpose, email, account, next };
        issue(&mut tx, s, &fresh, &link, now).await?;
        tx.commit().await?;
    });
    Ok(())
}

/// `POST /auth/sign-in`: whether a link was mailed (the answer does not say).
pub async fn sign_in(db: &Db, s: &Settings, email: &str, next: Option<&str>) -> sqlx::Result<bool> {
    let (now, fresh) = (Utc::now(), tokens::generate());
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let owner: Option<(Uuid, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT id, email_verified_at FROM users WHERE email = $1")
            .bind(email).fetch_optional(&mut *tx).await?;
        let target = match owner {
            Some((id, at)) => Some((id, if at.is_some() { purpose::SIGN_IN } else { purpose::VERIFICATION })),
            None => sqlx::query_scalar::<_, Uuid>(
                "SELECT account_id FROM members WHERE email = $1 ORDER BY created_at, id LIMIT 1")
                .bind(email).fetch_optional(&mut *tx).await?
                .map(|id| (id, purpose::SIGN_IN)),
        };
        let Some((account, purpose)) = target else {
            tx.rollback().await?;
            return Ok(false);
        };
        issue(&mut tx, s, &fresh, &Link { purpose, email, account, next }, now).await?;
        tx.commit().await?;
    });
    Ok(true)
}

/// Store a verification or sign-in link and queue its mail, in `tx`.
async fn issue(
    tx: &mut (impl IdTx + mail::AccountTx),
    s: &Settings,
    fresh: &tokens::Fresh,
    l: &Link<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    tx.insert_token(&TokenInsert {
        id: Uuid::new_v4(),
        hash: &fresh.hash,
        purpose: l.purpose,
        email: l.email,
        account_id: Some(l.account),
        role: None,
        invited_by: None,
        next: l.next,
        now,
        expires_at: now + secs(s.auth.link_ttl_secs),
    })
    .await?;
    let link = tokens::link(s.public_url(), &fresh.plaintext);
    let template = if l.purpose == purpose::SIGN_IN {
        Template::SignIn { link }
    } else {
        Template::Verification { link }
    };
    mail::enqueue(tx, l.email, &template).await.map(|_| ())
}

/// What opening a link did.
#[derive(Debug)]
pub struct Opened {
    pub purpose: String,
    pub email: String,
    pub account_id: Uuid,
    pub role: Role,
    /// The new session's token (for the cookie) and id.
    pub session_token: String,
    pub session_id: Uuid,
    /// The account's first key, when verification issued it (shown once).
    pub api_key: Option<String>,
    pub next: Option<String>,
}

/// `POST /auth/link`: consume the token, do what it is for, and start a session, in one
/// transaction; on any error nothing changes (the token stays unused).
pub async fn open(db: &Db, s: &Settings, token: &str, client: &Client) -> ApiResult<Opened> {
    if !tokens::is_well_formed(token) {
        return Err(ApiError::BadRequest(tokens::NOT_VALID.into()));
    }
    let (hash, now) = (keys::hash_hex(token), Utc::now());
    let session = tokens::generate();
    let session_id = Uuid::new_v4();
    let ip = client.ip.as_deref();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let consumed: Option<Consumed> = sqlx::query_as(tokens::CONSUME_SQL)
            .bind(&hash).bind(now).fetch_optional(&mut *tx).await?;
        let Some(c) = consumed else {
            let state: Option<(Option<DateTime<Utc>>, DateTime<Utc>)> = sqlx::query_as(tokens::STATE_SQL)
                .bind(&hash).fetch_optional(&mut *tx).await?;
            tx.rollback().await?;
            return Err(tokens::refusal(state));
        };
        let not_valid = || ApiError::BadRequest(tokens::NOT_VALID.into());
        let account = c.account_id.ok_or_else(not_valid)?;
        let tier: String = sqlx::query_scalar("SELECT tier FROM users WHERE id = $1")
            .bind(account).fetch_optional(&mut *tx).await?.ok_or_else(not_valid)?;
        let mut api_key = None;
        let existing: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT id, role FROM members WHERE account_id = $1 AND email = $2")
            .bind(account).bind(&c.email).fetch_optional(&mut *tx).await?;
        let (member_id, role) = match (c.purpose.as_str(), existing) {
            (purpose::VERIFICATION, _) => {
                // Only the owner's address is ever verified this way; the owner's member id is
                // the account id.
                let actor = Actor { member_id: account, email: c.email.clone(), label: c.email.clone(), ip: client.ip.clone() };
                let verified = sqlx::query("UPDATE users SET email_verified_at = $2, updated_at = $2 WHERE id = $1 AND email_verified_at IS NULL")
                    .bind(account).bind(now).execute(&mut *tx).await?;
                if verified.rows_affected() == 1 {
                    tx.audit(&Event::by(&actor, account, action::EMAIL_VERIFIED, Some(c.email.clone()))).await?;
                }
                let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND is_active = TRUE")
                    .bind(account).fetch_one(&mut *tx).await?;
                if active == 0 {
                    let key = keys::generate();
                    tx.insert_key(Uuid::new_v4(), account, &key, Some("Default"), &KeyScope::default(), &actor, now).await?;
                    tx.audit(&Event::by(&actor, account, action::KEY_CREATED, Some(key.display_prefix.clone()))).await?;
                    api_key = Some(key.plaintext);
                }
                (account, Role::Owner)
            }
            (purpose::SIGN_IN, Some((id, role))) => (id, Role::parse(&role).ok_or_else(not_valid)?),
            (purpose::INVITATION, Some((id, role))) => (id, Role::parse(&role).ok_or_else(not_valid)?),
            (purpose::INVITATION, None) => {
                let role = c.role.as_deref().and_then(Role::parse).filter(|r| *r < Role::Owner).ok_or_else(not_valid)?;
                let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE account_id = $1")
                    .bind(account).fetch_one(&mut *tx).await?;
                let max = s.tiers.get_or_default(&tier).max_members;
                if members >= i64::from(max) {
                    tx.rollback().await?;
                    return Err(ApiError::Forbidden(format!(
                        "This account has no free seat: its plan ({tier}) allows {max} people")));
                }
                let id = Uuid::new_v4();
                sqlx::query("INSERT INTO members (id, account_id, email, role, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id).bind(account).bind(&c.email).bind(role.as_str()).bind(now)
                    .execute(&mut *tx).await?;
                tx.audit(&Event { account_id: account, actor: &c.email, action: action::MEMBER_JOINED, target: Some(format!("{} as {}", c.email, role.as_str())), ip, at: now }).await?;
                (id, role)
            }
            _ => {
                tx.rollback().await?;
                return Err(not_valid());
            }
        };
        tx.insert_session(&SessionInsert {
            id: session_id,
            hash: &session.hash,
            member_id,
            now,
            expires_at: now + secs(s.auth.session_ttl_secs),
            ip,
            user_agent: client.user_agent.as_deref(),
        }).await?;
        tx.audit(&Event { account_id: account, actor: &c.email, action: action::SIGN_IN, target: None, ip, at: now }).await?;
        tx.commit().await?;
        Ok(Opened {
            purpose: c.purpose,
            email: c.email,
            account_id: account,
            role,
            session_token: session.plaintext,
            session_id,
            api_key,
            next: c.next,
        })
    })
}
