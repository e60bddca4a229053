//! Step 7's heads: the request head an upstream sees and the response head the client sees.
//!
//! The upstream head is built from an allow-list: the request line as classified (the target is
//! forwarded byte for byte as [`stellar_proto::route::classify_target`] accepted it), then only
//! the client's fields the gateway has no reason to withhold, then framing and identity written
//! by the gateway itself. Never forwarded: hop-by-hop fields and those `Connection` names,
//! `HTTP2-Settings`, `Expect` (the gateway answers it), `X-Stellar-*`, `X-Request-Id`,
//! `Forwarded`/`X-Forwarded-*`/`X-Real-IP`, any `_` lookalike of those names (`X_Stellar_User`),
//! the client's own `Content-Length`/`Transfer-Encoding` (the gateway writes the framing it
//! forwards), and on engine routes the client's credentials (`X-API-Key`, `Authorization`, and
//! `Cookie`, which carries billing's dashboard session).

use crate::h1::{self, Body, Head, Name};
use crate::limits::{self, Decision};
use crate::tier_meta::TierMeta;
use std::net::IpAddr;
use uuid::Uuid;

/// What the gateway adds to a request on its way up.
pub struct Stamp<'a> {
    /// An engine route: the client's key is withheld and the tenant is named instead.
    pub engine: bool,
    /// The authenticated account (`X-Stellar-User`).
    pub user: Option<Uuid>,
    /// The validated agent (`X-Stellar-Agent`).
    pub agent: Option<&'a str>,
    /// `gateway.upstream_api_key`, sent to the engine when not empty.
    pub upstream_api_key: &'a str,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    /// The `Host` sent when the client sent none (HTTP/1.0): the upstream's address.
    pub upstream_host: &'a str,
    /// Send `upstream_host` instead of the client's `Host` (an upstream given as a URL).
    pub fixed_host: bool,
}

/// Whether a client's request field may reach an upstream. Every name is decided here: a new
/// [`Name`] must be placed (no catch-all arm).
fn forwarded(name: Name, engine: bool) -> bool {
    match name {
        Name::Other | Name::Host | Name::RateLimitField | Name::Origin | Name::AccessControl => {
            true
        }
        Name::XApiKey | Name::Authorization | Name::Cookie => !engine,
        Name::ContentLength
        | Name::TransferEncoding
        | Name::Connection
        | Name::KeepAlive
        | Name::ProxyConnection
        | Name::Te
        | Name::Trailer
        | Name::Upgrade
        | Name::Http2Settings
        | Name::Expect
        | Name::XStellarAgent
        | Name::XStellarOther
        | Name::XRequestId
        | Name::XForwardedFor
        | Name::ForwardedOther
        | Name::Lookalike => false,
    }
}

/// Write the request head for the upstream into `out` (cleared first). `bytes` holds the
/// received head `h` describes.
pub fn upstream_head(out: &mut Vec<u8>, bytes: &[u8], h: &Head, s: &Stamp<'_>) {
    out.clear();
    out.extend_from_slice(h.method(bytes).as_bytes());
    out.push(b' ');
    out.extend_from_slice(h.target(bytes).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let (mut had_length, mut had_host) = (false, false);
    for (name, f) in &h.fields {
        had_length |= *name == Name::ContentLength;
        had_host |= *name == Name::Host;
        // A field the client's `Connection` names is hop-by-hop too (`Host` excepted: it is
        // needed, and dropping it would make the request invalid).
        let named =
            h.conn.names_fields && *name != Name::Host && h.connection_names(bytes, f.name(bytes));
        let replaced = s.fixed_host && *name == Name::Host;
        if forwarded(*name, s.engine) && !named && !replaced {
            h1::put_field(out, f.name(bytes), f.value(bytes));
        }
    }
    if !had_host || s.fixed_host {
        // The upstream hears HTTP/1.1, where `Host` is required.
        h1::put_field(out, b"Host", s.upstream_host.as_bytes());
    }
    match h.body {
        Body::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            h1::put_num(out, n);
            out.extend_from_slice(b"\r\n");
        }
        // The body is re-framed by the gateway (`relay`), extensions and trailers dropped.
        Body::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        // An explicit empty body stays explicit (some servers want a length on every POST).
        Body::None if had_length => out.extend_from_slice(b"Content-Length: 0\r\n"),
        Body::None | Body::Close => {}
    }
    if s.engine {
        if let Some(user) = s.user {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = user.hyphenated().encode_lower(&mut buf);
            h1::put_field(out, b"X-Stellar-User", id.as_bytes());
        }
        if let Some(a) = s.agent {
            h1::put_field(out, b"X-Stellar-Agent", a.as_bytes());
        }
        if !s.upstream_api_key.is_empty() {
            h1::put_field(out, b"X-API-Key", s.upstream_api_key.as_bytes());
        }
    }
    h1::put_field(out, b"X-Request-Id", s.request_id.as_bytes());
    if let Some(ip) = s.client_ip {
        use std::io::Write;
        out.extend_from_slice(b"X-Forwarded-For: ");
        let _ = write!(out, "{ip}");
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a trailer field of a chunked request may be passed on: listed in
/// `gateway.allowed_trailers` (lower-case) and not a name the gateway controls.
pub fn trailer_allowed(name: &[u8], allowed: &[String]) -> bool {
    Name::of(name) == Name::Other
        && allowed
            .iter()
            .any(|a| name.eq_ignore_ascii_case(a.as_bytes()))
}

/// What the gateway adds to an answer on its way down.
pub struct Answer<'a> {
    /// The rate-limit decision to report, under its policy's header values.
    pub rate: Option<(&'a TierMeta, &'a Decision)>,
    pub request_id: &'a str,
    /// The client connection stays open after this answer.
    pub keep_alive: bool,
    /// The answer is chunked and the client speaks HTTP/1.0: its data is sent close-delimited.
    pub dechunk: bool,
    /// The CORS grant of an allowed origin: its fields replace any the upstream sent.
    pub cors: Option<(&'a [u8], crate::cors::Grant)>,
}

/// Append the response head as the client sees it to `out`: the upstream's, without its
/// hop-by-hop fields, plus the rate-limit fields and `X-Request-Id`.
pub fn client_head(out: &mut Vec<u8>, bytes: &[u8], h: &Head, a: &Answer<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    h1::put_num(out, u64::from(h.status));
    out.push(b' ');
    out.extend_from_slice(h.reason(bytes));
    out.extend_from_slice(b"\r\n");
    let has_te = h.fields.iter().any(|(n, _)| *n == Name::TransferEncoding);
    for (name, f) in &h.fields {
        let drop = match name {
            n if n.is_hop_by_hop() => true,
            Name::XRequestId => true,
            Name::RateLimitField => a.rate.is_some(),
            Name::AccessControl => true,
            Name::TransferEncoding => a.dechunk,
            // With Transfer-Encoding, a Content-Length is wrong (RFC 9112 §6.3).
            Name::ContentLength => has_te,
            _ => h.conn.names_fields && h.connection_names(bytes, f.name(bytes)),
        };
        if !drop {
            h1::put_field(out, f.name(bytes), f.value(bytes));
        }
    }
    if let Some((meta, d)) = a.rate {
        meta.write_fields(out, d, limits::unix_now());
    }
    if let Some((origin, g)) = a.cors {
        crate::cors::Cors::write_fields(out, origin, g);
    }
    h1::put_field(out, b"X-Request-Id", a.request_id.as_bytes());
    if !a.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
