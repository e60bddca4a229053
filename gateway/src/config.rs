//! The `[gateway]` section of the configuration (see `config/stellar.toml`, where every key is
//! documented with its default).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Typed `[gateway]` settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Public listener.
    pub addr: SocketAddr,
    /// Metrics and health listener.
    pub metrics_addr: SocketAddr,
    /// Memory engine upstream (host:port).
    pub engine_upstream: String,
    /// Billing sidecar upstream (host:port).
    pub billing_upstream: String,
    /// Proxy worker threads.
    pub threads: usize,
    /// One work-stealing runtime (true) or one single-threaded runtime per thread (false).
    pub work_stealing: bool,
    /// SIGTERM grace period (s).
    pub grace_period_secs: u64,
    /// Runtime shutdown timeout after the grace period (s).
    pub shutdown_timeout_secs: u64,
    /// X-API-Key injected towards the engine (empty = none).
    pub upstream_api_key: String,
    /// Upstream TCP connect timeout (ms).
    pub connect_timeout_ms: u64,
    /// Upstream per-read timeout (s).
    pub read_timeout_secs: u64,
    /// Per-read timeout on the SSE route (s).
    pub events_read_timeout_secs: u64,
    /// Idle lifetime of pooled upstream connections (s).
    pub upstream_idle_timeout_secs: u64,
    /// Largest accepted request body on /api/v1/* (bytes).
    pub max_body_bytes: u64,
    /// Principal cache capacity (entries).
    pub auth_cache_capacity: u64,
    /// Principal cache TTL (s), a safety net behind the change feed.
    pub auth_cache_ttl_secs: u64,
    /// How long an unknown key hash stays known-unknown (ms).
    pub negative_cache_ttl_ms: u64,
    /// Pool size of the gateway's account DB connections.
    pub db_max_connections: u32,
    /// Upper bound of that pool when the account DB is SQLite.
    pub sqlite_max_connections: u32,
    /// SQLite page cache per gateway connection (KiB).
    pub sqlite_cache_kib: u32,
    /// Deadline of one DB call on the request path (ms).
    pub db_timeout_ms: u64,
    /// Apply migrations at start.
    pub migrate: bool,
    /// Change-feed poll interval (ms).
    pub feed_poll_ms: u64,
    /// Per-IP bucket: refill per minute.
    pub ip_requests_per_minute: u32,
    /// Per-IP bucket: capacity.
    pub ip_burst: u32,
    /// Write-behind flush interval (s).
    pub usage_flush_secs: u64,
    /// Quota reconciliation interval (s, 0 = off).
    pub reconcile_interval_secs: u64,
    /// Redis URL for the shared limiter (empty = local buckets).
    pub redis_url: String,
    /// Deadline of one Redis call (ms).
    pub redis_timeout_ms: u64,
    /// Back-off before retrying Redis after a failure (ms).
    pub redis_retry_ms: u64,
}

/// Resolve `host:port` once, at startup: pingora's `HttpPeer::new` would otherwise do blocking
/// DNS per request and panic on failure.
pub fn resolve(what: &str, hostport: &str) -> anyhow::Result<SocketAddr> {
    hostport
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("gateway.{what}: cannot resolve {hostport:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("gateway.{what}: {hostport:?} resolves to no address"))
}

impl GatewayConfig {
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms.max(1))
    }
}
