//! Tests of HTTP/1.1 framing: head parsing into ranges, field classification, the body framing
//! decisions of RFC 9112 §6.3, the chunked walker (fed the way the proxy feeds it) and the small
//! writers.

use super::*;
use crate::route::origin_path;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::borrow::Cow;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// What a head parser returns: the head's length once complete, `None` while incomplete.
type Parsed = Result<Option<usize>, Invalid>;

/// `buf` for failure messages.
fn show(buf: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(buf)
}

/// Panics unless `got`, what parsing or walking `buf` gave, is a `Malformed` error.
fn assert_malformed<T: std::fmt::Debug>(buf: &[u8], got: Result<T, Invalid>) {
    assert!(
        matches!(got, Err(Invalid::Malformed(_))),
        "{:?} gave {got:?}",
        show(buf)
    );
}

/// Parse a complete head with `parse`; panics unless it parses.
fn parse_whole(buf: &[u8], parse: impl Fn(&[u8], &mut Head) -> Parsed) -> (Head, usize) {
    let mut head = Head::default();
    match parse(buf, &mut head) {
        Ok(Some(len)) => (head, len),
        other => panic!(
            "expected a complete head, got {other:?} for {:?}",
            show(buf)
        ),
    }
}

/// Parse a head with `parse` that must be refused.
fn parse_err(buf: &[u8], parse: impl Fn(&[u8], &mut Head) -> Parsed) -> Invalid {
    let mut head = Head::default();
    match parse(buf, &mut head) {
        Err(e) => e,
        Ok(r) => panic!(
            "expected an error, got Ok({r:?}) with body {:?} for {:?}",
            head.body,
            show(buf)
        ),
    }
}

/// `parse_response` for the answer to a request that was not HEAD.
fn parse_resp(buf: &[u8], head: &mut Head) -> Parsed {
    parse_response(buf, head, false)
}

/// Parse a complete request head; panics unless it parses.
fn req(buf: &[u8]) -> (Head, usize) {
    parse_whole(buf, parse_request)
}

/// Parse a request head that must be refused.
fn req_err(buf: &[u8]) -> Invalid {
    parse_err(buf, parse_request)
}

fn req_body(buf: &[u8]) -> Body {
    req(buf).0.body
}

/// Parse a complete response head; panics unless it parses.
fn resp(buf: &[u8], method_is_head: bool) -> (Head, usize) {
    parse_whole(buf, |b, h| parse_response(b, h, method_is_head))
}

fn resp_body(buf: &[u8], method_is_head: bool) -> Body {
    resp(buf, method_is_head).0.body
}

fn resp_err(buf: &[u8]) -> Invalid {
    parse_err(buf, parse_resp)
}

/// A head: the start line, then the given field lines (each without its CRLF), then the empty line.
fn head_with(start_line: &str, fields: &[&str]) -> Vec<u8> {
    let mut s = format!("{start_line}\r\n");
    for f in fields {
        s.push_str(f);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A request with the given extra field lines (each without its CRLF).
fn request_with(version: &str, fields: &[&str]) -> Vec<u8> {
    head_with(
        &format!("POST /upload {version}\r\nHost: example.com"),
        fields,
    )
}

fn response_with(status_line: &str, fields: &[&str]) -> Vec<u8> {
    head_with(status_line, fields)
}

/// `n` distinct field lines `X-F{i}: v{i}`.
fn numbered_fields(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("X-F{i}: v{i}")).collect()
}

/// `start`, then `fill` bytes up to `len` bytes in all.
fn padded(start: &[u8], len: usize, fill: u8) -> Vec<u8> {
    let mut buf = start.to_vec();
    buf.resize(len, fill);
    buf
}

fn is_malformed(e: Invalid) -> bool {
    matches!(e, Invalid::Malformed(_))
}

/// Each request head must be refused as malformed.
fn assert_requests_malformed(bufs: &[&[u8]]) {
    for buf in bufs {
        assert_malformed(buf, parse_request(buf, &mut Head::default()));
    }
}

/// Each response head (to a request that was not HEAD) must be refused as malformed.
fn assert_responses_malformed(bufs: &[&[u8]]) {
    for buf in bufs {
        assert_malformed(buf, parse_resp(buf, &mut Head::default()));
    }
}

/// A request of `version` with each of the sets of field lines must be refused as malformed.
fn assert_request_fields_malformed(version: &str, cases: &[&[&str]]) {
    for fields in cases {
        let e = req_err(&request_with(version, fields));
        assert!(is_malformed(e), "{version} {fields:?} gave {e:?}");
    }
}

/// A response with `status_line` and each of the sets of field lines must be refused as
/// malformed.
fn assert_response_fields_malformed(status_line: &str, cases: &[&[&str]]) {
    for fields in cases {
        let e = resp_err(&response_with(status_line, fields));
        assert!(is_malformed(e), "{status_line} {fields:?} gave {e:?}");
    }
}

/// A request of `version` with each of the sets of field lines has the body framing `want`.
fn assert_request_body(version: &str, cases: &[&[&str]], want: Body) {
    for fields in cases {
        assert_eq!(
            req_body(&request_with(version, fields)),
            want,
            "{version} {fields:?}"
        );
    }
}

/// A response with `status_line` and each of the sets of field lines, to a HEAD request or not,
/// has the body framing `want`.
fn assert_response_body(status_line: &str, method_is_head: bool, cases: &[&[&str]], want: Body) {
    for fields in cases {
        let buf = response_with(status_line, fields);
        assert_eq!(
            resp_body(&buf, method_is_head),
            want,
            "{status_line} (HEAD request: {method_is_head}) {fields:?}"
        );
    }
}

/// Every proper prefix of `buf` is incomplete and all of it is a head of `buf.len()` bytes, all
/// parsed into one reused head; which then equals a head parsed afresh. Returns the head.
fn parse_after_every_prefix(buf: &[u8], parse: impl Fn(&[u8], &mut Head) -> Parsed) -> Head {
    let mut head = Head::default();
    for i in 0..buf.len() {
        assert_eq!(
            parse(&buf[..i], &mut head),
            Ok(None),
            "prefix of {i} bytes: {:?}",
            show(&buf[..i])
        );
    }
    assert_eq!(parse(buf, &mut head), Ok(Some(buf.len())));
    let (fresh, _) = parse_whole(buf, &parse);
    assert_eq!(format!("{head:?}"), format!("{fresh:?}"));
    head
}

/// A head that starts with `start` and has not ended: waits up to MAX_HEAD bytes and is too large
/// after that, whether it then ends or goes on.
fn assert_unended_head_limit(start: &[u8], parse: impl Fn(&[u8], &mut Head) -> Parsed) {
    let mut buf = padded(start, MAX_HEAD, b'a');
    let mut head = Head::default();
    // Exactly MAX_HEAD bytes, still no end: wait for more.
    assert_eq!(parse(&buf, &mut head), Ok(None));
    buf.push(b'a');
    assert_eq!(parse(&buf, &mut head), Err(Invalid::TooLarge));
    let mut ended = buf.clone();
    ended.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse(&ended, &mut head), Err(Invalid::TooLarge));
    buf.resize(MAX_HEAD * 2, b'a');
    assert_eq!(parse(&buf, &mut head), Err(Invalid::TooLarge));
}

