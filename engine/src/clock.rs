//! Time, injected: every score, decay and timestamp reads "now" through a [`Clock`], so tests can
//! move time forward by days without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of Unix time in (fractional) seconds.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> f64;
}

fn system_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The real clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        system_now()
    }
}

/// The real clock plus an offset that only moves forward. Used when `test_clock = true`, where
/// `POST /_test/clock/advance` adds to the offset; end-to-end tests age memories by 90 days this
/// way while the process keeps running on real time.
#[derive(Debug, Default)]
pub struct OffsetClock {
    /// f64 seconds stored as bits, so reads are a single atomic load.
    offset: AtomicU64,
}

impl OffsetClock {
    /// Move time forward by `secs` (negative values are ignored: time never runs backwards).
    pub fn advance(&self, secs: f64) {
        let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
        let _ = self
            .offset
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                Some((f64::from_bits(bits) + secs).to_bits())
            });
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> f64 {
        system_now() + f64::from_bits(self.offset.load(Ordering::SeqCst))
    }
}

/// A clock that stands still until told otherwise (unit tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    pub fn at(secs: f64) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(secs.to_bits()),
        }
    }

    pub fn set(&self, secs: f64) {
        self.now.store(secs.to_bits(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        f64::from_bits(self.now.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_only_moves_forward() {
        let c = OffsetClock::default();
        let before = c.now();
        c.advance(86_400.0);
        let after = c.now();
        assert!(
            after - before >= 86_400.0 && after - before < 86_460.0,
            "{}",
            after - before
        );
        c.advance(-1e9);
        c.advance(f64::NAN);
        assert!(c.now() >= after);
    }

    #[test]
    fn manual_clock_is_what_it_is_told() {
        let c = ManualClock::at(10.0);
        assert_eq!(c.now(), 10.0);
        c.set(99.5);
        assert_eq!(c.now(), 99.5);
    }
}
