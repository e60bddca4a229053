//! Payment-provider webhook deliveries, checked before anything in them is trusted. Pure
//! functions over the raw header values and the raw body (no clock, no I/O), so that billing
//! calls them on the bytes it received and `fuzz/` calls them on arbitrary ones:
//!
//! - [`stripe`] — `Stripe-Signature: t=…,v1=…`, HMAC-SHA256 over `"{t}.{body}"`, with a timestamp
//!   tolerance.
//! - [`lemon`] — Lemon Squeezy's `X-Signature`, hex HMAC-SHA256 of the body.
//! - [`toss`] — TossPayments signs none of its payment webhooks: what is checked here is the
//!   shape of the body that billing reads before it re-fetches the payment from Toss's API.
//!
//! Signatures are compared in constant time (`hmac`'s `verify_slice`, which uses `subtle`); a
//! signature of the wrong length is a mismatch, never a panic.

pub mod lemon;
pub mod stripe;
pub mod toss;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 keyed with the secret's UTF-8 bytes, as every provider here uses it.
fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length (longer ones are hashed first): this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length")
}

/// Whether a hex signature is the MAC's output, in constant time (odd or non-hex input, or a
/// wrong length, is simply no match).
fn verify_hex(mac: Hmac<Sha256>, signature_hex: &[u8]) -> bool {
    hex::decode(signature_hex).is_ok_and(|raw| mac.verify_slice(&raw).is_ok())
}