/// `build` makes a head of the given field lines plus `own` fields of its own: with MAX_FIELDS
/// fields in all it parses, with one more it is too large.
fn assert_max_fields(
    own: usize,
    build: impl Fn(&[&str]) -> Vec<u8>,
    parse: impl Fn(&[u8], &mut Head) -> Parsed,
) {
    let fields = numbered_fields(MAX_FIELDS + 1 - own);
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let buf = build(&refs[..MAX_FIELDS - own]);
    let (head, _) = parse_whole(&buf, &parse);
    assert_eq!(head.fields.len(), MAX_FIELDS);
    assert_eq!(
        head.fields[MAX_FIELDS - 1].1.value(&buf),
        format!("v{}", MAX_FIELDS - 1 - own).as_bytes()
    );

    let buf = build(&refs);
    assert_eq!(parse_err(&buf, &parse), Invalid::TooLarge);
}

/// The request line of `buf` has these method and target, and the target has this path as the
/// gateway reads it ([`origin_path`]: `Err` for anything but origin-form).
fn assert_request_line(buf: &[u8], method: &str, target: &str, path: Result<&str, &str>) -> Head {
    let (head, _) = req(buf);
    assert_eq!(head.method(buf), method, "{:?}", show(buf));
    assert_eq!(head.target(buf), target, "{:?}", show(buf));
    assert_eq!(
        origin_path(head.target(buf)).map_err(|_| "refused"),
        path,
        "{:?}",
        show(buf)
    );
    head
}

/// Connection options by their flags.
fn conn(close: bool, keep_alive: bool, names_fields: bool) -> ConnectionOpts {
    ConnectionOpts {
        close,
        keep_alive,
        names_fields,
    }
}

// ---------------------------------------------------------------------------------------------
// parse_request: completeness
// ---------------------------------------------------------------------------------------------

const FULL_REQUEST: &[u8] = b"POST /v1/items?limit=10&x=y HTTP/1.1\r\n\
Host: api.example.com\r\n\
X-Api-Key: secret\r\n\
Content-Length: 5\r\n\
Connection: keep-alive\r\n\
\r\n";

#[test]
fn request_every_proper_prefix_is_incomplete() {
    let head = parse_after_every_prefix(FULL_REQUEST, parse_request);
    assert_eq!(head.body, Body::Length(5));
}

#[test]
fn request_length_excludes_following_body_and_next_message() {
    let mut buf = FULL_REQUEST.to_vec();
    buf.extend_from_slice(b"hello");
    buf.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    let (head, len) = req(&buf);
    assert_eq!(len, FULL_REQUEST.len());
    assert_eq!(&buf[len..len + 5], b"hello");
    assert_eq!(head.body, Body::Length(5));
}

#[test]
fn request_leading_empty_line_is_skipped_and_ranges_still_point_at_the_method() {
    let buf = b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    let (head, len) = req(buf);
    assert_eq!(len, buf.len());
    assert_eq!(head.method(buf), "GET");
    assert_eq!(head.target(buf), "/a");
    assert_eq!(head.fields[0].1.name(buf), b"Host");
}

// ---------------------------------------------------------------------------------------------
// parse_request: request line
// ---------------------------------------------------------------------------------------------

#[test]
fn request_line_origin_form_with_query() {
    let head = assert_request_line(
        FULL_REQUEST,
        "POST",
        "/v1/items?limit=10&x=y",
        Ok("/v1/items"),
    );
    assert_eq!(head.minor, 1);
    assert_eq!(head.status, 0);
}

#[test]
fn request_line_origin_form_without_query() {
    let buf = b"DELETE /v1/items/42 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_request_line(buf, "DELETE", "/v1/items/42", Ok("/v1/items/42"));
}

/// The parser keeps an absolute-form target whole; the gateway's routing reads only origin-form
/// paths and refuses it (the gateway answers 400).
#[test]
fn request_line_absolute_form_is_kept_whole_and_refused_as_a_path() {
    assert_request_line(
        b"GET http://h/p?q HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET",
        "http://h/p?q",
        Err("refused"),
    );
    assert_request_line(
        b"GET https://api.example.com:8443/v1/a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET",
        "https://api.example.com:8443/v1/a/b?x=1",
        Err("refused"),
    );
    assert_request_line(
        b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET",
        "http://h",
        Err("refused"),
    );
}

#[test]
fn request_line_asterisk_and_authority_forms_are_kept_as_is() {
    assert_request_line(
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "OPTIONS",
        "*",
        Err("refused"),
    );
    let buf = b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n";
    assert_request_line(buf, "CONNECT", "h.example:443", Err("refused"));
}

