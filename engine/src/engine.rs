//! The engine proper: tenants' spaces, write-through to storage, and change events.
//!
//! Every operation follows the same pattern: take the tenant's lock, change the RAM state and
//! submit the matching storage job while still holding it (so storage sees changes in the same
//! order), release the lock, then wait for the commit before answering and announcing the event.
//! Reads never touch the database.

use crate::analysis::learning::LOGS_READ;
use crate::analysis::Source;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::{self, Emotion, Tags, CAPACITIES, ZONES};
use crate::space::{Memory, Space};
use crate::storage::{NewRow, Op, RecallLog, Storage, StorageError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::broadcast;
use uuid::Uuid;

mod analysis;
pub use analysis::ConfidentRecall;

/// Events buffered per tenant for slow SSE readers before they start skipping.
const EVENT_BUFFER: usize = 256;
/// A tenant's recall logs are pruned back to the newest `LOGS_READ` once past this many.
const LOGS_PRUNE_AT: usize = LOGS_READ + LOGS_READ / 10;

/// Who a request acts for: `X-Stellar-User` and `X-Stellar-Agent`, empty for the default space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Tenant {
    pub user: String,
    pub agent: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// 400: the request cannot be carried out as things stand (the original's
    /// `HTTPException(400, …)`); the message is for the client.
    #[error("{0}")]
    BadRequest(String),
    /// 409: the tenant's stored data stops the request (where the original crashes).
    #[error("{0}")]
    Conflict(String),
    /// 429: a bounded resource is in use; try again shortly.
    #[error("{0}")]
    Busy(&'static str),
}

/// A change announced on `/api/v1/events`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Event {
    pub event: &'static str,
    pub ts: f64,
}

/// Model parameters from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub decay_after_days: f64,
    pub forget_after_days: f64,
}

struct TenantState {
    space: RwLock<Space>,
    events: broadcast::Sender<Event>,
    /// Recall logs stored for the tenant (self-learning reads the newest `LOGS_READ`).
    recall_logs: AtomicUsize,
    /// Held through optimize and rollback; true once the tenant has called optimize (the
    /// original's self-learning is set up by its first optimize call).
    learning: tokio::sync::Mutex<bool>,
}

impl TenantState {
    fn new() -> TenantState {
        TenantState {
            space: RwLock::new(Space::default()),
            events: broadcast::channel(EVENT_BUFFER).0,
            recall_logs: AtomicUsize::new(0),
            learning: tokio::sync::Mutex::new(false),
        }
    }
}

/// One recall hit: what `/recall` returns, and the memory as it was before this recall.
pub(crate) struct Recalled {
    pub item: RecallItem,
    pub before: Before,
}

/// A recalled memory's state before the recall touched it.
pub(crate) struct Before {
    pub zone: u8,
    pub score: f64,
    pub last_recalled_at: f64,
    pub tags: Option<Tags>,
}

impl Recalled {
    pub fn source(&self) -> Source {
        Source {
            id: self.item.id,
            content: self.item.content.clone(),
            zone: self.before.zone,
            score: self.before.score,
            last_recalled_at: self.before.last_recalled_at,
            tags: self.before.tags.clone(),
        }
    }
}

pub struct StoreInput {
    pub content: String,
    pub importance: f64,
    pub metadata: serde_json::Value,
    pub auto_evaluate: bool,
}

/// `POST /api/v1/store`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stored {
    pub id: Uuid,
    #[schema(maximum = 4)]
    pub zone: u8,
    pub score: f64,
}

/// One hit of a recall, ranked by relevance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecallItem {
    pub id: Uuid,
    pub content: String,
    #[schema(maximum = 4)]
    pub zone: u8,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub importance: f64,
    #[schema(minimum = 0)]
    pub recall_count: i64,
    /// The memory's emotion vector; `null` for a neutral memory.
    #[schema(required = true)]
    pub emotion: Option<Emotion>,
}

/// One memory of `GET /api/v1/memories`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListItem {
    pub id: Uuid,
    /// The first 200 characters of the content.
    #[schema(max_length = 200)]
    pub content: String,
    #[schema(maximum = 4)]
    pub zone: u8,
    pub score: f64,
    #[schema(minimum = 0)]
    pub recall_count: i64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub importance: f64,
    /// Unix seconds.
    pub created_at: f64,
}

