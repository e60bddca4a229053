//! The shared per-account limiter (issue 6): one token bucket per account in Redis, decided by
//! one atomic Lua script that reads Redis's own clock (`TIME`), so several gateways with skewed
//! clocks still share one exact bucket.
//!
//! Redis unreachable → the local bucket of this gateway decides (fail-open to a bounded limit,
//! never to unlimited: N gateways admit at most N × (rate + burst)), a warning is logged once per
//! outage, `gateway_limiter_redis_up` drops to 0, and Redis is tried again after `retry`.

use crate::limits::{decision_from_tokens, Backend, Clock, Decision, Limiter, LocalBuckets, Rate};
use crate::metrics::{REDIS_ERRORS, REDIS_UP};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// KEYS[1] bucket; ARGV[1] tokens per second, ARGV[2] burst. Returns {allowed, tokens left}.
const SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tk', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate) * 1000) + 1000)
return {allowed, tostring(tokens)}
"#;

pub struct RedisLimiter {
    client: redis::Client,
    script: redis::Script,
    conn: RwLock<Option<ConnectionManager>>,
    connecting: tokio::sync::Mutex<()>,
    local: LocalBuckets<Uuid>,
    timeout: Duration,
    retry: Duration,
    start: Instant,
    /// Milliseconds since `start` before which Redis is not tried (0 = try).
    down_until_ms: AtomicU64,
    healthy: AtomicBool,
}

impl RedisLimiter {
    pub fn new(
        url: &str,
        timeout: Duration,
        retry: Duration,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Ok(RedisLimiter {
            client: redis::Client::open(url)?,
            script: redis::Script::new(SCRIPT),
            conn: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            local: LocalBuckets::new(clock),
            timeout,
            retry,
            start: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn mark_down(&self, kind: &str, err: &dyn std::fmt::Display) {
        REDIS_ERRORS.with_label_values(&[kind]).inc();
        REDIS_UP.set(0);
        self.down_until_ms.store(
            self.now_ms() + self.retry.as_millis() as u64,
            Ordering::SeqCst,
        );
        if self.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(error = %err, kind, "Redis limiter unreachable: falling back to local buckets");
        }
    }

    fn mark_up(&self) {
        REDIS_UP.set(1);
        if !self.healthy.swap(true, Ordering::SeqCst) {
            tracing::info!("Redis limiter reachable again: shared buckets resumed");
        }
    }

    /// A connection, connecting first if needed (one attempt at a time; others fall back).
    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Some(c.clone());
        }
        let _guard = self.connecting.try_lock().ok()?;
        if let Some(c) = self.conn.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Some(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        match tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        {
            Ok(Ok(c)) => {
                *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                self.mark_down("connect", &e);
                None
            }
            Err(_) => {
                self.mark_down("connect", &"timed out");
                None
            }
        }
    }

    /// Ask Redis; `None` when it cannot answer.
    pub async fn check_redis(&self, account: Uuid, rate: Rate) -> Option<Decision> {
        if self.now_ms() < self.down_until_ms.load(Ordering::SeqCst) {
            return None;
        }
        let mut conn = self.connection().await?;
        let per_sec = f64::from(rate.per_minute.max(1)) / 60.0;
        let mut inv = self.script.key(format!("stellar:rl:{account}"));
        inv.arg(per_sec).arg(rate.burst);
        match tokio::time::timeout(self.timeout, inv.invoke_async::<(i64, String)>(&mut conn)).await
        {
            Ok(Ok((allowed, tokens))) => {
                self.mark_up();
                let tokens: f64 = tokens.parse().unwrap_or(0.0);
                Some(decision_from_tokens(allowed == 1, tokens, rate))
            }
            Ok(Err(e)) => {
                self.mark_down("script", &e);
                None
            }
            Err(_) => {
                self.mark_down("timeout", &"timed out");
                None
            }
        }
    }
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, account: Uuid, rate: Rate) -> (Decision, Backend) {
        match self.check_redis(account, rate).await {
            Some(d) => (d, Backend::Redis),
            None => (self.local.take(&account, rate), Backend::Fallback),
        }
    }

    fn sweep(&self) {
        self.local.sweep();
    }
}
