//! Steps 2–4: find the key, check its form, hash it, and resolve it to a principal through the
//! cache. A cache hit costs no DB query; unknown hashes are remembered briefly (negative cache).
//!
//! Freshness: the change feed ([`crate::feed`]) evicts by key hash or user. A lookup that was
//! already running when an eviction happened could put a stale row back, so every eviction
//! bumps an epoch, and a lookup that saw the epoch move does not cache its result (it still
//! answers its own request with it). Until the feed reader has its starting cursor nothing is
//! cached at all, so no change can slip between "cached" and "watched".

use crate::metrics;
use http::HeaderMap;
use moka::future::Cache;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stellar_common::{keys, Db, Tier, Tiers};
use uuid::Uuid;

/// Who is calling, with the tier already resolved.
#[derive(Debug)]
pub struct Principal {
    pub user_id: Uuid,
    pub key_id: Uuid,
    pub tier: Arc<Tier>,
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

/// The principal cache.
pub struct AuthCache {
    positive: Cache<[u8; 32], Arc<Principal>>,
    negative: Cache<[u8; 32], ()>,
    epoch: AtomicU64,
    feed_ready: AtomicBool,
    tiers: Arc<Tiers>,
    db_timeout: Duration,
}

impl AuthCache {
    pub fn new(
        capacity: u64,
        ttl: Duration,
        negative_ttl: Duration,
        tiers: Arc<Tiers>,
        db_timeout: Duration,
    ) -> Self {
        AuthCache {
            positive: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            negative: Cache::builder()
                .max_capacity(capacity / 4 + 1)
                .time_to_live(negative_ttl)
                .build(),
            epoch: AtomicU64::new(0),
            feed_ready: AtomicBool::new(false),
            tiers,
            db_timeout,
        }
    }

    /// The feed reader has its cursor: from now on results may be cached.
    pub fn set_feed_ready(&self) {
        self.feed_ready.store(true, Ordering::SeqCst);
    }

    /// The cached principal of a well-formed key, if any (no DB access).
    pub async fn cached(&self, key: &str) -> Option<Arc<Principal>> {
        self.positive.get(&keys::hash_bytes(key)).await
    }

    /// Resolve a well-formed key. `db` is `None` while the pool is not connected yet.
    pub async fn resolve(&self, key: &str, db: Option<&Db>) -> (Auth, CacheOutcome) {
        let hash = keys::hash_bytes(key);
        if let Some(p) = self.positive.get(&hash).await {
            return (Auth::Ok(p), CacheOutcome::Hit);
        }
        if self.negative.contains_key(&hash) {
            return (Auth::Unknown, CacheOutcome::NegativeHit);
        }
        let Some(db) = db else {
            return (Auth::Unavailable, CacheOutcome::Miss);
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let loader = async {
            metrics::DB_QUERIES.with_label_values(&["principal"]).inc();
            let hex = hex::encode(hash);
            let row = tokio::time::timeout(
                self.db_timeout,
                stellar_common::accounts::principal_by_hash(db, &hex),
            )
            .await;
            match row {
                Err(_) => Err(LoadError::Db("timed out".into())),
                Ok(Err(e)) => Err(LoadError::Db(e.to_string())),
                Ok(Ok(None)) => Err(LoadError::NotFound),
                Ok(Ok(Some(p))) => {
                    let principal = Arc::new(Principal {
                        user_id: p.user_id,
                        key_id: p.key_id,
                        tier: self.tiers.get_or_default(&p.tier).clone(),
                    });
                    if self.epoch.load(Ordering::SeqCst) != epoch
                        || !self.feed_ready.load(Ordering::SeqCst)
                    {
                        Err(LoadError::Stale(principal))
                    } else {
                        Ok(principal)
                    }
                }
            }
        };
        // Concurrent misses for one hash share a single query.
        match self.positive.try_get_with(hash, loader).await {
            Ok(p) => (Auth::Ok(p), CacheOutcome::Miss),
            Err(e) => match &*e {
                LoadError::Stale(p) => (Auth::Ok(p.clone()), CacheOutcome::Miss),
                LoadError::NotFound => {
                    if self.epoch.load(Ordering::SeqCst) == epoch
                        && self.feed_ready.load(Ordering::SeqCst)
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
        let Ok(hash) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return;
        };
        self.positive.invalidate(&hash).await;
        self.negative.invalidate(&hash).await;
    }

    /// Forget every cached key of a user (tier change, account change). Tier changes are rare,
    /// so a scan of the cache is cheaper than keeping a user → keys index on the hot path.
    pub async fn evict_user(&self, user_id: Uuid) -> usize {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let hashes: Vec<Arc<[u8; 32]>> = self
            .positive
            .iter()
            .filter(|(_, p)| p.user_id == user_id)
            .map(|(k, _)| k)
            .collect();
        for h in &hashes {
            self.positive.invalidate(h.as_ref()).await;
        }
        hashes.len()
    }

    /// Entries currently cached (approximate, for metrics).
    pub fn len(&self) -> u64 {
        self.positive.entry_count()
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