/// `GET /api/v1/memories`'s answer: one page, sorted by score, highest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListPage {
    /// How many memories match (the zone filter), over all pages.
    pub total: usize,
    pub items: Vec<ListItem>,
}

/// One entry of `GET /api/v1/timeline`, in time order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineItem {
    /// When the memory was stored, in Unix seconds.
    pub timestamp: f64,
    pub memory_id: Uuid,
    pub content: String,
    #[schema(maximum = 4)]
    pub zone: u8,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub importance: f64,
    #[schema(required = true)]
    pub emotion: Option<Emotion>,
}

/// `GET /api/v1/stats`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = MemoryStats)]
pub struct Stats {
    pub total_memories: usize,
    /// Memories per zone, `"0"` to `"4"`.
    #[schema(schema_with = crate::http::schemas::zone_counts)]
    pub zones: BTreeMap<String, usize>,
    /// Capacity per zone, `"0"` to `"4"`; `null` is unbounded.
    #[schema(schema_with = crate::http::schemas::zone_capacities)]
    pub capacities: BTreeMap<String, Option<usize>>,
}

/// `GET /api/v1/health`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EngineHealth)]
pub struct Health {
    pub healthy: bool,
    pub total_memories: usize,
    pub warnings: Vec<String>,
}

/// Totals of one reorbit over all tenants.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct ReorbitTotals {
    pub moved: usize,
    pub decayed: usize,
    pub forgotten: usize,
}

pub struct Engine {
    tenants: RwLock<HashMap<Tenant, Arc<TenantState>>>,
    storage: Storage,
    clock: Arc<dyn Clock>,
    params: Params,
    metrics: Arc<Metrics>,
    /// The last storage failure, reported by health until a later commit succeeds.
    storage_failure: Mutex<Option<String>>,
    /// One benchmark at a time per engine (each works on a scratch copy of a space).
    benchmark_gate: tokio::sync::Semaphore,
}

impl Engine {
    /// Load every stored memory into RAM and bring zones up to date with one reorbit.
    pub async fn open(
        storage: Storage,
        clock: Arc<dyn Clock>,
        params: Params,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Engine>, EngineError> {
        let started = Instant::now();
        let rows = storage.load_all().await?;
        let count = rows.len();
        let mut tenants: HashMap<Tenant, Arc<TenantState>> = HashMap::new();
        for row in rows {
            let state = tenants
                .entry(Tenant {
                    user: row.user,
                    agent: row.agent,
                })
                .or_insert_with(|| Arc::new(TenantState::new()));
            let emotion = row
                .emotion
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok());
            let mut m = Memory::new(row.id, row.content, row.importance, emotion, row.created_at);
            m.tags = serde_json::from_str(&row.metadata)
                .ok()
                .and_then(|v| Tags::of(&v));
            m.last_recalled_at = row.last_recalled_at;
            m.recall_count = row.recall_count;
            m.context = row.context;
            m.score = row.score;
            m.zone = row.zone;
            state.space.write().expect("space lock").load(m);
        }
        let learning = storage.load_learning().await?;
        fn state_of(
            tenants: &mut HashMap<Tenant, Arc<TenantState>>,
            user: String,
            agent: String,
        ) -> &mut TenantState {
            let state = tenants
                .entry(Tenant { user, agent })
                .or_insert_with(|| Arc::new(TenantState::new()));
            Arc::get_mut(state).expect("nothing else holds a tenant while loading")
        }
        for (user, agent, weights) in learning.weights {
            let state = state_of(&mut tenants, user, agent);
            match serde_json::from_str(&weights) {
                Ok(w) => state.space.get_mut().expect("space lock").set_weights(w),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable tenant weights; using the defaults")
                }
            }
            *state.learning.get_mut() = true;
        }
        for (user, agent, n) in learning.log_counts {
            *state_of(&mut tenants, user, agent).recall_logs.get_mut() = n.max(0) as usize;
        }
        let engine = Arc::new(Engine {
            tenants: RwLock::new(tenants),
            storage,
            clock,
            params,
            metrics,
            storage_failure: Mutex::new(None),
            benchmark_gate: tokio::sync::Semaphore::new(1),
        });
        let totals = engine.reorbit().await?;
        tracing::info!(
            memories = count,
            ?totals,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "engine state loaded"
        );
        Ok(engine)
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    fn tenant(&self, t: &Tenant) -> Option<Arc<TenantState>> {
        self.tenants.read().expect("tenants lock").get(t).cloned()
    }

