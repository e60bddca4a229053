//! Usage history: every authenticated request counted by account, key, agent, route family and
//! status class, per minute, in memory; flushed with the rest of the write-behind usage
//! ([`crate::usage`]) into `usage_minutes` and `usage_hours`, where each flush *adds* its counts,
//! so several gateways add up exactly. Billing serves the history and prunes old rows.
//!
//! The request path takes one uncontended lock of one of [`SHARDS`] maps (chosen by the key, so
//! the two proxy threads rarely meet) and bumps one counter; the agent's name, already
//! allocated for the request, moves into the map only the first time a bucket is seen.
//!
//! Memory is bounded, not proportional to the keys in use: a bucket is 56 bytes plus its
//! counter (the class and family are bytes, the minute a `u32`, the agent a `Box<str>` that
//! allocates nothing when empty), a shard reaching [`SHARD_SOFT_CAP`] buckets wakes the
//! flusher at once ([`History::pressure`]) instead of waiting for `usage_flush_secs`, and the
//! maps a flush empties are reused. Measured with `stellar-bench gateway --only-rss` (100,000
//! keys used once within 8 s, BENCHMARKS.md): 96-byte buckets kept until the timed flush took
//! the gateway from 63 to 81 MiB; 64-byte buckets with a cap of 2,048 per shard and fresh maps
//! at each flush, to 70–75 MiB.

use crate::metrics::{DB_ERRORS, DB_QUERIES};
use std::collections::HashMap;
use std::sync::Mutex;
use stellar_common::{with_db, Db};
use tokio::sync::Notify;
use uuid::Uuid;

const SHARDS: usize = 8;
/// Buckets in one shard at which the flusher is woken early.
pub const SHARD_SOFT_CAP: usize = 512;
/// Rows per multi-row `INSERT` of a flush (7 parameters each: well under SQLite's limit).
const ROWS_PER_INSERT: usize = 256;

/// The route families of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Store,
    Recall,
    Read,
    Other,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::Store => "store",
            Family::Recall => "recall",
            Family::Read => "read",
            Family::Other => "other",
        }
    }

    /// The family of an engine request.
    pub fn of(method: &str, path: &str) -> Family {
        let rest = path.strip_prefix("/api/v1/").unwrap_or("");
        if method == "POST" && rest.trim_end_matches('/') == "store" {
            Family::Store
        } else if rest.starts_with("recall") && matches!(method, "GET" | "HEAD") {
            Family::Recall
        } else if stellar_proto::route::is_read(method, path) {
            Family::Read
        } else {
            Family::Other
        }
    }
}

/// A status class of the history: `2xx`, `3xx`, `4xx` (429 apart), `429`, `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Ok,
    Redirect,
    ClientError,
    RateLimited,
    ServerError,
}

