//! Per-policy values the hot path would otherwise rebuild on every request: the constant
//! rate-limit header values of a tier (or of the per-IP policy) and its metric handles
//! (`with_label_values` hashes its labels and takes a lock on each call; a cached handle is one
//! atomic add). Built once at start for every tier; principals point at their tier's entry.

use crate::h1;
use crate::limits::{self, Backend, Decision, Rate};
use crate::metrics;
use crate::routing::Route;
use pingora_prometheus::prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use stellar_common::{Tier, Tiers};

/// Metric label of requests without a principal.
pub const NO_TIER: &str = "none";

const ROUTES: usize = Route::ALL.len();
const STATUSES: usize = STATUS_LABELS.len() + 5;

/// Status codes with their own label; anything else is labelled by class.
const STATUS_LABELS: [(u16, &str); 16] = [
    (0, "0"),
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (413, "413"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];
const CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(s: u16) -> usize {
    if let Some(i) = STATUS_LABELS.iter().position(|(c, _)| *c == s) {
        return i;
    }
    STATUS_LABELS.len()
        + match s / 100 {
            1 => 0,
            2 => 1,
            3 => 2,
            4 => 3,
            _ => 4,
        }
}

/// Status codes as static labels (bounded set).
pub fn status_label(s: u16) -> &'static str {
    let i = status_index(s);
    STATUS_LABELS
        .get(i)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| CLASS_LABELS[i - STATUS_LABELS.len()])
}

pub fn route_index(r: Route) -> usize {
    r.index()
}

/// One rate-limit policy (a tier, or "ip") and one tier label.
pub struct TierMeta {
    /// The policy / tier label.
    pub name: String,
    /// The tier (for a policy that is not a tier, such as the per-IP bucket, one with its rate
    /// and no other allowance). Principals reach their tier through here, which keeps a cached
    /// principal at 64 bytes.
    pub tier: Arc<Tier>,
    /// `X-RateLimit-Limit` and `RateLimit-Policy`, constant per policy, as written on the wire.
    constant_fields: Vec<u8>,
    /// `gateway_limiter_decisions_total{tier, decision, backend}`, by [allowed/denied][backend].
    limiter: [[IntCounter; 3]; 2],
    /// `gateway_requests_total{route, status, tier}`, created on first use.
    requests: [[OnceLock<IntCounter>; STATUSES]; ROUTES],
}

impl std::fmt::Debug for TierMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierMeta")
            .field("name", &self.name)
            .finish()
    }
}

impl TierMeta {
    pub fn new(name: &str, rate: Rate) -> TierMeta {
        let tier = Tier {
            name: name.to_string(),
            max_memories: 0,
            max_agents: 0,
            requests_per_minute: rate.per_minute,
            burst: rate.burst,
            max_api_keys: 0,
            max_members: 0,
            price_usd: 0,
            price_krw: 0,
        };
        TierMeta::with_tier(Arc::new(tier), rate)
    }

    fn with_tier(tier: Arc<Tier>, rate: Rate) -> TierMeta {
        let name = tier.name.clone();
        let name = name.as_str();
        let mut constant_fields = Vec::new();
        h1::put_field(
            &mut constant_fields,
            b"X-RateLimit-Limit",
            rate.per_minute.to_string().as_bytes(),
        );
        h1::put_field(
            &mut constant_fields,
            b"RateLimit-Policy",
            limits::policy_value(name, rate).as_bytes(),
        );
        let lim = |decision: &str, backend: Backend| {
            metrics::LIMITER.with_label_values(&[name, decision, backend.label()])
        };
        let backends = |d: &str| {
            [
                lim(d, Backend::Local),
                lim(d, Backend::Redis),
                lim(d, Backend::Fallback),
            ]
        };
        TierMeta {
            name: name.to_string(),
            tier,
            constant_fields,
            limiter: [backends("allowed"), backends("denied")],
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
        }
    }