    fn tenant_or_create(&self, t: &Tenant) -> Arc<TenantState> {
        if let Some(s) = self.tenant(t) {
            return s;
        }
        self.tenants
            .write()
            .expect("tenants lock")
            .entry(t.clone())
            .or_insert_with(|| Arc::new(TenantState::new()))
            .clone()
    }

    fn emit(state: &TenantState, event: &'static str, ts: f64) {
        // No subscribers is the normal case; nothing to do then.
        let _ = state.events.send(Event { event, ts });
    }

    /// Wait for a storage job and keep health informed of how storage is doing.
    async fn committed(&self, pending: crate::storage::Pending) -> Result<(), EngineError> {
        let r = pending.wait().await;
        let mut failure = self.storage_failure.lock().expect("failure lock");
        match &r {
            Ok(()) => *failure = None,
            Err(e) => *failure = Some(e.to_string()),
        }
        Ok(r?)
    }

    pub async fn store(&self, tenant: &Tenant, input: StoreInput) -> Result<Stored, EngineError> {
        let now = self.clock.now();
        let importance = if input.auto_evaluate {
            model::evaluate_importance(&input.content)
        } else {
            input.importance
        };
        let emotion = Emotion::analyze(&input.content);
        let id = Uuid::new_v4();
        let state = self.tenant_or_create(tenant);
        let (stored, pending) = {
            let mut space = state.space.write().expect("space lock");
            let mut memory = Memory::new(id, input.content, importance, emotion, now);
            memory.tags = Tags::of(&input.metadata);
            let moved = space.insert(memory, now);
            let m = space.get(&id).expect("just inserted");
            let row = NewRow {
                id,
                user: tenant.user.clone(),
                agent: tenant.agent.clone(),
                content: m.content.clone(),
                importance,
                metadata: input.metadata.to_string(),
                emotion: emotion.map(|e| serde_json::to_string(&e).expect("emotion serialises")),
                created_at: now,
                score: m.score,
                zone: m.zone,
            };
            let stored = Stored {
                id,
                zone: m.zone,
                score: model::round4(m.score),
            };
            let mut ops = Vec::with_capacity(1 + moved.len());
            ops.push(Op::Insert(Box::new(row)));
            ops.extend(moved.into_iter().map(Op::Place));
            (stored, self.storage.submit(ops))
        };
        if let Err(e) = self.committed(pending).await {
            // Not durable, so not stored: take it back out of RAM before reporting the failure.
            state.space.write().expect("space lock").remove(&id);
            return Err(e);
        }
        Self::emit(&state, "on_store", now);
        Ok(stored)
    }

    pub async fn recall(
        &self,
        tenant: &Tenant,
        query: &str,
        limit: usize,
        emotion: Option<&str>,
    ) -> Result<Vec<RecallItem>, EngineError> {
        let hits = self.recall_hits(tenant, query, limit, emotion).await?;
        Ok(hits.into_iter().map(|h| h.item).collect())
    }

