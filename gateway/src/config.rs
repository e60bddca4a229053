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
    /// Extra CA certificates (PEM file) for an `https://` engine upstream.
    pub engine_ca_file: String,
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
    /// Deadline of a whole client request head (s, at least 1): [`GatewayConfig::head_timeout`].
    #[serde(deserialize_with = "at_least_one")]
    pub head_timeout_secs: u64,
    /// Deadline of a whole client request body (s, at least 1): [`GatewayConfig::body_timeout`].
    #[serde(deserialize_with = "at_least_one")]
    pub body_timeout_secs: u64,
    /// Largest accepted request body on /api/v1/* (bytes).
    pub max_body_bytes: u64,
    /// Largest request body forwarded to billing (bytes).
    pub max_billing_body_bytes: u64,
    /// Trailer fields of chunked request bodies passed on (lower-case names); every other
    /// trailer is dropped, and so are names the gateway controls, listed or not.
    #[serde(deserialize_with = "lower_case_names")]
    pub allowed_trailers: Vec<String>,
    /// Allowed CORS origins (empty: the public URL's origin only; `*`: any, without credentials).
    pub cors_origins: Vec<String>,
    /// The public URL (empty: `billing.public_url`, filled in by `main`).
    pub public_url: String,
    /// Deadline of a new connection's first byte (s, at least 1): [`GatewayConfig::first_byte_timeout`].
    #[serde(deserialize_with = "at_least_one")]
    pub first_byte_timeout_secs: u64,
    /// Client connections per IP address (0 = no cap).
    pub max_connections_per_ip: u32,
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

/// A setting that must be at least 1: 0 is refused at start (`--check-config` included) with
/// the key and where its value came from, like any value that does not decode.
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match <u64 as serde::Deserialize>::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

/// Field names, lower-cased; each must be a valid field name (token characters).
fn lower_case_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = <Vec<String> as serde::Deserialize>::deserialize(d)?;
    for n in &names {
        if n.is_empty()
            || !n
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
        {
            return Err(serde::de::Error::custom(format!(
                "{n:?} is not a field name"
            )));
        }
    }
    Ok(names.into_iter().map(|n| n.to_ascii_lowercase()).collect())
}

impl GatewayConfig {
    /// How long a new connection may stay silent before its first request starts arriving.
    /// Shorter than the keep-alive timeout: a connection that has not yet sent anything has
    /// shown nothing worth holding a buffer and a descriptor for.
    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_secs(self.first_byte_timeout_secs)
    }

    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms.max(1))
    }

    /// How long a client has to send a whole request head: one deadline for the head, however
    /// slowly its bytes trickle in (not per read). It runs from the moment the gateway first has
    /// to wait for more of an incomplete head: on an idle connection, once the head's first
    /// bytes have been read; for a head that began arriving behind the previous request
    /// (pipelining), once that request is done. Waiting for the first byte of a head on an idle
    /// keep-alive connection does not count (that is the keep-alive timeout). Past it the
    /// connection is closed without an answer.
    pub fn head_timeout(&self) -> Duration {
        Duration::from_secs(self.head_timeout_secs)
    }

    /// How long a client has to send a whole request body: one deadline for the body, however
    /// slowly it trickles in (`read_timeout_secs` still bounds each read). It runs from the
    /// moment the gateway first has to wait for more of the body. Past it the client gets 408
    /// and the connection closes; the upstream connection that had part of the body is closed,
    /// not reused. Bodies stream to the upstream as they arrive, so without it a client sending
    /// a byte every few seconds would hold an upstream connection indefinitely.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use stellar_common::Config;

    fn gateway_with_env(pairs: &[(&str, &str)]) -> Result<GatewayConfig, String> {
        let env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(None, &env)
            .and_then(|c| c.section::<GatewayConfig>("gateway"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn head_timeout_defaults_to_30_s_and_follows_the_environment() {
        assert_eq!(
            gateway_with_env(&[]).unwrap().head_timeout(),
            Duration::from_secs(30)
        );
        let cfg = gateway_with_env(&[("STELLAR_GATEWAY_HEAD_TIMEOUT_SECS", "2")]).unwrap();
        assert_eq!(cfg.head_timeout_secs, 2);
    }

    #[test]
    fn body_timeout_defaults_to_60_s_and_0_is_refused() {
        assert_eq!(
            gateway_with_env(&[]).unwrap().body_timeout(),
            Duration::from_secs(60)
        );
        let cfg = gateway_with_env(&[("STELLAR_GATEWAY_BODY_TIMEOUT_SECS", "3")]).unwrap();
        assert_eq!(cfg.body_timeout(), Duration::from_secs(3));
        zero_is_refused_with_its_key_and_source("body_timeout_secs");
    }

    #[test]
    fn hardening_defaults_and_overrides() {
        let cfg = gateway_with_env(&[]).unwrap();
        assert_eq!(cfg.first_byte_timeout(), Duration::from_secs(10));
        assert_eq!(cfg.max_connections_per_ip, 512);
        assert_eq!(cfg.max_billing_body_bytes, 1024 * 1024);
        assert!(cfg.allowed_trailers.is_empty());
        let cfg = gateway_with_env(&[
            ("STELLAR_GATEWAY_FIRST_BYTE_TIMEOUT_SECS", "2"),
            ("STELLAR_GATEWAY_MAX_CONNECTIONS_PER_IP", "0"),
        ])
        .unwrap();
        assert_eq!(cfg.first_byte_timeout(), Duration::from_secs(2));
        assert_eq!(cfg.max_connections_per_ip, 0);
        zero_is_refused_with_its_key_and_source("first_byte_timeout_secs");
    }

    #[test]
    fn a_zero_head_timeout_is_refused_with_its_key_and_source() {
        zero_is_refused_with_its_key_and_source("head_timeout_secs");
    }

    /// `gateway.<key>` set to 0 through its environment variable is refused, naming the key and
    /// where the value came from. (toml adds where in the section, "\nin `<key>`", as for every
    /// key.)
    fn zero_is_refused_with_its_key_and_source(key: &str) {
        let var = format!("STELLAR_GATEWAY_{}", key.to_ascii_uppercase());
        let e = gateway_with_env(&[(&var, "0")]).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "invalid configuration: `gateway.{key}` (from env {var}): must be at least 1"
            )),
            "{e}"
        );
    }
}
