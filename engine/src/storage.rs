//! Durable storage: SQLite (default) or PostgreSQL, written through one writer task with group
//! commit.
//!
//! Why a single writer: SQLite allows one writer at a time anyway, and committing many requests'
//! changes in one transaction is what makes thousands of stores per second possible. Each request
//! submits its changes as one job while it still holds its tenant's lock (so jobs reach the
//! database in the order the RAM state changed), releases the lock, and waits for the job's
//! acknowledgement, which comes only after the transaction containing it has committed. A 2xx is
//! therefore never sent for a change that is not in the database.

use crate::metrics::Metrics;
use crate::space::Placement;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgPool, QueryBuilder, Row as _, SqlitePool};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

mod learning;
pub use learning::{LearningRows, LoggedRecall};

/// The most changes committed in one transaction; bounds the latency a big batch adds.
const MAX_BATCH_OPS: usize = 4096;
/// Rows per multi-row INSERT / UPDATE statement (13 parameters each; well under both back-ends'
/// parameter limits).
const ROWS_PER_STATEMENT: usize = 256;
/// The PostgreSQL schema holding the engine's tables and its own migration history.
const PG_SCHEMA: &str = "stellar_engine";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported db_url (expected sqlite://… or postgres://…): {0}")]
    Url(String),
    #[error("storage is shutting down")]
    Closed,
    #[error("commit failed: {0}")]
    Commit(String),
}

/// A memory row as first written.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub id: Uuid,
    pub user: String,
    pub agent: String,
    pub content: String,
    pub importance: f64,
    pub metadata: String,
    pub emotion: Option<String>,
    pub created_at: f64,
    pub score: f64,
    pub zone: u8,
}

/// A row as loaded at start-up.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub id: Uuid,
    pub user: String,
    pub agent: String,
    pub content: String,
    pub importance: f64,
    /// The metadata object as stored (JSON).
    pub metadata: String,
    pub emotion: Option<String>,
    pub created_at: f64,
    pub last_recalled_at: f64,
    pub recall_count: i64,
    pub context: f64,
    pub score: f64,
    pub zone: u8,
}

/// One change to persist.
#[derive(Debug, Clone)]
pub enum Op {
    Insert(Box<NewRow>),
    /// A recall: the counters plus the memory's new place.
    Recall {
        id: Uuid,
        recall_count: i64,
        last_recalled_at: f64,
        context: f64,
        placement: Placement,
    },
    /// A memory moved zone (overflow or reorbit).
    Place(Placement),
    Delete(Uuid),
    /// A recall that returned memories, for self-learning (`optimize`).
    RecallLog(Box<RecallLog>),
    /// Keep only a tenant's newest `keep` recall logs.
    PruneRecallLogs {
        user: String,
        agent: String,
        keep: i64,
    },
    /// A tenant's current score weights (JSON); the row's existence means self-learning was
    /// initialised for the tenant.
    SetWeights {
        user: String,
        agent: String,
        weights: String,
    },
    /// One entry of a tenant's weight history (JSON weights; reason `pre_optimize`, `optimize`
    /// or `rollback`).
    WeightHistory {
        user: String,
        agent: String,
        weights: String,
        reason: &'static str,
        ts: f64,
    },
}

/// One recall as self-learning sees it: the query and the ids it returned (a JSON list).
#[derive(Debug, Clone)]
pub struct RecallLog {
    pub user: String,
    pub agent: String,
    pub query: String,
    pub result_ids: String,
    pub ts: f64,
}

struct Job {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<(), String>>,
}

enum Msg {
    Job(Job),
    /// Commit everything queued before this, then stop.
    Close,
}

/// A submitted job; await it to know it is committed.
#[must_use = "a job is only durable once its acknowledgement has been awaited"]
pub struct Pending(oneshot::Receiver<Result<(), String>>);

