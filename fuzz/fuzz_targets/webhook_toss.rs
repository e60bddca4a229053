//! The TossPayments webhook body and transmission-id header on arbitrary bytes: never a panic;
//! whatever is accepted holds what billing relies on (a payment key of 1 to MAX_KEY characters, a
//! billing key that is `None` or of that length); a body built from a notice reads back as it.
//! Toss signs nothing here, so there is no signature to flip: billing re-fetches the payment.
//!
//! Input: `transmission-id header \n body`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_proto::webhook::toss::{parse, transmission_id, Kind, MAX_KEY};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    if let Some(id) = transmission_id(header) {
        assert!(!id.is_empty() && id.len() <= 100);
        assert!(id.bytes().all(|b| b.is_ascii_graphic()));
    }
    let key_ok = |k: &str| !k.is_empty() && k.len() <= MAX_KEY;
    let Ok(notice) = parse(body) else {
        return;
    };
    match &notice.kind {
        Kind::PaymentStatusChanged { payment_key } => {
            assert_eq!(notice.event_type, "PAYMENT_STATUS_CHANGED");
            assert!(key_ok(payment_key));
        }
        Kind::BillingDeleted { billing_key, .. } => {
            assert_eq!(notice.event_type, "BILLING_DELETED");
            assert!(billing_key.as_deref().is_none_or(key_ok));
        }
        Kind::Other => {}
    }
    // Round trip: the notice written back as a body reads back the same.
    let again = {
        let (event, data) = match &notice.kind {
            Kind::PaymentStatusChanged { payment_key } => (
                notice.event_type.clone(),
                format!(r#"{{"paymentKey":{}}}"#, json_str(payment_key)),
            ),
            Kind::BillingDeleted {
                billing_key,
                reason,
            } => (
                notice.event_type.clone(),
                format!(
                    r#"{{"billingKey":{},"reason":{reason}}}"#,
                    billing_key.as_deref().map_or("null".into(), json_str)
                ),
            ),
            Kind::Other => (notice.event_type.clone(), "{}".into()),
        };
        let created = notice.created_at.as_deref().map_or("null".into(), json_str);
        // (A DEPOSIT_CALLBACK recognised by its `secret` reads back from an explicit eventType.)
        let body = format!(
            r#"{{"eventType":{},"createdAt":{created},"data":{data}}}"#,
            json_str(&event)
        );
        parse(body.as_bytes()).expect("a written notice reads back")
    };
    assert_eq!(again, notice);
});

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
