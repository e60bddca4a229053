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
use http::HeaderMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use stellar_common::{keys, Db, Tier};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Who is calling, with the tier already resolved.
#[derive(Debug)]
pub struct Principal {
    pub user_id: Uuid,
    pub key_id: Uuid,
    pub tier: Arc<Tier>,
    /// The tier's header values and metric handles.
    pub meta: Arc<TierMeta>,
    /// This key's requests not yet written to the account DB (see [`crate::usage`]).
    pub usage: Mutex<KeyUsage>,
}

/// Why a request has no usable key (before any lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    Missing,
    Malformed,
}

/// The key from `X-API-Key`, else `Authorization: Bearer`. The form is checked here, so garbage
/// never reaches the cache or the DB.
pub fn extract_key(headers: &HeaderMap) -> Result<&str, KeyProblem> {
    let raw = if let Some(v) = headers.get("x-api-key") {
        v.to_str().map_err(|_| KeyProblem::Malformed)?.trim()
    } else if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| KeyProblem::Malformed)?.trim();
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

/// The result of resolving a well-formed key.
#[derive(Debug)]
pub enum Auth {
    Ok(Arc<Principal>),
    Unknown,
    /// The account DB could not answer and the principal is not cached.
    Unavailable,
}

#[derive(Debug, Clone)]
enum LoadError {
    NotFound,
    /// Found, but an eviction ran meanwhile: use it for this request only.
    Stale(Arc<Principal>),
    Db(String),
}

type Hash = [u8; 32];
type Load = Arc<OnceCell<Result<Arc<Principal>, LoadError>>>;

const SHARDS: usize = 16;

/// One shard of the principal table. Entries are small (the 32-byte hash, a pointer and an
/// expiry); the principal itself is shared with the requests using it.
#[derive(Default)]
struct Shard {
    /// hash → (principal, expiry in whole seconds since the cache started).
    positive: HashMap<Hash, (Arc<Principal>, u32)>,
    /// hash → expiry in milliseconds since the cache started.
    negative: HashMap<Hash, u64>,
}