    pub fn for_tier(t: &Arc<Tier>) -> TierMeta {
        TierMeta::with_tier(
            t.clone(),
            Rate {
                per_minute: t.requests_per_minute,
                burst: t.burst,
            },
        )
    }

    pub fn count_decision(&self, allowed: bool, backend: Backend) {
        let b = match backend {
            Backend::Local => 0,
            Backend::Redis => 1,
            Backend::Fallback => 2,
        };
        self.limiter[usize::from(!allowed)][b].inc();
    }

    pub fn count_request(&self, route: Route, status: u16) {
        let (r, s) = (route_index(route), status_index(status));
        self.requests[r][s]
            .get_or_init(|| {
                metrics::REQUESTS.with_label_values(&[
                    route.label(),
                    status_label(status),
                    self.name.as_str(),
                ])
            })
            .inc();
    }

    /// Append the rate-limit fields of `d` under this policy (the same values as
    /// [`limits::headers`], the constant ones written once at start).
    pub fn write_fields(&self, out: &mut Vec<u8>, d: &Decision, now: u64) {
        out.extend_from_slice(&self.constant_fields);
        out.extend_from_slice(b"X-RateLimit-Remaining: ");
        h1::put_num(out, d.remaining.into());
        out.extend_from_slice(b"\r\nX-RateLimit-Reset: ");
        h1::put_num(out, now + d.reset_secs);
        out.extend_from_slice(b"\r\nRateLimit: \"");
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b"\";r=");
        h1::put_num(out, d.remaining.into());
        out.extend_from_slice(b";t=");
        h1::put_num(out, d.reset_secs);
        out.extend_from_slice(b"\r\n");
        if !d.allowed {
            out.extend_from_slice(b"Retry-After: ");
            h1::put_num(out, d.retry_after_secs);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Every tier's entry by name, plus the one for requests without a principal.
pub struct TierMetas {
    by_name: HashMap<String, Arc<TierMeta>>,
    none: Arc<TierMeta>,
}

impl TierMetas {
    pub fn new(tiers: &Tiers) -> TierMetas {
        TierMetas {
            by_name: tiers
                .all()
                .iter()
                .map(|t| (t.name.clone(), Arc::new(TierMeta::for_tier(t))))
                .collect(),
            none: Arc::new(TierMeta::new(
                NO_TIER,
                Rate {
                    per_minute: 1,
                    burst: 1,
                },
            )),
        }
    }

    /// The entry of `tier` (built on the spot for a tier unknown at start).
    pub fn get(&self, tier: &Arc<Tier>) -> Arc<TierMeta> {
        match self.by_name.get(&tier.name) {
            Some(m) if *m.tier == **tier => m.clone(),
            _ => Arc::new(TierMeta::for_tier(tier)),
        }
    }

    pub fn none(&self) -> &Arc<TierMeta> {
        &self.none
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_label(101), "1xx");
        assert_eq!(status_label(0), "0");
    }

    #[test]
    fn headers_match_the_slow_path() {
        let rate = Rate {
            per_minute: 300,
            burst: 300,
        };
        let m = TierMeta::new("pro", rate);
        for d in [
            Decision {
                allowed: true,
                remaining: 12,
                reset_secs: 9,
                retry_after_secs: 0,
            },
            Decision {
                allowed: false,
                remaining: 0,
                reset_secs: 60,
                retry_after_secs: 2,
            },
        ] {
            let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
            m.write_fields(&mut out, &d, 1_700_000_000);
            out.extend_from_slice(b"\r\n");
            let mut head = h1::Head::default();
            h1::parse_response(&out, &mut head, false).unwrap().unwrap();
            let slow = limits::headers("pro", rate, &d, 1_700_000_000);
            assert_eq!(head.fields.len(), slow.len());
            for (k, v) in &slow {
                let f = head
                    .fields
                    .iter()
                    .find(|(_, f)| f.name(&out).eq_ignore_ascii_case(k.as_bytes()));
                assert_eq!(f.map(|(_, f)| f.value(&out)), Some(v.as_bytes()), "{k}");
            }
        }
    }
}