    /// A recall: rank, then count, refresh and re-place each hit, and log the recall for
    /// self-learning. Also returns each hit as it was before, for the analyses that recall.
    pub(crate) async fn recall_hits(
        &self,
        tenant: &Tenant,
        query: &str,
        limit: usize,
        emotion: Option<&str>,
    ) -> Result<Vec<Recalled>, EngineError> {
        let Some(state) = self.tenant(tenant) else {
            return Ok(Vec::new());
        };
        // Rank under the read lock so concurrent recalls and stores do not queue behind scoring.
        let hits = {
            let space = state.space.read().expect("space lock");
            space.search(query, emotion, limit.min(space.len()))
        };
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let (recalled, pending) = {
            let mut space = state.space.write().expect("space lock");
            let mut recalled: Vec<Recalled> = Vec::with_capacity(hits.len());
            let mut ops = Vec::new();
            for hit in &hits {
                let Some(before) = space.peek(hit).map(|m| Before {
                    zone: m.zone,
                    score: m.score,
                    last_recalled_at: m.last_recalled_at,
                    tags: m.tags.clone(),
                }) else {
                    continue;
                };
                let changes = space.touch(hit, now).expect("peeked just now");
                let m = space.memory_at(hit.slot);
                ops.push(Op::Recall {
                    id: m.id,
                    recall_count: m.recall_count,
                    last_recalled_at: m.last_recalled_at,
                    context: m.context,
                    placement: changes[0],
                });
                ops.extend(changes[1..].iter().copied().map(Op::Place));
                recalled.push(Recalled {
                    item: RecallItem {
                        id: m.id,
                        content: m.content.clone(),
                        zone: m.zone,
                        importance: model::round4(m.importance),
                        recall_count: m.recall_count,
                        emotion: m.emotion,
                    },
                    before,
                });
            }
            // A later hit may have pushed an earlier one outward: report where each ended up.
            for r in &mut recalled {
                if let Some(m) = space.get(&r.item.id) {
                    r.item.zone = m.zone;
                }
            }
            if !recalled.is_empty() {
                let ids: Vec<String> = recalled.iter().map(|r| r.item.id.to_string()).collect();
                ops.push(Op::RecallLog(Box::new(RecallLog {
                    user: tenant.user.clone(),
                    agent: tenant.agent.clone(),
                    query: query.to_string(),
                    result_ids: serde_json::to_string(&ids).expect("ids serialise"),
                    ts: now,
                })));
                if state.recall_logs.fetch_add(1, Ordering::Relaxed) + 1 > LOGS_PRUNE_AT {
                    ops.push(Op::PruneRecallLogs {
                        user: tenant.user.clone(),
                        agent: tenant.agent.clone(),
                        keep: LOGS_READ as i64,
                    });
                    state.recall_logs.store(LOGS_READ, Ordering::Relaxed);
                }
            }
            (recalled, self.storage.submit(ops))
        };
        self.committed(pending).await?;
        if !recalled.is_empty() {
            Self::emit(&state, "on_recall", now);
        }
        Ok(recalled)
    }

    /// Forget one memory of this tenant. `Ok(false)` if the tenant has no such memory.
    pub async fn forget(&self, tenant: &Tenant, id: &str) -> Result<bool, EngineError> {
        let Ok(id) = Uuid::parse_str(id) else {
            return Ok(false);
        };
        let Some(state) = self.tenant(tenant) else {
            return Ok(false);
        };
        let pending = {
            let mut space = state.space.write().expect("space lock");
            if space.remove(&id).is_none() {
                return Ok(false);
            }
            self.storage.submit(vec![Op::Delete(id)])
        };
        self.committed(pending).await?;
        Self::emit(&state, "on_forget", self.clock.now());
        Ok(true)
    }

    pub fn list(
        &self,
        tenant: &Tenant,
        zone: Option<i64>,
        offset: usize,
        limit: usize,
    ) -> ListPage {
        let Some(state) = self.tenant(tenant) else {
            return ListPage {
                total: 0,
                items: Vec::new(),
            };
        };
        let space = state.space.read().expect("space lock");
        let zone = match zone {
            None => None,
            Some(z) if (0..ZONES as i64).contains(&z) => Some(z as u8),
            Some(_) => {
                return ListPage {
                    total: 0,
                    items: Vec::new(),
                }
            }
        };
        let (total, page) = space.list(zone, offset, limit);
        let items = page
            .into_iter()
            .map(|m| ListItem {
                id: m.id,
                content: m.content.chars().take(200).collect(),
                zone: m.zone,
                score: model::round4(m.score),
                recall_count: m.recall_count,
                importance: model::round4(m.importance),
                created_at: m.created_at,
            })
            .collect();
        ListPage { total, items }
    }

