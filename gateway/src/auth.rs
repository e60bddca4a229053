//! Steps 2–4: find the key, check its form, hash it, and resolve it to a principal through the
//! cache. A cache hit costs no DB query; unknown hashes are remembered briefly (negative cache).
//!
//! Freshness: the change feed ([`crate::feed`]) evicts by key hash or user. A lookup that was
//! already running when an eviction happened could put a stale row back, so every eviction
//! bumps an epoch, and a lookup that saw the epoch move does not cache its result (it still
//! answers its own request with it). Until the feed reader has its starting cursor nothing is
//! cached at all, so no change can slip between "cached" and "watched".

use crate::metrics;
use crate::tier_meta::{TierMeta, TierMetas};
use crate::usage::KeyUsage;
use moka::future::Cache;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stellar_common::{keys, Db, Tier};
use uuid::Uuid;

/// Who is calling, with the tier already resolved.
#[derive(Debug)]
pub struct Principal {
    pub user_id: Uuid,
    pub key_id: Uuid,
    /// The tier (as [`Principal::tier`]), its header values and metric handles.
    pub meta: Arc<TierMeta>,
    /// This key's requests not yet written to the account DB (see [`crate::usage`]).
    pub usage: KeyUsage,
    /// A scoped key's restrictions (boxed: an unrestricted key, the common case, pays one
    /// pointer).
    pub scope: Option<Box<Scope>>,
    /// End of its time in the cache: milliseconds on [`AuthCache`]'s clock. (The time-to-live
    /// is checked here rather than by moka: moka's own TTL costs ~30 bytes per entry, and this
    /// field fits in the padding of the principal's allocation.)
    expires_ms: u64,
}

impl Principal {
    pub fn tier(&self) -> &Arc<Tier> {
        &self.meta.tier
    }
}

/// A scoped key's restrictions in the form the hot path checks ([`crate::proxy`]'s `scope`).
#[derive(Debug)]
pub struct Scope {
    pub read_only: bool,
    pub agent: Option<Box<str>>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// The key's own bucket: its requests per minute, never above the tier's.
    pub rate: Option<crate::limits::Rate>,
}

impl Scope {
    fn of(s: &stellar_common::accounts::KeyScope, tier: &Tier) -> Option<Box<Scope>> {
        if s.is_unrestricted() {
            return None;
        }
        let rate = s.requests_per_minute.map(|n| {
            let per_minute = u32::try_from(n.max(1))
                .unwrap_or(1)
                .min(tier.requests_per_minute);
            crate::limits::Rate {
                per_minute,
                burst: per_minute.min(tier.burst),
            }
        });
        Some(Box::new(Scope {
            read_only: s.read_only,
            agent: s.agent.as_deref().map(Into::into),
            expires_at: s.expires_at.map(|t| t.timestamp()),
            rate,
        }))
    }
}

/// Why a request has no usable key (before any lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    Missing,
    Malformed,
}

/// The key from `X-API-Key`, else `Authorization: Bearer`. The form is checked here, so garbage
/// never reaches the cache or the DB.
pub fn extract_key<'a>(
    x_api_key: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
) -> Result<&'a str, KeyProblem> {
    let text = |v: &'a [u8]| std::str::from_utf8(v).map_err(|_| KeyProblem::Malformed);
    let raw = if let Some(v) = x_api_key {
        text(v)?.trim()
    } else if let Some(v) = authorization {
        let v = text(v)?.trim();
        match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(KeyProblem::Malformed),
        }
    } else {
        return Err(KeyProblem::Missing);
    };
    if keys::is_well_formed(raw) {
        Ok(raw)
    } else {
        Err(KeyProblem::Malformed)
    }
}

/// How a lookup was answered (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    NegativeHit,
    Miss,
}

impl CacheOutcome {
    /// Every outcome, in [`index`](CacheOutcome::index) order (metric handle tables).
    pub const ALL: [CacheOutcome; 3] = [
        CacheOutcome::Hit,
        CacheOutcome::Miss,
        CacheOutcome::NegativeHit,
    ];

    pub fn index(self) -> usize {
        match self {
            CacheOutcome::Hit => 0,
            CacheOutcome::Miss => 1,
            CacheOutcome::NegativeHit => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::NegativeHit => "negative_hit",
        }
    }
}

