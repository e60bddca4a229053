//! Step 1 of the hot path: which upstream a request goes to and what it needs on the way.
//!
//! The gateway decides on exactly the bytes it forwards: [`classify_target`] accepts a request
//! target only in a form that every upstream resolves to the same path as the gateway does, and
//! that target is then forwarded unchanged. Anything another server might read differently is
//! refused, not normalised: a fragment (`/api/v1/store#x` is a store to a server that drops the
//! fragment), `;` parameters (stripped by some servers), dot segments and doubled slashes
//! (merged by some), percent-encoded characters that need no encoding (`/api/v1/st%6Fre` is a
//! store to a server that decodes before routing), encoded `/`, `.`, `\`, `%` and control
//! bytes, and every form but origin-form (absolute-form, authority-form, asterisk-form).
//! Methods nobody serves (`CONNECT`, `TRACE`, anything unknown or not upper-case) are refused
//! too, never forwarded.

/// What the gateway does with a request, decided from the method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/v1/health`: public, straight to the engine.
    Health,
    /// Any other `/api/v1/*`: needs a key.
    Engine(EngineOp),
    /// Everything else goes to billing, which authenticates its own endpoints. `ip_limited`
    /// routes (sign-up, checkout) are unauthenticated and get the per-IP bucket.
    Billing { ip_limited: bool },
    /// Refused before routing ([`BadTarget`]): goes nowhere.
    Invalid,
}

/// Engine operations the gateway treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineOp {
    /// `POST /api/v1/store`: reserves one memory of the quota.
    Store,
    /// `DELETE /api/v1/forget/{id}`: a 2xx frees one.
    Forget,
    /// `GET /api/v1/events`: server-sent events, long read timeout.
    Events,
    /// Everything else (including paths this gateway does not know: they pass through).
    Other,
}

impl Route {
    /// One route of each metric label, in [`index`](Route::index) order: tables of per-route
    /// metric handles are built from this.
    pub const ALL: [Route; 7] = [
        Route::Health,
        Route::Engine(EngineOp::Store),
        Route::Engine(EngineOp::Forget),
        Route::Engine(EngineOp::Events),
        Route::Engine(EngineOp::Other),
        Route::Billing { ip_limited: false },
        Route::Invalid,
    ];

    /// The position of this route's label in [`Route::ALL`].
    pub fn index(self) -> usize {
        match self {
            Route::Health => 0,
            Route::Engine(EngineOp::Store) => 1,
            Route::Engine(EngineOp::Forget) => 2,
            Route::Engine(EngineOp::Events) => 3,
            Route::Engine(EngineOp::Other) => 4,
            Route::Billing { .. } => 5,
            Route::Invalid => 6,
        }
    }

    /// Bounded label for metrics (never the raw path).
    pub fn label(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Engine(EngineOp::Store) => "store",
            Route::Engine(EngineOp::Forget) => "forget",
            Route::Engine(EngineOp::Events) => "events",
            Route::Engine(EngineOp::Other) => "engine",
            Route::Billing { .. } => "billing",
            Route::Invalid => "invalid",
        }
    }

    pub fn is_engine(self) -> bool {
        matches!(self, Route::Health | Route::Engine(_))
    }
}

/// Why a request line is refused before routing (the gateway answers 400, or 405 for a method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTarget {
    /// A method this gateway never forwards (`CONNECT`, `TRACE`, unknown or not upper-case).
    Method,
    /// Not origin-form (`/path?query`), or a path another server could read differently. The
    /// reason is safe to show to the client.
    Target(&'static str),
}

/// The methods the gateway forwards; everything else is [`BadTarget::Method`].
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The `Allow` value of a 405 for a refused method.
pub const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Check the request line and classify it: the one entry point of routing. On success, the
/// target is origin-form and its path (everything before `?`) is what [`classify`] saw.
pub fn classify_target(method: &str, target: &str) -> Result<Route, BadTarget> {
    if !METHODS.contains(&method) {
        return Err(BadTarget::Method);
    }
    let path = origin_path(target).map_err(BadTarget::Target)?;
    Ok(classify(method, path))
}

