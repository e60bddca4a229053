//! `parse_request` (and `parse_response`) on arbitrary bytes: never a panic; a complete head's
//! length is within the input and is the first point where the head is complete; every range
//! the head holds lies inside it and holds what its kind allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_proto::h1::{parse_request, parse_response, Body, Head, Invalid, Name, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    let mut head = Head::default();
    let r = parse_request(data, &mut head);
    check(data, r, &head, true);
    // The same head value reused on other input (the gateway reuses one per connection).
    for method_is_head in [false, true] {
        let r = parse_response(data, &mut head, method_is_head);
        check(data, r, &head, false);
    }
});

fn check(data: &[u8], r: Result<Option<usize>, Invalid>, head: &Head, request: bool) {
    let len = match r {
        Ok(Some(len)) => len,
        Ok(None) => {
            assert!(
                data.len() <= MAX_HEAD,
                "an incomplete head past MAX_HEAD is too large"
            );
            return;
        }
        Err(_) => return,
    };
    assert!(
        len <= data.len(),
        "head length {len} > input {}",
        data.len()
    );
    assert!(len <= MAX_HEAD);
    let h = &data[..len];
    assert!(h.ends_with(b"\n"), "a head ends with its empty line");
    // Ranges inside the head (indexing panics otherwise), with what each may hold.
    if request {
        let method = head.method(h);
        assert!(!method.is_empty());
        assert!(method.bytes().all(|b| b.is_ascii_graphic()));
        // (httparse lets bytes above 0x7f through in a target; `target` is "" unless UTF-8.)
        let target = head.target(h);
        assert!(!target.bytes().any(|b| b <= b' ' || b == 0x7f));
        let _ = stellar_proto::route::origin_path(target);
    } else {
        assert!(!head.reason(h).iter().any(|b| matches!(b, b'\r' | b'\n')));
    }
    for (name, field) in &head.fields {
        let n = field.name(h);
        assert!(!n.is_empty());
        assert!(n.iter().all(|b| b.is_ascii_graphic() && *b != b':'));
        assert_eq!(Name::of(n), *name, "field kind");
        assert!(!field
            .value(h)
            .iter()
            .any(|b| matches!(b, b'\r' | b'\n' | 0)));
    }
    if request {
        // Request framing is never "until close".
        assert!(!matches!(head.body, Body::Close));
        if let Body::Length(n) = head.body {
            assert!(n > 0);
            assert!(head.get(h, Name::ContentLength).is_some());
        }
        if head.body == Body::Chunked {
            assert!(head.get(h, Name::TransferEncoding).is_some());
            assert!(
                head.get(h, Name::ContentLength).is_none(),
                "TE with CL is refused"
            );
        }
    }
    // The head alone parses to the same length, and no shorter prefix is complete.
    let mut again = Head::default();
    let whole = if request {
        parse_request(h, &mut again)
    } else {
        parse_response(h, &mut again, false)
    };
    assert!(
        matches!(whole, Ok(Some(n)) if n == len),
        "{whole:?} != {len}"
    );
    let shorter = if request {
        parse_request(&h[..len - 1], &mut again)
    } else {
        parse_response(&h[..len - 1], &mut again, false)
    };
    assert!(
        !matches!(shorter, Ok(Some(_))),
        "a shorter prefix is complete"
    );
}
