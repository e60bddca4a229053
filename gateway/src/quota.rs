//! Step 6: the memory quota and the agent limit, enforced in the account DB so they hold across
//! any number of gateway instances.
//!
//! Memories: one atomic upsert reserves a slot (`memories_used < limit` is checked by the same
//! statement that increments, so concurrent stores on any instance can never overshoot); a 2xx
//! from the engine commits it (no further query), anything else releases it (`logging` runs on
//! every path, including client disconnects and upstream failures). A 2xx forget frees one.
//!
//! Agents: the distinct `X-Stellar-Agent` values of an account live in `account_agents`; a new
//! one first takes a slot in `account_usage.agents_used` with the same atomic upsert, then
//! inserts its row (and gives the slot back if another request inserted the same agent first).
//! Known agents are cached, so steady traffic costs no query.
//!
//! Reconciliation (engine-side auto-forget, a store the engine applied but whose response was
//! lost): periodically the engine's per-tenant counts are summed and written back with a
//! compare-and-set. See [`reconcile_once`] for how in-flight reservations are protected.

use crate::metrics::{DB_ERRORS, DB_QUERIES, QUOTA_CORRECTIONS};
use chrono::Utc;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use stellar_common::{with_db, Db};
use uuid::Uuid;

pub use stellar_common::accounts::valid_agent;

/// Outcome of a reservation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Reserved; the count now includes this request.
    Reserved(i64),
    /// At the limit; the current count.
    Full(i64),
}

fn count(op: &str) {
    DB_QUERIES.with_label_values(&[op]).inc();
}

fn failed(op: &str, e: &sqlx::Error) {
    DB_ERRORS.with_label_values(&[op]).inc();
    tracing::warn!(op, error = %e, "account DB call failed");
}

const RESERVE_MEMORY_SQL: &str =
    "INSERT INTO account_usage (user_id, memories_used, agents_used) VALUES ($1, 1, 0) \
     ON CONFLICT (user_id) DO UPDATE SET memories_used = account_usage.memories_used + 1 \
     WHERE account_usage.memories_used < $2 RETURNING memories_used";

const RESERVE_AGENT_SQL: &str =
    "INSERT INTO account_usage (user_id, memories_used, agents_used) VALUES ($1, 0, 1) \
     ON CONFLICT (user_id) DO UPDATE SET agents_used = account_usage.agents_used + 1 \
     WHERE account_usage.agents_used < $2 RETURNING agents_used";

/// Reserve one memory for `user` under `limit`.
pub async fn reserve_memory(db: &Db, user: Uuid, limit: u64) -> sqlx::Result<Reserve> {
    if limit == 0 {
        return Ok(Reserve::Full(memories_used(db, user).await?));
    }
    count("quota_reserve");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let row: Option<i64> = with_db!(db, p => sqlx::query_scalar(RESERVE_MEMORY_SQL).bind(user).bind(limit).fetch_optional(p).await)
        .inspect_err(|e| failed("quota_reserve", e))?;
    match row {
        Some(n) => Ok(Reserve::Reserved(n)),
        None => Ok(Reserve::Full(memories_used(db, user).await?)),
    }
}

/// Give one memory back (a failed store, or a forget). Never goes below zero.
pub async fn release_memory(db: &Db, user: Uuid) -> sqlx::Result<()> {
    count("quota_release");
    with_db!(db, p => sqlx::query("UPDATE account_usage SET memories_used = memories_used - 1 WHERE user_id = $1 AND memories_used > 0")
        .bind(user).execute(p).await.map(|_| ()))
    .inspect_err(|e| failed("quota_release", e))?;
    Ok(())
}

pub async fn memories_used(db: &Db, user: Uuid) -> sqlx::Result<i64> {
    count("quota_read");
    let n: Option<i64> = with_db!(db, p => sqlx::query_scalar("SELECT memories_used FROM account_usage WHERE user_id = $1")
        .bind(user).fetch_optional(p).await)
    .inspect_err(|e| failed("quota_read", e))?;
    Ok(n.unwrap_or(0))
}