/// The path of an origin-form target that every upstream reads as the gateway does.
pub fn origin_path(target: &str) -> Result<&str, &'static str> {
    let b = target.as_bytes();
    match b.first() {
        Some(b'/') => {}
        Some(b'*') => return Err("asterisk-form request targets are not accepted"),
        _ => return Err("the request target must be a path (origin-form: /path?query)"),
    }
    if b.contains(&b'#') {
        return Err("a request target must not contain a fragment ('#')");
    }
    let path = match target.find('?') {
        Some(q) => &target[..q],
        None => target,
    };
    let p = path.as_bytes();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'/' => {
                // The segment that starts after this slash.
                let seg_end = p[i + 1..]
                    .iter()
                    .position(|&c| c == b'/')
                    .map_or(p.len(), |n| i + 1 + n);
                match &p[i + 1..seg_end] {
                    b"" if seg_end < p.len() => {
                        return Err("a request path must not contain empty segments ('//')")
                    }
                    b"." | b".." => return Err("a request path must not contain dot segments"),
                    _ => {}
                }
            }
            b';' => return Err("a request path must not contain ';' parameters"),
            b'%' => {
                let (Some(&h), Some(&l)) = (p.get(i + 1), p.get(i + 2)) else {
                    return Err("bad percent-encoding in the request path");
                };
                let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                    return Err("bad percent-encoding in the request path");
                };
                let c = h << 4 | l;
                if c.is_ascii_alphanumeric()
                    || matches!(c, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b'%')
                    || c < 0x20
                    || c == 0x7f
                {
                    return Err("the request path percent-encodes a character that must appear as itself, or one not allowed in a path");
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_alphanumeric() => {}
            // The rest of RFC 3986's `pchar`: unreserved, sub-delims (';' aside), ':' and '@'.
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+'
            | b',' | b'=' | b':' | b'@' => {}
            _ => return Err("the request path contains a character that must be percent-encoded"),
        }
        i += 1;
    }
    Ok(path)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Classify a request by method and path (the target without its query). Callers with a raw
/// request target use [`classify_target`], which checks it first.
/// Whether a read-only key may make this request: the engine's reads (recall, memories, timeline,
/// narrate, stats, events, health, and the read-only analysis routes). Everything else — store,
/// forget, optimize, rollback, any path the gateway does not know — needs a read-write key.
pub fn is_read(method: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return false;
    };
    let rest = rest.trim_end_matches('/');
    match method {
        "GET" | "HEAD" => {
            matches!(
                rest,
                "recall"
                    | "recall/confident"
                    | "memories"
                    | "timeline"
                    | "stats"
                    | "events"
                    | "health"
                    | "introspect"
                    | "contradictions"
            )
        }
        "POST" => rest == "narrate",
        _ => false,
    }
}

pub fn classify(method: &str, path: &str) -> Route {
    if let Some(rest) = path.strip_prefix("/api/v1") {
        if !(rest.is_empty() || rest.starts_with('/')) {
            // "/api/v1foo" is not the engine API.
            return billing(method, path);
        }
        let rest = rest.trim_end_matches('/');
        return match (method, rest) {
            ("GET" | "HEAD", "/health") => Route::Health,
            ("POST", "/store") => Route::Engine(EngineOp::Store),
            ("DELETE", r) if r.starts_with("/forget/") && r.len() > "/forget/".len() => {
                Route::Engine(EngineOp::Forget)
            }
            ("GET", "/events") => Route::Engine(EngineOp::Events),
            _ => Route::Engine(EngineOp::Other),
        };
    }
    billing(method, path)
}

fn billing(method: &str, path: &str) -> Route {
    let ip_limited = match method {
        "POST" => path == "/auth/register" || path == "/billing/toss/confirm" || is_checkout(path),
        "GET" => is_checkout(path),
        _ => false,
    };
    Route::Billing { ip_limited }
}