#[test]
fn request_minor_version() {
    assert_eq!(req(b"GET / HTTP/1.0\r\n\r\n").0.minor, 0);
    assert_eq!(req(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").0.minor, 1);
}

// ---------------------------------------------------------------------------------------------
// parse_request: fields
// ---------------------------------------------------------------------------------------------

#[test]
fn request_fields_are_ranges_in_order_and_classified() {
    let buf = b"GET / HTTP/1.1\r\n\
Host: h\r\n\
x-api-key:   k1  \r\n\
X-Custom:a b\tc\r\n\
Authorization: Bearer t\r\n\
X-Empty:\r\n\
x-api-key: k2\r\n\
\r\n";
    let (head, len) = req(buf);
    assert_eq!(len, buf.len());
    let got: Vec<(Name, &[u8], &[u8])> = head
        .fields
        .iter()
        .map(|(n, f)| (*n, f.name(buf), f.value(buf)))
        .collect();
    let want: Vec<(Name, &[u8], &[u8])> = vec![
        (Name::Host, b"Host", b"h"),
        (Name::XApiKey, b"x-api-key", b"k1"),
        (Name::Other, b"X-Custom", b"a b\tc"),
        (Name::Authorization, b"Authorization", b"Bearer t"),
        (Name::Other, b"X-Empty", b""),
        (Name::XApiKey, b"x-api-key", b"k2"),
    ];
    assert_eq!(got, want);

    // `get` finds the first field of a kind; absent kinds give None.
    assert_eq!(head.get(buf, Name::XApiKey), Some(&b"k1"[..]));
    assert_eq!(head.get_str(buf, Name::Authorization), Some("Bearer t"));
    assert_eq!(head.get(buf, Name::ContentLength), None);
    assert_eq!(head.get_str(buf, Name::XRequestId), None);
}

#[test]
fn request_field_ranges_point_into_the_buffer_at_the_right_offsets() {
    let buf = b"GET / HTTP/1.1\r\nAbc: xyz\r\nHost: h\r\n\r\n";
    let (head, _) = req(buf);
    let (_, f) = head.fields[0];
    let name_at = buf.windows(3).position(|w| w == b"Abc").unwrap();
    let value_at = buf.windows(3).position(|w| w == b"xyz").unwrap();
    assert_eq!(f.name, (name_at as u32, name_at as u32 + 3));
    assert_eq!(f.value, (value_at as u32, value_at as u32 + 3));
}

#[test]
fn request_get_str_rejects_non_utf8() {
    let buf = b"GET / HTTP/1.1\r\nX-Request-Id: a\xffb\r\nHost: h\r\n\r\n";
    let (head, _) = req(buf);
    assert_eq!(head.get(buf, Name::XRequestId), Some(&b"a\xffb"[..]));
    assert_eq!(head.get_str(buf, Name::XRequestId), None);
}

#[test]
fn request_exactly_max_fields_is_accepted_one_more_is_too_large() {
    // `request_with` adds a Host field of its own.
    assert_max_fields(1, |fields| request_with("HTTP/1.1", fields), parse_request);
}

#[test]
fn request_partial_head_longer_than_max_head_is_too_large() {
    assert_unended_head_limit(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ", parse_request);
}

#[test]
fn request_complete_head_larger_than_max_head_is_too_large() {
    let prefix = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ";
    let end = b"\r\n\r\n";
    // Exactly MAX_HEAD bytes: fine.
    let mut buf = padded(prefix, MAX_HEAD - end.len(), b'a');
    buf.extend_from_slice(end);
    assert_eq!(buf.len(), MAX_HEAD);
    let (_, len) = req(&buf);
    assert_eq!(len, MAX_HEAD);

    // One more byte: too large, whether or not more bytes follow.
    let mut buf = padded(prefix, MAX_HEAD + 1 - end.len(), b'a');
    buf.extend_from_slice(end);
    assert_eq!(req_err(&buf), Invalid::TooLarge);
    buf.extend_from_slice(b"body");
    assert_eq!(req_err(&buf), Invalid::TooLarge);
}

#[test]
fn request_garbage_is_malformed() {
    assert_requests_malformed(&[
        b"\x01\x02\x03 / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTX/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n: no name\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\rX: y\r\n\r\n",
    ]);
}

// ---------------------------------------------------------------------------------------------
// parse_request: Connection and Expect
// ---------------------------------------------------------------------------------------------

#[test]
fn request_connection_close() {
    let buf = request_with("HTTP/1.1", &["Connection: close"]);
    let (head, _) = req(&buf);
    assert_eq!(head.conn, conn(true, false, false));
    // Nothing else is named: connection_names is false even for the option itself.
    assert!(!head.connection_names(&buf, b"close"));
}

#[test]
fn request_connection_keep_alive_case_insensitive() {
    let buf = request_with("HTTP/1.0", &["Connection: Keep-Alive"]);
    let (head, _) = req(&buf);
    assert_eq!(head.conn, conn(false, true, false));
}

#[test]
fn request_connection_naming_other_fields() {
    let buf = request_with(
        "HTTP/1.1",
        &[
            "Connection: CLOSE , X-Private-Hop,,",
            "X-Private-Hop: 1",
            "Connection: upgrade",
            "Upgrade: websocket",
        ],
    );
    let (head, _) = req(&buf);
    assert_eq!(head.conn, conn(true, false, true));
    for name in [&b"x-private-hop"[..], b"X-PRIVATE-HOP", b"Upgrade"] {
        assert!(head.connection_names(&buf, name), "{:?}", show(name));
    }
    for name in [&b"X-Private"[..], b"Host", b"websocket"] {
        assert!(!head.connection_names(&buf, name), "{:?}", show(name));
    }
}

#[test]
fn request_without_connection_has_default_options() {
    let buf = request_with("HTTP/1.1", &["X-Other: close"]);
    let (head, _) = req(&buf);
    assert_eq!(head.conn, ConnectionOpts::default());
    assert!(!head.connection_names(&buf, b"x-other"));
}

#[test]
fn request_expect_continue() {
    for (field, want) in [
        (Some("Expect: 100-continue"), true),
        (Some("Expect: 100-Continue"), true),
        (Some("expect:    100-CONTINUE   "), true),
        (Some("Expect: 100-continue-please"), false),
        (Some("Expect: something"), false),
        (Some("Expect:"), false),
        (Some("X-Expect: 100-continue"), false),
        (None, false),
    ] {
        let fields: Vec<&str> = field.into_iter().collect();
        let buf = request_with("HTTP/1.1", &fields);
        assert_eq!(req(&buf).0.expect_continue, want, "{field:?}");
    }
}

#[test]
fn head_is_reset_when_reused() {
    let mut head = Head::default();
    let first = request_with(
        "HTTP/1.1",
        &[
            "Connection: close, x-foo",
            "Expect: 100-continue",
            "Content-Length: 7",
            "Keep-Alive: timeout=5",
        ],
    );
    assert!(parse_request(&first, &mut head).unwrap().is_some());
    assert!(head.conn.close && head.conn.names_fields && head.expect_continue);
    assert_eq!(head.body, Body::Length(7));

    let second = b"GET /x HTTP/1.0\r\nHost: y\r\n\r\n";
    assert!(parse_request(second, &mut head).unwrap().is_some());
    assert_eq!(head.conn, ConnectionOpts::default());
    assert!(!head.expect_continue);
    assert_eq!(head.body, Body::None);
    assert_eq!(head.minor, 0);
    assert_eq!(head.fields.len(), 1);
    assert_eq!(head.fields[0].1.value(second), b"y");
    assert_eq!(head.method(second), "GET");

    // A response parsed into the same head: no target, no expect, its own status.
    let third = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n";
    assert!(parse_response(third, &mut head, false).unwrap().is_some());
    assert_eq!(head.status, 404);
    assert_eq!(head.target(third), "");
    assert!(!head.expect_continue);
    assert_eq!(head.fields.len(), 1);
    assert_eq!(head.body, Body::Length(3));

    // And back to a request: status cleared.
    let fourth = b"GET / HTTP/1.0\r\n\r\n";
    assert!(parse_request(fourth, &mut head).unwrap().is_some());
    assert_eq!(head.status, 0);
    assert!(head.fields.is_empty());
}

// ---------------------------------------------------------------------------------------------
// parse_request: body framing (RFC 9112 §6.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn request_without_framing_fields_has_no_body() {
    assert_request_body("HTTP/1.1", &[&[]], Body::None);
    assert_request_body("HTTP/1.0", &[&[]], Body::None);
}

#[test]
fn request_content_length() {
    for (v, want) in [
        ("5", Body::Length(5)),
        ("1", Body::Length(1)),
        ("0", Body::None),
        ("000", Body::None),
        ("007", Body::Length(7)),
        ("1234567890", Body::Length(1_234_567_890)),
        // 18 digits is the longest accepted.
        ("999999999999999999", Body::Length(999_999_999_999_999_999)),
    ] {
        let field = format!("Content-Length: {v}");
        assert_request_body("HTTP/1.1", &[&[&field]], want);
        assert_request_body("HTTP/1.0", &[&[&field]], want);
    }
}

#[test]
fn request_content_length_name_is_case_insensitive() {
    assert_request_body(
        "HTTP/1.1",
        &[&["CONTENT-LENGTH: 12"], &["content-length: 12"]],
        Body::Length(12),
    );
}

#[test]
fn request_duplicate_equal_content_lengths_are_accepted() {
    assert_request_body(
        "HTTP/1.1",
        &[
            &["Content-Length: 42", "Content-Length: 42"],
            &["Content-Length:  42 "],
        ],
        Body::Length(42),
    );
    assert_request_body(
        "HTTP/1.1",
        &[&["Content-Length: 0", "content-length: 0"]],
        Body::None,
    );
}

#[test]
fn request_conflicting_content_lengths_are_malformed() {
    assert_request_fields_malformed(
        "HTTP/1.1",
        &[
            &["Content-Length: 42", "Content-Length: 43"],
            &["Content-Length: 42, 43"],
            // Lists, even of one value: some readers take the first, others refuse.
            &["Content-Length: 42, 42 ,42"],
            &["Content-Length: 1,"],
            &["Content-Length: ,1"],
            &["Content-Length: 0", "Content-Length: 1"],
            &["Content-Length: 1", "X-Other: 2", "Content-Length: 1, 2"],
        ],
    );
}

#[test]
fn request_bad_content_length_is_malformed() {
    for v in [
        "abc",
        "-1",
        "+5",
        "5a",
        "0x10",
        "1.0",
        "1 2",
        "١٢",
        // 19 digits: longer than accepted.
        "1000000000000000000",
        "0000000000000000005",
        "18446744073709551616",
        "99999999999999999999999999",
    ] {
        let field = format!("Content-Length: {v}");
        assert_request_fields_malformed("HTTP/1.1", &[&[&field]]);
    }
}

#[test]
fn empty_content_length_is_malformed() {
    let cases: &[&[&str]] = &[
        &["Content-Length:"],
        &["Content-Length: "],
        &["Content-Length: ,"],
    ];
    assert_request_fields_malformed("HTTP/1.1", cases);
    assert_response_fields_malformed("HTTP/1.1 200 OK", cases);
}

#[test]
fn request_transfer_encoding_chunked() {
    assert_request_body(
        "HTTP/1.1",
        &[
            &["Transfer-Encoding: chunked"],
            &["transfer-encoding: CHUNKED"],
            &["Transfer-Encoding: gzip, chunked"],
            &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
        ],
        Body::Chunked,
    );
}

#[test]
fn request_transfer_encoding_not_ending_in_chunked_is_malformed() {
    assert_request_fields_malformed(
        "HTTP/1.1",
        &[
            &["Transfer-Encoding: chunked, gzip"],
            &["Transfer-Encoding: gzip"],
            &["Transfer-Encoding: identity"],
            &["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"],
            &["Transfer-Encoding: chunkedx"],
        ],
    );
}

#[test]
fn request_transfer_encoding_with_content_length_is_malformed() {
    assert_request_fields_malformed(
        "HTTP/1.1",
        &[
            &["Transfer-Encoding: chunked", "Content-Length: 5"],
            &["Content-Length: 5", "Transfer-Encoding: chunked"],
            &["Content-Length: 0", "Transfer-Encoding: chunked"],
            &["Transfer-Encoding: gzip", "Content-Length: 5"],
        ],
    );
}

#[test]
fn request_transfer_encoding_in_http10_is_malformed() {
    let chunked: &[&[&str]] = &[&["Transfer-Encoding: chunked"]];
    assert_request_fields_malformed("HTTP/1.0", chunked);
    // The same request in HTTP/1.1 is fine, so it is the version that is refused.
    assert_request_body("HTTP/1.1", chunked, Body::Chunked);
}

// ---------------------------------------------------------------------------------------------
// parse_response
// ---------------------------------------------------------------------------------------------

/// A 200 response whose reason phrase is empty (or not taken as one), with a 1-byte body.
fn assert_200_without_reason(buf: &[u8]) {
    let (head, _) = resp(buf, false);
    assert_eq!(head.status, 200, "{:?}", show(buf));
    assert_eq!(head.reason(buf), b"", "{:?}", show(buf));
    assert_eq!(head.body, Body::Length(1), "{:?}", show(buf));
}

#[test]
fn response_status_reason_and_every_prefix_incomplete() {
    let buf = b"HTTP/1.1 201 Created Fine\r\nContent-Length: 2\r\nX-Request-Id: r1\r\n\r\n";
    let head = parse_after_every_prefix(buf, parse_resp);
    assert_eq!(head.status, 201);
    assert_eq!(head.reason(buf), b"Created Fine");
    assert_eq!(head.minor, 1);
    assert_eq!(head.body, Body::Length(2));
    assert_eq!(head.get_str(buf, Name::XRequestId), Some("r1"));
    assert_eq!(head.fields.len(), 2);
}

#[test]
fn response_http10() {
    let buf = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    let (head, len) = resp(buf, false);
    assert_eq!(len, buf.len() - 3);
    assert_eq!(head.minor, 0);
    assert_eq!(head.reason(buf), b"OK");
    assert_eq!(head.body, Body::Length(3));
}

#[test]
fn response_with_empty_reason_after_space() {
    // "HTTP/1.1 200 " followed by CRLF: the reason is empty, a slice of the buffer.
    assert_200_without_reason(b"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n");
}

#[test]
fn response_without_reason_phrase() {
    for buf in [
        &b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n"[..],
        b"HTTP/1.1 200\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 \xc3\x96kay\r\nContent-Length: 1\r\n\r\n",
    ] {
        assert_200_without_reason(buf);
    }
}

#[test]
fn response_content_length_and_zero() {
    let ok = "HTTP/1.1 200 OK";
    assert_response_body(
        ok,
        false,
        &[
            &["Content-Length: 10"],
            &["Content-Length: 10", "Content-Length: 10"],
        ],
        Body::Length(10),
    );
    assert_response_body(ok, false, &[&["Content-Length: 0"]], Body::None);
}

#[test]
fn response_without_body_by_status_or_head_method() {
    for status in [100, 101, 102, 103, 150, 199, 204, 304] {
        assert_response_body(
            &format!("HTTP/1.1 {status} X"),
            false,
            &[
                &["Content-Length: 10"],
                &["Transfer-Encoding: chunked"],
                &[],
            ],
            Body::None,
        );
    }
    for status_line in ["HTTP/1.1 200 OK", "HTTP/1.0 200 OK"] {
        assert_response_body(
            status_line,
            true,
            &[
                &["Content-Length: 10"],
                &["Transfer-Encoding: chunked"],
                &["Transfer-Encoding: gzip"],
                &[],
            ],
            Body::None,
        );
    }
}

#[test]
fn response_statuses_next_to_bodiless_ones_have_bodies() {
    for status in [200, 203, 205, 206, 300, 303, 305, 404, 500] {
        assert_response_body(
            &format!("HTTP/1.1 {status} X"),
            false,
            &[&["Content-Length: 4"]],
            Body::Length(4),
        );
    }
}

#[test]
fn response_chunked() {
    assert_response_body(
        "HTTP/1.1 200 OK",
        false,
        &[
            &["Transfer-Encoding: chunked"],
            &["Transfer-Encoding: Chunked"],
            &["Transfer-Encoding: gzip, chunked"],
            &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
            // Transfer-Encoding overrides Content-Length in a response (§6.3 item 3).
            &["Transfer-Encoding: chunked", "Content-Length: 99"],
            &["Content-Length: 99", "Transfer-Encoding: chunked"],
        ],
        Body::Chunked,
    );
}

#[test]
fn response_transfer_encoding_not_ending_in_chunked_reads_to_close() {
    assert_response_body(
        "HTTP/1.1 200 OK",
        false,
        &[
            &["Transfer-Encoding: gzip"],
            &["Transfer-Encoding: chunked, gzip"],
            &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
            &["Transfer-Encoding: gzip", "Content-Length: 10"],
        ],
        Body::Close,
    );
}

#[test]
fn response_without_length_or_encoding_reads_to_close() {
    // An empty Transfer-Encoding is ignored.
    assert_response_body(
        "HTTP/1.1 200 OK",
        false,
        &[&[], &["Transfer-Encoding:"]],
        Body::Close,
    );
    assert_response_body("HTTP/1.0 200 OK", false, &[&["Server: x"]], Body::Close);
}

#[test]
fn response_http10_with_transfer_encoding_reads_to_close() {
    assert_response_body(
        "HTTP/1.0 200 OK",
        false,
        &[
            &["Transfer-Encoding: chunked"],
            &["Transfer-Encoding: chunked", "Content-Length: 5"],
        ],
        Body::Close,
    );
}

#[test]
fn response_bad_or_conflicting_content_length_is_malformed() {
    assert_response_fields_malformed(
        "HTTP/1.1 200 OK",
        &[
            &["Content-Length: 1", "Content-Length: 2"],
            &["Content-Length: 1, 2"],
            &["Content-Length: x"],
            &["Content-Length: -1"],
            &["Content-Length: 1000000000000000000"],
        ],
    );
}

#[test]
fn response_connection_options() {
    let buf = response_with(
        "HTTP/1.1 200 OK",
        &["Connection: keep-alive, close, X-Hop", "Content-Length: 0"],
    );
    let (head, _) = resp(&buf, false);
    assert_eq!(head.conn, conn(true, true, true));
    assert!(head.connection_names(&buf, b"x-hop"));
    assert!(!head.connection_names(&buf, b"content-length"));
}

#[test]
fn response_too_large_and_garbage() {
    assert_max_fields(
        0,
        |fields| response_with("HTTP/1.1 200 OK", fields),
        parse_resp,
    );
    assert_unended_head_limit(b"HTTP/1.1 200 OK\r\nX-Big: ", parse_resp);
    assert_responses_malformed(&[
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/3.0 200 OK\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"\x00\x01\x02",
    ]);
}

// ---------------------------------------------------------------------------------------------
// Name::of
// ---------------------------------------------------------------------------------------------

const NAMES: &[(&str, Name)] = &[
    ("content-length", Name::ContentLength),
    ("transfer-encoding", Name::TransferEncoding),
    ("connection", Name::Connection),
    ("keep-alive", Name::KeepAlive),
    ("proxy-connection", Name::ProxyConnection),
    ("te", Name::Te),
    ("trailer", Name::Trailer),
    ("upgrade", Name::Upgrade),
    ("expect", Name::Expect),
    ("x-api-key", Name::XApiKey),
    ("authorization", Name::Authorization),
    ("cookie", Name::Cookie),
    ("origin", Name::Origin),
    ("access-control-request-method", Name::AccessControl),
    ("Access-Control-Allow-Origin", Name::AccessControl),
    ("x-stellar-agent", Name::XStellarAgent),
    ("x-request-id", Name::XRequestId),
    ("x-forwarded-for", Name::XForwardedFor),
    ("ratelimit", Name::RateLimitField),
    ("ratelimit-policy", Name::RateLimitField),
    ("retry-after", Name::RateLimitField),
    ("x-ratelimit-limit", Name::RateLimitField),
    ("x-ratelimit-remaining", Name::RateLimitField),
    ("x-ratelimit-reset", Name::RateLimitField),
];

/// `Name::of` each spelling is `want`.
fn assert_names(spellings: &[&str], want: Name) {
    for v in spellings {
        assert_eq!(Name::of(v.as_bytes()), want, "{v:?}");
    }
}

#[test]
fn name_of_every_listed_name_in_any_case() {
    for &(name, want) in NAMES {
        let lower = name.to_string();
        let upper = name.to_ascii_uppercase();
        let title: String = name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-");
        let alternating: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        for v in [lower, upper, title, alternating] {
            assert_eq!(Name::of(v.as_bytes()), want, "{v}");
        }
    }
}

#[test]
fn name_of_near_misses_are_other() {
    for &(name, want) in NAMES {
        // One character short, one character more, one character changed.
        let short = &name[..name.len() - 1];
        let long = format!("{name}s");
        let changed = format!("{}z", short);
        for v in [short.to_string(), long, changed] {
            let got = Name::of(v.as_bytes());
            // Variations of x-stellar-agent are still X-Stellar-*, and of x-forwarded-for
            // X-Forwarded-*.
            let expect = if v.len() > 10 && v.starts_with("x-stellar-") {
                Name::XStellarOther
            } else if v.len() > 12 && v.starts_with("x-forwarded-") {
                Name::ForwardedOther
            } else if v.len() > 15 && v.to_ascii_lowercase().starts_with("access-control-") {
                Name::AccessControl
            } else {
                Name::Other
            };
            assert_eq!(got, expect, "{v} (from {name}, {want:?})");
        }
    }
    assert_names(
        &["", "t", "hosts", "content-length ", " te", "x-api-keys"],
        Name::Other,
    );
}

#[test]
fn name_of_x_stellar_prefix() {
    assert_names(&["x-stellar-agent", "X-Stellar-Agent"], Name::XStellarAgent);
    assert_names(
        &[
            "x-stellar-anything",
            "X-STELLAR-ANYTHING",
            "X-Stellar-a",
            "x-stellar-user-id",
            // Same length as x-stellar-agent, but not it.
            "x-stellar-agenz",
            // Longer than any listed name.
            "x-stellar-a-very-long-internal-field-name",
        ],
        Name::XStellarOther,
    );
    // The bare prefix (10 characters) is not an X-Stellar-* field.
    assert_eq!("x-stellar-".len(), 10);
    assert_names(
        &[
            "x-stellar-",
            "X-STELLAR-",
            "x-stellar",
            "x-stellarx",
            "x-stellarxy",
            "y-stellar-agent",
        ],
        Name::Other,
    );
}

#[test]
fn name_of_underscore_lookalikes() {
    // Read as a controlled name once `_` is taken for `-`: never forwarded.
    assert_names(
        &[
            "x_stellar_agent",
            "X_Stellar_User",
            "x-stellar_user",
            "X_STELLAR_ANYTHING",
            "x_api_key",
            "X-API_KEY",
            "content_length",
            "Transfer_Encoding",
            "x_request_id",
            "X_Forwarded_For",
            "x_forwarded_host",
            "x_real_ip",
            "http2_settings",
            "proxy_connection",
            "keep_alive",
            "host_",
            "x_stellar_a_very_long_internal_field_name_that_is_longer_than_sixty_four_bytes",
        ]
        .iter()
        .filter(|n| **n != "host_")
        .copied()
        .collect::<Vec<_>>(),
        Name::Lookalike,
    );
    // Other names with `_` are just names.
    assert_names(
        &["x_custom", "my_header", "host_", "_", "x_stellar"],
        Name::Other,
    );
}

#[test]
fn name_of_is_applied_to_parsed_fields() {
    let buf =
        b"GET / HTTP/1.1\r\nX-Stellar-Tier: gold\r\nTE: trailers\r\nX-STELLAR-AGENT: a\r\nHost: h\r\n\r\n";
    let (head, _) = req(buf);
    let names: Vec<Name> = head.fields.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        vec![
            Name::XStellarOther,
            Name::Te,
            Name::XStellarAgent,
            Name::Host
        ]
    );
}

#[test]
fn hop_by_hop_set() {
    let hop = [
        Name::Connection,
        Name::KeepAlive,
        Name::ProxyConnection,
        Name::Te,
        Name::Trailer,
        Name::Upgrade,
    ];
    let end_to_end = [
        Name::ContentLength,
        Name::TransferEncoding,
        Name::Expect,
        Name::XApiKey,
        Name::Authorization,
        Name::Cookie,
        Name::Origin,
        Name::AccessControl,
        Name::XStellarAgent,
        Name::XStellarOther,
        Name::XRequestId,
        Name::XForwardedFor,
        Name::RateLimitField,
        Name::Other,
    ];
    for n in hop {
        assert!(n.is_hop_by_hop(), "{n:?}");
    }
    for n in end_to_end {
        assert!(!n.is_hop_by_hop(), "{n:?}");
    }
}

#[test]
fn tokens_are_trimmed_and_empty_ones_skipped() {
    let got: Vec<&[u8]> = tokens(b" a ,b,, \t,c d , ").collect();
    assert_eq!(got, vec![&b"a"[..], b"b", b"c d"]);
    assert_eq!(tokens(b"").count(), 0);
    assert_eq!(tokens(b" , ,").count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Chunked walker
// ---------------------------------------------------------------------------------------------

/// Walk all of `buf` at once; returns (consumed, data).
fn walk_all(w: &mut Chunked, buf: &[u8]) -> Result<(usize, Vec<u8>), Invalid> {
    let mut data = Vec::new();
    let n = w.walk(buf, |r| data.extend_from_slice(&buf[r]))?;
    Ok((n, data))
}

/// Walk all of `buf` with a fresh walker; returns the walker and (consumed, data).
fn walk_fresh(buf: &[u8]) -> (Chunked, (usize, Vec<u8>)) {
    let mut w = Chunked::default();
    let r = walk_all(&mut w, buf).unwrap_or_else(|e| panic!("{:?} gave Err({e:?})", show(buf)));
    (w, r)
}

/// How many bytes of `buf` `w` consumes; panics on an error.
fn consumed(w: &mut Chunked, buf: &[u8]) -> usize {
    walk_all(w, buf).unwrap().0
}

/// `w` consumes nothing of `buf` and finds no data in it.
fn assert_holds_back(w: &mut Chunked, buf: &[u8]) {
    assert_eq!(walk_all(w, buf).unwrap(), (0, vec![]), "{:?}", show(buf));
}

/// `w` walks `buf`: consumes `n` bytes of it, finds `data` in them, and has then counted `total`
/// data bytes in all.
fn assert_walks(w: &mut Chunked, buf: &[u8], n: usize, data: &[u8], total: u64) {
    assert_eq!(
        walk_all(w, buf).unwrap(),
        (n, data.to_vec()),
        "{:?}",
        show(buf)
    );
    assert_eq!(w.data, total, "after {:?}", show(buf));
}

/// Each buffer, walked by a fresh walker, must be refused as malformed.
fn assert_walk_malformed(bufs: &[&[u8]]) {
    for buf in bufs {
        assert_malformed(buf, walk_all(&mut Chunked::default(), buf));
    }
}

/// Chunk-encode `body` with random chunk sizes, size spellings, extensions and trailers.
fn encode_chunked(rng: &mut StdRng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let max_chunk = match rng.gen_range(0..4) {
        0 => 1,
        1 => 7,
        2 => 300,
        _ => body.len().max(1),
    };
    let mut i = 0;
    let size_line = |rng: &mut StdRng, out: &mut Vec<u8>, n: usize| {
        let zeros = if rng.gen_bool(0.2) {
            rng.gen_range(1..4)
        } else {
            0
        };
        out.extend(std::iter::repeat_n(b'0', zeros));
        let hex = if rng.gen_bool(0.5) {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        out.extend_from_slice(hex.as_bytes());
        match rng.gen_range(0..8) {
            0 => out.extend_from_slice(b";a=b"),
            1 => out.extend_from_slice(b";a=b;c"),
            2 => out.extend_from_slice(b" ;name=\"quoted; value\""),
            3 => out.extend_from_slice(br#";x="a\"b";y"#),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
    };
    while i < body.len() {
        let n = rng.gen_range(1..=max_chunk.min(body.len() - i));
        size_line(rng, &mut out, n);
        out.extend_from_slice(&body[i..i + n]);
        out.extend_from_slice(b"\r\n");
        i += n;
    }
    size_line(rng, &mut out, 0);
    for t in 0..rng.gen_range(0..4) {
        if rng.gen_bool(0.5) {
            out.extend_from_slice(format!("X-Trailer-{t}: value {t}\r\n").as_bytes());
        } else {
            out.extend_from_slice(b"Checksum: abc\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| match rng.gen_range(0..4) {
            // Plenty of CR, LF and digits to tempt the walker.
            0 => b'\r',
            1 => b'\n',
            2 => b'0',
            _ => rng.gen(),
        })
        .collect()
}

fn random_body(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..10) {
        0 => 0,
        1..=6 => rng.gen_range(1..200),
        7 | 8 => rng.gen_range(200..3000),
        _ => rng.gen_range(3000..20000),
    };
    random_bytes(rng, len)
}

fn random_extra(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..4) {
        0 => Vec::new(),
        1 => b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        2 => b"0\r\n\r\n".to_vec(),
        _ => {
            let n = rng.gen_range(1..64);
            random_bytes(rng, n)
        }
    }
}

/// A random chunked body as it arrives: the body's data, and the stream of its encoding
/// (`enc_len` bytes) followed by random other bytes.
struct Case {
    /// Which case of its run this is, for failure messages.
    index: usize,
    body: Vec<u8>,
    enc_len: usize,
    stream: Vec<u8>,
}

/// Draws `count` random cases from the generator seeded with `seed` (bodies of at most
/// `max_body` bytes) and has `walk` walk each one (drawing more from the generator if it wants);
/// the walker it returns and the data found must be the case's body's, all counted.
fn check_random_cases(
    seed: u64,
    count: usize,
    max_body: usize,
    mut walk: impl FnMut(&mut StdRng, &Case) -> (Chunked, Vec<u8>),
) {
    let mut rng = StdRng::seed_from_u64(seed);
    for index in 0..count {
        let mut body = random_body(&mut rng);
        body.truncate(max_body);
        let mut stream = encode_chunked(&mut rng, &body);
        let enc_len = stream.len();
        stream.extend_from_slice(&random_extra(&mut rng));
        let case = Case {
            index,
            body,
            enc_len,
            stream,
        };
        let (w, data) = walk(&mut rng, &case);
        assert_eq!(data, case.body, "case {index}: data differs");
        assert_eq!(w.data, case.body.len() as u64, "case {index}");
    }
}

/// Feed `stream` (an encoded body of `enc_len` bytes, then other bytes) to a fresh walker in
/// pieces ending at `cuts`, the way the proxy does: keep a buffer, walk it, drop what was
/// consumed, append the next piece. Checks the invariants along the way; returns the data.
fn feed(stream: &[u8], enc_len: usize, cuts: &[usize]) -> (Chunked, Vec<u8>) {
    let mut w = Chunked::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut consumed = 0usize;
    let mut data = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        pending.extend_from_slice(&stream[from..to]);
        from = to;
        if w.done() {
            continue;
        }
        let mut last_end = 0;
        let n = w
            .walk(&pending, |r| {
                assert!(r.start < r.end, "empty data range {r:?}");
                assert!(r.start >= last_end, "data ranges out of order");
                last_end = r.end;
                data.extend_from_slice(&pending[r]);
            })
            .unwrap_or_else(|e| panic!("walk failed at {consumed}+: {e}"));
        assert!(n <= pending.len());
        assert!(last_end <= n, "data range beyond the consumed bytes");
        consumed += n;
        assert!(
            consumed <= enc_len,
            "walker consumed {consumed} bytes of a {enc_len}-byte body"
        );
        assert_eq!(
            w.done(),
            consumed == enc_len,
            "done() at {consumed}/{enc_len}"
        );
        assert_eq!(w.data, data.len() as u64);
        pending.drain(..n);
        if !w.done() {
            // Only an incomplete line (or the CR of a CRLF) is held back: never a whole one.
            assert!(
                !pending.windows(2).any(|x| x == b"\r\n"),
                "walker held back a complete line: {:?}",
                show(&pending)
            );
            assert!(pending.len() <= MAX_LINE);
        }
    }
    assert!(w.done(), "not done after the whole body was fed");
    assert_eq!(consumed, enc_len);
    // What was not consumed is exactly the next message.
    assert_eq!(&pending[..], &stream[enc_len..]);
    // Once done, nothing more is consumed.
    let mut called = false;
    assert_eq!(w.walk(&pending, |_| called = true), Ok(0));
    assert!(!called);
    (w, data)
}

#[test]
fn chunked_property_random_splits() {
    check_random_cases(0x5eed_c0de, 400, usize::MAX, |rng, c| {
        let pieces = match rng.gen_range(0..3) {
            0 => rng.gen_range(0..4),
            1 => rng.gen_range(0..32),
            _ => rng.gen_range(0..c.stream.len().max(1)),
        };
        let mut cuts: Vec<usize> = (0..pieces)
            .map(|_| rng.gen_range(0..=c.stream.len()))
            .collect();
        cuts.sort_unstable();
        feed(&c.stream, c.enc_len, &cuts)
    });
}

#[test]
fn chunked_property_single_bytes() {
    check_random_cases(42, 60, 2000, |_, c| {
        let cuts: Vec<usize> = (1..c.stream.len()).collect();
        feed(&c.stream, c.enc_len, &cuts)
    });
}

#[test]
fn chunked_property_all_at_once() {
    check_random_cases(7, 200, usize::MAX, |_, c| {
        let (w, (n, data)) = walk_fresh(&c.stream);
        assert_eq!(n, c.enc_len, "case {}", c.index);
        assert!(w.done(), "case {}", c.index);
        (w, data)
    });
}

#[test]
fn chunked_simple_body_with_trailers() {
    let buf = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nNEXT";
    let (w, (n, data)) = walk_fresh(buf);
    assert_eq!(n, buf.len() - 4);
    assert!(w.done());
    assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.");
    assert_eq!(w.data, 23);
}

#[test]
fn chunked_empty_body() {
    let (w, (n, data)) = walk_fresh(b"0\r\n\r\nX");
    assert_eq!(n, 5);
    assert!(w.done());
    assert!(data.is_empty());
    assert_eq!(w.data, 0);
}

#[test]
fn chunked_holds_back_incomplete_lines() {
    let mut w = Chunked::default();
    // Incomplete size line: nothing consumed.
    for buf in [&b"1a"[..], b"1a;ext", b"1a\r"] {
        assert_holds_back(&mut w, buf);
    }
    // Complete size line and part of the data.
    assert_walks(&mut w, b"1a\r\n0123456789", 14, b"0123456789", 10);
    // The rest of the data, then only the CR of the CRLF: the CR is held back.
    assert_walks(&mut w, b"0123456789abcdef\r", 16, b"0123456789abcdef", 26);
    assert!(!w.done());
    // CRLF, last chunk, half a trailer.
    assert_walks(&mut w, b"\r\n0\r\nX-Tr", 5, b"", 26);
    assert!(!w.done());
    assert_walks(&mut w, b"X-Trailer: v\r\n\r", 14, b"", 26);
    assert!(!w.done());
    assert_walks(&mut w, b"\r\nGET", 2, b"", 26);
    assert!(w.done());
}

#[test]
fn chunked_large_declared_size_counts_data_as_it_comes() {
    let mut w = Chunked::default();
    assert_walks(&mut w, b"ffffffffffffffff\r\nabc", 21, b"abc", 3);
    // "\r\n" inside the data is data, not a delimiter.
    assert_walks(&mut w, b"\r\n0\r\n\r\n", 7, b"\r\n0\r\n\r\n", 10);
    assert!(!w.done());
}

#[test]
fn chunked_bad_size_is_an_error() {
    assert_walk_malformed(&[
        b"zz\r\n",
        b"g\r\n",
        b"5x\r\nhello\r\n0\r\n\r\n",
        b"-5\r\n",
        b"0x5\r\n",
        b"5\r5\r\n",
        // 17 hex digits: more than fits.
        b"10000000000000000\r\n",
        b"5 5\r\n",
        // After a good chunk too.
        b"1\r\na\r\nq\r\n",
    ]);
}

#[test]
fn chunked_missing_crlf_after_data_is_an_error() {
    assert_walk_malformed(&[
        b"3\r\nabcX",
        b"3\r\nabc\rX",
        b"3\r\nabc\n\r",
        b"3\r\nabcd\r\n0\r\n\r\n",
        b"3\r\nabc\n0\r\n\r\n",
    ]);
    // The bad byte arriving alone after the data, or after a held-back CR.
    for (first, then) in [(&b"3\r\nabc"[..], &b"X"[..]), (b"3\r\nabc\r", b"\rX")] {
        let mut w = Chunked::default();
        assert_eq!(consumed(&mut w, first), 6, "{:?}", show(first));
        assert_malformed(then, walk_all(&mut w, then));
    }
}

#[test]
fn chunked_overlong_size_line_is_an_error() {
    let mut line = padded(b"1;", MAX_LINE, b'a');
    let mut w = Chunked::default();
    // MAX_LINE bytes without CRLF: still waiting.
    assert_holds_back(&mut w, &line);
    // Two more (so not a MAX_LINE line whose CR has arrived): refused.
    line.extend_from_slice(b"aa");
    assert_malformed(&line, walk_all(&mut w, &line));
    line.resize(3 * MAX_LINE, b'a');
    assert_walk_malformed(&[&line]);

    // Also after some chunks were walked (the limit is on the line, not the buffer).
    let mut buf = padded(b"2\r\nab\r\n1;", 7 + MAX_LINE, b'e');
    assert_eq!(consumed(&mut Chunked::default(), &buf), 7);
    buf.extend_from_slice(b"ee");
    assert_walk_malformed(&[&buf]);
}

#[test]
fn chunked_overlong_trailer_line_is_an_error() {
    // Without its CRLF yet: MAX_LINE bytes wait, two more are refused.
    let mut buf = padded(b"0\r\nX-Long: ", 3 + MAX_LINE, b'v');
    let mut w = Chunked::default();
    assert_eq!(consumed(&mut w, &buf), 3);
    assert!(!w.done());
    buf.extend_from_slice(b"vv");
    assert_walk_malformed(&[&buf]);
    // Complete, one byte over.
    buf.truncate(3 + MAX_LINE + 1);
    buf.extend_from_slice(b"\r\n\r\n");
    assert_walk_malformed(&[&buf]);
    // A trailer line of exactly MAX_LINE bytes is fine when it arrives whole.
    let mut buf = padded(b"0\r\nX-Long: ", 3 + MAX_LINE, b'v');
    buf.extend_from_slice(b"\r\n\r\n");
    let (w, (n, _)) = walk_fresh(&buf);
    assert_eq!(n, buf.len());
    assert!(w.done());
}

#[test]
fn chunked_done_consumes_nothing_more() {
    let mut w = Chunked::default();
    assert_eq!(consumed(&mut w, b"1\r\nx\r\n0\r\n\r\n"), 11);
    assert!(w.done());
    assert_holds_back(&mut w, b"1\r\ny\r\n0\r\n\r\n");
    assert_holds_back(&mut w, b"garbage");
    assert_eq!(w.data, 1);
}

#[test]
fn chunked_size_line_without_digits_is_an_error() {
    assert_walk_malformed(&[b"\r\n\r\n", b";x\r\n\r\n", b";x\r\n0\r\n\r\n"]);
}

#[test]
fn chunked_line_limit_does_not_depend_on_the_split() {
    // A 5000-byte size line is refused even when it arrives whole.
    let mut buf = padded(b"1;", 5000, b'a');
    buf.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
    assert_walk_malformed(&[&buf]);
    // A MAX_LINE trailer line split between CR and LF is held back, not refused.
    let mut buf = padded(b"0\r\nX-Long: ", 3 + MAX_LINE, b'v');
    buf.push(b'\r');
    assert_eq!(consumed(&mut Chunked::default(), &buf), 3);
}

// ---------------------------------------------------------------------------------------------
// Writers and reason phrases
// ---------------------------------------------------------------------------------------------

/// `n` as `put_num` writes it into an empty buffer.
fn put_num_str(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_num(&mut out, n);
    out
}

#[test]
fn put_num_values() {
    for (n, want) in [
        (0u64, "0"),
        (9, "9"),
        (10, "10"),
        (99, "99"),
        (100, "100"),
        (1_000_000, "1000000"),
        (u64::MAX, "18446744073709551615"),
    ] {
        assert_eq!(put_num_str(n), want.as_bytes(), "{n}");
    }
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..1000 {
        let n: u64 = rng.gen::<u64>() >> rng.gen_range(0..64);
        assert_eq!(put_num_str(n), n.to_string().as_bytes());
    }
}

#[test]
fn put_num_and_put_field_append() {
    let mut out = b"HTTP/1.1 ".to_vec();
    put_num(&mut out, 429);
    out.extend_from_slice(b" x\r\n");
    put_field(&mut out, b"Content-Length", b"12");
    put_field(&mut out, b"X-Empty", b"");
    assert_eq!(
        out,
        b"HTTP/1.1 429 x\r\nContent-Length: 12\r\nX-Empty: \r\n".to_vec()
    );
}

#[test]
fn written_head_parses_back() {
    let mut out = b"HTTP/1.1 ".to_vec();
    put_num(&mut out, 503);
    out.push(b' ');
    out.extend_from_slice(reason_phrase(503).as_bytes());
    out.extend_from_slice(b"\r\n");
    put_field(&mut out, b"Retry-After", b"30");
    put_field(&mut out, b"Content-Length", b"2");
    out.extend_from_slice(b"\r\n");
    let (head, len) = resp(&out, false);
    assert_eq!(len, out.len());
    assert_eq!(head.status, 503);
    assert_eq!(head.reason(&out), b"Service Unavailable");
    assert_eq!(head.get_str(&out, Name::RateLimitField), Some("30"));
    assert_eq!(head.body, Body::Length(2));
}

#[test]
fn reason_phrases() {
    for (status, want) in [
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (200, "OK"),
        (401, "Unauthorized"),
        (502, "Bad Gateway"),
        (504, "Gateway Timeout"),
        // Not a standard status, or not a status at all.
        (599, ""),
        (0, ""),
        (1000, ""),
    ] {
        assert_eq!(reason_phrase(status), want, "{status}");
    }
}

#[test]
fn invalid_display() {
    assert_eq!(Invalid::TooLarge.to_string(), "head too large");
    assert_eq!(
        Invalid::Malformed("bad Content-Length").to_string(),
        "bad Content-Length"
    );
}

// ---------------------------------------------------------------------------------------------
// Smuggling shapes (issue 12): refused, never guessed
// ---------------------------------------------------------------------------------------------

#[test]
fn any_transfer_encoding_with_a_content_length_is_refused() {
    for te in ["", ",", " , ", "chunked", "identity", "gzip, chunked"] {
        let buf = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {te}\r\nContent-Length: 3\r\n\r\n"
        );
        assert_malformed(
            buf.as_bytes(),
            parse_request(buf.as_bytes(), &mut Head::default()),
        );
        // The order of the fields does not matter.
        let buf = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: {te}\r\n\r\n"
        );
        assert_malformed(
            buf.as_bytes(),
            parse_request(buf.as_bytes(), &mut Head::default()),
        );
    }
}

#[test]
fn an_empty_transfer_encoding_is_refused_even_alone() {
    for te in ["", ",", " ,, "] {
        let buf = format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_malformed(
            buf.as_bytes(),
            parse_request(buf.as_bytes(), &mut Head::default()),
        );
    }
    // An empty field or element beside one that names chunked too: readers disagree on it.
    for te in [
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: ",
        "Transfer-Encoding: chunked,",
        "Transfer-Encoding: ,chunked",
        "Transfer-Encoding: gzip,,chunked",
    ] {
        let buf = format!("POST / HTTP/1.1\r\nHost: h\r\n{te}\r\n\r\n");
        assert_malformed(
            buf.as_bytes(),
            parse_request(buf.as_bytes(), &mut Head::default()),
        );
    }
}

#[test]
fn http11_requests_need_exactly_one_valid_host() {
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\n\r\n"),
        Invalid::Malformed("no Host in an HTTP/1.1 request")
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        Invalid::Malformed("more than one Host")
    );
    assert_eq!(
        req_err(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"),
        Invalid::Malformed("more than one Host")
    );
    for bad in [
        "a b", "a\tb", "user@h", "h/path", "h\\x", "h\"", "h<", "h{", "h\x7f",
    ] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        // httparse refuses some of these itself; either way, refused.
        assert_malformed(
            buf.as_bytes(),
            parse_request(buf.as_bytes(), &mut Head::default()),
        );
    }
    for good in [
        "h",
        "",
        "api.example.com:8443",
        "127.0.0.1:8080",
        "[::1]:80",
        "xn--bcher-kva.example",
        "a_b.c-d~e",
    ] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
        let (head, _) = req(buf.as_bytes());
        assert_eq!(head.get(buf.as_bytes(), Name::Host), Some(good.as_bytes()));
    }
    // HTTP/1.0 may leave it out.
    assert_eq!(req(b"GET / HTTP/1.0\r\n\r\n").0.minor, 0);
}

