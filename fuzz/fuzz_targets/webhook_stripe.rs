//! The Stripe signature check on arbitrary secrets, headers, bodies and clocks: never a panic;
//! a header made with the right secret verifies within the tolerance and is stale just past it;
//! a flipped bit in the body, the signature or the secret does not verify.
//!
//! Input: 8 bytes `now`, 8 bytes `tolerance` (little-endian), 2 bytes choosing the bit to flip,
//! then `secret \n header \n body`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_proto::webhook::stripe::{sign, verify, Invalid};

fuzz_target!(|data: &[u8]| {
    if data.len() < 18 {
        return;
    }
    let now = i64::from_le_bytes(data[..8].try_into().unwrap());
    let tolerance = i64::from_le_bytes(data[8..16].try_into().unwrap());
    let flip = usize::from(u16::from_le_bytes([data[16], data[17]]));
    let rest = &data[18..];
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let secret = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    // Arbitrary input: any answer but a panic.
    let _ = verify(&secret, body, &header, now, tolerance);

    // Signed now: verifies, whatever the tolerance.
    let good = sign(&secret, body, now);
    assert_eq!(verify(&secret, body, &good, now, tolerance), Ok(()));
    // Among other schemes and wrong signatures: still verifies.
    let mixed = format!("v0=00,{good},v1=zz,{header}").replace('\n', "");
    if !header.contains("t=") {
        assert_eq!(
            verify(&secret, body, &mixed, now, tolerance),
            Ok(()),
            "{mixed}"
        );
    }
    // At the edge of the tolerance and just past it.
    let tol = tolerance.unsigned_abs();
    if let Ok(tol) = i64::try_from(tol) {
        if let Some(t) = now.checked_sub(tol) {
            assert_eq!(
                verify(&secret, body, &sign(&secret, body, t), now, tolerance),
                Ok(())
            );
            if let Some(t) = t.checked_sub(1) {
                assert_eq!(
                    verify(&secret, body, &sign(&secret, body, t), now, tolerance),
                    Err(Invalid::Stale)
                );
            }
        }
    }
    // A flipped bit in the body.
    if !body.is_empty() {
        let mut b = body.to_vec();
        let i = flip % b.len();
        b[i] ^= 1 << (flip % 8);
        assert_eq!(
            verify(&secret, &b, &good, now, tolerance),
            Err(Invalid::Mismatch)
        );
    }
    // A flipped bit in the signature (in its bytes: hex case is not a difference).
    let (t_part, sig_hex) = good.split_once(",v1=").unwrap();
    let mut sig = decode_hex(sig_hex);
    let i = flip % sig.len();
    sig[i] ^= 1 << (flip % 8);
    let bad = format!("{t_part},v1={}", encode_hex(&sig));
    assert_eq!(
        verify(&secret, body, &bad, now, tolerance),
        Err(Invalid::Mismatch)
    );
    // A flipped bit in the secret.
    if !secret.is_empty() {
        let mut s = secret.clone().into_bytes();
        let i = flip % s.len();
        s[i] ^= 1 << (flip % 8);
        if let Ok(other) = String::from_utf8(s) {
            assert_eq!(
                verify(&other, body, &good, now, tolerance),
                Err(Invalid::Mismatch)
            );
        }
    }
});

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
