//! The analysis operations of a tenant: introspection, confident recall, reasoning,
//! contradictions, self-learning of the score weights, and the benchmark. The computations are
//! in [`crate::analysis`]; this part gathers the memories (recalling them where the original
//! does, with a recall's effects), persists weight changes, and bounds the benchmark.

use super::{Engine, EngineError, Tenant, TenantState};
use crate::analysis::benchmark::{self, BenchmarkParams, BenchmarkReport};
use crate::analysis::learning::{self, OptimizeReport, LOGS_READ, MIN_LOGS};
use crate::analysis::metacognition::{self, Introspection};
use crate::analysis::reasoning::{self, Contradiction, Reasoning};
use crate::analysis::Source;
use crate::model::Weights;
use crate::space::Space;
use crate::storage::{Op, StorageError};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How many memories introspection recalls for a topic (as the original).
const INTROSPECT_RECALL: usize = 50;
/// How many memories a scoped contradiction check recalls, and how many an unscoped one reads.
const CONTRADICTIONS_SCOPED: usize = 20;
const CONTRADICTIONS_ALL: usize = 50;
/// A benchmark stops running queries after this long (storing the dataset, at most 10,000
/// memories, and the final reorbit always complete).
pub const BENCHMARK_BUDGET: Duration = Duration::from_secs(10);

const NOT_INITIALIZED: &str = "Self-learning is not initialized";

/// `GET /api/v1/recall/confident`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfidentRecall {
    pub memories: Vec<super::RecallItem>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub confidence: f64,
    /// `null`, or why the answer should not be trusted (low confidence, nothing found).
    #[schema(required = true)]
    pub warning: Option<String>,
}

fn weights_json(w: &Weights) -> String {
    serde_json::to_string(w).expect("weights serialise")
}

impl Engine {
    /// The score weights a tenant's memories are scored with.
    pub fn weights(&self, tenant: &Tenant) -> Weights {
        self.tenant(tenant)
            .map(|s| s.space.read().expect("space lock").weights())
            .unwrap_or_default()
    }

    /// Tests: hold the benchmark gate as a running benchmark would.
    #[cfg(test)]
    pub(crate) fn benchmark_gate(&self) -> &tokio::sync::Semaphore {
        &self.benchmark_gate
    }

