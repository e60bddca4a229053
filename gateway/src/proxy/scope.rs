//! Scoped keys, checked from the cached principal right after it is resolved (before any
//! bucket is touched): expiry, read-only, the bound agent. A plain function over the request's
//! method, path and agent header and the clock, so every rule is tested without a socket. A
//! change to a key's scope reaches the gateways through the change feed like a revocation;
//! an expiry needs nothing: it is compared with the clock on every request.

use crate::auth::Scope;
use crate::errors::Reject;
use stellar_proto::route;

/// The agent a scoped request acts as: `Some` when the key is bound to one (the gateway then
/// names it upstream, whether or not the client did).
pub fn check<'s>(
    scope: &'s Scope,
    method: &str,
    path: &str,
    agent: Option<&[u8]>,
    now_unix: i64,
) -> Result<Option<&'s str>, Reject> {
    if scope.expires_at.is_some_and(|t| t <= now_unix) {
        return Err(Reject::ExpiredKey);
    }
    if scope.read_only && !route::is_read(method, path) {
        return Err(Reject::KeyScope {
            scope: "read_only",
            detail: format!("This key is read-only: {method} {path} needs a read-write key"),
        });
    }
    let Some(bound) = scope.agent.as_deref() else {
        return Ok(None);
    };
    match agent {
        Some(a) if a != bound.as_bytes() => Err(Reject::KeyScope {
            scope: "agent",
            detail: format!(
                "This key is bound to agent \"{bound}\"; it cannot act as \"{}\"",
                String::from_utf8_lossy(a)
                    .chars()
                    .take(64)
                    .collect::<String>()
            ),
        }),
        _ => Ok(Some(bound)),
    }
}

/// Seconds since the Unix epoch (only scoped keys pay for reading the clock).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(read_only: bool, agent: Option<&str>, expires_at: Option<i64>) -> Scope {
        Scope {
            read_only,
            agent: agent.map(Into::into),
            expires_at,
            rate: None,
        }
    }

    fn refused(r: Result<Option<&str>, Reject>) -> (u16, String) {
        let e = r.expect_err("refused");
        let scope = match &e {
            Reject::KeyScope { scope, .. } => scope.to_string(),
            other => other.reason().to_string(),
        };
        (e.status(), scope)
    }

    #[test]
    fn expiry_is_exact_to_the_second() {
        let s = scope(false, None, Some(1000));
        assert_eq!(check(&s, "GET", "/api/v1/stats", None, 999).unwrap(), None);
        assert_eq!(
            refused(check(&s, "GET", "/api/v1/stats", None, 1000)),
            (401, "expired_key".into())
        );
    }

    #[test]
    fn read_only_keys_read_and_nothing_else() {
        let s = scope(true, None, None);
        assert!(check(&s, "GET", "/api/v1/recall", None, 0).is_ok());
        assert!(check(&s, "POST", "/api/v1/narrate", None, 0).is_ok());
        for (m, p) in [
            ("POST", "/api/v1/store"),
            ("DELETE", "/api/v1/forget/x"),
            ("POST", "/api/v1/optimize"),
        ] {
            assert_eq!(refused(check(&s, m, p, None, 0)), (403, "read_only".into()));
        }
    }

    #[test]
    fn a_bound_agent_is_named_and_no_other() {
        let s = scope(false, Some("bot-1"), None);
        assert_eq!(
            check(&s, "POST", "/api/v1/store", None, 0).unwrap(),
            Some("bot-1")
        );
        assert_eq!(
            check(&s, "POST", "/api/v1/store", Some(b"bot-1"), 0).unwrap(),
            Some("bot-1")
        );
        assert_eq!(
            refused(check(&s, "GET", "/api/v1/recall", Some(b"bot-2"), 0)),
            (403, "agent".into())
        );
        // An unrestricted agent field on an unbound key is left to the usual checks.
        let free = scope(false, None, None);
        assert_eq!(
            check(&free, "GET", "/api/v1/recall", Some(b"x"), 0).unwrap(),
            None
        );
    }
}
