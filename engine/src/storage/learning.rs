//! Reads of the self-learning tables (recall logs, tenant weights, weight history). Writes go
//! through the writer task as [`Op`](super::Op)s like every other change.

use super::{Db, Storage, StorageError};
use sqlx::{QueryBuilder, Row as _};

/// What start-up needs from the self-learning tables.
#[derive(Debug, Default)]
pub struct LearningRows {
    /// (user, agent, weights JSON) of every tenant that has called optimize.
    pub weights: Vec<(String, String, String)>,
    /// (user, agent, number of recall logs).
    pub log_counts: Vec<(String, String, i64)>,
}

/// One logged recall: the query and the ids it returned (JSON list).
#[derive(Debug, Clone)]
pub struct LoggedRecall {
    pub query: String,
    pub result_ids: String,
}

/// Run `sql` + `WHERE user_id = ? AND agent_id = ? ORDER BY id DESC LIMIT ?` on either back-end
/// and decode each row: a tenant's newest rows, newest first.
macro_rules! newest_of_tenant {
    ($self:expr, $sql:expr, $user:expr, $agent:expr, $limit:expr, |$r:ident| $decode:expr) => {{
        macro_rules! on {
            ($db:ty, $pool:expr) => {{
                let mut qb = QueryBuilder::<$db>::new($sql);
                qb.push(" WHERE user_id = ")
                    .push_bind($user.to_string())
                    .push(" AND agent_id = ")
                    .push_bind($agent.to_string())
                    .push(" ORDER BY id DESC LIMIT ")
                    .push_bind($limit);
                qb.build()
                    .fetch_all($pool)
                    .await?
                    .iter()
                    .map(|$r| $decode)
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }};
        }
        match &$self.db {
            Db::Sqlite(p) => on!(sqlx::Sqlite, p),
            Db::Postgres(p) => on!(sqlx::Postgres, p),
        }
    }};
}

impl Storage {
    /// Every tenant's weights and recall-log count, for start-up.
    pub async fn load_learning(&self) -> Result<LearningRows, StorageError> {
        const WEIGHTS: &str = "SELECT user_id, agent_id, weights FROM tenant_weights";
        const COUNTS: &str =
            "SELECT user_id, agent_id, COUNT(*) FROM recall_logs GROUP BY user_id, agent_id";
        macro_rules! load {
            ($p:expr) => {
                LearningRows {
                    weights: sqlx::query(WEIGHTS)
                        .fetch_all($p)
                        .await?
                        .iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                        .collect::<Result<_, sqlx::Error>>()?,
                    log_counts: sqlx::query(COUNTS)
                        .fetch_all($p)
                        .await?
                        .iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                        .collect::<Result<_, sqlx::Error>>()?,
                }
            };
        }
        Ok(match &self.db {
            Db::Sqlite(p) => load!(p),
            Db::Postgres(p) => load!(p),
        })
    }

    /// A tenant's newest `limit` recall logs, newest first.
    pub async fn recall_logs(
        &self,
        user: &str,
        agent: &str,
        limit: i64,
    ) -> Result<Vec<LoggedRecall>, StorageError> {
        Ok(newest_of_tenant!(
            self,
            "SELECT query, result_ids FROM recall_logs",
            user,
            agent,
            limit,
            |r| Ok(LoggedRecall {
                query: r.try_get(0)?,
                result_ids: r.try_get(1)?,
            })
        ))
    }

    /// A tenant's newest `limit` weight-history entries (JSON weights), newest first.
    pub async fn weight_history(
        &self,
        user: &str,
        agent: &str,
        limit: i64,
    ) -> Result<Vec<String>, StorageError> {
        Ok(newest_of_tenant!(
            self,
            "SELECT weights FROM weight_history",
            user,
            agent,
            limit,
            |r| r.try_get::<String, _>(0)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Op, RecallLog};
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    fn log(user: &str, query: &str) -> Op {
        Op::RecallLog(Box::new(RecallLog {
            user: user.into(),
            agent: "a".into(),
            query: query.into(),
            result_ids: r#"["x"]"#.into(),
            ts: 1.0,
        }))
    }

    /// Logs, pruning, weights and history, written through the writer and read back.
    async fn learning_round_trip(url: &str) {
        let storage = Storage::open(url, Arc::new(Metrics::new())).await.unwrap();
        let mut ops: Vec<Op> = (0..300).map(|i| log("u", &format!("q{i}"))).collect();
        ops.push(log("v", "other tenant"));
        storage.submit(ops).wait().await.unwrap();
        let prune = Op::PruneRecallLogs {
            user: "u".into(),
            agent: "a".into(),
            keep: 100,
        };
        storage.submit(vec![prune]).wait().await.unwrap();
        let logs = storage.recall_logs("u", "a", 1000).await.unwrap();
        assert_eq!(logs.len(), 100);
        assert_eq!(
            (logs[0].query.as_str(), logs[99].query.as_str()),
            ("q299", "q200")
        );
        assert_eq!(logs[0].result_ids, r#"["x"]"#);
        assert_eq!(storage.recall_logs("v", "a", 1000).await.unwrap().len(), 1);

        let set = |w: &str| Op::SetWeights {
            user: "u".into(),
            agent: "a".into(),
            weights: w.into(),
        };
        let hist = |w: &str, reason| Op::WeightHistory {
            user: "u".into(),
            agent: "a".into(),
            weights: w.into(),
            reason,
            ts: 2.0,
        };
        storage
            .submit(vec![
                set("{}"),
                hist("A", "pre_optimize"),
                set("B"),
                hist("B", "optimize"),
            ])
            .wait()
            .await
            .unwrap();
        assert_eq!(
            storage.weight_history("u", "a", 2).await.unwrap(),
            ["B", "A"]
        );
        assert!(storage
            .weight_history("v", "a", 2)
            .await
            .unwrap()
            .is_empty());
        let rows = storage.load_learning().await.unwrap();
        assert_eq!(rows.weights, [("u".into(), "a".into(), "B".into())]);
        let mut counts = rows.log_counts;
        counts.sort();
        assert_eq!(
            counts,
            [("u".into(), "a".into(), 100), ("v".into(), "a".into(), 1)]
        );
        storage.close().await;
    }

    #[tokio::test]
    async fn sqlite_learning_round_trip() {
        let dir = std::env::temp_dir().join(format!("stellar-learning-{}", uuid::Uuid::new_v4()));
        learning_round_trip(&format!("sqlite://{}", dir.join("engine.db").display())).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn postgres_learning_round_trip() {
        let Some(url) = stellar_common::testing::fresh_postgres_db().await else {
            return;
        };
        learning_round_trip(&url).await;
    }
}
