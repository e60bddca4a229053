//! Header hygiene without a socket: a client head in, the upstream head out, parsed back.

use super::*;
use crate::h1::parse_request;

const USER: &str = "6f9d2a51-3c1e-4b8e-9a57-0c2d4e8f1a3b";

fn stamp(engine: bool) -> Stamp<'static> {
    Stamp {
        engine,
        user: engine.then(|| USER.parse().unwrap()),
        agent: engine.then_some("agent-1"),
        upstream_api_key: "",
        request_id: "rid-1",
        client_ip: Some("203.0.113.9".parse().unwrap()),
        upstream_host: "127.0.0.1:9000",
        fixed_host: false,
    }
}

/// The upstream head for `client` (a whole request head) and its fields, parsed back.
fn rewrite(client: &str, s: &Stamp<'_>) -> (String, Vec<(String, String)>) {
    let mut head = Head::default();
    let len = parse_request(client.as_bytes(), &mut head)
        .expect("valid")
        .expect("complete");
    let mut out = Vec::new();
    upstream_head(&mut out, &client.as_bytes()[..len], &head, s);
    let mut back = Head::default();
    let n = parse_request(&out, &mut back)
        .expect("the upstream head parses")
        .expect("complete");
    assert_eq!(n, out.len(), "exactly one head");
    let fields = back
        .fields
        .iter()
        .map(|(_, f)| {
            (
                String::from_utf8_lossy(f.name(&out)).to_ascii_lowercase(),
                String::from_utf8_lossy(f.value(&out)).into_owned(),
            )
        })
        .collect();
    (String::from_utf8(out).unwrap(), fields)
}

fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn identity_comes_only_from_the_gateway() {
    let (_, f) = rewrite(
        "POST /api/v1/store HTTP/1.1\r\nHost: h\r\nX-API-Key: sk-client\r\n\
         Authorization: Bearer sk-client\r\nX-Stellar-User: victim\r\nx-stellar-user: v2\r\n\
         X-Stellar-Agent: other\r\nX-Stellar-Anything: 1\r\nX-Request-Id: client-id\r\n\
         X-Forwarded-For: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-Host: evil\r\n\
         X-Real-IP: 1.2.3.4\r\nContent-Length: 2\r\n\r\n",
        &stamp(true),
    );
    assert_eq!(values(&f, "x-stellar-user"), [USER]);
    assert_eq!(values(&f, "x-stellar-agent"), ["agent-1"]);
    assert_eq!(values(&f, "x-request-id"), ["rid-1"]);
    assert_eq!(values(&f, "x-forwarded-for"), ["203.0.113.9"]);
    for gone in [
        "x-api-key",
        "authorization",
        "x-stellar-anything",
        "forwarded",
        "x-forwarded-host",
        "x-real-ip",
    ] {
        assert!(values(&f, gone).is_empty(), "{gone} forwarded: {f:?}");
    }
    assert_eq!(values(&f, "host"), ["h"]);
}

#[test]
fn underscore_lookalikes_of_controlled_names_are_dropped() {
    let (_, f) = rewrite(
        "GET /api/v1/stats HTTP/1.1\r\nHost: h\r\nX_Stellar_User: victim\r\n\
         x_stellar-agent: a\r\nX-Stellar_Tier: team\r\nX_API_Key: sk\r\nX_Request_Id: r\r\n\
         X_Forwarded_For: 1.2.3.4\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\n\
         Http2_Settings: x\r\nX_Custom_Thing: kept\r\n\r\n",
        &stamp(true),
    );
    let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains('_') && *n != "x_custom_thing"),
        "{names:?}"
    );
    assert_eq!(
        values(&f, "x_custom_thing"),
        ["kept"],
        "other names keep their `_`"
    );
}

#[test]
fn billing_gets_the_key_but_never_the_identity_headers() {
    let (_, f) = rewrite(
        "GET /auth/usage HTTP/1.1\r\nHost: h\r\nX-API-Key: sk-own\r\n\
         Authorization: Bearer sk-own\r\nX-Stellar-User: victim\r\n\r\n",
        &stamp(false),
    );
    assert_eq!(values(&f, "x-api-key"), ["sk-own"]);
    assert_eq!(values(&f, "authorization"), ["Bearer sk-own"]);
    assert!(values(&f, "x-stellar-user").is_empty());
}

#[test]
fn the_session_cookie_reaches_billing_but_never_the_engine() {
    let head = "GET /api/v1/stats HTTP/1.1\r\nHost: h\r\nCookie: stellar_session=s3cret\r\n\
                cookie: a=b\r\nX-CSRF-Token: t\r\n\r\n";
    let (_, f) = rewrite(head, &stamp(true));
    assert!(values(&f, "cookie").is_empty(), "{f:?}");
    let (_, f) = rewrite(
        &head.replace("/api/v1/stats", "/auth/session"),
        &stamp(false),
    );
    assert_eq!(values(&f, "cookie"), ["stellar_session=s3cret", "a=b"]);
    assert_eq!(values(&f, "x-csrf-token"), ["t"]);
}