impl Pending {
    pub async fn wait(self) -> Result<(), StorageError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::Commit(e)),
            Err(_) => Err(StorageError::Closed),
        }
    }
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct Storage {
    db: Db,
    tx: mpsc::UnboundedSender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Storage {
    /// Connect (creating the SQLite file and its directory if needed), migrate, and start the
    /// writer task.
    pub async fn open(url: &str, metrics: Arc<Metrics>) -> Result<Storage, StorageError> {
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // In WAL mode, NORMAL syncs the WAL only at checkpoints. A commit still writes
                // the WAL before returning, so a killed process (kill -9) loses nothing that was
                // acknowledged; only an OS crash or power cut can lose the last commits. FULL
                // would fsync on every commit and cap group commit at the disk's fsync rate.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .disable_statement_logging();
            if let Some(dir) = opts.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StorageError::Db(sqlx::Error::Io(e)))?;
                }
            }
            // The writer holds one connection; the others serve start-up loading and health.
            let pool = SqlitePoolOptions::new()
                .max_connections(3)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let base = PgConnectOptions::from_str(url)?.disable_statement_logging();
            let mut conn = base.connect().await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            let opts = base.options([("search_path", PG_SCHEMA)]);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        } else {
            return Err(StorageError::Url(url.to_string()));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer(db.clone(), rx, metrics));
        Ok(Storage {
            db,
            tx,
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Queue `ops` to be committed together. Call while holding the lock that ordered them.
    pub fn submit(&self, ops: Vec<Op>) -> Pending {
        let (done, rx) = oneshot::channel();
        if !ops.is_empty() {
            // If the writer is gone the job is dropped with its sender and `wait` says Closed.
            let _ = self.tx.send(Msg::Job(Job { ops, done }));
        } else {
            let _ = done.send(Ok(()));
        }
        Pending(rx)
    }

    /// Every stored memory, for rebuilding the RAM state at start-up.
    pub async fn load_all(&self) -> Result<Vec<StoredRow>, StorageError> {
        const SQL: &str = "SELECT id, user_id, agent_id, content, importance, emotion, created_at, last_recalled_at, recall_count, \
                           context_score, score, zone, metadata FROM memories";
        macro_rules! decode {
            ($rows:expr) => {
                $rows
                    .iter()
                    .map(|r| {
                        let id: String = r.try_get(0)?;
                        Ok(StoredRow {
                            id: Uuid::parse_str(&id)
                                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                            user: r.try_get(1)?,
                            agent: r.try_get(2)?,
                            content: r.try_get(3)?,
                            importance: r.try_get(4)?,
                            emotion: r.try_get(5)?,
                            created_at: r.try_get(6)?,
                            last_recalled_at: r.try_get(7)?,
                            recall_count: r.try_get(8)?,
                            context: r.try_get(9)?,
                            score: r.try_get(10)?,
                            zone: r.try_get::<i32, _>(11)?.clamp(0, 4) as u8,
                            metadata: r.try_get(12)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            };
        }
        Ok(match &self.db {
            Db::Sqlite(p) => decode!(sqlx::query(SQL).fetch_all(p).await?)?,
            Db::Postgres(p) => decode!(sqlx::query(SQL).fetch_all(p).await?)?,
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        let probe = async {
            match &self.db {
                Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
                Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            }
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(()))
        )
    }

    /// Commit what is queued, stop the writer and close the pool. Jobs submitted afterwards
    /// fail with `Closed`.
    pub async fn close(&self) {
        let _ = self.tx.send(Msg::Close);
        let handle = self.writer.lock().expect("writer handle lock").take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        match &self.db {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

async fn writer(db: Db, mut rx: mpsc::UnboundedReceiver<Msg>, metrics: Arc<Metrics>) {
    let mut closing = false;
    while !closing {
        let mut jobs: Vec<Job> = Vec::new();
        match rx.recv().await {
            None | Some(Msg::Close) => break,
            Some(Msg::Job(j)) => jobs.push(j),
        }
        // Group commit: whatever queued up while the previous transaction ran goes into this one.
        let mut n_ops = jobs[0].ops.len();
        while n_ops < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => {
                    n_ops += j.ops.len();
                    jobs.push(j);
                }
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = apply(&db, jobs.iter().flat_map(|j| j.ops.iter())).await;
        metrics
            .db_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.db_batch_ops.observe(n_ops as f64);
        match result {
            Ok(()) => {
                for j in jobs {
                    let _ = j.done.send(Ok(()));
                }
            }
            Err(e) if jobs.len() == 1 => {
                tracing::error!(error = %e, "storage commit failed");
                let _ = jobs.pop().expect("one job").done.send(Err(e.to_string()));
            }
            Err(e) => {
                // One bad job must not fail its neighbours: retry each on its own.
                tracing::warn!(error = %e, jobs = jobs.len(), "batch commit failed; retrying jobs one by one");
                for j in jobs {
                    let r = apply(&db, j.ops.iter()).await.map_err(|e| e.to_string());
                    if let Err(e) = &r {
                        tracing::error!(error = %e, "storage commit failed");
                    }
                    let _ = j.done.send(r);
                }
            }
        }
    }
    tracing::debug!("storage writer stopped");
}

/// Apply ops in one transaction. Inserts go first, as multi-row statements: every other op
/// refers to a row inserted before it (in this batch or an earlier one), so this keeps every
/// op's meaning while turning thousands of round trips into a few.
async fn apply<'a>(db: &Db, ops: impl Iterator<Item = &'a Op> + Clone) -> Result<(), sqlx::Error> {
    macro_rules! apply_with {
        ($pool:expr, $db:ty, $update_from:expr) => {{
            let mut tx = $pool.begin().await?;
            let inserts: Vec<&NewRow> = ops
                .clone()
                .filter_map(|op| match op {
                    Op::Insert(r) => Some(&**r),
                    _ => None,
                })
                .collect();
            for chunk in inserts.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO memories (id, user_id, agent_id, content, importance, metadata, emotion, created_at, \
                     last_recalled_at, recall_count, context_score, score, zone) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.id.to_string())
                        .push_bind(r.user.clone())
                        .push_bind(r.agent.clone())
                        .push_bind(r.content.clone())
                        .push_bind(r.importance)
                        .push_bind(r.metadata.clone())
                        .push_bind(r.emotion.clone())
                        .push_bind(r.created_at)
                        .push_bind(r.created_at)
                        .push_bind(0i64)
                        .push_bind(0f64)
                        .push_bind(r.score)
                        .push_bind(i32::from(r.zone));
                });
                qb.build().execute(&mut *tx).await?;
            }
            // Recall logs refer to nothing: they go in together too.
            let logs: Vec<&RecallLog> = ops
                .clone()
                .filter_map(|op| match op {
                    Op::RecallLog(l) => Some(&**l),
                    _ => None,
                })
                .collect();
            for chunk in logs.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO recall_logs (user_id, agent_id, query, result_ids, timestamp) ",
                );
                qb.push_values(chunk, |mut b, l| {
                    b.push_bind(l.user.clone())
                        .push_bind(l.agent.clone())
                        .push_bind(l.query.clone())
                        .push_bind(l.result_ids.clone())
                        .push_bind(l.ts);
                });
                qb.build().execute(&mut *tx).await?;
            }
            let rest: Vec<&Op> = ops
                .filter(|op| !matches!(op, Op::Insert(_) | Op::RecallLog(_)))
                .collect();
            let mut i = 0;
            while i < rest.len() {
                match rest[i] {
                    Op::Insert(_) | Op::RecallLog(_) => unreachable!("inserts were applied first"),
                    Op::PruneRecallLogs { user, agent, keep } => {
                        let mut qb = QueryBuilder::<$db>::new("DELETE FROM recall_logs WHERE user_id = ");
                        qb.push_bind(user.clone())
                            .push(" AND agent_id = ")
                            .push_bind(agent.clone())
                            .push(" AND id <= (SELECT id FROM recall_logs WHERE user_id = ")
                            .push_bind(user.clone())
                            .push(" AND agent_id = ")
                            .push_bind(agent.clone())
                            .push(" ORDER BY id DESC LIMIT 1 OFFSET ")
                            .push_bind(*keep)
                            .push(")");
                        qb.build().execute(&mut *tx).await?;
                    }
                    Op::SetWeights { user, agent, weights } => {
                        let mut qb = QueryBuilder::<$db>::new("INSERT INTO tenant_weights (user_id, agent_id, weights) VALUES (");
                        qb.push_bind(user.clone())
                            .push(", ")
                            .push_bind(agent.clone())
                            .push(", ")
                            .push_bind(weights.clone())
                            .push(") ON CONFLICT (user_id, agent_id) DO UPDATE SET weights = excluded.weights");
                        qb.build().execute(&mut *tx).await?;
                    }
                    Op::WeightHistory { user, agent, weights, reason, ts } => {
                        let mut qb = QueryBuilder::<$db>::new("INSERT INTO weight_history (user_id, agent_id, weights, timestamp, reason) VALUES (");
                        qb.push_bind(user.clone())
                            .push(", ")
                            .push_bind(agent.clone())
                            .push(", ")
                            .push_bind(weights.clone())
                            .push(", ")
                            .push_bind(*ts)
                            .push(", ")
                            .push_bind(*reason)
                            .push(")");
                        qb.build().execute(&mut *tx).await?;
                    }
                    Op::Place(_) => {
                        // A run of moves becomes one UPDATE … FROM (VALUES …) per chunk; within
                        // a run only the last move of a memory counts.
                        let mut run: Vec<Placement> = Vec::new();
                        while let Some(Op::Place(p)) = rest.get(i) {
                            run.retain(|q| q.id != p.id);
                            run.push(*p);
                            i += 1;
                        }
                        for chunk in run.chunks(ROWS_PER_STATEMENT) {
                            let (head, tail) = $update_from;
                            let mut qb = QueryBuilder::<$db>::new(head);
                            qb.push_values(chunk, |mut b, p| {
                                b.push_bind(p.id.to_string()).push_bind(i32::from(p.zone)).push_bind(p.score);
                            });
                            qb.push(tail);
                            qb.build().execute(&mut *tx).await?;
                        }
                        continue;
                    }
                    Op::Recall { id, recall_count, last_recalled_at, context, placement } => {
                        let mut qb = QueryBuilder::<$db>::new("UPDATE memories SET recall_count = ");
                        qb.push_bind(*recall_count)
                            .push(", last_recalled_at = ")
                            .push_bind(*last_recalled_at)
                            .push(", context_score = ")
                            .push_bind(*context)
                            .push(", score = ")
                            .push_bind(placement.score)
                            .push(", zone = ")
                            .push_bind(i32::from(placement.zone))
                            .push(" WHERE id = ")
                            .push_bind(id.to_string());
                        qb.build().execute(&mut *tx).await?;
                    }
                    Op::Delete(id) => {
                        let mut qb = QueryBuilder::<$db>::new("DELETE FROM memories WHERE id = ");
                        qb.push_bind(id.to_string());
                        qb.build().execute(&mut *tx).await?;
                    }
                }
                i += 1;
            }
            tx.commit().await
        }};
    }
    match db {
        Db::Sqlite(pool) => apply_with!(
            pool,
            sqlx::Sqlite,
            (
                "UPDATE memories SET zone = v.column2, score = v.column3 FROM (",
                ") AS v WHERE memories.id = v.column1"
            )
        ),
        Db::Postgres(pool) => apply_with!(
            pool,
            sqlx::Postgres,
            (
                "UPDATE memories AS m SET zone = v.zone, score = v.score FROM (",
                ") AS v(id, zone, score) WHERE m.id = v.id"
            )
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: Uuid, zone: u8) -> NewRow {
        NewRow {
            id,
            user: "u".into(),
            agent: String::new(),
            content: format!("memory {id}"),
            importance: 0.5,
            metadata: r#"{"k":"v"}"#.into(),
            emotion: None,
            created_at: 100.0,
            score: 0.425,
            zone,
        }
    }

    /// Every kind of op, in one job and across chunk boundaries, lands as intended.
    async fn ops_round_trip(url: &str) {
        let storage = Storage::open(url, Arc::new(Metrics::new())).await.unwrap();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let place = |id, zone, score| Op::Place(Placement { id, zone, score });
        let ops = vec![
            Op::Insert(Box::new(row(a, 2))),
            Op::Insert(Box::new(row(b, 2))),
            Op::Insert(Box::new(row(c, 2))),
            place(a, 3, 0.1),
            // Within a run of moves the last one for a memory wins.
            place(a, 4, 0.05),
            Op::Recall {
                id: b,
                recall_count: 7,
                last_recalled_at: 200.0,
                context: 0.9,
                placement: Placement {
                    id: b,
                    zone: 1,
                    score: 0.6,
                },
            },
            Op::Delete(c),
        ];
        storage.submit(ops).wait().await.unwrap();
        let rows = storage.load_all().await.unwrap();
        assert_eq!(rows.len(), 2);
        let get = |id: Uuid| rows.iter().find(|r| r.id == id).unwrap().clone();
        let ra = get(a);
        assert_eq!((ra.zone, ra.score, ra.recall_count), (4, 0.05, 0));
        assert_eq!(
            (
                ra.user.as_str(),
                ra.agent.as_str(),
                ra.created_at,
                ra.last_recalled_at
            ),
            ("u", "", 100.0, 100.0)
        );
        let rb = get(b);
        assert_eq!(
            (
                rb.zone,
                rb.score,
                rb.recall_count,
                rb.last_recalled_at,
                rb.context
            ),
            (1, 0.6, 7, 200.0, 0.9)
        );

        // More rows and moves than one statement holds.
        let many: Vec<Uuid> = (0..600).map(|_| Uuid::new_v4()).collect();
        storage
            .submit(
                many.iter()
                    .map(|&id| Op::Insert(Box::new(row(id, 2))))
                    .collect(),
            )
            .wait()
            .await
            .unwrap();
        storage
            .submit(many.iter().map(|&id| place(id, 3, 0.15)).collect())
            .wait()
            .await
            .unwrap();
        let rows = storage.load_all().await.unwrap();
        assert_eq!(rows.len(), 602);
        assert!(rows
            .iter()
            .filter(|r| many.contains(&r.id))
            .all(|r| r.zone == 3 && r.score == 0.15));
        assert!(storage.ping().await);
        storage.close().await;
        // After close, jobs fail instead of hanging.
        assert!(matches!(
            storage.submit(vec![Op::Delete(a)]).wait().await,
            Err(StorageError::Closed)
        ));
    }

    #[tokio::test]
    async fn sqlite_ops_round_trip() {
        let dir = std::env::temp_dir().join(format!("stellar-engine-storage-{}", Uuid::new_v4()));
        ops_round_trip(&format!(
            "sqlite://{}",
            dir.join("nested/engine.db").display()
        ))
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn postgres_ops_round_trip() {
        let Some(url) = stellar_common::testing::fresh_postgres_db().await else {
            return;
        };
        ops_round_trip(&url).await;
        // The engine's tables live in their own schema, away from the account DB's.
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let schema: String = sqlx::query_scalar(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'memories'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(schema, PG_SCHEMA);
    }

    #[tokio::test]
    async fn unsupported_url_is_refused() {
        assert!(matches!(
            Storage::open("mysql://x", Arc::new(Metrics::new())).await,
            Err(StorageError::Url(_))
        ));
    }
}