/// The result of resolving a well-formed key.
#[derive(Debug)]
pub enum Auth {
    Ok(Arc<Principal>),
    Unknown,
    /// The account DB could not answer and the principal is not cached.
    Unavailable,
}

#[derive(Debug)]
enum LoadError {
    /// No active key with this hash, per a query that started at this epoch.
    NotFound(u64),
    /// Found, but an eviction ran meanwhile (or the feed is not followed yet): use it for this
    /// request only.
    Stale(Arc<Principal>),
    Db(String),
}

type Hash = [u8; 32];

/// How many times a lookup asks again when an eviction ran while it was querying.
const LOAD_ATTEMPTS: u32 = 3;

/// The principal cache: a moka cache of principals under the key hash (capacity-bounded, with a
/// time-to-live behind the change feed, checked against the deadline in each principal), and a
/// smaller moka cache of hashes known to be unknown.
/// A principal evicted here stays alive as long as a request or the usage queue holds it, so
/// its unflushed request counts are not lost (see [`crate::usage`]).
pub struct AuthCache {
    positive: Cache<Hash, Arc<Principal>>,
    negative: Cache<Hash, ()>,
    /// Whether the negative cache is on (a zero TTL turns it off).
    negative_enabled: bool,
    epoch: AtomicU64,
    feed_ready: AtomicBool,
    metas: Arc<TierMetas>,
    tiers: Arc<stellar_common::Tiers>,
    db_timeout: Duration,
    /// Time-to-live of a principal (ms), and the clock its deadline is on.
    ttl_ms: u64,
    clock: Instant,
    /// When [`Self::sweep`] last dropped expired principals (ms on `clock`).
    expiry_swept_ms: AtomicU64,
}

