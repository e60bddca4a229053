//! Webhooks to customers (docs/billing-api.md, "Webhooks and alerts"): an account registers
//! endpoints and chooses events; each event is written to `webhook_deliveries` in the same
//! transaction as the change that causes it ([`WebhookTx::emit_webhook`], one row per subscribed
//! endpoint: an outbox, like mail's), and [`run`] — started next to the mail worker — delivers
//! the rows: a signed POST ([`signature`]), 2xx = delivered, anything else retried with
//! exponential back-off for up to `webhooks.max_age_secs` (3 days), then failed; every attempt is
//! recorded. Claiming follows the mail outbox exactly (a conditional `UPDATE` with a lease, `FOR
//! UPDATE SKIP LOCKED` on PostgreSQL): several billing instances never send one delivery at
//! once, and a crash mid-send leaves a row that is due again when its lease ends (at least once:
//! receivers dedupe by `Stellar-Event-Id`).
//!
//! Endpoint secrets are stored AES-256-GCM encrypted (`crypto`) with `webhooks.encryption_key`,
//! or, when that is empty, a key generated on first start and kept in `{data_dir}/webhooks.key`
//! (mode 0600).
//!
//! Files: `target` (which URLs may be endpoints), `signature` (`Stellar-Signature`), `store`
//! (endpoints, deliveries as the API shows them, resend, and the in-transaction emit), `deliver`
//! (the worker: claim, send, record, back-off).

pub mod deliver;
pub mod signature;
pub mod store;
pub mod target;

pub use deliver::run;
pub use store::WebhookTx;

use crate::settings::invalid;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stellar_common::{Config, ConfigError, Secret};

/// The event types an endpoint can subscribe to (`*` = all).
pub mod event {
    pub const MEMORY_QUOTA: &str = "alert.memory_quota";
    pub const RATE_LIMITED: &str = "alert.rate_limited";
    pub const KEY_EXPIRING: &str = "alert.key_expiring";
    pub const PAYMENT_FAILED: &str = "alert.payment_failed";
    pub const SUBSCRIPTION_UPDATED: &str = "subscription.updated";
    pub const KEY_CREATED: &str = "key.created";
    pub const KEY_REVOKED: &str = "key.revoked";
    pub const KEY_ROTATED: &str = "key.rotated";
    pub const KEY_CHANGED: &str = "key.changed";
    /// Every type, in the order the API lists them.
    pub const ALL: &[&str] = &[
        MEMORY_QUOTA,
        RATE_LIMITED,
        KEY_EXPIRING,
        PAYMENT_FAILED,
        SUBSCRIPTION_UPDATED,
        KEY_CREATED,
        KEY_REVOKED,
        KEY_ROTATED,
        KEY_CHANGED,
    ];
    /// Subscribes to every type, present and future.
    pub const ANY: &str = "*";
}

/// Whether an endpoint subscribed to `events` gets `event_type`.
pub fn subscribed(events: &[String], event_type: &str) -> bool {
    events.iter().any(|e| e == event::ANY || e == event_type)
}

/// The `data` of a key event: `key_id`, the scope fields when given, then `extra`'s fields.
pub fn key_data(
    key_id: uuid::Uuid,
    scope: Option<&stellar_common::accounts::KeyScope>,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({ "key_id": key_id });
    if let Some(s) = scope {
        v["read_only"] = s.read_only.into();
        v["agent"] = serde_json::json!(s.agent);
        v["expires_at"] = serde_json::json!(s.expires_at);
        v["requests_per_minute"] = serde_json::json!(s.requests_per_minute);
    }
    if let (Some(m), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    v
}

/// `[webhooks]` as written in the configuration (every key documented in config/stellar.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    pub encryption_key: Secret,
    pub allow_http: bool,
    pub max_endpoints: u32,
    pub poll_interval_secs: f64,
    pub timeout_secs: f64,
    pub retry_base_secs: f64,
    pub retry_max_secs: f64,
    pub max_age_secs: u64,
    pub concurrency: u32,
    pub max_response_bytes: usize,
    pub retention_days: u32,
}

/// `[webhooks]`, decoded and checked.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub allow_http: bool,
    pub max_endpoints: u32,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_age: Duration,
    pub concurrency: usize,
    pub max_response_bytes: usize,
    pub retention: Duration,
    /// The AES key for endpoint secrets: configured, or filled by [`Self::ensure_key`].
    key: Option<[u8; 32]>,
    /// Where the generated key lives when none is configured.
    pub key_file: PathBuf,
}

/// `v` seconds as a duration, at least `min`.
fn secs(key: &str, v: f64, min: f64) -> Result<Duration, ConfigError> {
    (v.is_finite() && v >= min)
        .then(|| Duration::from_secs_f64(v))
        .ok_or_else(|| invalid(key, format!("must be a number of seconds >= {min}")))
}

/// The file name of the generated key under `data_dir`.
pub const KEY_FILE: &str = "webhooks.key";

impl WebhooksConfig {
    pub fn from_config(config: &Config, data_dir: &Path) -> Result<WebhooksConfig, ConfigError> {
        Self::from_section(config.section("webhooks")?, data_dir)
    }