    pub fn timeline(
        &self,
        tenant: &Tenant,
        start: Option<f64>,
        end: Option<f64>,
        limit: usize,
    ) -> Vec<TimelineItem> {
        let Some(state) = self.tenant(tenant) else {
            return Vec::new();
        };
        let space = state.space.read().expect("space lock");
        space
            .timeline(start, end, limit)
            .into_iter()
            .map(|m| TimelineItem {
                timestamp: m.created_at,
                memory_id: m.id,
                content: m.content.clone(),
                zone: m.zone,
                importance: model::round4(m.importance),
                emotion: m.emotion,
            })
            .collect()
    }

    /// A readable account of the memories most relevant to `topic`, told in the order they were
    /// made. Reading for a narrative is not a recall: counts and zones stay as they are.
    pub fn narrate(&self, tenant: &Tenant, topic: &str, limit: usize) -> String {
        let memories: Vec<Memory> = match self.tenant(tenant) {
            None => Vec::new(),
            Some(state) => {
                let space = state.space.read().expect("space lock");
                space
                    .search(topic, None, limit)
                    .iter()
                    .map(|h| space.memory_at(h.slot).clone())
                    .collect()
            }
        };
        compose_narrative(topic, memories)
    }

    pub fn stats(&self, tenant: &Tenant) -> Stats {
        let counts = self
            .tenant(tenant)
            .map(|s| s.space.read().expect("space lock").zone_counts())
            .unwrap_or_default();
        Stats {
            total_memories: counts.iter().sum(),
            zones: (0..ZONES).map(|z| (z.to_string(), counts[z])).collect(),
            capacities: (0..ZONES).map(|z| (z.to_string(), CAPACITIES[z])).collect(),
        }
    }

    pub async fn health(&self, tenant: &Tenant) -> Health {
        let total = self
            .tenant(tenant)
            .map(|s| s.space.read().expect("space lock").len())
            .unwrap_or(0);
        let mut warnings = Vec::new();
        let db_ok = self.storage.ping().await;
        if !db_ok {
            warnings.push("database is unreachable".to_string());
        }
        if let Some(e) = self.storage_failure.lock().expect("failure lock").clone() {
            warnings.push(format!("last storage write failed: {e}"));
        }
        Health {
            healthy: db_ok && warnings.is_empty(),
            total_memories: total,
            warnings,
        }
    }

    /// Subscribe to a tenant's change events.
    pub fn subscribe(&self, tenant: &Tenant) -> broadcast::Receiver<Event> {
        self.tenant_or_create(tenant).events.subscribe()
    }

    /// Rescore and re-lay every tenant's zones, decay and forget; persist and announce it.
    pub async fn reorbit(&self) -> Result<ReorbitTotals, EngineError> {
        let started = Instant::now();
        let tenants: Vec<Arc<TenantState>> = self
            .tenants
            .read()
            .expect("tenants lock")
            .values()
            .cloned()
            .collect();
        let mut totals = ReorbitTotals::default();
        let mut result = Ok(());
        for state in tenants {
            let now = self.clock.now();
            let (outcome, pending) = {
                let mut space = state.space.write().expect("space lock");
                if space.is_empty() {
                    continue;
                }
                let outcome = space.reorbit(
                    now,
                    self.params.decay_after_days,
                    self.params.forget_after_days,
                );
                let mut ops: Vec<Op> = outcome.placements.iter().copied().map(Op::Place).collect();
                ops.extend(outcome.forgotten.iter().copied().map(Op::Delete));
                let pending = self.storage.submit(ops);
                (outcome, pending)
            };
            if let Err(e) = self.committed(pending).await {
                // Keep going: other tenants' reorbits are independent of this failure.
                tracing::error!(error = %e, "persisting a reorbit failed");
                result = Err(e);
                continue;
            }
            totals.moved += outcome.placements.len();
            totals.decayed += outcome.decayed;
            totals.forgotten += outcome.forgotten.len();
            Self::emit(&state, "on_reorbit", now);
            if outcome.decayed > 0 {
                Self::emit(&state, "on_decay", now);
            }
            for _ in &outcome.forgotten {
                Self::emit(&state, "on_forget", now);
            }
        }
        self.metrics
            .op_seconds
            .with_label_values(&["reorbit"])
            .observe(started.elapsed().as_secs_f64());
        result.map(|_| totals)
    }

