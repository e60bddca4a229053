//! Step 8: every answer the gateway writes itself. One enum, one writer: JSON with a `detail`
//! member (the engine's own error shape), as an RFC 9457 problem object where a type fits.
//! Internal details (SQL errors, upstream errors) go to the log, never to the client.

use crate::h1;
use crate::limits::{self, Decision, Rate};
use serde_json::{json, Value};

/// The problem type of draft-ietf-httpapi-ratelimit-headers for an exhausted quota policy.
pub const QUOTA_EXCEEDED_TYPE: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// Our own problem types (documentation anchors).
pub const MEMORY_LIMIT_TYPE: &str = "https://stellar-gate.dev/problems#memory-limit-exceeded";
pub const AGENT_LIMIT_TYPE: &str = "https://stellar-gate.dev/problems#agent-limit-exceeded";
pub const KEY_SCOPE_TYPE: &str = "https://stellar-gate.dev/problems#key-scope";

/// Why the gateway answers a request itself.
#[derive(Debug, Clone)]
pub enum Reject {
    MissingKey,
    MalformedKey,
    UnknownKey,
    /// A scoped key past its expiry.
    ExpiredKey,
    /// A scoped key asked for something outside its scope: `scope` names the restriction
    /// (`read_only`, `agent`).
    KeyScope {
        scope: &'static str,
        detail: String,
    },
    /// The account DB is unreachable and the principal is not cached.
    AuthUnavailable,
    RateLimited {
        policy: String,
        rate: Rate,
        decision: Decision,
    },
    MemoryQuota {
        used: i64,
        limit: u64,
        tier: String,
        next_tier: Option<String>,
    },
    AgentLimit {
        used: i64,
        limit: u32,
        tier: String,
        next_tier: Option<String>,
    },
    InvalidAgent,
    BodyTooLarge {
        limit: u64,
    },
    /// The quota store could not be reached for a store request.
    QuotaUnavailable,
    /// Malformed framing, a bad `Host`, a request target another server could read
    /// differently: the reason is shown to the client.
    BadRequest(&'static str),
    /// A method the gateway never forwards (`CONNECT`, `TRACE`, unknown ones).
    MethodNotAllowed,
    /// A CORS preflight from an allowed origin: 204 with the allowed methods and headers.
    Preflight,
    /// A CORS preflight from an origin that is not allowed.
    OriginNotAllowed,
    /// The client IP already holds `gateway.max_connections_per_ip` connections.
    TooManyConnections,
    /// The request body did not arrive in time.
    RequestTimeout,
    /// The request head is larger than the gateway accepts.
    HeadTooLarge,
    BadGateway,
    GatewayTimeout,
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::MissingKey | Reject::MalformedKey | Reject::UnknownKey | Reject::ExpiredKey => {
                401
            }
            Reject::MemoryQuota { .. } | Reject::AgentLimit { .. } | Reject::KeyScope { .. } => 403,
            Reject::InvalidAgent | Reject::BadRequest(_) => 400,
            Reject::MethodNotAllowed => 405,
            Reject::Preflight => 204,
            Reject::OriginNotAllowed => 403,
            Reject::TooManyConnections => 429,
            Reject::RequestTimeout => 408,
            Reject::BodyTooLarge { .. } => 413,
            Reject::HeadTooLarge => 431,
            Reject::RateLimited { .. } => 429,
            Reject::BadGateway => 502,
            Reject::AuthUnavailable | Reject::QuotaUnavailable => 503,
            Reject::GatewayTimeout => 504,
        }
    }

    /// A short, bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::MissingKey => "missing_key",
            Reject::MalformedKey => "malformed_key",
            Reject::UnknownKey => "unknown_key",
            Reject::ExpiredKey => "expired_key",
            Reject::KeyScope { .. } => "key_scope",
            Reject::AuthUnavailable => "auth_unavailable",
            Reject::RateLimited { .. } => "rate_limited",
            Reject::MemoryQuota { .. } => "memory_quota",
            Reject::AgentLimit { .. } => "agent_limit",
            Reject::InvalidAgent => "invalid_agent",
            Reject::BodyTooLarge { .. } => "body_too_large",
            Reject::QuotaUnavailable => "quota_unavailable",
            Reject::BadRequest(_) => "bad_request",
            Reject::MethodNotAllowed => "method_not_allowed",
            Reject::Preflight => "preflight",
            Reject::OriginNotAllowed => "origin_not_allowed",
            Reject::TooManyConnections => "too_many_connections",
            Reject::RequestTimeout => "request_timeout",
            Reject::HeadTooLarge => "head_too_large",
            Reject::BadGateway => "bad_gateway",
            Reject::GatewayTimeout => "gateway_timeout",
        }
    }

    /// The body and its content type.
    pub fn body(&self) -> (Value, &'static str) {
        const JSON: &str = "application/json";
        const PROBLEM: &str = "application/problem+json";
        match self {
            Reject::MissingKey => (json!({"detail": "Missing API key"}), JSON),
            Reject::MalformedKey | Reject::UnknownKey => {
                (json!({"detail": "Invalid API key"}), JSON)
            }
            Reject::AuthUnavailable => (
                json!({"detail": "Account service unavailable, retry shortly"}),
                JSON,
            ),
            Reject::QuotaUnavailable => (
                json!({"detail": "Quota service unavailable, retry shortly"}),
                JSON,
            ),
            Reject::RateLimited {
                policy,
                rate,
                decision,
            } => (
                json!({
                    "type": QUOTA_EXCEEDED_TYPE,
                    "title": "Too Many Requests",
                    "status": 429,
                    "detail": format!(
                        "Rate limit exceeded: {} requests per minute for the {policy} plan. Retry in {} s.",
                        rate.per_minute, decision.retry_after_secs
                    ),
                    "violated-policies": [policy],
                }),
                PROBLEM,
            ),
            Reject::MemoryQuota {
                used,
                limit,
                tier,
                next_tier,
            } => (
                json!({
                    "type": MEMORY_LIMIT_TYPE,
                    "title": "Memory limit reached",
                    "status": 403,
                    "detail": match next_tier {
                        Some(n) => format!("Memory limit reached: {used} of {limit} memories on the {tier} plan. Forget some memories or upgrade to {n}."),
                        None => format!("Memory limit reached: {used} of {limit} memories on the {tier} plan. Forget some memories."),
                    },
                    "used": used,
                    "limit": limit,
                    "tier": tier,
                    "next_tier": next_tier,
                    "violated-policies": [tier],
                }),
                PROBLEM,
            ),
            Reject::AgentLimit {
                used,
                limit,
                tier,
                next_tier,
            } => (
                json!({
                    "type": AGENT_LIMIT_TYPE,
                    "title": "Agent limit reached",
                    "status": 403,
                    "detail": format!("Agent limit reached: {used} of {limit} agents on the {tier} plan."),
                    "used": used,
                    "limit": limit,
                    "tier": tier,
                    "next_tier": next_tier,
                    "violated-policies": [tier],
                }),
                PROBLEM,
            ),
            Reject::ExpiredKey => (json!({"detail": "API key expired"}), JSON),
            Reject::KeyScope { scope, detail } => (
                json!({
                    "type": KEY_SCOPE_TYPE,
                    "title": "Outside the key's scope",
                    "status": 403,
                    "detail": detail,
                    "scope": scope,
                }),
                PROBLEM,
            ),
            Reject::InvalidAgent => (
                json!({"detail": "Invalid X-Stellar-Agent: 1-64 characters of A-Z a-z 0-9 . _ : -"}),
                JSON,
            ),
            Reject::BodyTooLarge { limit } => (
                json!({"detail": format!("Request body larger than {limit} bytes")}),
                JSON,
            ),
            Reject::BadRequest(why) => (json!({"detail": format!("Bad request: {why}")}), JSON),
            Reject::MethodNotAllowed => (json!({"detail": "Method not allowed"}), JSON),
            Reject::Preflight => (Value::Null, JSON),
            Reject::OriginNotAllowed => (
                json!({"detail": "This origin may not call the API from a browser (gateway.cors_origins)"}),
                JSON,
            ),
            Reject::TooManyConnections => (
                json!({"detail": "Too many connections from this address"}),
                JSON,
            ),
            Reject::RequestTimeout => {
                (json!({"detail": "Request body not received in time"}), JSON)
            }
            Reject::HeadTooLarge => (
                json!({"detail": format!("Request head larger than {} bytes or {} fields", h1::MAX_HEAD, h1::MAX_FIELDS)}),
                JSON,
            ),
            Reject::BadGateway => (json!({"detail": "Upstream unavailable"}), JSON),
            Reject::GatewayTimeout => (json!({"detail": "Upstream timed out"}), JSON),
        }
    }

    /// Extra headers: the rate-limit fields for a 429.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Reject::RateLimited {
                policy,
                rate,
                decision,
            } => limits::headers(policy, *rate, decision, limits::unix_now()),
            Reject::MissingKey | Reject::MalformedKey | Reject::UnknownKey => {
                vec![("WWW-Authenticate", r#"Bearer realm="stellar""#.to_string())]
            }
            Reject::MethodNotAllowed => vec![("Allow", stellar_proto::route::ALLOW.to_string())],
            _ => Vec::new(),
        }
    }

    /// Append the whole answer (head and JSON body; a preflight has none) to `out`. `close`:
    /// the connection closes after it. `extra`: more header lines (CORS), already formatted.
    pub fn write(&self, out: &mut Vec<u8>, request_id: &str, close: bool, extra: &[u8]) {
        let (body, ctype) = self.body();
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap_or_default()
        };
        let status = self.status();
        out.extend_from_slice(b"HTTP/1.1 ");
        h1::put_num(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(h1::reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        if !body.is_empty() {
            h1::put_field(out, b"Content-Type", ctype.as_bytes());
        }
        out.extend_from_slice(b"Content-Length: ");
        h1::put_num(out, body.len() as u64);
        out.extend_from_slice(b"\r\nCache-Control: no-store\r\n");
        h1::put_field(out, b"X-Request-Id", request_id.as_bytes());
        for (k, v) in self.headers() {
            h1::put_field(out, k.as_bytes(), v.as_bytes());
        }
        if matches!(self, Reject::Preflight) {
            crate::cors::Cors::write_preflight_fields(out);
        }
        out.extend_from_slice(extra);
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal by the "free" policy (60 per minute), retry after `retry_after_secs`.
    fn rate_limited(retry_after_secs: u64) -> Reject {
        Reject::RateLimited {
            policy: "free".into(),
            rate: Rate {
                per_minute: 60,
                burst: 60,
            },
            decision: Decision {
                allowed: false,
                remaining: 0,
                reset_secs: 60,
                retry_after_secs,
            },
        }
    }

    #[test]
    fn problem_bodies_keep_detail() {
        let r = rate_limited(1);
        let (b, ct) = r.body();
        assert_eq!(ct, "application/problem+json");
        assert_eq!(b["type"], QUOTA_EXCEEDED_TYPE);
        assert_eq!(b["violated-policies"][0], "free");
        assert!(b["detail"]
            .as_str()
            .unwrap()
            .contains("60 requests per minute"));
        let q = Reject::MemoryQuota {
            used: 5,
            limit: 5,
            tier: "free".into(),
            next_tier: Some("pro".into()),
        };
        assert_eq!(q.status(), 403);
        let (b, _) = q.body();
        assert_eq!(
            (
                b["used"].as_i64(),
                b["limit"].as_u64(),
                b["next_tier"].as_str()
            ),
            (Some(5), Some(5), Some("pro"))
        );
        assert!(b["detail"].is_string());
    }

    #[test]
    fn written_answers_parse_back() {
        let r = rate_limited(7);
        for close in [false, true] {
            let mut out = Vec::new();
            r.write(&mut out, "req-1", close, b"");
            let mut head = h1::Head::default();
            let len = h1::parse_response(&out, &mut head, false).unwrap().unwrap();
            assert_eq!(head.status, 429);
            assert_eq!(head.reason(&out), b"Too Many Requests");
            assert_eq!(head.body, h1::Body::Length((out.len() - len) as u64));
            assert_eq!(head.conn.close, close);
            let field = |n: &str| {
                head.fields
                    .iter()
                    .find(|(_, f)| f.name(&out).eq_ignore_ascii_case(n.as_bytes()))
                    .map(|(_, f)| std::str::from_utf8(f.value(&out)).unwrap().to_string())
            };
            assert_eq!(field("retry-after").as_deref(), Some("7"));
            assert_eq!(field("x-request-id").as_deref(), Some("req-1"));
            assert_eq!(
                field("content-type").as_deref(),
                Some("application/problem+json")
            );
            let body: Value = serde_json::from_slice(&out[len..]).unwrap();
            assert_eq!(body["status"], 429);
        }
    }
}
