//! Billing keys at rest: AES-256-GCM with a random 96-bit nonce per value, stored as
//! `v1:` + base64(nonce ‖ ciphertext ‖ tag). The plaintext never reaches a log line.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

/// Decode a configured key: 64 hex characters or base64 of exactly 32 bytes.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("not set".into());
    }
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| e.to_string())?
    } else {
        B64.decode(t)
            .map_err(|_| "neither 64 hex characters nor base64".to_string())?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("decodes to {} bytes, expected 32", b.len()))
}

pub use stellar_common::Secret;

pub fn encrypt(key: &[u8; 32], plaintext: &str) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    // Encryption with a valid key and nonce cannot fail for inputs of this size.
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
        .expect("AES-GCM encryption");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    format!("v1:{}", B64.encode(out))
}

pub fn decrypt(key: &[u8; 32], stored: &str) -> Result<Secret, &'static str> {
    let raw = stored.strip_prefix("v1:").ok_or("unknown format")?;
    let bytes = B64.decode(raw).map_err(|_| "bad base64")?;
    if bytes.len() < 12 + 16 {
        return Err("too short");
    }
    let (nonce, ct) = bytes.split_at(12);
    let cipher = Aes256Gcm::new(key.into());
    let pt = cipher
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| "authentication failed (wrong key?)")?;
    String::from_utf8(pt)
        .map(Secret::new)
        .map_err(|_| "not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let key = parse_key(&"ab".repeat(32)).unwrap();
        let a = encrypt(&key, "billing-key-123");
        let b = encrypt(&key, "billing-key-123");
        assert_ne!(a, b, "fresh nonce per value");
        assert_eq!(decrypt(&key, &a).unwrap().expose(), "billing-key-123");
        let mut raw = B64.decode(&a[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(decrypt(&key, &format!("v1:{}", B64.encode(raw))).is_err());
        let other = parse_key(&"cd".repeat(32)).unwrap();
        assert!(decrypt(&other, &a).is_err());
        assert!(!format!("{:?}", decrypt(&key, &a).unwrap()).contains("billing"));
    }

    #[test]
    fn key_formats() {
        assert!(parse_key("").is_err());
        assert!(parse_key("abcd").is_err());
        assert!(parse_key(&B64.encode([7u8; 32])).is_ok());
        assert!(parse_key(&B64.encode([7u8; 16])).is_err());
    }
}
