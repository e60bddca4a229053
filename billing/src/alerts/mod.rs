//! Alerts (docs/billing-api.md, "Webhooks and alerts"): per-account thresholds — memory quota
//! percentages, minutes in a row of requests refused by the rate limit, keys about to expire, a
//! failed payment — each raised once per crossing: when its condition starts to hold it is
//! raised (an e-mail to the owner and admins through the outbox, a webhook event, an audit row,
//! all in one transaction) and remembered in `alert_state`; when the condition stops holding it
//! is forgotten (re-armed), so the next crossing raises it again.
//!
//! The decision is [`decide`], a pure function (thresholds, the state before, the measurements
//! → what to raise and the state after); `evaluate` reads the measurements and applies the
//! decision, one transaction per account, every `alerts.interval_secs`.

pub mod evaluate;

pub use evaluate::run;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use stellar_common::{Config, ConfigError};
use uuid::Uuid;

/// `[alerts]` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    pub interval_secs: f64,
}

/// `[alerts]`, checked.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Time between evaluations.
    pub interval: std::time::Duration,
}

impl AlertsConfig {
    pub fn from_config(config: &Config) -> Result<AlertsConfig, ConfigError> {
        let s: AlertsSection = config.section("alerts")?;
        if !s.interval_secs.is_finite() || s.interval_secs < 0.05 {
            return Err(crate::settings::invalid(
                "alerts.interval_secs",
                "must be a number of seconds >= 0.05",
            ));
        }
        Ok(AlertsConfig {
            interval: std::time::Duration::from_secs_f64(s.interval_secs),
        })
    }
}

/// Limits of the thresholds an account may set.
pub const MAX_MEMORY_THRESHOLDS: usize = 5;
pub const MAX_RATE_LIMITED_MINUTES: u32 = 60;
pub const MAX_KEY_EXPIRING_DAYS: u32 = 365;

/// An account's thresholds (no row in `alert_settings`: [`Thresholds::default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Thresholds {
    /// Percentages of the tier's memory quota, ascending; empty = off.
    pub memory_percent: Vec<u32>,
    /// Raised when requests were refused by the rate limit in each of this many minutes in a
    /// row; 0 = off.
    pub rate_limited_minutes: u32,
    /// Raised for a key that expires within this many days; 0 = off.
    pub key_expiring_days: u32,
    /// Raised when the subscription is past due (a payment failed).
    pub payment_failed: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_percent: vec![80, 100],
            rate_limited_minutes: 5,
            key_expiring_days: 7,
            payment_failed: true,
        }
    }
}

/// A `PUT /auth/alerts` body: absent fields keep their value; `[]` or 0 turns an alert off.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsUpdate {
    /// At most 5 percentages of the plan's memory quota, each 1–100.
    #[schema(nullable = false, max_items = 5)]
    pub memory_percent: Option<Vec<u32>>,
    /// 0–60.
    #[schema(nullable = false, maximum = 60)]
    pub rate_limited_minutes: Option<u32>,
    /// 0–365.
    #[schema(nullable = false, maximum = 365)]
    pub key_expiring_days: Option<u32>,
    #[schema(nullable = false)]
    pub payment_failed: Option<bool>,
}

impl Thresholds {
    /// `self` with `u` applied, checked; the error is a sentence for a 422.
    pub fn apply(&self, u: &ThresholdsUpdate) -> Result<Thresholds, String> {
        let mut t = self.clone();
        if let Some(p) = &u.memory_percent {
            if p.len() > MAX_MEMORY_THRESHOLDS || p.iter().any(|v| !(1..=100).contains(v)) {
                return Err(format!(
                    "memory_percent must be at most {MAX_MEMORY_THRESHOLDS} percentages of 1–100 ([] = off)"
                ));
            }
            let set: BTreeSet<u32> = p.iter().copied().collect();
            t.memory_percent = set.into_iter().collect();
        }
        if let Some(m) = u.rate_limited_minutes {
            if m > MAX_RATE_LIMITED_MINUTES {
                return Err(format!(
                    "rate_limited_minutes must be 0–{MAX_RATE_LIMITED_MINUTES} (0 = off)"
                ));
            }
            t.rate_limited_minutes = m;
        }
        if let Some(d) = u.key_expiring_days {
            if d > MAX_KEY_EXPIRING_DAYS {
                return Err(format!(
                    "key_expiring_days must be 0–{MAX_KEY_EXPIRING_DAYS} (0 = off)"
                ));
            }
            t.key_expiring_days = d;
        }
        if let Some(b) = u.payment_failed {
            t.payment_failed = b;
        }
        Ok(t)
    }