    pub fn from_section(
        s: WebhooksSection,
        data_dir: &Path,
    ) -> Result<WebhooksConfig, ConfigError> {
        let key = if s.encryption_key.is_empty() {
            None
        } else {
            Some(
                crate::crypto::parse_key(s.encryption_key.expose()).map_err(|m| {
                    invalid(
                        "webhooks.encryption_key",
                        format!("{m}; expected 32 bytes as 64 hex characters or base64 (e.g. `openssl rand -hex 32`), or empty"),
                    )
                })?,
            )
        };
        let retry_base = secs("webhooks.retry_base_secs", s.retry_base_secs, 0.01)?;
        let retry_max = secs("webhooks.retry_max_secs", s.retry_max_secs, 0.01)?;
        if retry_max < retry_base {
            return Err(invalid(
                "webhooks.retry_max_secs",
                "must not be below webhooks.retry_base_secs",
            ));
        }
        if s.max_age_secs == 0 {
            return Err(invalid("webhooks.max_age_secs", "must be at least 1"));
        }
        if s.concurrency == 0 || s.concurrency > 256 {
            return Err(invalid("webhooks.concurrency", "must be 1–256"));
        }
        if s.max_endpoints == 0 {
            return Err(invalid("webhooks.max_endpoints", "must be at least 1"));
        }
        if s.retention_days == 0 {
            return Err(invalid("webhooks.retention_days", "must be at least 1"));
        }
        Ok(WebhooksConfig {
            allow_http: s.allow_http,
            max_endpoints: s.max_endpoints,
            poll_interval: secs("webhooks.poll_interval_secs", s.poll_interval_secs, 0.01)?,
            timeout: secs("webhooks.timeout_secs", s.timeout_secs, 0.1)?,
            retry_base,
            retry_max,
            max_age: Duration::from_secs(s.max_age_secs),
            concurrency: s.concurrency as usize,
            max_response_bytes: s.max_response_bytes,
            retention: Duration::from_secs(u64::from(s.retention_days) * 86_400),
            key,
            key_file: data_dir.join(KEY_FILE),
        })
    }

    /// The key that encrypts endpoint secrets; `None` until [`Self::ensure_key`] ran (billing's
    /// `run` does) when none is configured.
    pub fn key(&self) -> Option<&[u8; 32]> {
        self.key.as_ref()
    }

    /// Use the configured key, or read `{data_dir}/webhooks.key`, or create it (32 random
    /// bytes as hex, mode 0600) when it does not exist yet.
    pub fn ensure_key(&mut self) -> anyhow::Result<()> {
        if self.key.is_none() {
            self.key = Some(load_or_create_key(&self.key_file)?);
        }
        Ok(())
    }
}

fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    use rand::RngCore;
    use std::io::Write;
    let read = |path: &Path| -> anyhow::Result<[u8; 32]> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        crate::crypto::parse_key(&text)
            .map_err(|m| anyhow::anyhow!("{}: {m} (expected 64 hex characters)", path.display()))
    };
    if path.exists() {
        return read(path);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(hex::encode(key).as_bytes())?;
            f.sync_all()?;
            tracing::warn!(file = %path.display(),
                "webhooks.encryption_key is not set: generated one for endpoint secrets and stored it in this file; set webhooks.encryption_key in production");
            Ok(key)
        }
        // Another instance created it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(env: &[(&str, &str)], dir: &Path) -> Result<WebhooksConfig, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WebhooksConfig::from_config(&Config::from_parts(None, &env)?, dir)
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = cfg(&[], Path::new("/var/lib/stellar")).unwrap();
        assert!(!c.allow_http);
        assert_eq!(c.max_age, Duration::from_secs(3 * 86_400));
        assert!(c.key().is_none());
        assert_eq!(c.key_file, Path::new("/var/lib/stellar/webhooks.key"));
        for (k, v, key) in [
            (
                "STELLAR_WEBHOOKS_ENCRYPTION_KEY",
                "short",
                "webhooks.encryption_key",
            ),
            (
                "STELLAR_WEBHOOKS_RETRY_MAX_SECS",
                "0.001",
                "webhooks.retry_max_secs",
            ),
            (
                "STELLAR_WEBHOOKS_MAX_AGE_SECS",
                "0",
                "webhooks.max_age_secs",
            ),
            ("STELLAR_WEBHOOKS_CONCURRENCY", "0", "webhooks.concurrency"),
            (
                "STELLAR_WEBHOOKS_TIMEOUT_SECS",
                "0",
                "webhooks.timeout_secs",
            ),
        ] {
            let e = cfg(&[(k, v)], Path::new("/x")).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{k}={v}: {e}");
        }
        let c = cfg(
            &[("STELLAR_WEBHOOKS_ENCRYPTION_KEY", &"ab".repeat(32))],
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(c.key(), Some(&[0xab; 32]));
    }

    #[test]
    fn generated_key_is_kept_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("stellar-wh-{}", uuid::Uuid::new_v4()));
        let mut a = cfg(&[], &dir).unwrap();
        a.ensure_key().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut b = cfg(&[], &dir).unwrap();
        b.ensure_key().unwrap();
        assert_eq!(a.key(), b.key(), "the second start reads the same key");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subscriptions() {
        let all = vec!["*".to_string()];
        let some = vec![event::KEY_CREATED.to_string()];
        assert!(subscribed(&all, event::KEY_REVOKED));
        assert!(subscribed(&some, event::KEY_CREATED));
        assert!(!subscribed(&some, event::KEY_REVOKED));
    }
}
