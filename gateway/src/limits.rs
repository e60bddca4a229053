//! Step 5: token buckets, per account (sized from the tier) and per IP (unauthenticated routes
//! and failed auth). The bucket math is a pure function over an injected clock, so it is tested
//! without sleeping; [`Limiter`] is the seam where the Redis implementation slots in.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Monotonic time as seen by the limiter.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

/// The process clock.
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn new() -> Self {
        SystemClock(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock tests move by hand.
#[derive(Default)]
#[cfg(test)]
pub struct ManualClock(AtomicU64);

#[cfg(test)]
impl ManualClock {
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// A bucket's shape: refill `per_minute` tokens a minute up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    fn per_sec(self) -> f64 {
        f64::from(self.per_minute.max(1)) / 60.0
    }
}

/// The outcome of one take, with everything the response headers need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// Seconds until the bucket is full again: the draft's `t`; `X-RateLimit-Reset` is the same
    /// moment as Unix seconds, as the original system sent it.
    pub reset_secs: u64,
    /// Seconds until one token is available (for `Retry-After`); 0 when allowed.
    pub retry_after_secs: u64,
}

/// One bucket's state. `tokens` is fractional so slow refill rates are exact.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub tokens: f64,
    pub last: Duration,
}

impl Bucket {
    #[cfg(test)]
    pub fn full(rate: Rate, now: Duration) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }
}

fn refill(tokens: f64, last: Duration, now: Duration, rate: Rate) -> f64 {
    let elapsed = now.saturating_sub(last).as_secs_f64();
    (tokens + elapsed * rate.per_sec()).min(f64::from(rate.burst))
}

/// Take one token from `b` at `now`. The whole token-bucket algorithm.
pub fn take(b: &mut Bucket, now: Duration, rate: Rate) -> Decision {
    // A clock that goes backwards (it must not, but) never mints tokens.
    let now = now.max(b.last);
    b.tokens = refill(b.tokens, b.last, now, rate);
    b.last = now;
    let allowed = b.tokens >= 1.0;
    if allowed {
        b.tokens -= 1.0;
    }
    decision_from_tokens(allowed, b.tokens, rate)
}

/// Header values for a bucket holding `tokens` after the decision.
pub fn decision_from_tokens(allowed: bool, tokens: f64, rate: Rate) -> Decision {
    let per_sec = rate.per_sec();
    let missing_to_full = (f64::from(rate.burst) - tokens).max(0.0);
    let reset_secs = (missing_to_full / per_sec).ceil() as u64;
    let retry_after_secs = if allowed {
        0
    } else {
        (((1.0 - tokens).max(0.0)) / per_sec).ceil().max(1.0) as u64
    };
    Decision {
        allowed,
        remaining: tokens.floor().max(0.0) as u32,
        reset_secs,
        retry_after_secs,
    }
}

/// Local buckets keyed by `K`, sharded so concurrent accounts rarely share a lock.
pub struct LocalBuckets<K> {
    shards: Vec<Mutex<HashMap<K, Slot>>>,
    clock: Arc<dyn Clock>,
}

const SHARDS: usize = 64;

/// A bucket as stored: 16 bytes, so with an account id a table slot is 32 bytes (100,000
/// active accounts' buckets are part of the gateway's memory budget, see BENCHMARKS.md).
/// Times are whole milliseconds on the limiter's clock, kept in a `u32` that wraps every
/// 49.7 days; differences are taken with wrapping arithmetic, which is exact because a stored
/// bucket is at most minutes old (every sweep drops the buckets that have refilled, and a
/// bucket refills within burst ÷ rate). Refill counts whole milliseconds since the last take,
/// so no fraction of time is ever counted twice.
#[derive(Debug, Clone, Copy)]
struct Slot {
    tokens: f64,
    last_ms: u32,
    /// When the bucket is full again (it can then be forgotten).
    full_at_ms: u32,
}

fn clock_ms(now: Duration) -> u32 {
    // Truncation is the wrapping clock described on `Slot`.
    now.as_millis() as u32
}

impl Slot {
    /// The bucket this slot stands for, on a millisecond timeline ending at `now_ms`.
    fn bucket(&self, now_ms: u32) -> (Bucket, Duration) {
        let elapsed = u64::from(now_ms.wrapping_sub(self.last_ms));
        // A timeline that starts where this bucket was last taken from.
        let last = Duration::from_millis(1);
        (
            Bucket {
                tokens: self.tokens,
                last,
            },
            last + Duration::from_millis(elapsed),
        )
    }

    fn store(b: &Bucket, now_ms: u32, rate: Rate) -> Slot {
        let missing = (f64::from(rate.burst) - b.tokens).max(0.0);
        let to_full_ms = (missing / rate.per_sec() * 1000.0)
            .ceil()
            .min(f64::from(u32::MAX / 2));
        Slot {
            tokens: b.tokens,
            last_ms: now_ms,
            full_at_ms: now_ms.wrapping_add(to_full_ms as u32),
        }
    }