    /// Whether `used` of `limit` memories reaches the lowest memory threshold.
    pub fn memory_may_alert(&self, used: i64, limit: i64) -> bool {
        self.memory_percent
            .first()
            .is_some_and(|p| memory_reached(used, limit, *p))
    }
}

fn memory_reached(used: i64, limit: i64, percent: u32) -> bool {
    limit > 0 && i128::from(used) * 100 >= i128::from(limit) * i128::from(percent)
}

/// One alert, with what the mail and the webhook say about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    MemoryQuota {
        threshold_percent: u32,
        memories_used: i64,
        memories_limit: i64,
    },
    RateLimited {
        minutes: u32,
        refused_requests: i64,
    },
    KeyExpiring {
        key_id: Uuid,
        key_prefix: String,
        name: Option<String>,
        expires_at: DateTime<Utc>,
        within_days: u32,
    },
    PaymentFailed {
        tier: String,
        past_due_since: Option<DateTime<Utc>>,
    },
}

impl Alert {
    /// Its row in `alert_state`: one per threshold, one per key.
    pub fn state_key(&self) -> String {
        match self {
            Alert::MemoryQuota {
                threshold_percent, ..
            } => format!("memory_quota:{threshold_percent}"),
            Alert::RateLimited { .. } => "rate_limited".into(),
            Alert::KeyExpiring { key_id, .. } => format!("key_expiring:{key_id}"),
            Alert::PaymentFailed { .. } => "payment_failed".into(),
        }
    }

    /// Its webhook event type.
    pub fn event_type(&self) -> &'static str {
        use crate::webhooks::event;
        match self {
            Alert::MemoryQuota { .. } => event::MEMORY_QUOTA,
            Alert::RateLimited { .. } => event::RATE_LIMITED,
            Alert::KeyExpiring { .. } => event::KEY_EXPIRING,
            Alert::PaymentFailed { .. } => event::PAYMENT_FAILED,
        }
    }

    /// The webhook event's `data`: the alert's fields.
    pub fn data(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("kind");
        }
        v
    }
}

/// A key with an expiry, as measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringKey {
    pub id: Uuid,
    pub prefix: String,
    pub name: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// What the evaluator measured for one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measurements {
    pub memories_used: i64,
    /// The tier's quota (0: none).
    pub memories_limit: i64,
    /// Of the last `rate_limited_minutes` complete minutes, how many had requests refused by
    /// the rate limit, and how many were refused in them.
    pub limited_minutes: u32,
    pub refused_requests: i64,
    /// The account's active keys that have an expiry.
    pub keys: Vec<ExpiringKey>,
    pub tier: String,
    pub past_due: bool,
    pub past_due_since: Option<DateTime<Utc>>,
}

/// What [`decide`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Alerts to send now.
    pub raise: Vec<Alert>,
    /// The conditions that hold: the new `alert_state`.
    pub state: BTreeSet<String>,
}