    async fn recall_sources(
        &self,
        tenant: &Tenant,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Source>, EngineError> {
        let hits = self.recall_hits(tenant, query, limit, None).await?;
        Ok(hits.iter().map(|h| h.source()).collect())
    }

    /// `StellarMemory.introspect`: recall up to 50 memories for the topic and describe them.
    pub async fn introspect(
        &self,
        tenant: &Tenant,
        topic: &str,
    ) -> Result<Introspection, EngineError> {
        let sources = self
            .recall_sources(tenant, topic, INTROSPECT_RECALL)
            .await?;
        metacognition::introspect(topic, &sources, self.clock.now()).map_err(|bad| {
            EngineError::Conflict(format!(
                "Memory {} has metadata.tags that is {}, not a list of strings; \
                 introspection reads tags as strings. Forget the memory and store it again \
                 with string tags.",
                bad.id, bad.found
            ))
        })
    }

    /// `StellarMemory.recall_with_confidence`: a recall of `top_k` with its confidence.
    pub async fn recall_confident(
        &self,
        tenant: &Tenant,
        query: &str,
        top_k: usize,
    ) -> Result<ConfidentRecall, EngineError> {
        let hits = self.recall_hits(tenant, query, top_k, None).await?;
        let sources: Vec<Source> = hits.iter().map(|h| h.source()).collect();
        let (confidence, warning) = metacognition::recall_confidence(&sources, query);
        Ok(ConfidentRecall {
            memories: hits.into_iter().map(|h| h.item).collect(),
            confidence,
            warning,
        })
    }

    /// `StellarMemory.reason`: recall `max_sources` memories and reason over (at most ten of)
    /// them.
    pub async fn reason(
        &self,
        tenant: &Tenant,
        query: &str,
        max_sources: usize,
    ) -> Result<Reasoning, EngineError> {
        let sources = self.recall_sources(tenant, query, max_sources).await?;
        Ok(reasoning::reason(query, &sources))
    }

    /// `StellarMemory.detect_contradictions`: with a scope, among the 20 memories recalled for
    /// it; without, among the first 50 memories (core first).
    pub async fn contradictions(
        &self,
        tenant: &Tenant,
        scope: Option<&str>,
    ) -> Result<Vec<Contradiction>, EngineError> {
        let sources = match scope.filter(|s| !s.is_empty()) {
            Some(scope) => {
                self.recall_sources(tenant, scope, CONTRADICTIONS_SCOPED)
                    .await?
            }
            None => match self.tenant(tenant) {
                None => Vec::new(),
                Some(state) => state
                    .space
                    .read()
                    .expect("space lock")
                    .first_by_zone(CONTRADICTIONS_ALL)
                    .into_iter()
                    .map(Source::from)
                    .collect(),
            },
        };
        Ok(reasoning::detect_contradictions(&sources))
    }

    /// Apply `weights` to the tenant's space and persist them with `ops`; back out of RAM if
    /// the commit fails.
    async fn commit_weights(
        &self,
        state: &TenantState,
        weights: Option<Weights>,
        ops: Vec<Op>,
    ) -> Result<(), EngineError> {
        let (previous, pending) = {
            let mut space = state.space.write().expect("space lock");
            let previous = space.weights();
            if let Some(w) = weights {
                space.set_weights(w);
            }
            (previous, self.storage.submit(ops))
        };
        if let Err(e) = self.committed(pending).await {
            state
                .space
                .write()
                .expect("space lock")
                .set_weights(previous);
            return Err(e);
        }
        Ok(())
    }

    /// `StellarMemory.optimize`: tune the tenant's score weights from its recall logs.
    pub async fn optimize(&self, tenant: &Tenant) -> Result<OptimizeReport, EngineError> {
        let state = self.tenant_or_create(tenant);
        let mut initialized = state.learning.lock().await;
        let (user, agent) = (tenant.user.clone(), tenant.agent.clone());
        if !*initialized {
            // The original sets up self-learning on the first call, even one that then fails
            // for want of logs; from then on rollback works.
            let weights = weights_json(&state.space.read().expect("space lock").weights());
            let op = Op::SetWeights {
                user: user.clone(),
                agent: agent.clone(),
                weights,
            };
            self.committed(self.storage.submit(vec![op])).await?;
            *initialized = true;
        }
        let logs = self
            .storage
            .recall_logs(&user, &agent, LOGS_READ as i64)
            .await?;
        if logs.len() < MIN_LOGS {
            return Err(EngineError::BadRequest(format!(
                "Need at least {MIN_LOGS} recall logs, got {}",
                logs.len()
            )));
        }
        let before = state.space.read().expect("space lock").weights();
        let outcome = learning::optimize(before, &logs);
        let now = self.clock.now();
        let mut ops = vec![Op::WeightHistory {
            user: user.clone(),
            agent: agent.clone(),
            weights: weights_json(&before),
            reason: "pre_optimize",
            ts: now,
        }];
        if let Some(w) = outcome.apply {
            ops.push(Op::SetWeights {
                user: user.clone(),
                agent: agent.clone(),
                weights: weights_json(&w),
            });
            ops.push(Op::WeightHistory {
                user,
                agent,
                weights: weights_json(&w),
                reason: "optimize",
                ts: now,
            });
        }
        self.commit_weights(&state, outcome.apply, ops).await?;
        Ok(outcome.report)
    }

    /// `StellarMemory.rollback_weights`: go back to the weights before the newest history
    /// entry; with fewer than two entries, the current weights stay and are returned.
    pub async fn rollback_weights(&self, tenant: &Tenant) -> Result<Weights, EngineError> {
        let not_initialized = || EngineError::BadRequest(NOT_INITIALIZED.into());
        let state = self.tenant(tenant).ok_or_else(not_initialized)?;
        let initialized = state.learning.lock().await;
        if !*initialized {
            return Err(not_initialized());
        }
        let history = self
            .storage
            .weight_history(&tenant.user, &tenant.agent, 2)
            .await?
            .iter()
            .map(|w| serde_json::from_str::<Weights>(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::Db(sqlx::Error::Decode(Box::new(e))))?;
        let Some(target) = learning::rollback_target(&history) else {
            return Ok(state.space.read().expect("space lock").weights());
        };
        let ops = vec![
            Op::SetWeights {
                user: tenant.user.clone(),
                agent: tenant.agent.clone(),
                weights: weights_json(&target),
            },
            Op::WeightHistory {
                user: tenant.user.clone(),
                agent: tenant.agent.clone(),
                weights: weights_json(&target),
                reason: "rollback",
                ts: self.clock.now(),
            },
        ];
        self.commit_weights(&state, Some(target), ops).await?;
        drop(initialized);
        Ok(target)
    }

    /// `StellarMemory.benchmark`, on a scratch copy of the tenant's space: nothing is stored.
    /// One benchmark runs at a time; queries stop after [`BENCHMARK_BUDGET`].
    pub async fn benchmark(
        &self,
        tenant: &Tenant,
        params: BenchmarkParams,
    ) -> Result<BenchmarkReport, EngineError> {
        let _permit = self.benchmark_gate.try_acquire().map_err(|_| {
            EngineError::Busy("A benchmark is already running; try again when it has finished")
        })?;
        let state: Option<Arc<TenantState>> = self.tenant(tenant);
        let now = self.clock.now();
        let days = (self.params.decay_after_days, self.params.forget_after_days);
        let report = tokio::task::spawn_blocking(move || {
            let mut scratch = match &state {
                Some(s) => s.space.read().expect("space lock").clone(),
                None => Space::default(),
            };
            drop(state);
            benchmark::run(&mut scratch, &params, now, days, BENCHMARK_BUDGET)
        })
        .await
        .expect("the benchmark does not panic");
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Params, LOGS_PRUNE_AT};
    use super::*;
    use crate::clock::SystemClock;
    use crate::metrics::Metrics;
    use crate::storage::Storage;

    /// Every recall that returns something is logged; past `LOGS_PRUNE_AT` a tenant's logs are
    /// cut back to the newest `LOGS_READ`, and the count survives a restart.
    #[tokio::test]
    async fn recall_logs_are_kept_bounded() {
        let dir = std::env::temp_dir().join(format!("stellar-logs-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", dir.join("engine.db").display());
        let open = || async {
            let metrics = Arc::new(Metrics::new());
            let storage = Storage::open(&url, metrics.clone()).await.unwrap();
            let params = Params {
                decay_after_days: 30.0,
                forget_after_days: 90.0,
            };
            Engine::open(storage, Arc::new(SystemClock), params, metrics)
                .await
                .unwrap()
        };
        let engine = open().await;
        let t = Tenant::default();
        let input = crate::engine::StoreInput {
            content: "green tea".into(),
            importance: 0.5,
            metadata: serde_json::json!({}),
            auto_evaluate: false,
        };
        engine.store(&t, input).await.unwrap();
        assert!(engine
            .recall(&t, "coffee", 5, None)
            .await
            .unwrap()
            .is_empty());
        for _ in 0..LOGS_PRUNE_AT + 1 {
            engine.recall(&t, "tea", 5, None).await.unwrap();
        }
        let logs = engine.storage().recall_logs("", "", 5000).await.unwrap();
        assert_eq!(logs.len(), LOGS_READ);
        assert!(logs.iter().all(|l| l.query == "tea"));
        engine.storage().close().await;
        let engine = open().await;
        let state = engine.tenant(&t).unwrap();
        assert_eq!(
            state.recall_logs.load(std::sync::atomic::Ordering::Relaxed),
            LOGS_READ
        );
        engine.storage().close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