    fn is_full_at(&self, now_ms: u32) -> bool {
        // `now - full_at` as a signed difference: not negative once the moment has passed.
        (now_ms.wrapping_sub(self.full_at_ms) as i32) >= 0
    }
}

impl<K: Hash + Eq + Clone> LocalBuckets<K> {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        LocalBuckets {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            clock,
        }
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Slot>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Take a token for `key` under `rate`. A rate change (tier change) applies at once; the
    /// tokens already in the bucket carry over, capped at the new burst.
    pub fn take(&self, key: &K, rate: Rate) -> Decision {
        let now_ms = clock_ms(self.clock.now());
        let mut map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry(key.clone()).or_insert_with(|| Slot {
            tokens: f64::from(rate.burst),
            last_ms: now_ms,
            full_at_ms: now_ms,
        });
        let (mut b, now) = slot.bucket(now_ms);
        let d = take(&mut b, now, rate);
        *slot = Slot::store(&b, now_ms, rate);
        d
    }

    /// Whether `key` has at least one token, without taking it.
    pub fn has_token(&self, key: &K, rate: Rate) -> bool {
        let now_ms = clock_ms(self.clock.now());
        let map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).is_none_or(|slot| {
            let (b, now) = slot.bucket(now_ms);
            refill(b.tokens, b.last, now, rate) >= 1.0
        })
    }

    /// Drop buckets that have refilled completely: they are indistinguishable from absent ones,
    /// so memory stays proportional to recently active keys.
    pub fn sweep(&self) -> usize {
        let now_ms = clock_ms(self.clock.now());
        let mut removed = 0;
        for s in &self.shards {
            let mut map = s.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, slot| !slot.is_full_at(now_ms));
            removed += before - map.len();
            // A burst of accounts must not pin its table size forever.
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which limiter implementation made a decision (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    Redis,
    /// Redis was configured but unreachable: the local bucket decided.
    Fallback,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Redis => "redis",
            Backend::Fallback => "fallback",
        }
    }
}

/// The per-account limiter seam: local buckets, or Redis shared by every gateway.
#[async_trait::async_trait]
pub trait Limiter: Send + Sync {
    async fn check(&self, account: uuid::Uuid, rate: Rate) -> (Decision, Backend);
    /// The decision without awaiting, for limiters that never wait (saves boxing a future per
    /// request); `None` = call [`Limiter::check`].
    fn check_now(&self, _account: uuid::Uuid, _rate: Rate) -> Option<(Decision, Backend)> {
        None
    }
    /// Periodic housekeeping (dropping idle state).
    fn sweep(&self) {}
}

/// Buckets in this process.
pub struct LocalLimiter(pub LocalBuckets<uuid::Uuid>);

#[async_trait::async_trait]
impl Limiter for LocalLimiter {
    async fn check(&self, account: uuid::Uuid, rate: Rate) -> (Decision, Backend) {
        (self.0.take(&account, rate), Backend::Local)
    }
    fn check_now(&self, account: uuid::Uuid, rate: Rate) -> Option<(Decision, Backend)> {
        Some((self.0.take(&account, rate), Backend::Local))
    }
    fn sweep(&self) {
        self.0.sweep();
    }
}

/// `RateLimit-Policy` of draft-ietf-httpapi-ratelimit-headers-11: quota q per window w seconds.
pub fn policy_value(policy: &str, rate: Rate) -> String {
    format!("\"{policy}\";q={};w=60", rate.per_minute)
}

