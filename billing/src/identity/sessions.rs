//! Dashboard sessions: the `stellar_session` cookie (HttpOnly, SameSite=Lax, Path=/, Secure
//! unless the public URL is on a loopback host), its CSRF token, lookup, listing and revoking.
//!
//! The cookie holds a random token; only its SHA-256 is stored. The CSRF token is derived from
//! the session token (SHA-256 of a fixed label and the token), so it needs no storage, changes
//! with every session, and cannot be computed by a page that cannot read the cookie.

use super::Role;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use stellar_common::keys::ct_eq;
use stellar_common::{with_db, Db};
use uuid::Uuid;

pub const COOKIE: &str = "stellar_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY_SECS: i64 = 300;

/// The CSRF token of a session token.
pub fn csrf_for(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"stellar-gate csrf v1\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// Constant-time check of a request's CSRF header against the session token.
pub fn csrf_ok(session_token: &str, header: Option<&str>) -> bool {
    header.is_some_and(|h| ct_eq(h.trim().as_bytes(), csrf_for(session_token).as_bytes()))
}

/// Whether cookies for `public_url` get `Secure`: everywhere except loopback hosts (a local run
/// over plain HTTP must still be able to sign in).
pub fn secure_cookies(public_url: &str) -> bool {
    let host = url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    !matches!(
        host.as_deref(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    ) && !host.as_deref().is_some_and(|h| h.starts_with("127."))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    set_cookie("", 0, secure)
}

/// The session token in a `Cookie` header, if any.
pub fn token_from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A live session and the membership it acts as.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: Uuid,
    pub member_id: Uuid,
    pub account_id: Uuid,
    pub email: String,
    pub role: Role,
    pub tier: String,
}

type LiveRow = (Uuid, Uuid, Uuid, String, String, String, DateTime<Utc>);

/// The unexpired session with this token hash; refreshes `last_seen_at` now and then.
pub async fn lookup(db: &Db, hash: &str, now: DateTime<Utc>) -> sqlx::Result<Option<Live>> {
    let row: Option<LiveRow> = with_db!(db, p => sqlx::query_as(
        "SELECT s.id, s.member_id, m.account_id, m.email, m.role, u.tier, s.last_seen_at \
         FROM sessions s JOIN members m ON m.id = s.member_id JOIN users u ON u.id = m.account_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2")
        .bind(hash).bind(now).fetch_optional(p).await)?;
    let Some((id, member_id, account_id, email, role, tier, seen)) = row else {
        return Ok(None);
    };
    let Some(role) = Role::parse(&role) else {
        return Ok(None);
    };
    if now - seen > Duration::seconds(TOUCH_EVERY_SECS) {
        with_db!(db, p => sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1")
            .bind(id).bind(now).execute(p).await.map(|_| ()))?;
    }
    Ok(Some(Live {
        id,
        member_id,
        account_id,
        email,
        role,
        tier,
    }))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Listed {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[sqlx(skip)]
    pub current: bool,
}

/// The live sessions of one membership, newest first.
pub async fn list(
    db: &Db,
    member: Uuid,
    current: Option<Uuid>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Listed>> {
    let mut rows: Vec<Listed> = with_db!(db, p => sqlx::query_as::<_, Listed>(
        "SELECT id, created_at, last_seen_at, expires_at, ip, user_agent FROM sessions \
         WHERE member_id = $1 AND expires_at > $2 ORDER BY created_at DESC")
        .bind(member).bind(now).fetch_all(p).await)?;
    for r in &mut rows {
        r.current = Some(r.id) == current;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_csrf() {
        let c = set_cookie("abc", 60, false);
        assert_eq!(
            c,
            "stellar_session=abc; HttpOnly; SameSite=Lax; Path=/; Max-Age=60"
        );
        assert!(set_cookie("abc", 60, true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        assert!(!secure_cookies("http://127.0.0.1:8080"));
        assert!(!secure_cookies("http://localhost:8080"));
        assert!(!secure_cookies("http://[::1]:8080"));
        assert!(secure_cookies("https://memory.example.com"));
        assert_eq!(
            token_from_cookie_header("a=1; stellar_session=tok ; b=2"),
            Some("tok")
        );
        assert_eq!(token_from_cookie_header("stellar_session="), None);
        assert_eq!(token_from_cookie_header("xstellar_session=1"), None);
        let t = "f".repeat(64);
        assert!(csrf_ok(&t, Some(&csrf_for(&t))));
        assert!(!csrf_ok(&t, Some(&csrf_for("other"))));
        assert!(!csrf_ok(&t, None));
        assert_ne!(csrf_for(&t), super::super::tokens::generate().hash);
    }
}
