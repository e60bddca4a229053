//! The change feed: how a tier or key change reaches every gateway within a second.
//!
//! Billing appends a row (in the same transaction as the change) with [`APPEND_SQL`]; each
//! gateway polls with a [`FeedReader`] a few times a second (on PostgreSQL a NOTIFY trigger can
//! wake it sooner) and evicts what the rows name. Eviction is idempotent, so reading a row twice
//! is harmless; missing one is not, which is what the gap handling below is for.

use crate::db::Db;
use crate::with_db;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Append one change. Bind: user_id (Uuid or NULL), key_hash (text or NULL), kind, created_at.
pub const APPEND_SQL: &str =
    "INSERT INTO change_feed (user_id, key_hash, kind, created_at) VALUES ($1, $2, $3, $4)";

/// Kinds of change. Gateways treat them all as "evict"; the kind is for humans and metrics.
pub mod kind {
    pub const KEY_CREATED: &str = "key_created";
    pub const KEY_REVOKED: &str = "key_revoked";
    pub const TIER_CHANGED: &str = "tier_changed";
    /// A key's scope changed (gateways drop its cached principal).
    pub const KEY_CHANGED: &str = "key_changed";
}

/// One row of the feed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Change {
    pub id: i64,
    pub user_id: Option<Uuid>,
    pub key_hash: Option<String>,
    pub kind: String,
    pub created_at: DateTime<Utc>,
}

/// Append a change outside any transaction (tests, tools). Billing uses [`APPEND_SQL`] inside
/// the transaction that makes the change.
pub async fn append(
    db: &Db,
    user_id: Option<Uuid>,
    key_hash: Option<&str>,
    kind: &str,
) -> sqlx::Result<()> {
    with_db!(db, p => sqlx::query(APPEND_SQL).bind(user_id).bind(key_hash).bind(kind).bind(Utc::now()).execute(p).await.map(|_| ()))
}

/// Reads the feed in order without losing rows.
///
/// On PostgreSQL, `BIGSERIAL` ids are handed out at insert time but become visible at commit, so
/// a reader can see id 8 before id 7 commits. A missing id is remembered as a gap and re-read
/// from below until it shows up or `gap_timeout` passes (a rolled-back insert never shows up).
pub struct FeedReader {
    db: Db,
    cursor: i64,
    gaps: BTreeMap<i64, Instant>,
    gap_timeout: Duration,
    batch: i64,
}

const MAX_GAPS: usize = 10_000;

impl FeedReader {
    /// Start after the newest row: a fresh gateway has an empty cache, so history is irrelevant.
    pub async fn at_head(db: Db) -> sqlx::Result<FeedReader> {
        let head: Option<i64> = with_db!(&db, p => sqlx::query_scalar("SELECT MAX(id) FROM change_feed").fetch_one(p).await)?;
        Ok(Self::from_cursor(db, head.unwrap_or(0)))
    }

    pub fn from_cursor(db: Db, cursor: i64) -> FeedReader {
        FeedReader {
            db,
            cursor,
            gaps: BTreeMap::new(),
            gap_timeout: Duration::from_secs(10),
            batch: 1000,
        }
    }

    /// The highest id delivered so far.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// New rows since the last call, in id order.
    pub async fn poll(&mut self) -> sqlx::Result<Vec<Change>> {
        let now = Instant::now();
        let timeout = self.gap_timeout;
        self.gaps
            .retain(|_, seen| now.duration_since(*seen) < timeout);
        let from = self
            .gaps
            .keys()
            .next()
            .map_or(self.cursor, |g| (g - 1).min(self.cursor));
        let rows: Vec<Change> = with_db!(&self.db, p => sqlx::query_as::<_, Change>(
            "SELECT id, user_id, key_hash, kind, created_at FROM change_feed WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(from).bind(self.batch).fetch_all(p).await)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if row.id <= self.cursor {
                // Re-read below the cursor: deliver only rows that filled a gap.
                if self.gaps.remove(&row.id).is_some() {
                    out.push(row);
                }
                continue;
            }
            for missing in (self.cursor + 1)..row.id {
                if self.gaps.len() < MAX_GAPS {
                    self.gaps.insert(missing, now);
                }
            }
            self.cursor = row.id;
            out.push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(db: Db) {
        let mut r = FeedReader::at_head(db.clone()).await.unwrap();
        assert!(r.poll().await.unwrap().is_empty());
        let u = Uuid::new_v4();
        append(&db, Some(u), None, kind::TIER_CHANGED)
            .await
            .unwrap();
        append(&db, None, Some("ab"), kind::KEY_REVOKED)
            .await
            .unwrap();
        let got = r.poll().await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].user_id, Some(u));
        assert_eq!(got[1].key_hash.as_deref(), Some("ab"));
        assert!(
            r.poll().await.unwrap().is_empty(),
            "rows are delivered once"
        );
    }

    #[tokio::test]
    async fn feed_sqlite() {
        let db = crate::testing::temp_sqlite_db().await;
        exercise(db).await;
    }

    #[tokio::test]
    async fn feed_postgres_with_out_of_order_commit() {
        let Some(url) = crate::testing::fresh_postgres_db().await else {
            return;
        };
        let db = Db::connect(&url, &Default::default()).await.unwrap();
        db.migrate().await.unwrap();
        exercise(db.clone()).await;
        let Db::Postgres(pg) = &db else {
            unreachable!()
        };
        let mut r = FeedReader::at_head(db.clone()).await.unwrap();
        // A transaction takes an id and commits late; a later id commits first.
        let mut slow = pg.begin().await.unwrap();
        sqlx::query(APPEND_SQL)
            .bind(None::<Uuid>)
            .bind(Some("slow"))
            .bind(kind::KEY_REVOKED)
            .bind(Utc::now())
            .execute(&mut *slow)
            .await
            .unwrap();
        append(&db, None, Some("fast"), kind::KEY_REVOKED)
            .await
            .unwrap();
        let first = r.poll().await.unwrap();
        assert_eq!(
            first
                .iter()
                .map(|c| c.key_hash.clone().unwrap())
                .collect::<Vec<_>>(),
            ["fast"]
        );
        slow.commit().await.unwrap();
        let second = r.poll().await.unwrap();
        assert_eq!(
            second
                .iter()
                .map(|c| c.key_hash.clone().unwrap())
                .collect::<Vec<_>>(),
            ["slow"],
            "the late commit is not lost"
        );
        assert!(r.poll().await.unwrap().is_empty());
    }
}
