//! CORS: which web origins may call the API from a browser, decided by the gateway for every
//! upstream (an upstream's own `Access-Control-*` answer fields are dropped).
//!
//! `gateway.cors_origins` lists the allowed origins (`scheme://host[:port]`, or `*` for any);
//! empty (the default) means only the public URL's own origin. Credentials (the dashboard's
//! session cookie) are allowed for the public URL's origin alone, never for another one or for
//! `*`. A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by
//! the gateway itself, without a key: 204 with the allowed methods and headers for an allowed
//! origin, 403 otherwise. Every other answer to a request from an allowed origin carries
//! `Access-Control-Allow-Origin` (the origin itself), `Vary: Origin` and the exposed headers.

use stellar_proto::h1;

pub const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
pub const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, X-API-Key, X-Stellar-Agent, X-CSRF-Token, X-Request-Id, Last-Event-ID";
pub const EXPOSE_HEADERS: &str = "RateLimit, RateLimit-Policy, Retry-After, X-RateLimit-Limit, \
    X-RateLimit-Remaining, X-RateLimit-Reset, X-Request-Id, WWW-Authenticate";
/// Seconds a browser may cache a preflight.
pub const MAX_AGE: &str = "600";

/// An origin's grant: the index of the allowed origin (`usize::MAX`: by `*`) and credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub credentials: bool,
}

#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins, lower-case, no trailing slash.
    origins: Vec<String>,
    any: bool,
    /// The public URL's origin: the only one with credentials.
    own: String,
}

/// `scheme://host[:port]` of a URL, lower-case; `None` if it has no such origin.
pub fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url.trim()).ok()?;
    match u.origin() {
        url::Origin::Tuple(..) => Some(u.origin().ascii_serialization().to_ascii_lowercase()),
        url::Origin::Opaque(_) => None,
    }
}

impl Cors {
    /// From `gateway.cors_origins` and the public URL (`billing.public_url`).
    pub fn new(configured: &[String], public_url: &str) -> Result<Cors, String> {
        let own = origin_of(public_url)
            .ok_or_else(|| format!("the public URL {public_url:?} has no origin"))?;
        let mut origins = Vec::new();
        let mut any = false;
        for o in configured {
            if o.trim() == "*" {
                any = true;
                continue;
            }
            let parsed = origin_of(o).ok_or_else(|| format!("{o:?} is not an origin"))?;
            if parsed != o.trim().trim_end_matches('/').to_ascii_lowercase() {
                return Err(format!(
                    "{o:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
            origins.push(parsed);
        }
        if origins.is_empty() && !any {
            origins.push(own.clone());
        }
        Ok(Cors { origins, any, own })
    }

    /// The grant of a request's `Origin`, if it is allowed.
    pub fn grant(&self, origin: &[u8]) -> Option<Grant> {
        let o = std::str::from_utf8(origin).ok()?.trim();
        let lower = o.to_ascii_lowercase();
        let listed = self.origins.contains(&lower);
        (listed || (self.any && origin_of(o).is_some())).then(|| Grant {
            credentials: listed && lower == self.own,
        })
    }

    /// The fields every answer to an allowed origin carries.
    pub fn write_fields(out: &mut Vec<u8>, origin: &[u8], g: Grant) {
        h1::put_field(out, b"Access-Control-Allow-Origin", origin);
        if g.credentials {
            out.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\n");
        }
        h1::put_field(
            out,
            b"Access-Control-Expose-Headers",
            EXPOSE_HEADERS.as_bytes(),
        );
        out.extend_from_slice(b"Vary: Origin\r\n");
    }

    /// The extra fields of a preflight's 204.
    pub fn write_preflight_fields(out: &mut Vec<u8>) {
        h1::put_field(
            out,
            b"Access-Control-Allow-Methods",
            ALLOW_METHODS.as_bytes(),
        );
        h1::put_field(
            out,
            b"Access-Control-Allow-Headers",
            ALLOW_HEADERS.as_bytes(),
        );
        h1::put_field(out, b"Access-Control-Max-Age", MAX_AGE.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_credentials() {
        let c = Cors::new(&[], "http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            c.grant(b"http://127.0.0.1:8080"),
            Some(Grant { credentials: true })
        );
        assert_eq!(
            c.grant(b"HTTP://127.0.0.1:8080"),
            Some(Grant { credentials: true })
        );
        assert_eq!(c.grant(b"http://127.0.0.1:8081"), None);
        assert_eq!(c.grant(b"http://evil.example"), None);
        assert_eq!(c.grant(b"null"), None);

        let c = Cors::new(
            &[
                "https://app.example.com".into(),
                "https://memory.example.com".into(),
            ],
            "https://memory.example.com",
        )
        .unwrap();
        assert_eq!(
            c.grant(b"https://app.example.com"),
            Some(Grant { credentials: false })
        );
        assert_eq!(
            c.grant(b"https://memory.example.com"),
            Some(Grant { credentials: true })
        );
        assert_eq!(c.grant(b"https://app.example.com.evil.io"), None);

        let c = Cors::new(&["*".into()], "https://memory.example.com").unwrap();
        assert_eq!(
            c.grant(b"https://anyone.example"),
            Some(Grant { credentials: false })
        );
        assert_eq!(c.grant(b"null"), None);

        for bad in ["https://a.example/path", "not a url", "file:///x"] {
            assert!(
                Cors::new(&[bad.into()], "https://m.example").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn fields() {
        let mut out = Vec::new();
        Cors::write_fields(&mut out, b"https://a.example", Grant { credentials: false });
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Access-Control-Allow-Origin: https://a.example\r\n"));
        assert!(!s.contains("Credentials"));
        assert!(s.contains("Vary: Origin\r\n"));
    }
}