/// Which alerts to raise, from the thresholds, the state before (conditions that held at the
/// last evaluation) and the measurements: a condition that holds and did not is raised; one
/// that no longer holds leaves the state (re-armed). When several memory thresholds are crossed
/// at once, only the highest is raised (all of them enter the state).
pub fn decide(
    t: &Thresholds,
    before: &BTreeSet<String>,
    m: &Measurements,
    now: DateTime<Utc>,
) -> Decision {
    let mut holding = Vec::new();
    for p in &t.memory_percent {
        if memory_reached(m.memories_used, m.memories_limit, *p) {
            holding.push(Alert::MemoryQuota {
                threshold_percent: *p,
                memories_used: m.memories_used,
                memories_limit: m.memories_limit,
            });
        }
    }
    if t.rate_limited_minutes > 0 && m.limited_minutes >= t.rate_limited_minutes {
        holding.push(Alert::RateLimited {
            minutes: t.rate_limited_minutes,
            refused_requests: m.refused_requests,
        });
    }
    if t.key_expiring_days > 0 {
        let horizon = now + Duration::days(i64::from(t.key_expiring_days));
        for k in &m.keys {
            if k.expires_at > now && k.expires_at <= horizon {
                holding.push(Alert::KeyExpiring {
                    key_id: k.id,
                    key_prefix: k.prefix.clone(),
                    name: k.name.clone(),
                    expires_at: k.expires_at,
                    within_days: t.key_expiring_days,
                });
            }
        }
    }
    if t.payment_failed && m.past_due {
        holding.push(Alert::PaymentFailed {
            tier: m.tier.clone(),
            past_due_since: m.past_due_since,
        });
    }
    let state: BTreeSet<String> = holding.iter().map(Alert::state_key).collect();
    let mut raise: Vec<Alert> = holding
        .into_iter()
        .filter(|a| !before.contains(&a.state_key()))
        .collect();
    // Memory thresholds crossed together: keep the highest (they are in ascending order).
    let highest_memory = raise
        .iter()
        .rposition(|a| matches!(a, Alert::MemoryQuota { .. }));
    let mut i = 0;
    raise.retain(|a| {
        let keep = !matches!(a, Alert::MemoryQuota { .. }) || Some(i) == highest_memory;
        i += 1;
        keep
    });
    Decision { raise, state }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn mem(used: i64) -> Measurements {
        Measurements {
            memories_used: used,
            memories_limit: 5000,
            tier: "free".into(),
            ..Measurements::default()
        }
    }

    /// Whether `m` raises nothing from an empty state.
    fn quiet(t: &Thresholds, m: &Measurements) -> bool {
        decide(t, &BTreeSet::new(), m, now()).raise.is_empty()
    }

    fn keys(d: &Decision) -> Vec<String> {
        d.raise.iter().map(Alert::state_key).collect()
    }

    /// Runs the decision over a sequence of measurements, carrying the state, and returns
    /// what each step raised.
    fn run(t: &Thresholds, steps: &[Measurements]) -> Vec<Vec<String>> {
        let mut state = BTreeSet::new();
        steps
            .iter()
            .map(|m| {
                let d = decide(t, &state, m, now());
                state = d.state.clone();
                keys(&d)
            })
            .collect()
    }

    #[test]
    fn memory_is_raised_once_per_crossing_and_rearmed_below() {
        let t = Thresholds::default();
        let got = run(
            &t,
            &[
                mem(100),
                mem(3999),
                mem(4000),
                mem(4100),
                mem(4500),
                mem(3000),
                mem(4001),
            ],
        );
        let e: Vec<String> = vec![];
        assert_eq!(
            got,
            vec![
                e.clone(),
                e.clone(),
                vec!["memory_quota:80".to_string()],
                e.clone(),
                e.clone(),
                e.clone(),
                vec!["memory_quota:80".to_string()],
            ]
        );
        // 80 held, then 100 is crossed: 100 alone; back to 90 re-arms 100 but not 80.
        let got = run(&t, &[mem(4000), mem(5000), mem(4500), mem(5000)]);
        assert_eq!(
            got,
            vec![
                vec!["memory_quota:80".to_string()],
                vec!["memory_quota:100".to_string()],
                e.clone(),
                vec!["memory_quota:100".to_string()],
            ]
        );
        // Both at once: only the highest is sent, both are remembered.
        let d = decide(&t, &BTreeSet::new(), &mem(5000), now());
        assert_eq!(keys(&d), ["memory_quota:100"]);
        assert!(d.state.contains("memory_quota:80") && d.state.contains("memory_quota:100"));
        match &d.raise[0] {
            Alert::MemoryQuota {
                memories_used,
                memories_limit,
                ..
            } => assert_eq!((*memories_used, *memories_limit), (5000, 5000)),
            other => panic!("{other:?}"),
        }
        // No quota, or no thresholds: nothing.
        let unlimited = Measurements {
            memories_limit: 0,
            ..mem(10)
        };
        assert!(quiet(&t, &unlimited));
        let off = Thresholds {
            memory_percent: vec![],
            ..t.clone()
        };
        assert!(quiet(&off, &mem(5000)));
    }

    #[test]
    fn rate_limited_needs_every_minute() {
        let t = Thresholds::default(); // 5 minutes
        let rl = |n: u32| Measurements {
            limited_minutes: n,
            refused_requests: i64::from(n) * 10,
            ..mem(0)
        };
        let got = run(&t, &[rl(4), rl(5), rl(5), rl(3), rl(5)]);
        assert_eq!(got[0], Vec::<String>::new());
        assert_eq!(got[1], ["rate_limited"]);
        assert!(got[2].is_empty(), "still limited: not again");
        assert!(got[3].is_empty(), "re-armed");
        assert_eq!(got[4], ["rate_limited"]);
        let d = decide(&t, &BTreeSet::new(), &rl(5), now());
        assert_eq!(
            d.raise[0],
            Alert::RateLimited {
                minutes: 5,
                refused_requests: 50
            }
        );
        let off = Thresholds {
            rate_limited_minutes: 0,
            ..t
        };
        assert!(quiet(&off, &rl(60)));
    }

    #[test]
    fn keys_expiring_within_the_window_each_once() {
        let t = Thresholds::default(); // 7 days
        let k = |id: u128, secs: i64| ExpiringKey {
            id: Uuid::from_u128(id),
            prefix: format!("sk-stellar-{id}"),
            name: Some("ci".into()),
            expires_at: now() + Duration::seconds(secs),
        };
        let m = Measurements {
            keys: vec![k(1, 3600), k(2, 7 * 86_400), k(3, 7 * 86_400 + 1), k(4, -1)],
            ..mem(0)
        };
        let d = decide(&t, &BTreeSet::new(), &m, now());
        assert_eq!(
            keys(&d),
            [
                format!("key_expiring:{}", Uuid::from_u128(1)),
                format!("key_expiring:{}", Uuid::from_u128(2))
            ]
        );
        // Next time: nothing new. Key 1's expiry is moved out: re-armed; key 3 comes in range.
        assert!(decide(&t, &d.state, &m, now()).raise.is_empty());
        let later = now() + Duration::seconds(10);
        let m2 = Measurements {
            keys: vec![k(1, 30 * 86_400), k(2, 7 * 86_400), k(3, 7 * 86_400 + 1)],
            ..mem(0)
        };
        let d2 = decide(&t, &d.state, &m2, later);
        assert_eq!(keys(&d2), [format!("key_expiring:{}", Uuid::from_u128(3))]);
        assert!(!d2
            .state
            .contains(&format!("key_expiring:{}", Uuid::from_u128(1))));
    }

    #[test]
    fn payment_failed_while_past_due() {
        let t = Thresholds::default();
        let pd = |b: bool| Measurements {
            past_due: b,
            tier: "pro".into(),
            ..mem(0)
        };
        let got = run(&t, &[pd(false), pd(true), pd(true), pd(false), pd(true)]);
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            [0, 1, 0, 0, 1]
        );
        let off = Thresholds {
            payment_failed: false,
            ..t
        };
        assert!(quiet(&off, &pd(true)));
    }

    #[test]
    fn a_threshold_turned_off_leaves_the_state() {
        let t = Thresholds::default();
        let d = decide(&t, &BTreeSet::new(), &mem(4500), now());
        let off = Thresholds {
            memory_percent: vec![95],
            ..t
        };
        let d2 = decide(&off, &d.state, &mem(4500), now());
        assert!(d2.state.is_empty() && d2.raise.is_empty());
    }

    #[test]
    fn updates_are_checked() {
        let t = Thresholds::default();
        let u = |j: &str| serde_json::from_str::<ThresholdsUpdate>(j).unwrap();
        let n = t
            .apply(&u(
                r#"{"memory_percent":[100,50,50],"key_expiring_days":0}"#,
            ))
            .unwrap();
        assert_eq!(n.memory_percent, [50, 100]);
        assert_eq!((n.key_expiring_days, n.rate_limited_minutes), (0, 5));
        for bad in [
            r#"{"memory_percent":[0]}"#,
            r#"{"memory_percent":[101]}"#,
            r#"{"memory_percent":[1,2,3,4,5,6]}"#,
            r#"{"rate_limited_minutes":61}"#,
            r#"{"key_expiring_days":366}"#,
        ] {
            assert!(t.apply(&u(bad)).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<ThresholdsUpdate>(r#"{"memory":[1]}"#).is_err());
        assert!(
            serde_json::from_str::<ThresholdsUpdate>(r#"{"rate_limited_minutes":-1}"#).is_err()
        );
        assert!(t.memory_may_alert(4000, 5000) && !t.memory_may_alert(3999, 5000));
    }

    #[test]
    fn alert_data_and_names() {
        let a = Alert::MemoryQuota {
            threshold_percent: 80,
            memories_used: 4000,
            memories_limit: 5000,
        };
        assert_eq!(a.event_type(), "alert.memory_quota");
        assert_eq!(
            a.data(),
            serde_json::json!({"threshold_percent": 80, "memories_used": 4000, "memories_limit": 5000})
        );
        let back: Alert = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