    /// Refresh the gauges that are cheaper to count at scrape time than to track on every change.
    pub fn refresh_gauges(&self) {
        let tenants: Vec<Arc<TenantState>> = self
            .tenants
            .read()
            .expect("tenants lock")
            .values()
            .cloned()
            .collect();
        let mut counts = [0usize; ZONES];
        for t in &tenants {
            let c = t.space.read().expect("space lock").zone_counts();
            for z in 0..ZONES {
                counts[z] += c[z];
            }
        }
        for (z, n) in counts.iter().enumerate() {
            self.metrics
                .memories
                .with_label_values(&[&z.to_string()])
                .set(*n as i64);
        }
        self.metrics.tenants.set(tenants.len() as i64);
    }
}

const ZONE_NAMES: [&str; ZONES] = ["core", "inner", "outer", "belt", "cloud"];

fn compose_narrative(topic: &str, mut memories: Vec<Memory>) -> String {
    let topic = topic.trim();
    if memories.is_empty() {
        return format!("I have no memories about \"{topic}\" yet.");
    }
    memories.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
    let day = |ts: f64| {
        chrono::DateTime::from_timestamp(ts as i64, 0)
            .map(|d| d.format("%B %-d, %Y").to_string())
            .unwrap_or_else(|| "an unknown day".into())
    };
    let sentence = |s: &str| {
        let s = s.trim().trim_end_matches(['.', '!', '?', ';', ',', ' ']);
        let mut c = s.chars();
        match c.next() {
            Some(f) => format!("{}{}.", f.to_uppercase(), c.as_str()),
            None => String::new(),
        }
    };
    let n = memories.len();
    let mut out = format!(
        "Here is what I remember about \"{topic}\", from {} memor{}.",
        n,
        if n == 1 { "y" } else { "ies" }
    );
    let mut last_day = String::new();
    for (i, m) in memories.iter().enumerate() {
        let d = day(m.created_at);
        let lead = if i == 0 {
            format!("On {d}: ")
        } else if d == last_day {
            "Then: ".to_string()
        } else if i + 1 == n {
            format!("Most recently, on {d}: ")
        } else {
            format!("Later, on {d}: ")
        };
        out.push(' ');
        out.push_str(&lead);
        out.push_str(&sentence(&m.content));
        if m.zone == 0 {
            out.push_str(&format!(" (a {} memory)", ZONE_NAMES[0]));
        }
        last_day = d;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::model::SECS_PER_DAY;

    struct Fixture {
        engine: Arc<Engine>,
        clock: Arc<ManualClock>,
        url: String,
        dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn open(url: &str, clock: Arc<ManualClock>) -> Arc<Engine> {
        let metrics = Arc::new(Metrics::new());
        let storage = Storage::open(url, metrics.clone()).await.unwrap();
        Engine::open(
            storage,
            clock,
            Params {
                decay_after_days: 30.0,
                forget_after_days: 90.0,
            },
            metrics,
        )
        .await
        .unwrap()
    }

    async fn fixture() -> Fixture {
        let dir = std::env::temp_dir().join(format!("stellar-engine-unit-{}", Uuid::new_v4()));
        let url = format!("sqlite://{}", dir.join("engine.db").display());
        let clock = Arc::new(ManualClock::at(1_700_000_000.0));
        let engine = open(&url, clock.clone()).await;
        Fixture {
            engine,
            clock,
            url,
            dir,
        }
    }

    fn input(content: &str, importance: f64) -> StoreInput {
        StoreInput {
            content: content.into(),
            importance,
            metadata: serde_json::json!({"k": 1}),
            auto_evaluate: false,
        }
    }

    #[tokio::test]
    async fn state_survives_reopen_with_counts_and_tenants() {
        let f = fixture().await;
        let alice = Tenant {
            user: "alice".into(),
            agent: String::new(),
        };
        let bob = Tenant {
            user: "bob".into(),
            agent: "a1".into(),
        };
        let s = f
            .engine
            .store(&alice, input("alice likes green tea", 0.5))
            .await
            .unwrap();
        f.engine
            .store(&bob, input("bob likes black coffee", 0.5))
            .await
            .unwrap();
        let hits = f.engine.recall(&alice, "tea", 5, None).await.unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].recall_count, 1);
        assert!(f
            .engine
            .recall(&alice, "coffee", 5, None)
            .await
            .unwrap()
            .is_empty());
        f.engine.storage().close().await;

        let again = open(&f.url, f.clock.clone()).await;
        let page = again.list(&alice, None, 0, 50);
        assert_eq!(page.total, 1);
        assert_eq!(page.items[0].id, s.id);
        assert_eq!(page.items[0].recall_count, 1);
        assert_eq!(again.list(&bob, None, 0, 50).total, 1);
        assert!(!again.forget(&bob, &s.id.to_string()).await.unwrap());
        assert!(again.forget(&alice, &s.id.to_string()).await.unwrap());
        again.storage().close().await;
        let third = open(&f.url, f.clock.clone()).await;
        assert_eq!(third.list(&alice, None, 0, 50).total, 0);
        third.storage().close().await;
    }

    #[tokio::test]
    async fn decay_and_forget_follow_the_injected_clock_and_persist() {
        let f = fixture().await;
        let t = Tenant::default();
        let mut events = f.engine.subscribe(&t);
        let s = f
            .engine
            .store(&t, input("an ordinary note", 0.5))
            .await
            .unwrap();
        assert_eq!(s.zone, 2);
        assert_eq!(events.recv().await.unwrap().event, "on_store");

        f.clock.set(1_700_000_000.0 + 31.0 * SECS_PER_DAY);
        let totals = f.engine.reorbit().await.unwrap();
        assert_eq!(totals.decayed, 1);
        assert_eq!(f.engine.list(&t, Some(4), 0, 10).total, 1);
        assert_eq!(events.recv().await.unwrap().event, "on_reorbit");
        assert_eq!(events.recv().await.unwrap().event, "on_decay");

        // The decayed zone is persisted: a restart at the same time still has it in the cloud.
        f.engine.storage().close().await;
        let engine = open(&f.url, f.clock.clone()).await;
        assert_eq!(engine.list(&t, Some(4), 0, 10).total, 1);

        f.clock.set(1_700_000_000.0 + 91.0 * SECS_PER_DAY);
        let totals = engine.reorbit().await.unwrap();
        assert_eq!(totals.forgotten, 1);
        assert_eq!(engine.stats(&t).total_memories, 0);
        engine.storage().close().await;
        let engine = open(&f.url, f.clock.clone()).await;
        assert_eq!(engine.stats(&t).total_memories, 0);
        engine.storage().close().await;
    }

    #[tokio::test]
    async fn many_concurrent_stores_all_commit() {
        let f = fixture().await;
        let t = Tenant::default();
        let mut tasks = Vec::new();
        for i in 0..300 {
            let e = f.engine.clone();
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                e.store(
                    &t,
                    input(&format!("note number {i}"), (i % 10) as f64 / 10.0),
                )
                .await
                .unwrap()
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let stats = f.engine.stats(&t);
        assert_eq!(stats.total_memories, 300);
        f.engine.storage().close().await;
        let engine = open(&f.url, f.clock.clone()).await;
        let again = engine.stats(&t);
        assert_eq!(again.total_memories, 300);
        assert_eq!(again.zones, stats.zones);
        engine.storage().close().await;
    }

    #[tokio::test]
    async fn narrative_stitches_relevant_memories_in_time_order() {
        let f = fixture().await;
        let t = Tenant::default();
        f.engine
            .store(&t, input("we moved the launch to friday", 0.5))
            .await
            .unwrap();
        f.clock.set(1_700_000_000.0 + 2.0 * SECS_PER_DAY);
        f.engine
            .store(&t, input("the launch went well!", 0.5))
            .await
            .unwrap();
        f.engine
            .store(&t, input("lunch was pasta", 0.5))
            .await
            .unwrap();
        let text = f.engine.narrate(&t, "launch", 10);
        let first = text.find("We moved the launch to friday.").expect(&text);
        let second = text.find("The launch went well.").expect(&text);
        assert!(first < second, "{text}");
        assert!(!text.contains("pasta"), "{text}");
        assert!(text.contains("2 memories"), "{text}");
        assert!(f.engine.narrate(&t, "volcano", 10).contains("no memories"));
        f.engine.storage().close().await;
    }
}