impl Class {
    pub fn of(status: u16) -> Class {
        match status {
            429 => Class::RateLimited,
            200..=299 => Class::Ok,
            300..=399 => Class::Redirect,
            400..=499 => Class::ClientError,
            _ => Class::ServerError,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Class::Ok => "2xx",
            Class::Redirect => "3xx",
            Class::ClientError => "4xx",
            Class::RateLimited => "429",
            Class::ServerError => "5xx",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bucket {
    user: Uuid,
    key: Uuid,
    agent: Box<str>,
    /// Unix minutes (seconds / 60).
    minute: u32,
    family: Family,
    class: Class,
}

impl Bucket {
    fn minute_start(&self) -> i64 {
        i64::from(self.minute) * 60
    }
}

#[derive(Default)]
pub struct History {
    shards: [Mutex<HashMap<Bucket, u32>>; SHARDS],
    /// Emptied maps, their capacity kept: a flush swaps one in for each shard it takes, so the
    /// steady state allocates nothing (no growth from empty, no freeing, no fragmentation).
    spare: Mutex<Vec<HashMap<Bucket, u32>>>,
    /// Notified when a shard reaches [`SHARD_SOFT_CAP`]: the flusher writes without waiting.
    pub pressure: Notify,
}

impl History {
    /// Count one request (the hot path).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        user: Uuid,
        key: Uuid,
        agent: Option<String>,
        family: Family,
        status: u16,
        unix: i64,
    ) {
        let shard = key.as_bytes()[15] as usize % SHARDS;
        let b = Bucket {
            user,
            key,
            agent: agent.map(String::into_boxed_str).unwrap_or_default(),
            minute: u32::try_from(unix.div_euclid(60)).unwrap_or(0),
            family,
            class: Class::of(status),
        };
        let full = {
            let mut m = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(b).or_default();
            *n = n.saturating_add(1);
            m.len() == SHARD_SOFT_CAP
        };
        if full {
            self.pressure.notify_one();
        }
    }

    /// Every shard's buckets, taken whole (a bucket lives in one shard only: no merging); an
    /// emptied map takes each one's place.
    fn drain(&self) -> Vec<HashMap<Bucket, u32>> {
        let mut taken = Vec::new();
        for s in &self.shards {
            let mut m = s.lock().unwrap_or_else(|e| e.into_inner());
            if !m.is_empty() {
                let fresh = self
                    .lock_spare()
                    .pop()
                    .unwrap_or_else(|| HashMap::with_capacity(SHARD_SOFT_CAP));
                taken.push(std::mem::replace(&mut *m, fresh));
            }
        }
        taken
    }

    /// Keeps `maps`, emptied, for the next [`drain`](History::drain).
    fn recycle(&self, maps: Vec<HashMap<Bucket, u32>>) {
        let mut spare = self.lock_spare();
        for mut m in maps {
            m.clear();
            if m.capacity() > 4 * SHARD_SOFT_CAP {
                // Grown while the database was away: back to the usual size.
                m.shrink_to(SHARD_SOFT_CAP);
            }
            if spare.len() < SHARDS {
                spare.push(m);
            }
        }
    }

    fn lock_spare(&self) -> std::sync::MutexGuard<'_, Vec<HashMap<Bucket, u32>>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn merge_back(&self, mut taken: Vec<HashMap<Bucket, u32>>) {
        for (b, n) in taken.iter_mut().flat_map(|m| m.drain()) {
            let shard = b.key.as_bytes()[15] as usize % SHARDS;
            let mut m = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
            let c = m.entry(b).or_default();
            *c = c.saturating_add(n);
        }
        self.recycle(taken);
    }

    /// Add everything counted so far to the tables, in one transaction; on failure the counts
    /// are kept for the next flush. Returns the buckets written.
    pub async fn flush(&self, db: &Db) -> sqlx::Result<usize> {
        let taken = self.drain();
        if taken.is_empty() {
            return Ok(0);
        }
        DB_QUERIES.with_label_values(&["usage_history"]).inc();
        // Hour rows summed first: one statement may not touch a row twice (PostgreSQL).
        let mut hours: HashMap<(&Bucket, i64), i64> = HashMap::new();
        let mut firsts: HashMap<(Uuid, Uuid, &str, Family, Class, i64), &Bucket> = HashMap::new();
        for (b, n) in taken.iter().flatten() {
            let m = b.minute_start();
            let hour = m - m.rem_euclid(3600);
            let first = *firsts
                .entry((b.user, b.key, &*b.agent, b.family, b.class, hour))
                .or_insert(b);
            *hours.entry((first, hour)).or_default() += i64::from(*n);
        }
        drop(firsts);
        let minutes: Vec<(&Bucket, i64, i64)> = taken
            .iter()
            .flatten()
            .map(|(b, n)| (b, b.minute_start(), i64::from(*n)))
            .collect();
        let hours: Vec<(&Bucket, i64, i64)> =
            hours.into_iter().map(|((b, h), n)| (b, h, n)).collect();
        let result = with_db!(db, p => async {
            let mut tx = p.begin().await?;
            for (table, at, rows) in [("usage_minutes", "minute_start", &minutes), ("usage_hours", "hour_start", &hours)] {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut q = sqlx::QueryBuilder::new(format!(
                        "INSERT INTO {table} (user_id, key_id, agent, route, status_class, {at}, requests) "));
                    q.push_values(chunk, |mut r, (b, t, n)| {
                        r.push_bind(b.user).push_bind(b.key).push_bind(&*b.agent)
                            .push_bind(b.family.label()).push_bind(b.class.label()).push_bind(*t).push_bind(*n);
                    });
                    q.push(format!(" ON CONFLICT (user_id, {at}, key_id, agent, route, status_class) \
                                    DO UPDATE SET requests = {table}.requests + excluded.requests"));
                    // Not kept in the connection's statement cache: a cached multi-row statement per chunk
                    // length on every connection costs megabytes (measured).
                    q.build().persistent(false).execute(&mut *tx).await?;
                }
            }
            tx.commit().await
        }.await);
        match result {
            Ok(()) => {
                let n = taken.iter().map(HashMap::len).sum();
                self.recycle(taken);
                Ok(n)
            }
            Err(e) => {
                DB_ERRORS.with_label_values(&["usage_history"]).inc();
                self.merge_back(taken);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_classes() {
        assert_eq!(Family::of("POST", "/api/v1/store"), Family::Store);
        assert_eq!(Family::of("GET", "/api/v1/recall"), Family::Recall);
        assert_eq!(
            Family::of("GET", "/api/v1/recall/confident"),
            Family::Recall
        );
        assert_eq!(Family::of("GET", "/api/v1/memories"), Family::Read);
        assert_eq!(Family::of("POST", "/api/v1/narrate"), Family::Read);
        assert_eq!(Family::of("DELETE", "/api/v1/forget/1"), Family::Other);
        assert_eq!(
            [200, 304, 404, 429, 502].map(|s| Class::of(s).label()),
            ["2xx", "3xx", "4xx", "429", "5xx"]
        );
    }

    #[tokio::test]
    async fn flushes_add_up_across_gateways_and_survive_a_failed_write() {
        let db = stellar_common::testing::temp_sqlite_db().await;
        let (u, k) = (Uuid::new_v4(), Uuid::new_v4());
        let t = 1_700_000_000 - 1_700_000_000 % 3600;
        // Two gateways' worth of counts for the same buckets.
        let (a, b) = (History::default(), History::default());
        for h in [&a, &b] {
            h.record(u, k, None, Family::Store, 200, t + 1);
            h.record(u, k, None, Family::Store, 200, t + 59);
            h.record(u, k, Some("bot".into()), Family::Recall, 429, t + 61);
        }
        a.flush(&db).await.unwrap();
        b.flush(&db).await.unwrap();
        assert_eq!(a.flush(&db).await.unwrap(), 0, "nothing left to write");
        let minutes: Vec<(String, String, i64, i64)> = with_db!(&db, p => sqlx::query_as(
            "SELECT agent, status_class, minute_start, requests FROM usage_minutes WHERE user_id = $1 ORDER BY minute_start")
            .bind(u).fetch_all(p).await.unwrap());
        assert_eq!(
            minutes,
            vec![
                (String::new(), "2xx".into(), t, 4),
                ("bot".into(), "429".into(), t + 60, 2)
            ]
        );
        let hours: i64 = with_db!(&db, p => sqlx::query_scalar(
            "SELECT SUM(requests) FROM usage_hours WHERE user_id = $1 AND hour_start = $2")
            .bind(u).bind(t).fetch_one(p).await.unwrap());
        assert_eq!(hours, 6);
        // A failed write keeps the counts.
        a.record(u, k, None, Family::Other, 500, t + 5);
        db.close().await;
        assert!(a.flush(&db).await.is_err());
        let left: u32 = a.drain().iter().flat_map(|m| m.values()).sum();
        assert_eq!(left, 1);
    }

    #[test]
    fn a_bucket_is_small_and_a_full_shard_wakes_the_flusher() {
        use futures::FutureExt;
        assert!(std::mem::size_of::<(Bucket, u32)>() <= 64);
        let h = History::default();
        let key = Uuid::from_bytes([7; 16]);
        // One bucket per minute of the same key: all in one shard.
        for m in 0..SHARD_SOFT_CAP as i64 - 1 {
            h.record(Uuid::nil(), key, None, Family::Read, 200, m * 60);
        }
        // notify_one keeps a permit when nobody waits: a later notified() completes at once.
        let woken = |h: &History| h.pressure.notified().now_or_never().is_some();
        assert!(!woken(&h), "not below the cap");
        h.record(Uuid::nil(), key, Some("a".into()), Family::Read, 200, 0);
        assert!(
            woken(&h),
            "the bucket that fills the shard wakes the flusher"
        );
        assert_eq!(
            h.drain().iter().map(HashMap::len).sum::<usize>(),
            SHARD_SOFT_CAP
        );
    }
}