/// The principal cache: positive and negative entries in a sharded table with a time-to-live
/// and a capacity bound (over it, an arbitrary entry of the shard makes room: every entry can
/// be reloaded, so which one goes only costs a query). It replaces a general-purpose cache whose
/// per-entry bookkeeping cost more than the principal (≈ 450 bytes a key; here ≈ 150).
pub struct AuthCache {
    shards: Vec<RwLock<Shard>>,
    /// Loads in flight, so concurrent misses for one hash share a single query.
    loading: Mutex<HashMap<Hash, Load>>,
    started: Instant,
    ttl_secs: u32,
    negative_ttl_ms: u64,
    shard_capacity: usize,
    negative_shard_capacity: usize,
    epoch: AtomicU64,
    feed_ready: AtomicBool,
    metas: Arc<TierMetas>,
    tiers: Arc<stellar_common::Tiers>,
    db_timeout: Duration,
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
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(SHARDS);
        AuthCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            loading: Mutex::default(),
            started: Instant::now(),
            ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(1),
            negative_ttl_ms: u64::try_from(negative_ttl.as_millis()).unwrap_or(u64::MAX),
            shard_capacity: capacity / SHARDS,
            negative_shard_capacity: capacity / 4 / SHARDS + 1,
            epoch: AtomicU64::new(0),
            feed_ready: AtomicBool::new(false),
            metas,
            tiers,
            db_timeout,
        }
    }

    fn shard(&self, hash: &Hash) -> &RwLock<Shard> {
        // The hash is SHA-256 output: any byte is uniform.
        &self.shards[usize::from(hash[0]) % SHARDS]
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn now_secs(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn get_positive(&self, hash: &Hash) -> Option<Arc<Principal>> {
        let shard = self.shard(hash).read().unwrap_or_else(|e| e.into_inner());
        match shard.positive.get(hash) {
            Some((p, expires)) if *expires > self.now_secs() => Some(p.clone()),
            _ => None,
        }
    }

    fn is_negative(&self, hash: &Hash) -> bool {
        let shard = self.shard(hash).read().unwrap_or_else(|e| e.into_inner());
        shard
            .negative
            .get(hash)
            .is_some_and(|expires| *expires > self.now_ms())
    }

    fn insert_positive(&self, hash: Hash, p: Arc<Principal>) {
        let expires = self.now_secs().saturating_add(self.ttl_secs);
        let mut shard = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
        if shard.positive.len() >= self.shard_capacity && !shard.positive.contains_key(&hash) {
            let now = self.now_secs();
            shard.positive.retain(|_, (_, e)| *e > now);
            if shard.positive.len() >= self.shard_capacity {
                if let Some(victim) = shard.positive.keys().next().copied() {
                    shard.positive.remove(&victim);
                }
            }
        }
        shard.positive.insert(hash, (p, expires));
    }

    fn insert_negative(&self, hash: Hash) {
        let now = self.now_ms();
        let mut shard = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
        if shard.negative.len() >= self.negative_shard_capacity {
            shard.negative.retain(|_, e| *e > now);
            if shard.negative.len() >= self.negative_shard_capacity {
                if let Some(victim) = shard.negative.keys().next().copied() {
                    shard.negative.remove(&victim);
                }
            }
        }
        shard
            .negative
            .insert(hash, now.saturating_add(self.negative_ttl_ms));
    }

    /// The feed reader has its cursor: from now on results may be cached.
    pub fn set_feed_ready(&self) {
        self.feed_ready.store(true, Ordering::SeqCst);
    }

    /// The cached principal of a well-formed key, if any (no DB access).
    pub async fn cached(&self, key: &str) -> Option<Arc<Principal>> {
        self.get_positive(&keys::hash_bytes(key))
    }

    /// Resolve a well-formed key. `db` is `None` while the pool is not connected yet.
    pub async fn resolve(&self, key: &str, db: Option<&Db>) -> (Auth, CacheOutcome) {
        let hash = keys::hash_bytes(key);
        if let Some(p) = self.get_positive(&hash) {
            return (Auth::Ok(p), CacheOutcome::Hit);
        }
        if self.is_negative(&hash) {
            return (Auth::Unknown, CacheOutcome::NegativeHit);
        }
        let Some(db) = db else {
            return (Auth::Unavailable, CacheOutcome::Miss);
        };
        // The epoch the last query started at (a not-found answer is only cached if no eviction
        // ran since).
        let epoch = AtomicU64::new(self.epoch.load(Ordering::SeqCst));
        let loader = async {
            // A change applied while the query ran may make its answer stale: ask again (the
            // new query starts after that change), a few times, so a busy change feed does not
            // keep keys out of the cache.
            for attempt in 1..=3 {
                let started = self.epoch.load(Ordering::SeqCst);
                epoch.store(started, Ordering::SeqCst);
                metrics::DB_QUERIES.with_label_values(&["principal"]).inc();
                let hex = hex::encode(hash);
                let row = tokio::time::timeout(
                    self.db_timeout,
                    stellar_common::accounts::principal_by_hash(db, &hex),
                )
                .await;
                let p = match row {
                    Err(_) => return Err(LoadError::Db("timed out".into())),
                    Ok(Err(e)) => return Err(LoadError::Db(e.to_string())),
                    Ok(Ok(None)) => return Err(LoadError::NotFound),
                    Ok(Ok(Some(p))) => p,
                };
                let tier = self.tiers.get_or_default(&p.tier).clone();
                let principal = Arc::new(Principal {
                    user_id: p.user_id,
                    key_id: p.key_id,
                    meta: self.metas.get(&tier),
                    tier,
                    usage: Mutex::default(),
                });
                if !self.feed_ready.load(Ordering::SeqCst) {
                    return Err(LoadError::Stale(principal));
                }
                if self.epoch.load(Ordering::SeqCst) != started {
                    if attempt < 3 {
                        continue;
                    }
                    return Err(LoadError::Stale(principal));
                }
                // Cached before the waiters wake, so none of them queries again.
                self.insert_positive(hash, principal.clone());
                if self.epoch.load(Ordering::SeqCst) != started {
                    // An eviction raced the insert: it may have missed this entry.
                    let mut shard = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
                    shard.positive.remove(&hash);
                }
                return Ok(principal);
            }
            Err(LoadError::Db("unreachable".into()))
        };
        // Concurrent misses for one hash share a single query; results are not kept here
        // (errors are never cached, a found principal lives in the table).
        let cell: Load = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(hash)
            .or_default()
            .clone();
        let result = cell.get_or_init(|| loader).await.clone();
        {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            if loading.get(&hash).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                loading.remove(&hash);
            }
        }
        match result {
            Ok(p) => (Auth::Ok(p), CacheOutcome::Miss),
            Err(LoadError::Stale(p)) => (Auth::Ok(p), CacheOutcome::Miss),
            Err(LoadError::NotFound) => {
                if self.epoch.load(Ordering::SeqCst) == epoch.load(Ordering::SeqCst)
                    && self.feed_ready.load(Ordering::SeqCst)
                {
                    self.insert_negative(hash);
                }
                (Auth::Unknown, CacheOutcome::Miss)
            }
            Err(LoadError::Db(msg)) => {
                tracing::warn!(error = %msg, "account DB lookup failed");
                (Auth::Unavailable, CacheOutcome::Miss)
            }
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
        let mut shard = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
        shard.positive.remove(&hash);
        shard.negative.remove(&hash);
    }

    /// Forget every cached key of a user (tier change, account change). Tier changes are rare,
    /// so a scan of the cache is cheaper than keeping a user → keys index on the hot path.
    pub async fn evict_user(&self, user_id: Uuid) -> usize {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let mut removed = 0;
        for s in &self.shards {
            let mut shard = s.write().unwrap_or_else(|e| e.into_inner());
            let before = shard.positive.len();
            shard.positive.retain(|_, (p, _)| p.user_id != user_id);
            removed += before - shard.positive.len();
        }
        removed
    }

    /// Drop expired entries and give back table space after a burst of keys.
    pub fn sweep(&self) {
        let (secs, ms) = (self.now_secs(), self.now_ms());
        for s in &self.shards {
            let mut shard = s.write().unwrap_or_else(|e| e.into_inner());
            shard.positive.retain(|_, (_, e)| *e > secs);
            shard.negative.retain(|_, e| *e > ms);
            if shard.positive.capacity() > 64
                && shard.positive.len() < shard.positive.capacity() / 4
            {
                shard.positive.shrink_to_fit();
            }
            if shard.negative.capacity() > 64
                && shard.negative.len() < shard.negative.capacity() / 4
            {
                shard.negative.shrink_to_fit();
            }
        }
    }

    /// Entries currently cached (for metrics).
    pub fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).positive.len() as u64)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn outcome_label(o: CacheOutcome) -> &'static str {
    match o {
        CacheOutcome::Hit => "hit",
        CacheOutcome::NegativeHit => "negative_hit",
        CacheOutcome::Miss => "miss",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    const K: &str = "sk-stellar-0123456789abcdef0123456789abcdef";

    #[test]
    fn key_extraction() {
        assert_eq!(extract_key(&h(&[])), Err(KeyProblem::Missing));
        assert_eq!(extract_key(&h(&[("x-api-key", K)])), Ok(K));
        assert_eq!(
            extract_key(&h(&[("authorization", &format!("Bearer {K}"))])),
            Ok(K)
        );
        assert_eq!(
            extract_key(&h(&[("authorization", &format!("bearer  {K}"))])),
            Ok(K)
        );
        assert_eq!(
            extract_key(&h(&[("authorization", &format!("Basic {K}"))])),
            Err(KeyProblem::Malformed)
        );
        assert_eq!(
            extract_key(&h(&[("x-api-key", "sk-stellar-nothex")])),
            Err(KeyProblem::Malformed)
        );
        assert_eq!(
            extract_key(&h(&[("x-api-key", &K.to_uppercase())])),
            Err(KeyProblem::Malformed)
        );
    }
}
