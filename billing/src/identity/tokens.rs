//! Single-use links (`auth_tokens`): verification, sign-in and invitation. A token is 32 bytes
//! from the OS CSPRNG as hex; only its SHA-256 is stored. Consuming is one conditional
//! `UPDATE … RETURNING` inside the caller's transaction, so a token is used at most once even
//! when two requests race, and a failure later in that transaction leaves it unused.

use crate::error::ApiError;
use chrono::{DateTime, Utc};
use rand::RngCore;
use stellar_common::keys::hash_hex;
use uuid::Uuid;

/// `auth_tokens.purpose` values.
pub mod purpose {
    pub const VERIFICATION: &str = "verification";
    pub const SIGN_IN: &str = "sign_in";
    pub const INVITATION: &str = "invitation";
}

/// A fresh token: the plaintext goes into the mail, the hash into the table.
pub struct Fresh {
    pub plaintext: String,
    pub hash: String,
}

pub fn generate() -> Fresh {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = hex::encode(bytes);
    Fresh {
        hash: hash_hex(&plaintext),
        plaintext,
    }
}

/// Whether `s` has a token's form (64 lowercase hex): anything else is refused unread.
pub fn is_well_formed(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The link a mail carries: the token in the fragment, which browsers never send to a server,
/// so it stays out of access logs and `Referer` headers.
pub fn link(public_url: &str, token: &str) -> String {
    format!(
        "{}/auth/link#token={token}",
        public_url.trim_end_matches('/')
    )
}

/// A consumed token's row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Consumed {
    pub id: Uuid,
    pub purpose: String,
    pub email: String,
    pub account_id: Option<Uuid>,
    pub role: Option<String>,
    pub invited_by: Option<Uuid>,
    pub next: Option<String>,
}

pub const CONSUME_SQL: &str = "UPDATE auth_tokens SET used_at = $2 \
     WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
     RETURNING id, purpose, email, account_id, role, invited_by, next";

pub const STATE_SQL: &str = "SELECT used_at, expires_at FROM auth_tokens WHERE token_hash = $1";

pub const NOT_VALID: &str = "This link is not valid";

/// Why a token that could not be consumed was refused, from its row (if any).
pub fn refusal(state: Option<(Option<DateTime<Utc>>, DateTime<Utc>)>) -> ApiError {
    match state {
        Some((Some(_), _)) => ApiError::Gone("This link has already been used".into()),
        Some((None, _)) => ApiError::Gone("This link has expired: ask for a new one".into()),
        None => ApiError::BadRequest(NOT_VALID.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a.plaintext, b.plaintext);
        assert!(is_well_formed(&a.plaintext));
        assert_eq!(a.hash, hash_hex(&a.plaintext));
        assert_ne!(a.hash, a.plaintext);
        for bad in [
            "",
            "00",
            &a.plaintext.to_uppercase(),
            &format!("{}0", a.plaintext),
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
        assert_eq!(
            link("https://x.example/", "ab"),
            "https://x.example/auth/link#token=ab"
        );
        assert_eq!(refusal(None).status().as_u16(), 400);
        assert_eq!(refusal(Some((None, Utc::now()))).status().as_u16(), 410);
        assert_eq!(
            refusal(Some((Some(Utc::now()), Utc::now())))
                .status()
                .as_u16(),
            410
        );
    }
}