/// Outcome of checking an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCheck {
    Known,
    Added,
    /// At the limit; agents in use.
    Full(i64),
}

/// Make sure `agent` is one of `user`'s at most `limit` agents.
pub async fn ensure_agent(
    db: &Db,
    user: Uuid,
    agent: &str,
    limit: u32,
) -> sqlx::Result<AgentCheck> {
    count("agent");
    let known: Option<i32> = with_db!(db, p => sqlx::query_scalar("SELECT 1 FROM account_agents WHERE user_id = $1 AND agent = $2")
        .bind(user).bind(agent).fetch_optional(p).await)
    .inspect_err(|e| failed("agent", e))?;
    if known.is_some() {
        return Ok(AgentCheck::Known);
    }
    count("agent");
    let slot: Option<i32> = with_db!(db, p => sqlx::query_scalar(RESERVE_AGENT_SQL).bind(user).bind(i64::from(limit)).fetch_optional(p).await)
        .inspect_err(|e| failed("agent", e))?;
    if slot.is_none() {
        count("agent");
        let used: Option<i32> = with_db!(db, p => sqlx::query_scalar("SELECT agents_used FROM account_usage WHERE user_id = $1")
            .bind(user).fetch_optional(p).await)
        .inspect_err(|e| failed("agent", e))?;
        return Ok(AgentCheck::Full(i64::from(used.unwrap_or(0))));
    }
    count("agent");
    let inserted = with_db!(db, p => sqlx::query(
        "INSERT INTO account_agents (user_id, agent, created_at) VALUES ($1, $2, $3) ON CONFLICT (user_id, agent) DO NOTHING")
        .bind(user).bind(agent).bind(Utc::now()).execute(p).await.map(|r| r.rows_affected()))
    .inspect_err(|e| failed("agent", e))?;
    if inserted == 0 {
        // Another request registered the same agent between our check and insert.
        count("agent");
        with_db!(db, p => sqlx::query("UPDATE account_usage SET agents_used = agents_used - 1 WHERE user_id = $1 AND agents_used > 0")
            .bind(user).execute(p).await.map(|_| ()))
        .inspect_err(|e| failed("agent", e))?;
        return Ok(AgentCheck::Known);
    }
    Ok(AgentCheck::Added)
}

/// Stores this instance has reserved and not yet settled, per account. Reconciliation skips
/// accounts with any.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<Uuid, u32>>);

impl InFlight {
    pub fn begin(&self, user: Uuid) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user)
            .or_default() += 1;
    }
    pub fn end(&self, user: Uuid) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&user);
            }
        }
    }
    pub fn any(&self, user: Uuid) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&user)
    }
}

/// Where the reconciler asks the engine: the address the proxy's engine pool dials (the engine
/// itself, or the TLS bridge's loopback port for an `https://` upstream, which adds TLS with
/// the upstream's SNI), and the `Host` the upstream must see when it was given as a URL
/// (`EngineTarget::host`, as the proxy sends it; `None`: the address).
#[derive(Debug, Clone)]
pub struct EngineAt {
    pub addr: SocketAddr,
    pub host: Option<String>,
}

/// The engine's count of `user`'s memories: `total_memories` of `GET /api/v1/stats` summed over
/// the default space and every agent the account has registered.
async fn engine_count(
    http: &reqwest::Client,
    engine: &EngineAt,
    api_key: &str,
    user: Uuid,
    agents: &[String],
) -> anyhow::Result<i64> {
    let mut total = 0i64;
    let url = format!("http://{}/api/v1/stats", engine.addr);
    for agent in std::iter::once(None).chain(agents.iter().map(Some)) {
        let mut req = http
            .get(&url)
            .header("X-Stellar-User", user.to_string())
            .header("X-Request-Id", format!("reconcile-{}", Uuid::new_v4()));
        if let Some(h) = &engine.host {
            // The bridge (or a virtual host) answers for the upstream's name, not the address
            // dialled: reqwest keeps a Host set here.
            req = req.header(reqwest::header::HOST, h);
        }
        if let Some(a) = agent {
            req = req.header("X-Stellar-Agent", a);
        }
        if !api_key.is_empty() {
            req = req.header("X-API-Key", api_key);
        }
        let resp = req.send().await?.error_for_status()?;
        let v: serde_json::Value = resp.json().await?;
        total += v["total_memories"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("stats without total_memories"))?;
    }
    Ok(total)
}

