//! API keys: `sk-stellar-` followed by 32 lowercase hex characters from a CSPRNG.
//!
//! Only the lowercase hex SHA-256 of the key's bytes is stored (identical to the original
//! Python system, so keys it issued keep working), plus a short display prefix.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const PREFIX: &str = "sk-stellar-";
/// Length of a well-formed key: the prefix plus 32 hex characters.
pub const KEY_LEN: usize = PREFIX.len() + 32;
/// Characters of the key kept for display ("sk-stellar-1a2b").
pub const DISPLAY_PREFIX_LEN: usize = PREFIX.len() + 4;

/// A freshly generated key. `plaintext` is shown once and never stored.
pub struct NewKey {
    pub plaintext: String,
    pub hash: String,
    pub display_prefix: String,
}

/// Generate a key from the OS CSPRNG.
pub fn generate() -> NewKey {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = format!("{PREFIX}{}", hex::encode(bytes));
    NewKey {
        hash: hash_hex(&plaintext),
        display_prefix: plaintext[..DISPLAY_PREFIX_LEN].to_string(),
        plaintext,
    }
}

/// Whether `key` has the form `sk-stellar-` + 32 lowercase hex. Checked before any lookup, so
/// garbage never costs a cache or DB access.
pub fn is_well_formed(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.starts_with(PREFIX)
        && key.as_bytes()[PREFIX.len()..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// SHA-256 of the key's bytes.
pub fn hash_bytes(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lowercase hex SHA-256 of the key's bytes: the stored form.
pub fn hash_hex(key: &str) -> String {
    hex::encode(hash_bytes(key))
}

/// Constant-time equality for secrets (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert!(is_well_formed(&a.plaintext), "{}", a.plaintext);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.hash, hash_hex(&a.plaintext));
        assert_eq!(a.display_prefix.len(), DISPLAY_PREFIX_LEN);
        assert!(a.plaintext.starts_with(&a.display_prefix));
    }

    #[test]
    fn format_check() {
        assert!(is_well_formed(
            "sk-stellar-0123456789abcdef0123456789abcdef"
        ));
        assert!(!is_well_formed(
            "sk-stellar-0123456789ABCDEF0123456789abcdef"
        ));
        assert!(!is_well_formed(
            "sk-stellar-0123456789abcdef0123456789abcde"
        ));
        assert!(!is_well_formed(
            "sk-stellar-0123456789abcdef0123456789abcdeg"
        ));
        assert!(!is_well_formed(
            "pk-stellar-0123456789abcdef0123456789abcdef"
        ));
        assert!(!is_well_formed(""));
    }

    #[test]
    fn hash_matches_python_hashlib() {
        // hashlib.sha256(b"sk-stellar-0123456789abcdef0123456789abcdef").hexdigest()
        assert_eq!(
            hash_hex("sk-stellar-0123456789abcdef0123456789abcdef"),
            hex::encode(Sha256::digest(
                b"sk-stellar-0123456789abcdef0123456789abcdef"
            ))
        );
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
