//! Lemon Squeezy's `X-Signature`: the hex HMAC-SHA256 of the raw body, keyed with the webhook's
//! signing secret. Nothing time-based is signed, so replays are stopped by event dedupe only.

use super::{mac, verify_hex};
use hmac::Mac;

/// The header's name (lower case, as `http::HeaderMap` looks it up).
pub const HEADER: &str = "x-signature";

/// Check `X-Signature` against the raw body in constant time. Surrounding white space is
/// tolerated; anything that is not the hex of the right MAC is refused.
pub fn verify(secret: &str, body: &[u8], signature_hex: &str) -> bool {
    let mut mac = mac(secret);
    mac.update(body);
    verify_hex(mac, signature_hex.trim().as_bytes())
}

/// The `X-Signature` Lemon Squeezy would send for `body` (for tests, fuzzing and local tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::{sign, verify};

    #[test]
    fn known_answer_vector() {
        // payments.md §4.2.
        let body = br#"{"meta":{"event_name":"subscription_created","custom_data":{"user_id":"42"}},"data":{"type":"subscriptions","id":"1"}}"#;
        let good = "8f80da199ee8a716d2ce48f7c97736fa44295344641076b51b029ab6f8036fba";
        assert_eq!(sign("ls_signing_secret", body), good);
        assert!(verify("ls_signing_secret", body, good));
        assert!(verify("ls_signing_secret", body, &good.to_uppercase()));
        assert!(!verify(
            "ls_signing_secret",
            body,
            "8f80da199ee8a716d2ce48f7c97736fa44295344641076b51b029ab6f8036fbb"
        ));
        assert!(!verify("ls_signing_secret", body, &good[..62]));
        assert!(!verify("ls_signing_secret", body, &format!("{good}00")));
        assert!(!verify("ls_signing_secret", body, "zz"));
        assert!(!verify("ls_signing_secret", body, ""));
        assert!(!verify("other_secret", body, good));
    }
}