#[test]
fn hop_by_hop_fields_and_those_connection_names_stay_on_this_hop() {
    let (_, f) = rewrite(
        "GET /api/v1/stats HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings, X-Secret\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Secret: s\r\nKeep-Alive: 5\r\n\
         TE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nExpect: 100-continue\r\n\
         X-Kept: k\r\n\r\n",
        &stamp(true),
    );
    for gone in [
        "connection",
        "upgrade",
        "http2-settings",
        "x-secret",
        "keep-alive",
        "te",
        "trailer",
        "proxy-connection",
        "expect",
    ] {
        assert!(values(&f, gone).is_empty(), "{gone} forwarded: {f:?}");
    }
    assert_eq!(values(&f, "x-kept"), ["k"]);
    // `HTTP2-Settings` is hop-by-hop even when `Connection` does not name it.
    let (_, f) = rewrite(
        "GET /api/v1/stats HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        &stamp(true),
    );
    assert!(values(&f, "http2-settings").is_empty());
}

#[test]
fn the_gateway_writes_the_framing_it_forwards() {
    let (text, f) = rewrite(
        "POST /api/v1/store?x=1 HTTP/1.1\r\nHost: h\r\ncontent-length: 0012\r\n\r\n",
        &stamp(true),
    );
    assert!(
        text.starts_with("POST /api/v1/store?x=1 HTTP/1.1\r\n"),
        "{text}"
    );
    assert_eq!(values(&f, "content-length"), ["12"]);
    let (_, f) = rewrite(
        "POST /api/v1/store HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        &stamp(true),
    );
    assert_eq!(values(&f, "transfer-encoding"), ["chunked"]);
    assert!(values(&f, "content-length").is_empty());
    let (_, f) = rewrite(
        "POST /api/v1/store HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        &stamp(true),
    );
    assert_eq!(values(&f, "content-length"), ["0"]);
    let (_, f) = rewrite("GET /api/v1/stats HTTP/1.0\r\n\r\n", &stamp(true));
    assert!(values(&f, "content-length").is_empty());
    assert_eq!(
        values(&f, "host"),
        ["127.0.0.1:9000"],
        "HTTP/1.1 needs a Host"
    );
}

#[test]
fn the_engine_key_is_the_gateway_s_own() {
    let s = Stamp {
        upstream_api_key: "engine-secret",
        ..stamp(true)
    };
    let (_, f) = rewrite(
        "GET /api/v1/stats HTTP/1.1\r\nHost: h\r\nX-API-Key: sk-client\r\n\r\n",
        &s,
    );
    assert_eq!(values(&f, "x-api-key"), ["engine-secret"]);
}

#[test]
fn trailers_pass_only_when_listed_and_not_controlled() {
    let allowed = vec!["x-checksum".to_string(), "x-stellar-user".to_string()];
    assert!(trailer_allowed(b"X-Checksum", &allowed));
    assert!(!trailer_allowed(b"X-Other", &allowed));
    // Listed, but a name the gateway controls: never.
    assert!(!trailer_allowed(b"X-Stellar-User", &allowed));
    assert!(!trailer_allowed(b"X_Stellar_User", &allowed));
    assert!(!trailer_allowed(b"X-API-Key", &["x-api-key".to_string()]));
    assert!(!trailer_allowed(b"X-Checksum", &[]));
}

#[test]
fn cors_fields_are_the_gateway_s_alone() {
    let upstream = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: *\r\n\
                    access-control-allow-credentials: true\r\nVary: Accept\r\n\r\n";
    let mut head = Head::default();
    crate::h1::parse_response(upstream.as_bytes(), &mut head, false)
        .unwrap()
        .unwrap();
    let head_for = |cors| {
        let mut out = Vec::new();
        let a = Answer {
            rate: None,
            request_id: "rid",
            keep_alive: true,
            dechunk: false,
            cors,
        };
        client_head(&mut out, upstream.as_bytes(), &head, &a);
        String::from_utf8(out).unwrap().to_ascii_lowercase()
    };
    // No allowed origin: the upstream's CORS fields are dropped, nothing added.
    let none = head_for(None);
    assert!(!none.contains("access-control"), "{none}");
    assert!(none.contains("vary: accept"));
    // An allowed origin without credentials.
    let g = crate::cors::Grant { credentials: false };
    let other = head_for(Some((b"https://app.example", g)));
    assert_eq!(
        other.matches("access-control-allow-origin").count(),
        1,
        "{other}"
    );
    assert!(other.contains("access-control-allow-origin: https://app.example\r\n"));
    assert!(!other.contains("credentials"), "{other}");
    assert!(other.contains("vary: origin"));
    // The dashboard's own origin: credentials.
    let own = head_for(Some((
        b"http://127.0.0.1:8080",
        crate::cors::Grant { credentials: true },
    )));
    assert!(
        own.contains("access-control-allow-credentials: true\r\n"),
        "{own}"
    );
}

#[test]
fn an_upstream_given_as_a_url_sees_its_own_host() {
    let mut s = stamp(true);
    s.upstream_host = "memory.example.com";
    s.fixed_host = true;
    let (_, f) = rewrite(
        "GET /api/v1/stats HTTP/1.1\r\nHost: gateway.local\r\n\r\n",
        &s,
    );
    assert_eq!(values(&f, "host"), ["memory.example.com"]);
    let (_, f) = rewrite(
        "GET /api/v1/stats HTTP/1.1\r\nHost: gateway.local\r\n\r\n",
        &stamp(true),
    );
    assert_eq!(values(&f, "host"), ["gateway.local"]);
}