/// Unix time in whole seconds (for `X-RateLimit-Reset`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The rate-limit response headers for a decision under `policy` (the tier name, or "ip"), at
/// Unix time `now`. `X-RateLimit-Reset` is an absolute Unix time (the original system's
/// meaning); the draft's `t` is relative, as the draft defines it.
pub fn headers(policy: &str, rate: Rate, d: &Decision, now: u64) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("X-RateLimit-Limit", rate.per_minute.to_string()),
        ("X-RateLimit-Remaining", d.remaining.to_string()),
        ("X-RateLimit-Reset", (now + d.reset_secs).to_string()),
        // draft-ietf-httpapi-ratelimit-headers-11: quota q per window w seconds; r left, t until reset.
        ("RateLimit-Policy", policy_value(policy, rate)),
        (
            "RateLimit",
            format!("\"{policy}\";r={};t={}", d.remaining, d.reset_secs),
        ),
    ];
    if !d.allowed {
        h.push(("Retry-After", d.retry_after_secs.to_string()));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const R: Rate = Rate {
        per_minute: 60,
        burst: 5,
    };

    #[test]
    fn burst_then_refill() {
        let clock = Arc::new(ManualClock::default());
        let b = LocalBuckets::<u32>::new(clock.clone());
        for left in (0..5).rev() {
            let d = b.take(&1, R);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let d = b.take(&1, R);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        assert_eq!(d.reset_secs, 5);
        clock.advance(Duration::from_millis(999));
        assert!(!b.take(&1, R).allowed);
        clock.advance(Duration::from_millis(2));
        assert!(b.take(&1, R).allowed);
        // Other keys are independent.
        assert!(b.take(&2, R).allowed);
    }

    #[test]
    fn retry_after_is_never_early() {
        let rate = Rate {
            per_minute: 7,
            burst: 1,
        };
        let mut bucket = Bucket::full(rate, Duration::ZERO);
        assert!(take(&mut bucket, Duration::ZERO, rate).allowed);
        let d = take(&mut bucket, Duration::from_secs(1), rate);
        assert!(!d.allowed);
        // Waiting exactly Retry-After seconds gets a token.
        let t = Duration::from_secs(1 + d.retry_after_secs);
        assert!(take(&mut bucket, t, rate).allowed);
    }

    #[test]
    fn sweep_drops_full_buckets() {
        let clock = Arc::new(ManualClock::default());
        let b = LocalBuckets::<u32>::new(clock.clone());
        b.take(&1, R);
        assert_eq!(b.sweep(), 0);
        clock.advance(Duration::from_secs(2));
        assert_eq!(b.sweep(), 1);
        assert!(b.is_empty());
    }

    /// The stored buckets (millisecond clock in a wrapping u32): across the wrap, with sub-ms
    /// request spacing, admitted requests never exceed burst + rate·T, a client waiting
    /// Retry-After is admitted, and a refilled bucket is swept.
    #[test]
    fn stored_buckets_across_the_clock_wrap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..100 {
            let clock = Arc::new(ManualClock::default());
            // Start a few seconds before the u32 millisecond clock wraps.
            clock.advance(Duration::from_millis(
                u64::from(u32::MAX) - rng.gen_range(0..5000),
            ));
            let b = LocalBuckets::<u32>::new(clock.clone());
            let rate = Rate {
                per_minute: rng.gen_range(60..6000),
                burst: rng.gen_range(1..20),
            };
            let (mut t, mut admitted) = (Duration::ZERO, 0u64);
            for _ in 0..rng.gen_range(50..500) {
                let step = Duration::from_micros(rng.gen_range(0..3000));
                clock.advance(step);
                t += step;
                let d = b.take(&1, rate);
                if d.allowed {
                    admitted += 1;
                } else {
                    assert!(d.retry_after_secs >= 1);
                }
                let bound = f64::from(rate.burst) + t.as_secs_f64() * rate.per_sec();
                assert!(admitted as f64 <= bound + 1e-9, "{admitted} > {bound}");
            }
            let d = b.take(&1, rate);
            if !d.allowed {
                clock.advance(Duration::from_secs(d.retry_after_secs));
                assert!(b.take(&1, rate).allowed, "admitted after Retry-After");
            }
            clock.advance(Duration::from_secs(
                u64::from(rate.burst) * 60 / u64::from(rate.per_minute) + 1,
            ));
            assert_eq!(b.sweep(), 1, "refilled bucket swept");
        }
    }

    /// Property: over any request pattern, admitted requests in [0, T] never exceed
    /// burst + rate·T, and a client that waits Retry-After is admitted.
    #[test]
    fn property_admitted_within_burst_plus_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let rate = Rate {
                per_minute: rng.gen_range(1..2000),
                burst: rng.gen_range(1..50),
            };
            let mut b = Bucket::full(rate, Duration::ZERO);
            let mut now = Duration::ZERO;
            let mut admitted = 0u64;
            for _ in 0..rng.gen_range(1..400) {
                now += Duration::from_micros(rng.gen_range(0..200_000));
                let d = take(&mut b, now, rate);
                if d.allowed {
                    admitted += 1;
                } else {
                    let mut probe = b;
                    let later = now + Duration::from_secs(d.retry_after_secs);
                    assert!(
                        take(&mut probe, later, rate).allowed,
                        "Retry-After too early"
                    );
                }
                assert!(d.remaining <= rate.burst);
                let bound =
                    f64::from(rate.burst) + now.as_secs_f64() * f64::from(rate.per_minute) / 60.0;
                assert!(
                    admitted as f64 <= bound + 1e-9,
                    "admitted {admitted} > {bound}"
                );
            }
        }
    }

    #[test]
    fn header_shapes() {
        let d = Decision {
            allowed: false,
            remaining: 0,
            reset_secs: 9,
            retry_after_secs: 2,
        };
        let h: HashMap<_, _> = headers(
            "pro",
            Rate {
                per_minute: 300,
                burst: 300,
            },
            &d,
            1_700_000_000,
        )
        .into_iter()
        .collect();
        assert_eq!(
            h["X-RateLimit-Reset"], "1700000009",
            "absolute Unix seconds"
        );
        assert_eq!(h["RateLimit-Policy"], "\"pro\";q=300;w=60");
        assert_eq!(h["RateLimit"], "\"pro\";r=0;t=9");
        assert_eq!(h["Retry-After"], "2");
        assert_eq!(h["X-RateLimit-Limit"], "300");
    }
}
