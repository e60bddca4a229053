//! Abuse limits on requests that send mail (sign-up, sign-in links, invitations): at most
//! `auth.mail_requests_per_ip_per_hour` such requests from one client IP and
//! `auth.mails_per_address_per_hour` for one address, in a sliding hour. Requests for unknown
//! addresses count exactly like those for known ones, so the limits reveal nothing.
//!
//! The counts live in this process (billing is one process per deployment; several would
//! each allow the limit). Entries whose hour has passed are dropped as the map grows, so memory
//! stays bounded by the traffic of one hour.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(3600);
/// Above this many keys, a request first sweeps out keys with no event in the window.
const SWEEP_ABOVE: usize = 10_000;

/// Sliding-window counters per key.
#[derive(Default)]
struct Window {
    events: HashMap<String, VecDeque<Instant>>,
}

impl Window {
    /// Seconds until `key` may act again with at most `limit` events per window, or `None`
    /// when it may act now (without recording anything).
    fn wait(&mut self, key: &str, limit: u32, now: Instant) -> Option<u64> {
        let q = self.events.get_mut(key)?;
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() < limit as usize {
            return None;
        }
        let oldest = *q.front()?;
        Some((WINDOW - now.duration_since(oldest)).as_secs().max(1))
    }

    fn record(&mut self, key: &str, now: Instant) {
        if self.events.len() > SWEEP_ABOVE {
            self.events
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        self.events
            .entry(key.to_string())
            .or_default()
            .push_back(now);
    }
}

pub struct MailLimits {
    per_ip: u32,
    per_address: u32,
    state: Mutex<(Window, Window)>,
}

impl MailLimits {
    pub fn new(per_ip: u32, per_address: u32) -> MailLimits {
        MailLimits {
            per_ip,
            per_address,
            state: Mutex::new(Default::default()),
        }
    }

    /// Count one request from `ip` that would mail `address`; `Err(seconds)` when either limit
    /// is reached (then nothing is counted).
    pub fn check(&self, ip: Option<&str>, address: &str, now: Instant) -> Result<(), u64> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (ips, addresses) = &mut *guard;
        let ip = ip.unwrap_or("unknown");
        let wait = [
            ips.wait(ip, self.per_ip, now),
            addresses.wait(address, self.per_address, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(w) = wait {
            return Err(w);
        }
        ips.record(ip, now);
        addresses.record(address, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_per_address_slide() {
        let l = MailLimits::new(3, 2);
        let t0 = Instant::now();
        assert_eq!(l.check(Some("1.1.1.1"), "a@x.co", t0), Ok(()));
        assert_eq!(l.check(Some("1.1.1.1"), "a@x.co", t0), Ok(()));
        // The address is at its limit (2), from any IP.
        let w = l.check(Some("2.2.2.2"), "a@x.co", t0).unwrap_err();
        assert!(w > 3500 && w <= 3600, "{w}");
        // The IP has one left.
        assert_eq!(l.check(Some("1.1.1.1"), "b@x.co", t0), Ok(()));
        assert!(l.check(Some("1.1.1.1"), "c@x.co", t0).is_err());
        // A refused request is not counted: 2.2.2.2 still has all three.
        for a in ["d@x.co", "e@x.co", "f@x.co"] {
            assert_eq!(l.check(Some("2.2.2.2"), a, t0), Ok(()));
        }
        // An hour later everything is free again.
        let t1 = t0 + WINDOW;
        assert_eq!(l.check(Some("1.1.1.1"), "a@x.co", t1), Ok(()));
        // Half an hour into a window, the wait is what is left of the oldest event's hour.
        let l = MailLimits::new(10, 1);
        l.check(None, "z@x.co", t0).unwrap();
        let w = l
            .check(None, "z@x.co", t0 + Duration::from_secs(1800))
            .unwrap_err();
        assert_eq!(w, 1800);
    }
}
