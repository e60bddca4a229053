//! Stripe's `Stripe-Signature` header: comma-separated `key=value` pairs with one `t=<unix
//! seconds>` and one or more `v1=<hex>` (other schemes such as `v0` are ignored). The signed
//! payload is `"{t}.{raw body}"`, HMAC-SHA256 keyed with the whole `whsec_…` secret; any `v1`
//! may match (several are sent while a secret rolls).

use super::{mac, verify_hex};
use hmac::Mac;

/// The header's name (lower case, as `http::HeaderMap` looks it up).
pub const HEADER: &str = "stripe-signature";

/// The tolerance Stripe's SDKs default to, in seconds.
pub const DEFAULT_TOLERANCE: i64 = 300;

/// Why a delivery is not Stripe's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    NoTimestamp,
    BadTimestamp,
    NoSignature,
    Mismatch,
    /// Signed, but further than the tolerance from now (a replay, or a clock far off).
    Stale,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::NoTimestamp => "no timestamp",
            Invalid::BadTimestamp => "bad timestamp",
            Invalid::NoSignature => "no v1 signature",
            Invalid::Mismatch => "signature mismatch",
            Invalid::Stale => "timestamp outside the tolerance",
        })
    }
}

impl std::error::Error for Invalid {}

/// Verify a `Stripe-Signature` header over the raw body at time `now` (unix seconds).
/// Timestamps further than `tolerance` from now in either direction are rejected (the SDKs only
/// reject old ones; a symmetric window is the stricter choice). The signature is checked before
/// the timestamp, so a forged header learns nothing about our clock.
pub fn verify(
    secret: &str,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance: i64,
) -> Result<(), Invalid> {
    let mut t: Option<i64> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => t = Some(v.parse().map_err(|_| Invalid::BadTimestamp)?),
            "v1" => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(Invalid::NoTimestamp)?;
    if sigs.is_empty() {
        return Err(Invalid::NoSignature);
    }
    let mac = signed_payload(secret, t, body);
    if !sigs.iter().any(|s| verify_hex(mac.clone(), s.as_bytes())) {
        return Err(Invalid::Mismatch);
    }
    // abs_diff: a signed but absurd `t` must not overflow.
    if now.abs_diff(t) > tolerance.unsigned_abs() {
        return Err(Invalid::Stale);
    }
    Ok(())
}

/// The header Stripe would send for `body` at time `t` (for tests, fuzzing and local tools).
pub fn sign(secret: &str, body: &[u8], t: i64) -> String {
    let sig = signed_payload(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(sig))
}

fn signed_payload(secret: &str, t: i64, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = mac(secret);
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::{sign, verify as v, Invalid};

    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"invoice.paid"}"#;
    const GOOD: &str = "dfb4777aaaec4ea29ff455dd4df7fe6b2ef71096ad3a93a158db7e100109ea91";
    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn known_answer_vector_and_negatives() {
        // payments.md §4.1.
        let t = 1_700_000_000;
        let good = format!("t={t},v1={GOOD}");
        assert_eq!(sign(SECRET, BODY, t), good);
        assert_eq!(v(SECRET, BODY, &good, t, 300), Ok(()));
        assert_eq!(
            v(
                SECRET,
                BODY,
                &format!("t={t},v1=00,v1={GOOD},v0=deadbeef"),
                t + 10,
                300
            ),
            Ok(())
        );
        assert_eq!(v(SECRET, BODY, &good, t + 301, 300), Err(Invalid::Stale));
        assert_eq!(v(SECRET, BODY, &good, t - 301, 300), Err(Invalid::Stale));
        assert_eq!(
            v(SECRET, BODY, &format!("t={t},v0={GOOD}"), t, 300),
            Err(Invalid::NoSignature),
            "only v0"
        );
        assert_eq!(
            v("test_secret", BODY, &good, t, 300),
            Err(Invalid::Mismatch),
            "prefix stripped"
        );
        let spaced = br#"{"id": "evt_1","object":"event","type":"invoice.paid"}"#;
        assert_eq!(
            v(SECRET, spaced, &good, t, 300),
            Err(Invalid::Mismatch),
            "body changed"
        );
        assert_eq!(v(SECRET, BODY, "", t, 300), Err(Invalid::NoTimestamp));
        assert_eq!(
            v(SECRET, BODY, &format!("t=abc,v1={GOOD}"), t, 300),
            Err(Invalid::BadTimestamp)
        );
    }

    #[test]
    fn odd_headers_are_refused_not_panicked_on() {
        let t = 1_700_000_000;
        for h in [
            "t=1700000000,v1=",
            "t=1700000000,v1=0",
            "t=1700000000,v1=zz",
            "t=1700000000,v1=🦀",
            "t=-9223372036854775808,v1=00",
            "t=9223372036854775807,v1=00",
            ",,,=,t",
        ] {
            assert!(v(SECRET, BODY, h, t, 300).is_err(), "{h}");
        }
        // A correctly signed absurd timestamp is stale, without overflowing.
        for t in [i64::MIN, i64::MAX] {
            assert_eq!(
                v(SECRET, BODY, &sign(SECRET, BODY, t), 0, 300),
                Err(Invalid::Stale)
            );
        }
    }
}
