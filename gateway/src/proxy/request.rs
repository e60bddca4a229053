//! A request as the proxy carries it: the head ([`Request`]), its per-request state ([`Ctx`],
//! made by [`Ctx::new`] from the one strict reading of the request line), its id, and how it can
//! fail ([`Fail`]).

use crate::auth::Principal;
use crate::errors::Reject;
use crate::h1::{Head, Name};
use crate::limits::Decision;
use crate::routing::{self, BadTarget, Route};
use crate::tier_meta::TierMeta;
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Per-request state.
pub struct Ctx {
    pub(super) started: Instant,
    pub(super) request_id: RequestId,
    pub(super) route: Route,
    /// Why the request line was refused ([`Route::Invalid`]).
    pub(super) refused: Option<Reject>,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) principal: Option<Arc<Principal>>,
    pub(super) agent: Option<String>,
    /// The CORS grant of the request's allowed `Origin` (the origin as sent).
    pub(super) cors: Option<(String, crate::cors::Grant)>,
    /// The usage-history route family of an authenticated engine request.
    pub(super) family: crate::usage_history::Family,
    /// The rate-limit decision to report on the response, under its policy.
    pub(super) rate: Option<(Arc<TierMeta>, Decision)>,
    /// A memory reserved for this store, to commit (2xx) or release (anything else).
    pub(super) reserved: Option<Uuid>,
    pub(super) upstream_status: Option<u16>,
    pub(super) upstream_sent: Option<Instant>,
    pub(super) reject: Option<&'static str>,
    pub(super) forget_settled: bool,
    /// The upstream answered before the request body was all sent: after the answer, read and
    /// discard what the client still sends for a moment before closing.
    pub(super) linger: bool,
    /// The status written to the client (0: none yet).
    pub(super) status: u16,
    /// Whether the client connection can take another request after this one.
    pub(super) keep_alive: bool,
}

/// A request id, stored inline (no allocation per request).
#[derive(Clone, Copy)]
pub struct RequestId {
    buf: [u8; 64],
    len: u8,
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    pub(super) fn from_ascii(s: &[u8]) -> RequestId {
        let mut buf = [0u8; 64];
        buf[..s.len()].copy_from_slice(s);
        RequestId {
            buf,
            len: s.len() as u8,
        }
    }

    /// A random (version 4) UUID from a per-thread generator seeded from the OS once: no
    /// system call per request.
    pub(super) fn generate() -> RequestId {
        thread_local! {
            static STATE: Cell<u64> = Cell::new({
                let b = *Uuid::new_v4().as_bytes();
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            });
        }
        let (a, b) = STATE.with(|s| {
            let next = || {
                // splitmix64
                let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                s.set(x);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            (next(), next())
        });
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let s = id.hyphenated().encode_lower(&mut text);
        RequestId::from_ascii(s.as_bytes())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
/// Keep a client's request id if it is sane (≤ 64 of `A-Z a-z 0-9 - _ .`), else make one.
pub fn request_id(client: Option<&str>) -> String {
    make_request_id(client).as_str().to_string()
}

pub(super) fn make_request_id(client: Option<&str>) -> RequestId {
    match client {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            RequestId::from_ascii(id.as_bytes())
        }
        _ => RequestId::generate(),
    }
}

/// A request head: its bytes (copied out of the connection's buffer) and what they say.
#[derive(Default)]
pub struct Request {
    pub(super) bytes: Vec<u8>,
    pub(super) head: Head,
}

impl Request {
    pub(super) fn get(&self, name: Name) -> Option<&[u8]> {
        self.head.get(&self.bytes, name)
    }

    pub(super) fn method(&self) -> &str {
        self.head.method(&self.bytes)
    }
}

/// Why a request could not be carried through. Displayed in logs (never with a key).
#[derive(Debug)]
pub(super) enum Fail {
    /// The client went away, stalled or broke the body's framing: there is no one to answer, or
    /// (`Some`) the answer to give.
    Client(&'static str, Option<Reject>),
    /// The upstream could not be reached, failed or timed out. `resendable`: it failed before
    /// answering in a way that means a reused connection had been closed (nothing processed).
    Upstream {
        why: String,
        reject: Reject,
        resendable: bool,
    },
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Client(why, _) => write!(f, "client: {why}"),
            Fail::Upstream { why, .. } => write!(f, "upstream: {why}"),
        }
    }
}

impl Fail {
    pub(super) fn upstream(why: impl Into<String>, reject: Reject) -> Fail {
        Fail::Upstream {
            why: why.into(),
            reject,
            resendable: false,
        }
    }

    /// An I/O error on the upstream connection; `fresh`: nothing has been received on it yet.
    pub(super) fn upstream_io(what: &str, e: std::io::Error, fresh: bool) -> Fail {
        use std::io::ErrorKind::*;
        Fail::Upstream {
            why: format!("{what}: {e}"),
            reject: if e.kind() == TimedOut {
                Reject::GatewayTimeout
            } else {
                Reject::BadGateway
            },
            resendable: fresh
                && matches!(
                    e.kind(),
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                ),
        }
    }

    pub(super) fn answer(&self) -> Option<Reject> {
        match self {
            Fail::Client(_, r) => r.clone(),
            Fail::Upstream { reject, .. } => Some(reject.clone()),
        }
    }
}

impl Ctx {
    /// The state of a request just read: its route from the one strict reading of the request
    /// line (or why that was refused), its id, whether its connection may be kept.
    pub(super) fn new(req: &Request, client_ip: Option<IpAddr>, running: bool) -> Ctx {
        let (route, refused) =
            match routing::classify_target(req.method(), req.head.target(&req.bytes)) {
                Ok(r) => (r, None),
                Err(BadTarget::Method) => (Route::Invalid, Some(Reject::MethodNotAllowed)),
                Err(BadTarget::Target(why)) => (Route::Invalid, Some(Reject::BadRequest(why))),
            };
        Ctx {
            started: Instant::now(),
            request_id: make_request_id(req.head.get_str(&req.bytes, Name::XRequestId)),
            route,
            refused,
            client_ip,
            principal: None,
            agent: None,
            family: crate::usage_history::Family::Other,
            cors: None,
            rate: None,
            reserved: None,
            upstream_status: None,
            upstream_sent: None,
            reject: None,
            forget_settled: false,
            linger: false,
            status: 0,
            // HTTP/1.0 clients get one request per connection.
            keep_alive: running && req.head.minor == 1 && !req.head.conn.close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_ne!(request_id(Some("has space")), "has space");
        assert_eq!(request_id(Some(&"a".repeat(65))).len(), 36);
        assert_eq!(request_id(None).len(), 36);
    }
}
