//! The Lemon Squeezy signature check on arbitrary secrets, signatures and bodies: never a panic;
//! the signature made with the right secret verifies (in either hex case, with surrounding white
//! space); a flipped bit in the body, the signature or the secret does not verify.
//!
//! Input: 2 bytes choosing the bit to flip, then `secret \n signature \n body`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_proto::webhook::lemon::{sign, verify};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let flip = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let mut parts = data[2..].splitn(3, |b| *b == b'\n');
    let secret = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let signature = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    let _ = verify(&secret, body, &signature);

    let good = sign(&secret, body);
    assert_eq!(good.len(), 64);
    assert!(verify(&secret, body, &good));
    assert!(verify(&secret, body, &good.to_uppercase()));
    assert!(verify(&secret, body, &format!(" {good}\t")));
    if signature.trim() != good && !signature.trim().eq_ignore_ascii_case(&good) {
        assert!(!verify(&secret, body, &signature), "{signature}");
    }
    if !body.is_empty() {
        let mut b = body.to_vec();
        let i = flip % b.len();
        b[i] ^= 1 << (flip % 8);
        assert!(!verify(&secret, &b, &good));
    }
    let mut sig: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&good[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let i = flip % sig.len();
    sig[i] ^= 1 << (flip % 8);
    let bad: String = sig.iter().map(|x| format!("{x:02x}")).collect();
    assert!(!verify(&secret, body, &bad));
    assert!(!verify(&secret, body, &good[..62]));
    if !secret.is_empty() {
        let mut s = secret.clone().into_bytes();
        let i = flip % s.len();
        s[i] ^= 1 << (flip % 8);
        if let Ok(other) = String::from_utf8(s) {
            assert!(!verify(&other, body, &good));
        }
    }
});