impl AuthCache {
    pub fn new(
        capacity: u64,
        ttl: Duration,
        negative_ttl: Duration,
        tiers: Arc<stellar_common::Tiers>,
        metas: Arc<TierMetas>,
        db_timeout: Duration,
    ) -> Self {
        AuthCache {
            positive: Cache::builder()
                .max_capacity(capacity)
                // Evicting a user's keys is a predicate over the cached principals.
                .support_invalidation_closures()
                .build(),
            negative: Cache::builder()
                .max_capacity(capacity / 4 + 1)
                .time_to_live(negative_ttl.max(Duration::from_millis(1)))
                .build(),
            negative_enabled: !negative_ttl.is_zero(),
            epoch: AtomicU64::new(0),
            feed_ready: AtomicBool::new(false),
            metas,
            tiers,
            db_timeout,
            ttl_ms: u64::try_from(ttl.max(Duration::from_secs(1)).as_millis()).unwrap_or(u64::MAX),
            clock: Instant::now(),
            expiry_swept_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A cached principal younger than the time-to-live.
    async fn get_fresh(&self, hash: &Hash) -> Option<Arc<Principal>> {
        let p = self.positive.get(hash).await?;
        let now = self.now_ms();
        if now < p.expires_ms {
            return Some(p);
        }
        // Expired: drop it (unless a fresh one replaced it meanwhile), so the lookup reloads.
        self.positive
            .entry(*hash)
            .and_compute_with(|e| {
                std::future::ready(match e {
                    Some(e) if now >= e.value().expires_ms => moka::ops::compute::Op::Remove,
                    _ => moka::ops::compute::Op::Nop,
                })
            })
            .await;
        None
    }

    /// The feed reader has its cursor: from now on results may be cached.
    pub fn set_feed_ready(&self) {
        self.feed_ready.store(true, Ordering::SeqCst);
    }

    /// The cached principal of a well-formed key, if any (no DB access).
    pub async fn cached(&self, key: &str) -> Option<Arc<Principal>> {
        self.get_fresh(&keys::hash_bytes(key)).await
    }

    /// One query for `hash`, asked again (up to [`LOAD_ATTEMPTS`] times) while evictions run
    /// meanwhile. `Ok` = found and fresh: the caller caches it. `started` is set to the epoch
    /// the last query started at.
    async fn load(
        &self,
        hash: &Hash,
        db: &Db,
        started: &AtomicU64,
    ) -> Result<Arc<Principal>, LoadError> {
        let hex = hex::encode(hash);
        let mut attempt = 1;
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            started.store(epoch, Ordering::SeqCst);
            metrics::DB_QUERIES.with_label_values(&["principal"]).inc();
            let row = tokio::time::timeout(
                self.db_timeout,
                stellar_common::accounts::principal_by_hash(db, &hex),
            )
            .await;
            let p = match row {
                Err(_) => return Err(LoadError::Db("timed out".into())),
                Ok(Err(e)) => return Err(LoadError::Db(e.to_string())),
                Ok(Ok(None)) => return Err(LoadError::NotFound(epoch)),
                Ok(Ok(Some(p))) => p,
            };
            let tier = self.tiers.get_or_default(&p.tier).clone();
            let principal = Arc::new(Principal {
                user_id: p.user_id,
                key_id: p.key_id,
                scope: Scope::of(&p.scope, &tier),
                meta: self.metas.get(&tier),
                usage: KeyUsage::default(),
                expires_ms: self.now_ms().saturating_add(self.ttl_ms),
            });
            if !self.feed_ready.load(Ordering::SeqCst) {
                return Err(LoadError::Stale(principal));
            }
            if self.epoch.load(Ordering::SeqCst) == epoch {
                return Ok(principal);
            }
            // A change applied while the query ran may make its answer stale: ask again (the
            // new query starts after that change), a few times, so a busy change feed does not
            // keep keys out of the cache.
            if attempt == LOAD_ATTEMPTS {
                return Err(LoadError::Stale(principal));
            }
            attempt += 1;
        }
    }

    /// Resolve a well-formed key. `db` is `None` while the pool is not connected yet.
    pub async fn resolve(&self, key: &str, db: Option<&Db>) -> (Auth, CacheOutcome) {
        let hash = keys::hash_bytes(key);
        if let Some(p) = self.get_fresh(&hash).await {
            return (Auth::Ok(p), CacheOutcome::Hit);
        }
        if self.negative_enabled && self.negative.contains_key(&hash) {
            return (Auth::Unknown, CacheOutcome::NegativeHit);
        }
        let Some(db) = db else {
            return (Auth::Unavailable, CacheOutcome::Miss);
        };
        // Set only if this caller's loader ran (the others wait for it and share its answer).
        const NOT_RUN: u64 = u64::MAX;
        let started = AtomicU64::new(NOT_RUN);
        // Concurrent misses for one hash share a single query; moka caches only `Ok` (a found,
        // fresh principal), never an error.
        let result = self
            .positive
            .try_get_with(hash, self.load(&hash, db, &started))
            .await;
        match result {
            Ok(p) => {
                let started = started.load(Ordering::SeqCst);
                if started != NOT_RUN && self.epoch.load(Ordering::SeqCst) != started {
                    // An eviction ran between the loader's last check and moka's insert: it
                    // may have missed this entry.
                    self.positive.invalidate(&hash).await;
                }
                (Auth::Ok(p), CacheOutcome::Miss)
            }
            Err(e) => match &*e {
                LoadError::Stale(p) => (Auth::Ok(p.clone()), CacheOutcome::Miss),
                LoadError::NotFound(started) => {
                    if self.negative_enabled
                        && self.feed_ready.load(Ordering::SeqCst)
                        && self.epoch.load(Ordering::SeqCst) == *started
                    {
                        self.negative.insert(hash, ()).await;
                    }
                    (Auth::Unknown, CacheOutcome::Miss)
                }
                LoadError::Db(msg) => {
                    tracing::warn!(error = %msg, "account DB lookup failed");
                    (Auth::Unavailable, CacheOutcome::Miss)
                }
            },
        }
    }

    /// Forget one key (revoked, or created: drop it from the negative cache).
    pub async fn evict_hash(&self, hash_hex: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let Ok(bytes) = hex::decode(hash_hex.trim()) else {
            return;
        };
        let Ok(hash) = <Hash>::try_from(bytes.as_slice()) else {
            return;
        };
        self.positive.invalidate(&hash).await;
        self.negative.invalidate(&hash).await;
    }

    /// A key was created: only a negative entry for its hash can be stale (a positive entry for
    /// a hash that did not exist cannot), so nothing else is evicted — a burst of new keys does
    /// not knock working keys out of the cache.
    pub async fn forget_unknown_hash(&self, hash_hex: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let Ok(bytes) = hex::decode(hash_hex.trim()) else {
            return;
        };
        let Ok(hash) = <Hash>::try_from(bytes.as_slice()) else {
            return;
        };
        self.negative.invalidate(&hash).await;
    }

    /// Forget every cached key of a user (tier change, account change). Lookups stop returning
    /// them at once; moka drops them in its housekeeping.
    pub async fn evict_user(&self, user_id: Uuid) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self
            .positive
            .invalidate_entries_if(move |_, p| p.user_id == user_id)
        {
            // Only possible if invalidation closures were not enabled at build time.
            tracing::error!(error = %e, "principal cache: cannot evict by user, clearing it");
            self.positive.invalidate_all();
        }
    }

