//! Usage history: every authenticated request counted by account, key, agent, route family and
//! status class, per minute, in memory; flushed with the rest of the write-behind usage
//! ([`crate::usage`]) into `usage_minutes` and `usage_hours`, where each flush *adds* its counts,
//! so several gateways add up exactly. Billing serves the history and prunes old rows.
//!
//! The request path takes one uncontended lock of one of [`SHARDS`] maps (chosen by the key, so
//! the two proxy threads rarely meet) and bumps one counter; the agent's name, already
//! allocated for the request, moves into the map only the first time a bucket is seen.

use crate::metrics::{DB_ERRORS, DB_QUERIES};
use std::collections::HashMap;
use std::sync::Mutex;
use stellar_common::{with_db, Db};
use uuid::Uuid;

const SHARDS: usize = 8;

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

/// `2xx`, `3xx`, `4xx` (429 apart), `429`, `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        429 => "429",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bucket {
    user: Uuid,
    key: Uuid,
    agent: String,
    family: Family,
    class: &'static str,
    minute: i64,
}

#[derive(Default)]
pub struct History {
    shards: [Mutex<HashMap<Bucket, i64>>; SHARDS],
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
            agent: agent.unwrap_or_default(),
            family,
            class: status_class(status),
            minute: unix - unix.rem_euclid(60),
        };
        let mut m = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(b).or_default() += 1;
    }

    fn drain(&self) -> HashMap<Bucket, i64> {
        let mut all = HashMap::new();
        for s in &self.shards {
            let taken = std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner()));
            for (b, n) in taken {
                *all.entry(b).or_default() += n;
            }
        }
        all
    }

    fn merge_back(&self, counts: HashMap<Bucket, i64>) {
        for (b, n) in counts {
            let shard = b.key.as_bytes()[15] as usize % SHARDS;
            *self.shards[shard]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(b)
                .or_default() += n;
        }
    }

    /// Add everything counted so far to the tables, in one transaction; on failure the counts
    /// are kept for the next flush. Returns the buckets written.
    pub async fn flush(&self, db: &Db) -> sqlx::Result<usize> {
        let counts = self.drain();
        if counts.is_empty() {
            return Ok(0);
        }
        DB_QUERIES.with_label_values(&["usage_history"]).inc();
        let result = with_db!(db, p => async {
            let mut tx = p.begin().await?;
            for (b, n) in &counts {
                let hour = b.minute - b.minute.rem_euclid(3600);
                for (sql, at) in [
                    ("INSERT INTO usage_minutes (user_id, key_id, agent, route, status_class, minute_start, requests) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, minute_start, key_id, agent, route, status_class) \
                      DO UPDATE SET requests = usage_minutes.requests + excluded.requests", b.minute),
                    ("INSERT INTO usage_hours (user_id, key_id, agent, route, status_class, hour_start, requests) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, hour_start, key_id, agent, route, status_class) \
                      DO UPDATE SET requests = usage_hours.requests + excluded.requests", hour),
                ] {
                    sqlx::query(sql).bind(b.user).bind(b.key).bind(&b.agent).bind(b.family.label())
                        .bind(b.class).bind(at).bind(n).execute(&mut *tx).await?;
                }
            }
            tx.commit().await
        }.await);
        match result {
            Ok(()) => Ok(counts.len()),
            Err(e) => {
                DB_ERRORS.with_label_values(&["usage_history"]).inc();
                self.merge_back(counts);
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
            [200, 304, 404, 429, 502].map(status_class),
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
        assert_eq!(a.drain().values().sum::<i64>(), 1);
    }
}