/// One reconciliation round over up to `batch` accounts, least recently reconciled first.
///
/// In-flight reservations: a reservation is counted in `memories_used` before the engine has
/// the memory, so a naive "set to the engine's count" would drop it. We therefore (1) skip
/// accounts with a reservation in flight on this instance, (2) read `memories_used` before and
/// after asking the engine and skip the account if it moved (a store or forget settled anywhere
/// meanwhile), and (3) write with a compare-and-set on the value read. The remaining window — a
/// reservation taken on another instance before our first read whose store the engine has not
/// applied when we ask it — under-counts by at most the number of such in-flight stores for
/// one round; the next round corrects it. Returns (checked, corrected).
pub async fn reconcile_once(
    db: &Db,
    http: &reqwest::Client,
    engine: &EngineAt,
    api_key: &str,
    inflight: &InFlight,
    batch: i64,
) -> anyhow::Result<(u32, u32)> {
    count("reconcile");
    let rows: Vec<(Uuid, i64)> = with_db!(db, p => sqlx::query_as(
        "SELECT user_id, memories_used FROM account_usage ORDER BY reconciled_at IS NOT NULL, reconciled_at LIMIT $1")
        .bind(batch).fetch_all(p).await)?;
    let (mut checked, mut corrected) = (0, 0);
    for (user, before) in rows {
        if inflight.any(user) {
            QUOTA_CORRECTIONS
                .with_label_values(&["skipped_inflight"])
                .inc();
            continue;
        }
        count("reconcile");
        let agents: Vec<String> = with_db!(db, p => sqlx::query_scalar("SELECT agent FROM account_agents WHERE user_id = $1 ORDER BY agent")
            .bind(user).fetch_all(p).await)?;
        let actual = match engine_count(http, engine, api_key, user, &agents).await {
            Ok(n) => n,
            Err(e) => {
                QUOTA_CORRECTIONS.with_label_values(&["engine_error"]).inc();
                tracing::warn!(error = %e, "reconciliation: engine stats failed");
                return Ok((checked, corrected));
            }
        };
        checked += 1;
        let after = memories_used(db, user).await?;
        if after != before || inflight.any(user) {
            QUOTA_CORRECTIONS
                .with_label_values(&["skipped_moving"])
                .inc();
            continue;
        }
        count("reconcile");
        let changed = with_db!(db, p => sqlx::query(
            "UPDATE account_usage SET memories_used = $1, reconciled_at = $2 WHERE user_id = $3 AND memories_used = $4")
            .bind(actual).bind(Utc::now()).bind(user).bind(before).execute(p).await.map(|r| r.rows_affected()))?;
        if changed == 1 && actual != before {
            corrected += 1;
            QUOTA_CORRECTIONS.with_label_values(&["corrected"]).inc();
            tracing::info!(%user, from = before, to = actual, "reconciliation corrected the memory count");
        } else {
            QUOTA_CORRECTIONS.with_label_values(&["unchanged"]).inc();
        }
    }
    Ok((checked, corrected))
}

/// Interval between rounds and accounts per round.
pub const RECONCILE_BATCH: i64 = 500;