    /// Housekeeping: drop expired and invalidated entries now rather than on the next writes.
    pub async fn sweep(&self) {
        // Expired principals are never returned; they are dropped here, by a scan at most every
        // quarter of the time-to-live (moka runs it in its housekeeping), so an expired entry
        // is freed at most 1.25 × TTL + one sweep interval after it was loaded.
        let now = self.now_ms();
        if now.saturating_sub(self.expiry_swept_ms.load(Ordering::Relaxed)) >= self.ttl_ms / 4 {
            self.expiry_swept_ms.store(now, Ordering::Relaxed);
            if self
                .positive
                .invalidate_entries_if(move |_, p| now >= p.expires_ms)
                .is_err()
            {
                // Only without invalidation closures (not the case): capacity still bounds them.
                tracing::debug!("principal cache: cannot sweep expired entries");
            }
        }
        self.positive.run_pending_tasks().await;
        self.negative.run_pending_tasks().await;
    }

    /// Entries currently cached (approximate, for metrics).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.positive.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `extract_key` on these fields (name, value).
    fn key_of<'a>(pairs: &[(&str, &'a str)]) -> Result<&'a str, KeyProblem> {
        let get = |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_bytes())
        };
        extract_key(get("x-api-key"), get("authorization"))
    }

    const K: &str = "sk-stellar-0123456789abcdef0123456789abcdef";

    /// The tests that count principal queries (a process-wide counter) run one at a time.
    static QUERY_COUNT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn queries() -> u64 {
        metrics::DB_QUERIES.with_label_values(&["principal"]).get()
    }

    async fn sqlite() -> Db {
        stellar_common::testing::temp_sqlite_db().await
    }

    /// A user of `tier` with one active key; returns (key, user id, key id).
    async fn user_with_key(db: &Db, tier: &str) -> (String, Uuid, Uuid) {
        let k = keys::generate();
        let (uid, kid, now) = (Uuid::new_v4(), Uuid::new_v4(), chrono::Utc::now());
        stellar_common::with_db!(db, p => {
            sqlx::query("INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
                .bind(uid).bind(format!("{uid}@example.com")).bind(tier).bind(now).execute(p).await.unwrap();
            sqlx::query("INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, is_active, created_at) VALUES ($1, $2, $3, $4, 'Default', TRUE, $5)")
                .bind(kid).bind(uid).bind(&k.hash).bind(&k.display_prefix).bind(now).execute(p).await.unwrap();
        });
        (k.plaintext, uid, kid)
    }

    fn cache(capacity: u64) -> AuthCache {
        cache_with_ttl(capacity, Duration::from_secs(600))
    }

    fn cache_with_ttl(capacity: u64, ttl: Duration) -> AuthCache {
        let tiers = Arc::new(
            stellar_common::Tiers::parse(include_str!("../../config/tiers.toml"), "tiers").unwrap(),
        );
        let metas = Arc::new(TierMetas::new(&tiers));
        AuthCache::new(
            capacity,
            ttl,
            Duration::from_secs(60),
            tiers,
            metas,
            Duration::from_secs(5),
        )
    }

    fn is_ok(a: &Auth) -> bool {
        matches!(a, Auth::Ok(_))
    }

    #[tokio::test]
    async fn nothing_is_cached_before_the_feed_is_followed() {
        let _serial = QUERY_COUNT.lock().await;
        let db = sqlite().await;
        let (key, _, _) = user_with_key(&db, "pro").await;
        let c = cache(100);
        let unknown = keys::generate().plaintext;
        let q = queries();
        for _ in 0..2 {
            let (a, o) = c.resolve(&key, Some(&db)).await;
            assert!(is_ok(&a));
            assert_eq!(o, CacheOutcome::Miss);
            let (a, o) = c.resolve(&unknown, Some(&db)).await;
            assert!(matches!(a, Auth::Unknown));
            assert_eq!(o, CacheOutcome::Miss);
        }
        assert_eq!(queries() - q, 4);
        assert!(c.cached(&key).await.is_none());
        // Without a DB an uncached key cannot be answered.
        let (a, _) = c.resolve(&key, None).await;
        assert!(matches!(a, Auth::Unavailable));
    }

    /// A new key (billing writes `key_created` with the user id) clears only the negative entry
    /// of its hash: the user's working keys stay cached, so they keep working if the DB then
    /// goes away.
    #[tokio::test]
    async fn key_created_clears_only_the_negative_entry() {
        let _serial = QUERY_COUNT.lock().await;
        let db = sqlite().await;
        let (key, uid, _) = user_with_key(&db, "pro").await;
        let c = cache(100);
        c.set_feed_ready();
        assert!(is_ok(&c.resolve(&key, Some(&db)).await.0));
        let fresh = keys::generate();
        assert!(matches!(
            c.resolve(&fresh.plaintext, Some(&db)).await.0,
            Auth::Unknown
        ));
        let change = stellar_common::feed::Change {
            id: 1,
            user_id: Some(uid),
            key_hash: Some(fresh.hash.clone()),
            kind: stellar_common::feed::kind::KEY_CREATED.into(),
            created_at: chrono::Utc::now(),
        };
        crate::feed::apply(&c, &change).await;
        assert!(
            c.cached(&key).await.is_some(),
            "the user's working key stays cached"
        );
        let (_, outcome) = c.resolve(&fresh.plaintext, Some(&db)).await;
        assert_eq!(
            outcome,
            CacheOutcome::Miss,
            "the new hash is looked up again"
        );
        // Without a DB, the cached key still answers.
        assert!(is_ok(&c.resolve(&key, None).await.0));
    }

    #[tokio::test]
    async fn hits_negative_hits_and_evictions() {
        let _serial = QUERY_COUNT.lock().await;
        let db = sqlite().await;
        let (key, uid, kid) = user_with_key(&db, "pro").await;
        let (other, other_uid, _) = user_with_key(&db, "free").await;
        let c = cache(100);
        c.set_feed_ready();
        let q = queries();

        let (a, o) = c.resolve(&key, Some(&db)).await;
        let Auth::Ok(p) = a else { panic!("{a:?}") };
        assert_eq!(o, CacheOutcome::Miss);
        assert_eq!(
            (p.user_id, p.key_id, p.tier().name.as_str()),
            (uid, kid, "pro")
        );
        assert_eq!(p.meta.name, "pro");
        let (a, o) = c.resolve(&key, Some(&db)).await;
        assert!(is_ok(&a));
        assert_eq!(o, CacheOutcome::Hit);
        assert!(c.cached(&key).await.is_some());
        assert_eq!(queries() - q, 1, "a hit costs no query");

        let unknown = keys::generate().plaintext;
        let (a, o) = c.resolve(&unknown, Some(&db)).await;
        assert!(matches!(a, Auth::Unknown));
        assert_eq!(o, CacheOutcome::Miss);
        let (a, o) = c.resolve(&unknown, Some(&db)).await;
        assert!(matches!(a, Auth::Unknown));
        assert_eq!(o, CacheOutcome::NegativeHit);
        assert_eq!(queries() - q, 2);
        // A created key leaves the negative cache through the feed.
        c.evict_hash(&keys::hash_hex(&unknown)).await;
        let (_, o) = c.resolve(&unknown, Some(&db)).await;
        assert_eq!(o, CacheOutcome::Miss);

        // By hash.
        c.evict_hash(&keys::hash_hex(&key)).await;
        assert!(c.cached(&key).await.is_none());
        let (_, o) = c.resolve(&key, Some(&db)).await;
        assert_eq!(o, CacheOutcome::Miss);
        assert!(c.cached(&key).await.is_some());

        // By user: at once, and only that user's keys.
        assert!(is_ok(&c.resolve(&other, Some(&db)).await.0));
        c.evict_user(uid).await;
        assert!(c.cached(&key).await.is_none());
        assert!(c.cached(&other).await.is_some());
        c.sweep().await;
        assert!(c.cached(&key).await.is_none());
        let (_, o) = c.resolve(&key, Some(&db)).await;
        assert_eq!(o, CacheOutcome::Miss);
        let (_, o) = c.resolve(&key, Some(&db)).await;
        assert_eq!(o, CacheOutcome::Hit);
        c.evict_user(other_uid).await;
        assert!(c.cached(&other).await.is_none());
        assert!(c.cached(&key).await.is_some());

        // Garbage from the feed only moves the epoch.
        c.evict_hash("not hex").await;
        assert!(c.cached(&key).await.is_some());
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_query() {
        let _serial = QUERY_COUNT.lock().await;
        let db = sqlite().await;
        let (key, _, _) = user_with_key(&db, "free").await;
        let c = Arc::new(cache(100));
        c.set_feed_ready();
        let unknown = keys::generate().plaintext;
        let q = queries();
        let mut tasks = Vec::new();
        for i in 0..32 {
            let (c, db) = (c.clone(), db.clone());
            let k = if i % 2 == 0 {
                key.clone()
            } else {
                unknown.clone()
            };
            tasks.push(tokio::spawn(
                async move { c.resolve(&k, Some(&db)).await.0 },
            ));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let a = t.await.unwrap();
            if i % 2 == 0 {
                assert!(is_ok(&a));
            } else {
                assert!(matches!(a, Auth::Unknown));
            }
        }
        assert_eq!(queries() - q, 2, "one query per distinct key");
    }

    #[tokio::test]
    async fn db_errors_are_not_cached() {
        let _serial = QUERY_COUNT.lock().await;
        let db = sqlite().await;
        let (key, _, _) = user_with_key(&db, "free").await;
        let (cached_key, _, _) = user_with_key(&db, "free").await;
        let c = cache(100);
        c.set_feed_ready();
        assert!(is_ok(&c.resolve(&cached_key, Some(&db)).await.0));
        stellar_common::with_db!(&db, p => p.close().await);
        for _ in 0..2 {
            let (a, o) = c.resolve(&key, Some(&db)).await;
            assert!(matches!(a, Auth::Unavailable));
            assert_eq!(o, CacheOutcome::Miss);
        }
        // The DB being down does not touch cached principals.
        let (a, o) = c.resolve(&cached_key, Some(&db)).await;
        assert!(is_ok(&a));
        assert_eq!(o, CacheOutcome::Hit);
    }

    /// A principal is served from the cache for the time-to-live, then looked up again; the
    /// sweep frees expired entries.
    #[tokio::test]
    async fn principals_expire_after_the_ttl() {
        let _serial = QUERY_COUNT.lock().await;
        let db = sqlite().await;
        let (key, _, _) = user_with_key(&db, "free").await;
        let (other, _, _) = user_with_key(&db, "free").await;
        let c = cache_with_ttl(100, Duration::from_secs(1));
        c.set_feed_ready();
        let q = queries();
        assert_eq!(c.resolve(&key, Some(&db)).await.1, CacheOutcome::Miss);
        assert_eq!(c.resolve(&other, Some(&db)).await.1, CacheOutcome::Miss);
        assert_eq!(c.resolve(&key, Some(&db)).await.1, CacheOutcome::Hit);
        assert_eq!(queries() - q, 2);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(c.cached(&key).await.is_none(), "expired");
        let (a, o) = c.resolve(&key, Some(&db)).await;
        assert!(is_ok(&a));
        assert_eq!(o, CacheOutcome::Miss);
        assert_eq!(c.resolve(&key, Some(&db)).await.1, CacheOutcome::Hit);
        assert_eq!(queries() - q, 3);
        // The other key expired unseen: the sweep drops it, the reloaded one stays.
        c.sweep().await;
        c.sweep().await;
        assert_eq!(c.len(), 1);
        assert!(c.cached(&key).await.is_some());
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let _serial = QUERY_COUNT.lock().await;
        let db = sqlite().await;
        let c = cache(10);
        c.set_feed_ready();
        for _ in 0..40 {
            let (key, _, _) = user_with_key(&db, "free").await;
            assert!(is_ok(&c.resolve(&key, Some(&db)).await.0));
        }
        c.sweep().await;
        assert!(c.len() <= 10, "{} entries", c.len());
    }

    /// A DB with one user and key (key, user id, key id), a ready cache and usage counters.
    async fn usage_setup() -> (Db, AuthCache, crate::usage::Usage, String, Uuid, Uuid) {
        let db = sqlite().await;
        let (key, uid, kid) = user_with_key(&db, "free").await;
        let c = cache(100);
        c.set_feed_ready();
        (db, c, crate::usage::Usage::default(), key, uid, kid)
    }

    /// The usage counter in a principal: counts of one hour move to the shared table when the
    /// next hour's first request arrives; the flush writes both hours and the last use.
    #[tokio::test]
    async fn usage_rolls_over_hours() {
        let _serial = QUERY_COUNT.lock().await;
        let (db, c, usage, key, uid, kid) = usage_setup().await;
        let Auth::Ok(p) = c.resolve(&key, Some(&db)).await.0 else {
            panic!()
        };
        let h: i64 = 500_000 * 3600; // the start of an hour
        for t in [h + 5, h + 3599, h + 3600, h + 3601, h + 3602, h + 10] {
            usage.record_key(&p, t);
        }
        usage.flush(&db).await.unwrap();
        usage.record_key(&p, h + 2 * 3600);
        usage.flush(&db).await.unwrap();
        let rows: Vec<(i64, i64)> = stellar_common::with_db!(&db, q => sqlx::query_as("SELECT hour_start, requests FROM usage_hourly WHERE user_id = $1 ORDER BY hour_start")
            .bind(uid).fetch_all(q).await.unwrap());
        // The request stamped h + 10 came after the clock reached the next hour: it counts there.
        assert_eq!(rows, vec![(h, 2), (h + 3600, 4), (h + 7200, 1)]);
        let last: Option<chrono::DateTime<chrono::Utc>> = stellar_common::with_db!(&db, q => sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1").bind(kid).fetch_one(q).await.unwrap());
        assert_eq!(last.unwrap().timestamp(), h + 7200);
        // A principal is 64 bytes (80 with its reference counts: one allocation size class
        // below what a lock around the counter cost; 100,000 of them are in the memory budget).
        // The tier lives in its TierMeta and a key's scope behind one pointer to stay there.
        assert!(
            std::mem::size_of::<Principal>() <= 64,
            "{}",
            std::mem::size_of::<Principal>()
        );
    }

    /// A principal evicted from the cache keeps its unflushed request counts: the usage queue
    /// holds it until the next flush.
    #[tokio::test]
    async fn evicted_principal_keeps_its_usage() {
        let _serial = QUERY_COUNT.lock().await;
        let (db, c, usage, key, uid, kid) = usage_setup().await;
        let now = chrono::Utc::now().timestamp();
        {
            let Auth::Ok(p) = c.resolve(&key, Some(&db)).await.0 else {
                panic!()
            };
            usage.record_key(&p, now);
            usage.record_key(&p, now);
        }
        c.evict_user(uid).await;
        c.evict_hash(&keys::hash_hex(&key)).await;
        c.sweep().await;
        assert!(c.cached(&key).await.is_none());
        // The reloaded principal counts on from zero; both reach the DB.
        let Auth::Ok(p) = c.resolve(&key, Some(&db)).await.0 else {
            panic!()
        };
        usage.record_key(&p, now);
        usage.flush(&db).await.unwrap();
        let hour = now - now.rem_euclid(3600);
        let n: i64 = stellar_common::with_db!(&db, p => sqlx::query_scalar("SELECT requests FROM usage_hourly WHERE user_id = $1 AND hour_start = $2")
            .bind(uid).bind(hour).fetch_one(p).await.unwrap());
        assert_eq!(n, 3);
        let last: Option<chrono::DateTime<chrono::Utc>> = stellar_common::with_db!(&db, p => sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1").bind(kid).fetch_one(p).await.unwrap());
        assert_eq!(last.unwrap().timestamp(), now);
    }

    #[test]
    fn key_extraction() {
        assert_eq!(key_of(&[]), Err(KeyProblem::Missing));
        assert_eq!(key_of(&[("x-api-key", K)]), Ok(K));
        assert_eq!(key_of(&[("authorization", &format!("Bearer {K}"))]), Ok(K));
        assert_eq!(key_of(&[("authorization", &format!("bearer  {K}"))]), Ok(K));
        assert_eq!(
            key_of(&[("authorization", &format!("Basic {K}"))]),
            Err(KeyProblem::Malformed)
        );
        assert_eq!(
            key_of(&[("x-api-key", "sk-stellar-nothex")]),
            Err(KeyProblem::Malformed)
        );
        assert_eq!(
            key_of(&[("x-api-key", &K.to_uppercase())]),
            Err(KeyProblem::Malformed)
        );
    }
}