#[test]
fn chunk_lines_with_a_bare_cr_lf_or_control_byte_are_refused() {
    assert_walk_malformed(&[
        b"5\n",
        b"5;a=b\nhello\r\n0\r\n\r\n",
        b"5;a\n=b\r\nhello\r\n0\r\n\r\n",
        b"5;a=b\rX\r\n",
        b"5;a=\x00b\r\nhello\r\n0\r\n\r\n",
        b"5 x\r\nhello\r\n0\r\n\r\n",
        b"5x\r\nhello\r\n0\r\n\r\n",
        b"0\r\nX-T: a\nb\r\n\r\n",
        b"0\r\nX-T: a\rb\r\n\r\n",
        b"0\r\nX-T: a\x01\r\n\r\n",
        b"0\r\nX-T a\r\n\r\n",
        b"0\r\n: a\r\n\r\n",
        b"0\r\nX T: a\r\n\r\n",
        b"0\r\n\tX-T: a\r\n\r\n",
        b"0\n\r\n",
        b"0\r\n\n",
        b"11111111111111111\r\n",
    ]);
    // Extensions with their bytes in order still pass (and are dropped by the gateway).
    let buf = b"5 ; a=\"b;c\"\r\nhello\r\n0;x\r\n\r\n";
    let (w, (n, data)) = walk_fresh(buf);
    assert!(w.done());
    assert_eq!((n, data.as_slice()), (buf.len(), &b"hello"[..]));
}