/// How long the reconciler waits for one engine call.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain HTTP/1.1 engine that answers every request with `total_memories: 2` and records
    /// each request's `Host` (what the upstream behind the TLS bridge receives unchanged).
    async fn host_recorder() -> (SocketAddr, std::sync::Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hosts: std::sync::Arc<Mutex<Vec<String>>> = Default::default();
        let log = hosts.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 1024];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end);
                        let host = head
                            .split("\r\n")
                            .filter_map(|l| l.split_once(':'))
                            .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                            .map(|(_, v)| v.trim().to_string())
                            .collect::<Vec<_>>()
                            .join(",");
                        log.lock().unwrap().push(host);
                        let body = r#"{"total_memories": 2}"#;
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, hosts)
    }

    /// For an upstream given as a URL (`https://memory.example.com:8443`: the reconciler dials
    /// the TLS bridge's loopback port), every stats request carries the upstream's `Host`, as
    /// the proxy's requests do, not the address dialled; for a bare `host:port` upstream, the
    /// address.
    #[tokio::test]
    async fn reconciliation_sends_the_upstream_host() {
        let (addr, hosts) = host_recorder().await;
        let http = reqwest::Client::new();
        let user = Uuid::new_v4();
        let agents = vec!["a".to_string()];
        let fronted = EngineAt {
            addr,
            host: Some("memory.example.com:8443".into()),
        };
        assert_eq!(
            engine_count(&http, &fronted, "k", user, &agents)
                .await
                .unwrap(),
            4
        );
        assert_eq!(
            *hosts.lock().unwrap(),
            vec!["memory.example.com:8443"; 2],
            "one Host field, the upstream's, on every request"
        );
        hosts.lock().unwrap().clear();
        let bare = EngineAt { addr, host: None };
        assert_eq!(engine_count(&http, &bare, "", user, &[]).await.unwrap(), 2);
        assert_eq!(*hosts.lock().unwrap(), vec![addr.to_string()]);
    }

    async fn sqlite() -> Db {
        stellar_common::testing::temp_sqlite_db().await
    }

    async fn user(db: &Db) -> Uuid {
        let u = Uuid::new_v4();
        with_db!(db, p => { sqlx::query("INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, 'free', $3, $3)")
            .bind(u).bind(format!("{u}@x.test")).bind(Utc::now()).execute(p).await.unwrap(); });
        u
    }

    async fn exercise(db: Db) {
        let u = user(&db).await;
        assert_eq!(
            reserve_memory(&db, u, 2).await.unwrap(),
            Reserve::Reserved(1)
        );
        assert_eq!(
            reserve_memory(&db, u, 2).await.unwrap(),
            Reserve::Reserved(2)
        );
        assert_eq!(reserve_memory(&db, u, 2).await.unwrap(), Reserve::Full(2));
        release_memory(&db, u).await.unwrap();
        assert_eq!(memories_used(&db, u).await.unwrap(), 1);
        // Concurrent reservations never overshoot.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { reserve_memory(&db, u, 10).await.unwrap() })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Reserve::Reserved(_)) {
                ok += 1;
            }
        }
        assert_eq!(ok, 9);
        assert_eq!(memories_used(&db, u).await.unwrap(), 10);
        assert_eq!(
            ensure_agent(&db, u, "a", 2).await.unwrap(),
            AgentCheck::Added
        );
        assert_eq!(
            ensure_agent(&db, u, "a", 2).await.unwrap(),
            AgentCheck::Known
        );
        assert_eq!(
            ensure_agent(&db, u, "b", 2).await.unwrap(),
            AgentCheck::Added
        );
        assert_eq!(
            ensure_agent(&db, u, "c", 2).await.unwrap(),
            AgentCheck::Full(2)
        );
        assert_eq!(
            ensure_agent(&db, u, "b", 1).await.unwrap(),
            AgentCheck::Known,
            "downgrade keeps known agents"
        );
    }

    #[tokio::test]
    async fn quota_sqlite() {
        exercise(sqlite().await).await;
    }

    #[tokio::test]
    async fn quota_postgres() {
        let Some(url) = stellar_common::testing::fresh_postgres_db().await else {
            return;
        };
        let db = Db::connect(&url, &Default::default()).await.unwrap();
        db.migrate().await.unwrap();
        exercise(db).await;
    }

    #[test]
    fn agent_names() {
        assert!(valid_agent("bot-1.prod:eu_2"));
        assert!(!valid_agent(""));
        assert!(!valid_agent("a b"));
        assert!(!valid_agent(&"a".repeat(65)));
    }
}