/// `/billing/{provider}/checkout`
fn is_checkout(path: &str) -> bool {
    path.strip_prefix("/billing/")
        .and_then(|r| r.strip_suffix("/checkout"))
        .is_some_and(|provider| !provider.is_empty() && !provider.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_an_allow_list() {
        for (m, p) in [
            ("GET", "/api/v1/recall"),
            ("GET", "/api/v1/memories/"),
            ("HEAD", "/api/v1/stats"),
            ("GET", "/api/v1/events"),
            ("GET", "/api/v1/timeline"),
            ("POST", "/api/v1/narrate"),
            ("GET", "/api/v1/recall/confident"),
        ] {
            assert!(is_read(m, p), "{m} {p}");
        }
        for (m, p) in [
            ("POST", "/api/v1/store"),
            ("DELETE", "/api/v1/forget/1"),
            ("POST", "/api/v1/optimize"),
            ("POST", "/api/v1/recall"),
            ("GET", "/api/v1/unknown"),
            ("GET", "/api/v1recall"),
            ("PUT", "/api/v1/memories"),
            ("GET", "/auth/usage"),
        ] {
            assert!(!is_read(m, p), "{m} {p}");
        }
    }

    #[test]
    fn all_routes_in_index_order() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let mut labels: Vec<_> = Route::ALL.iter().map(|r| r.label()).collect();
        labels.dedup();
        assert_eq!(labels.len(), Route::ALL.len(), "one label per route");
    }

    /// Targets every upstream reads as the gateway does: accepted, path as classified.
    #[test]
    fn origin_form_targets_are_accepted_as_they_are() {
        for (target, path) in [
            ("/", "/"),
            ("/api/v1/store", "/api/v1/store"),
            ("/api/v1/store/", "/api/v1/store/"),
            ("/api/v1/recall?q=a%20b&limit=5", "/api/v1/recall"),
            ("/api/v1/recall?q=a/../b;c//d", "/api/v1/recall"),
            ("/api/v1/forget/3f2a-9c", "/api/v1/forget/3f2a-9c"),
            ("/api/v1/forget/caf%C3%A9", "/api/v1/forget/caf%C3%A9"),
            ("/api/v1/forget/a%20b", "/api/v1/forget/a%20b"),
            (
                "/billing/stripe/checkout?tier=pro&email=a@b.c",
                "/billing/stripe/checkout",
            ),
            (
                "/x/.well-known/a:b@c!$&'()*+,=~_-",
                "/x/.well-known/a:b@c!$&'()*+,=~_-",
            ),
            ("/a/..b/c.", "/a/..b/c."),
        ] {
            assert_eq!(origin_path(target), Ok(path), "{target}");
        }
    }

    /// Targets another server could read differently, or that are not origin-form: refused.
    #[test]
    fn ambiguous_targets_are_refused() {
        for target in [
            "/api/v1/store#",
            "/api/v1/store#x",
            "/api/v1/recall?q=a#frag",
            "/api/v1/store;jsessionid=1",
            "/api/v1;x/store",
            "/api/v1/st%6Fre",
            "/api/v1/st%6fre",
            "/api/v1%2Fstore",
            "/api/v1%2fstore",
            "/api/v1/%2E%2E/v1/store",
            "/api/v1/x%5C..%5Cstore",
            "/api/v1/store%00",
            "/api/v1/store%7F",
            "/api/v1/%252Fstore",
            "/api/v1/store%",
            "/api/v1/store%4",
            "/api/v1/store%zz",
            "/api/v1/./store",
            "/api/v1/x/../store",
            "/api/v1/..",
            "/api/v1/.",
            "//api/v1/store",
            "/api//v1/store",
            "/api/v1//store",
            "/api/v1/store\\",
            "/api/v1/\\store",
            "/api/v1/st\"ore",
            "/api/v1/<store>",
            "/api/v1/store|x",
            "/api/v1/store`",
            "/api/v1/store{}",
            "/api/v1/store^",
            "http://127.0.0.1/api/v1/store",
            "HTTP://h/api/v1/store",
            "127.0.0.1:9000",
            "*",
            "",
            "api/v1/store",
        ] {
            assert!(origin_path(target).is_err(), "{target:?} accepted");
            assert!(
                matches!(classify_target("POST", target), Err(BadTarget::Target(_))),
                "{target:?}"
            );
        }
    }

    #[test]
    fn methods_nobody_serves_are_refused() {
        for m in METHODS {
            assert!(classify_target(m, "/api/v1/stats").is_ok(), "{m}");
        }
        for m in [
            "CONNECT", "TRACE", "post", "Get", "PROPFIND", "BREW", "", "PRI",
        ] {
            assert_eq!(
                classify_target(m, "/api/v1/store"),
                Err(BadTarget::Method),
                "{m}"
            );
        }
        assert_eq!(
            classify_target("POST", "/api/v1/store?x=1"),
            Ok(Route::Engine(EngineOp::Store))
        );
    }

    #[test]
    fn routes() {
        assert_eq!(classify("GET", "/api/v1/health"), Route::Health);
        assert_eq!(
            classify("POST", "/api/v1/store"),
            Route::Engine(EngineOp::Store)
        );
        assert_eq!(
            classify("POST", "/api/v1/store/"),
            Route::Engine(EngineOp::Store)
        );
        assert_eq!(
            classify("DELETE", "/api/v1/forget/abc"),
            Route::Engine(EngineOp::Forget)
        );
        assert_eq!(
            classify("DELETE", "/api/v1/forget/"),
            Route::Engine(EngineOp::Other)
        );
        assert_eq!(
            classify("GET", "/api/v1/events"),
            Route::Engine(EngineOp::Events)
        );
        assert_eq!(
            classify("GET", "/api/v1/recall"),
            Route::Engine(EngineOp::Other)
        );
        assert_eq!(
            classify("GET", "/api/v1/unknown/thing"),
            Route::Engine(EngineOp::Other)
        );
        assert_eq!(classify("GET", "/api/v1"), Route::Engine(EngineOp::Other));
        assert_eq!(
            classify("GET", "/api/v1foo"),
            Route::Billing { ip_limited: false }
        );
        assert_eq!(classify("GET", "/"), Route::Billing { ip_limited: false });
        assert_eq!(
            classify("POST", "/auth/register"),
            Route::Billing { ip_limited: true }
        );
        assert_eq!(
            classify("POST", "/billing/stripe/checkout"),
            Route::Billing { ip_limited: true }
        );
        assert_eq!(
            classify("GET", "/billing/toss/checkout"),
            Route::Billing { ip_limited: true }
        );
        assert_eq!(
            classify("GET", "/billing/tiers"),
            Route::Billing { ip_limited: false }
        );
        assert_eq!(
            classify("POST", "/webhook/stripe"),
            Route::Billing { ip_limited: false }
        );
    }
}
