//! Write-behind usage: requests per account per hour (`usage_hourly`, the dashboard's 24 h
//! chart) and `api_keys.last_used_at`. The request path only bumps a counter that lives in the
//! key's cached principal (one atomic word, no lock, no shared map); a key is queued once
//! per flush interval. A background task gathers the queued counters and flushes everything in
//! one transaction every few seconds and at shutdown.

use crate::auth::Principal;
use crate::metrics::{DB_ERRORS, DB_QUERIES};
use chrono::{DateTime, TimeZone, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// One key's requests since it was last gathered, in one atomic word (it lives in every cached
/// principal, and the request path updates it without a lock): the unix second of the last
/// request (whose hour is the hour the count belongs to; `u32` until 2106), the count, and
/// whether the key is in [`Usage`]'s queue.
#[derive(Debug, Default)]
pub struct KeyUsage(AtomicU64);

const COUNT_BITS: u32 = 31;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const QUEUED: u64 = 1 << COUNT_BITS;

/// (last used, count, queued)
fn unpack(v: u64) -> (u32, u64, bool) {
    ((v >> 32) as u32, v & COUNT_MAX, v & QUEUED != 0)
}

fn pack(last_used: u32, count: u64, queued: bool) -> u64 {
    (u64::from(last_used) << 32) | count.min(COUNT_MAX) | if queued { QUEUED } else { 0 }
}

fn hour_start(unix: u32) -> i64 {
    let t = i64::from(unix);
    t - t.rem_euclid(3600)
}

/// How many queued keys one flush transaction writes at most (bounds the memory and the
/// transaction a burst of distinct keys costs).
const FLUSH_CHUNK: usize = 4096;

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

#[derive(Default)]
struct Pending {
    hourly: HashMap<(Uuid, i64), i64>,
    last_used: HashMap<Uuid, i64>,
}

/// Counters accumulated since the last flush; `history` is the per-minute breakdown
/// ([`crate::usage_history`]).
#[derive(Default)]
pub struct Usage(
    Mutex<Pending>,
    Mutex<Vec<Arc<Principal>>>,
    pub crate::usage_history::History,
);

impl Usage {
    /// Count one request made with the key of `p` at unix time `now` (the hot path).
    pub fn record_key(&self, p: &Arc<Principal>, now: i64) {
        let now = to_u32(now);
        let mut cur = p.usage.0.load(Ordering::Relaxed);
        loop {
            let (last, count, queued) = unpack(cur);
            // A new hour (or a full counter): the old count goes to the shared table, once an
            // hour per key. A clock that stepped back counts in the hour of the last request.
            let carry =
                count > 0 && ((now > last && now / 3600 != last / 3600) || count == COUNT_MAX);
            let next = pack(last.max(now), if carry { 1 } else { count + 1 }, true);
            match p
                .usage
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if carry {
                        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
                        *pending
                            .hourly
                            .entry((p.user_id, hour_start(last)))
                            .or_default() += count as i64;
                    }
                    if !queued {
                        self.1
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(p.clone());
                    }
                    return;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Move the counters of up to `limit` queued keys into the shared table; returns how many
    /// it took.
    fn gather(&self, limit: usize) -> usize {
        let queued = {
            let mut q = self.1.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() <= limit {
                std::mem::take(&mut *q)
            } else {
                let at = q.len() - limit;
                q.split_off(at)
            }
        };
        if queued.is_empty() {
            return 0;
        }
        let mut pending = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for p in &queued {
            // Take the count and leave the queue in one step; the last use stays (it dates
            // the next count).
            let (last, count, _) =
                unpack(p.usage.0.fetch_and(!(COUNT_MAX | QUEUED), Ordering::AcqRel));
            if count > 0 {
                *pending
                    .hourly
                    .entry((p.user_id, hour_start(last)))
                    .or_default() += count as i64;
            }
            if last > 0 {
                let t = pending.last_used.entry(p.key_id).or_default();
                *t = (*t).max(i64::from(last));
            }
        }
        queued.len()
    }

    /// Count one request of `user` with key `key` at unix time `now`.
    #[cfg(test)]
    pub fn record(&self, user: Uuid, key: Uuid, now: i64) {
        let hour = now - now.rem_euclid(3600);
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *p.hourly.entry((user, hour)).or_default() += 1;
        let t = p.last_used.entry(key).or_default();
        *t = (*t).max(now);
    }

    /// Write everything pending, in transactions of at most [`FLUSH_CHUNK`] queued keys. On
    /// failure the counts not yet written are merged back for the next attempt. Returns the
    /// number of rows written.
    pub async fn flush(&self, db: &Db) -> sqlx::Result<usize> {
        let mut written = self.2.flush(db).await?;
        // Keys queued while this flush runs wait for the next one.
        let mut left = self.1.lock().unwrap_or_else(|e| e.into_inner()).len();
        loop {
            let took = self.gather(left.min(FLUSH_CHUNK));
            left = left.saturating_sub(took);
            written += self.write_pending(db).await?;
            if left == 0 || took == 0 {
                return Ok(written);
            }
        }
    }

    /// Write the shared table in one transaction.
    async fn write_pending(&self, db: &Db) -> sqlx::Result<usize> {
        let pending = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.hourly.is_empty() && pending.last_used.is_empty() {
            return Ok(0);
        }
        let n = pending.hourly.len() + pending.last_used.len();
        DB_QUERIES.with_label_values(&["usage_flush"]).inc();
        let result = with_db!(db, p => async {
            let mut tx = p.begin().await?;
            for ((user, hour), requests) in &pending.hourly {
                // An account deleted meanwhile has no row to count against: its counts go.
                sqlx::query("INSERT INTO usage_hourly (user_id, hour_start, requests) SELECT $1, $2, $3 \
                             WHERE EXISTS (SELECT 1 FROM users WHERE id = $1) \
                             ON CONFLICT (user_id, hour_start) DO UPDATE SET requests = usage_hourly.requests + excluded.requests")
                    .bind(user).bind(hour).bind(requests).execute(&mut *tx).await?;
            }
            for (key, at) in &pending.last_used {
                let at: DateTime<Utc> = Utc.timestamp_opt(*at, 0).single().unwrap_or_else(Utc::now);
                sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                    .bind(at).bind(key).execute(&mut *tx).await?;
            }
            tx.commit().await
        }.await);
        if let Err(e) = result {
            DB_ERRORS.with_label_values(&["usage_flush"]).inc();
            let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
            for (k, v) in pending.hourly {
                *p.hourly.entry(k).or_default() += v;
            }
            for (k, v) in pending.last_used {
                let t = p.last_used.entry(k).or_default();
                *t = (*t).max(v);
            }
            return Err(e);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flush_accumulates() {
        let db = stellar_common::testing::temp_sqlite_db().await;
        let (u, k) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        with_db!(&db, p => {
            sqlx::query("INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, 'a@b.c', 'free', $2, $2)").bind(u).bind(now).execute(p).await.unwrap();
            sqlx::query("INSERT INTO api_keys (id, user_id, key_hash, key_prefix, created_at) VALUES ($1, $2, 'h', 'p', $3)").bind(k).bind(u).bind(now).execute(p).await.unwrap();
        });
        let usage = Usage::default();
        let t = 7200 * 1000 + 5;
        usage.record(u, k, t);
        usage.record(u, k, t + 10);
        usage.flush(&db).await.unwrap();
        usage.record(u, k, t + 20);
        usage.flush(&db).await.unwrap();
        let n: i64 = with_db!(&db, p => sqlx::query_scalar("SELECT requests FROM usage_hourly WHERE user_id = $1 AND hour_start = $2")
            .bind(u).bind(7200 * 1000i64).fetch_one(p).await.unwrap());
        assert_eq!(n, 3);
        let last: Option<DateTime<Utc>> = with_db!(&db, p => sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1").bind(k).fetch_one(p).await.unwrap());
        assert_eq!(last.unwrap().timestamp(), t + 20);
    }
}