#[test]
fn trailer_fields_are_reported_as_parts() {
    let buf = b"3\r\nabc\r\n0\r\nX-Checksum:  sum1 \r\nX-Stellar-User: v\r\nEmpty:\r\n\r\n";
    let mut w = Chunked::default();
    let mut parts = Vec::new();
    let n = w
        .walk_parts(buf, |p| {
            parts.push(match p {
                Part::Data(r) => (b"data".to_vec(), buf[r].to_vec()),
                Part::Trailer { name, value } => (buf[name].to_vec(), buf[value].to_vec()),
            })
        })
        .unwrap();
    assert_eq!(n, buf.len());
    assert!(w.done());
    let want: Vec<(Vec<u8>, Vec<u8>)> = [
        ("data", "abc"),
        ("X-Checksum", "sum1"),
        ("X-Stellar-User", "v"),
        ("Empty", ""),
    ]
    .iter()
    .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
    .collect();
    assert_eq!(parts, want);
}

#[test]
fn request_targets_in_no_http11_form_are_refused() {
    for (method, target) in [
        ("GET", "?"),
        ("GET", "a/"),
        ("GET", "@"),
        ("GET", "*"),
        ("POST", "*"),
        ("GET", "h.example:443"),
        ("CONNECT", "h.example"),
        ("CONNECT", "user@h.example:443"),
        ("GET", "http://"),
    ] {
        let buf = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            req_err(buf.as_bytes()),
            Invalid::Malformed("request target in no HTTP/1.1 form"),
            "{buf:?}"
        );
    }
}

#[test]
fn chunked_applied_twice_is_refused() {
    for te in [
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked, gzip, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
    ] {
        let buf = format!("POST / HTTP/1.1\r\nHost: h\r\n{te}\r\n\r\n");
        assert_malformed(
            buf.as_bytes(),
            parse_request(buf.as_bytes(), &mut Head::default()),
        );
    }
}
