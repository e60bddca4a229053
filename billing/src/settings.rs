//! Typed configuration of billing: the `[billing]`, `[lemon]`, `[stripe]` and `[toss]` sections
//! of `config/stellar.toml` (every key documented there), checked once at start-up; `[mail]` is
//! decoded by `mail::MailConfig`, `[webhooks]` by `webhooks::WebhooksConfig`, `[alerts]` by
//! `alerts::AlertsConfig`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use stellar_common::{CommonConfig, Config, ConfigError, Secret, Tiers};

/// `[auth]`: sign-up, sign-in links, sessions, abuse limits (config/stellar.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub immediate_key: bool,
    pub link_ttl_secs: u64,
    pub invitation_ttl_secs: u64,
    pub session_ttl_secs: u64,
    pub mails_per_address_per_hour: u32,
    pub mail_requests_per_ip_per_hour: u32,
}

/// `[billing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSection {
    pub addr: SocketAddr,
    pub public_url: String,
    pub metrics_addr: SocketAddr,
    pub landing_dir: PathBuf,
    pub body_limit_bytes: usize,
    pub webhook_body_limit_bytes: usize,
    pub scheduler_interval_secs: f64,
    pub past_due_grace_secs: i64,
    pub provider_timeout_secs: f64,
    /// The memory engine's base URL (data rights: export and account deletion).
    pub engine_url: String,
    /// `X-API-Key` for that engine; resolved at start: empty means `gateway.upstream_api_key`.
    pub engine_api_key: Secret,
    /// Extra CA certificates (PEM) trusted for an `https://` engine_url, besides the web PKI
    /// roots; empty = none (see [`engine_client`]).
    pub engine_ca_file: String,
    /// Not a key of its own: how long account deletion waits between revoking the keys and its
    /// last sweep of the engine. The gateways drop revoked keys within a second and write what
    /// they counted for them within `gateway.usage_flush_secs` (read from the same
    /// configuration), so the account's rows are gone only after both.
    #[serde(skip)]
    pub erase_settle: Duration,
}

/// `[lemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LemonSection {
    pub api_key: Secret,
    pub store_id: String,
    pub variant_pro: String,
    pub variant_team: String,
    pub webhook_secret: Secret,
    pub api_base: String,
    pub test_mode: bool,
}

/// `[stripe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSection {
    pub secret_key: Secret,
    pub webhook_secret: Secret,
    pub price_pro: String,
    pub price_team: String,
    pub api_base: String,
    pub webhook_tolerance_secs: i64,
}

/// `[toss]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TossSection {
    pub secret_key: Secret,
    pub client_key: String,
    pub webhook_secret: Secret,
    pub encryption_key: Secret,
    pub api_base: String,
    pub sdk_url: String,
    pub timeout_secs: f64,
    pub retry_schedule_secs: Vec<u64>,
}

/// Everything billing reads, decoded and validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    pub billing: BillingSection,
    pub auth: AuthSection,
    pub lemon: LemonSection,
    pub stripe: StripeSection,
    pub toss: TossSection,
    pub tiers: Tiers,
    /// `[mail]`: the outbox worker and where mail goes.
    pub mail: crate::mail::MailConfig,
    /// `[webhooks]`: customers' endpoints and the delivery worker.
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// `[alerts]`: the alert evaluator.
    pub alerts: crate::alerts::AlertsConfig,
    /// The decoded Toss encryption key (present whenever Toss is configured).
    pub toss_key: Option<[u8; 32]>,
    /// The one HTTP client of every call to the engine (`billing.engine_url`; connections are
    /// pooled), trusting `billing.engine_ca_file` too.
    pub engine_http: reqwest::Client,
}

/// The client billing reaches the engine with (data rights): rustls with the web PKI roots, plus
/// every certificate of the PEM file `ca_file` when it is not empty — what `stellar up
/// --engine-ca-file` gives the gateway (`gateway.engine_ca_file`) and billing alike, for an
/// `https://` engine with a private CA. A file that cannot be read, holds no PEM certificate or
/// a certificate rustls refuses is an error naming `billing.engine_ca_file`.
pub fn engine_client(ca_file: &str) -> Result<reqwest::Client, ConfigError> {
    const KEY: &str = "billing.engine_ca_file";
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("stellar-billing/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60));
    let path = ca_file.trim();
    if !path.is_empty() {
        let pem =
            std::fs::read(path).map_err(|e| invalid(KEY, format!("cannot read {path}: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| invalid(KEY, format!("{path} is not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(
                KEY,
                format!("{path} holds no certificate (PEM, -----BEGIN CERTIFICATE----- expected)"),
            ));
        }
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    // rustls parses the added certificates here: a PEM block that is no certificate fails now.
    b.build().map_err(|e| {
        let detail = std::error::Error::source(&e).map_or(e.to_string(), |s| format!("{e}: {s}"));
        if path.is_empty() {
            invalid("billing.engine_url", format!("HTTP client: {detail}"))
        } else {
            invalid(KEY, format!("{path}: {detail}"))
        }
    })
}

/// A configuration error naming `key`.
pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        source_name: "configuration".into(),
        message: message.into(),
    }
}

impl Settings {
    /// Decode and check every section; the first problem is returned with its key.
    pub fn from_config(config: &Config) -> Result<Settings, ConfigError> {
        let common = config.common()?;
        let mut billing: BillingSection = config.section("billing")?;
        if billing.engine_api_key.is_empty() {
            if let Some(k) = config
                .raw("gateway.upstream_api_key")
                .and_then(|v| v.as_str())
            {
                billing.engine_api_key = Secret::new(k);
            }
        }
        let flush_secs = config
            .raw("gateway.usage_flush_secs")
            .and_then(|v| v.as_integer())
            .unwrap_or(5)
            .clamp(0, 60) as u64;
        billing.erase_settle = Duration::from_secs(flush_secs + 1).max(Duration::from_millis(1500));
        let auth: AuthSection = config.section("auth")?;
        for (key, v) in [
            ("auth.link_ttl_secs", auth.link_ttl_secs),
            ("auth.invitation_ttl_secs", auth.invitation_ttl_secs),
            ("auth.session_ttl_secs", auth.session_ttl_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let lemon: LemonSection = config.section("lemon")?;
        let stripe: StripeSection = config.section("stripe")?;
        let toss: TossSection = config.section("toss")?;
        let mail = crate::mail::MailConfig::from_config(config, &common.data_dir)?;
        let webhooks = crate::webhooks::WebhooksConfig::from_config(config, &common.data_dir)?;
        let alerts = crate::alerts::AlertsConfig::from_config(config)?;
        let tiers =
            Tiers::load(&common.tiers_file).map_err(|e| invalid("tiers_file", e.to_string()))?;
        if billing.body_limit_bytes < 1024 {
            return Err(invalid("billing.body_limit_bytes", "must be at least 1024"));
        }
        if billing.scheduler_interval_secs.is_nan() || billing.scheduler_interval_secs <= 0.0 {
            return Err(invalid(
                "billing.scheduler_interval_secs",
                "must be positive",
            ));
        }
        if !url::Url::parse(&billing.engine_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            return Err(invalid(
                "billing.engine_url",
                "must be an absolute http(s) URL",
            ));
        }
        let engine_http = engine_client(&billing.engine_ca_file)?;
        if url::Url::parse(&billing.public_url).is_err() {
            return Err(invalid("billing.public_url", "must be an absolute URL"));
        }
        for (key, base) in [
            ("lemon.api_base", &lemon.api_base),
            ("stripe.api_base", &stripe.api_base),
            ("toss.api_base", &toss.api_base),
        ] {
            if url::Url::parse(base).is_err() {
                return Err(invalid(key, "must be an absolute URL"));
            }
        }
        let toss_configured = !toss.secret_key.is_empty() && !toss.client_key.trim().is_empty();
        let toss_key = if toss_configured {
            Some(crate::crypto::parse_key(toss.encryption_key.expose()).map_err(|m| {
                invalid(
                    "toss.encryption_key",
                    format!("{m}; Toss is configured, so billing keys need a 32-byte AES key (TOSS_ENCRYPTION_KEY, e.g. `openssl rand -hex 32`)"),
                )
            })?)
        } else {
            None
        };
        Ok(Settings {
            common,
            billing,
            auth,
            lemon,
            stripe,
            toss,
            tiers,
            mail,
            webhooks,
            alerts,
            toss_key,
            engine_http,
        })
    }

    pub fn public_url(&self) -> &str {
        self.billing.public_url.trim_end_matches('/')
    }

    pub fn provider_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.billing.provider_timeout_secs.max(0.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed test CA (P-256, valid for a century); only its parsing matters here.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUH3koWUcBdLFiSQiAVAfNSQ44vbowCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXU3RlbGxhciBCaWxsaW5nIFRlc3QgQ0EwIBcNMjYxMjA1MTcx
MzQzWhgPMjEyNjExMTExNzEzNDNaMCIxIDAeBgNVBAMMF1N0ZWxsYXIgQmlsbGlu
ZyBUZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9uIK+fEL/L6XXIXQ
Kts3cdI8gJcfllc+Qoq9iY4IInX21pCRR4FwucN1bVmdcvdN6zX+VDYac/GmSnXw
4ieb2aNTMFEwHQYDVR0OBBYEFAoCU17c5BiOmBBGvY9OacKu+4cKMB8GA1UdIwQY
MBaAFAoCU17c5BiOmBBGvY9OacKu+4cKMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDRwAwRAIgOYlYvhkizdDiMFLrvzvXsVtCCPsdJYZeAgt9BDDMEvkCIHQQ
XCj7ygvWQrvVi7Jp9j/PeirPXQd2unVFBes4eWPi
-----END CERTIFICATE-----
";

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "billing-ca-{}-{}-{name}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn refusal(ca_file: &str) -> String {
        match engine_client(ca_file) {
            Ok(_) => panic!("{ca_file:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn engine_ca_file_adds_pem_roots_and_refuses_anything_else() {
        // Empty: the web PKI roots only.
        assert!(engine_client("").is_ok());
        assert!(engine_client("  ").is_ok());
        // A PEM bundle: the test CA, twice, with text around it (as `openssl x509 -text` writes).
        let good = file(
            "good.pem",
            &format!("Stellar test CA\n{TEST_CA}\n{TEST_CA}trailing words\n"),
        );
        assert!(engine_client(good.to_str().unwrap()).is_ok());

        let missing = std::env::temp_dir().join("billing-ca-no-such-file.pem");
        let e = refusal(missing.to_str().unwrap());
        assert!(
            e.contains("billing.engine_ca_file") && e.contains("cannot read"),
            "{e}"
        );
        let dir = std::env::temp_dir();
        let e = refusal(dir.to_str().unwrap());
        assert!(e.contains("billing.engine_ca_file"), "{e}");

        let text = file("text.pem", "not a certificate\n");
        let e = refusal(text.to_str().unwrap());
        assert!(
            e.contains("billing.engine_ca_file") && e.contains("no certificate"),
            "{e}"
        );
        // A private key alone is PEM, but no certificate.
        let key = file(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        );
        let e = refusal(key.to_str().unwrap());
        assert!(e.contains("no certificate"), "{e}");
        // A CERTIFICATE block whose content is no certificate.
        let bogus = file(
            "bogus.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let e = refusal(bogus.to_str().unwrap());
        assert!(e.contains("billing.engine_ca_file"), "{e}");
        // Broken base64 inside the markers.
        let broken = file(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let e = refusal(broken.to_str().unwrap());
        assert!(e.contains("billing.engine_ca_file"), "{e}");

        for p in [good, text, key, bogus, broken] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn engine_ca_file_is_read_from_the_configuration() {
        let defaults = crate::testing::settings(&[]);
        assert_eq!(defaults.billing.engine_ca_file, "");
        let good = file("env.pem", TEST_CA);
        let s = crate::testing::settings(&[
            ("STELLAR_BILLING_ENGINE_URL", "https://memory.internal:8443"),
            ("STELLAR_BILLING_ENGINE_CA_FILE", good.to_str().unwrap()),
        ]);
        assert_eq!(s.billing.engine_ca_file, good.to_str().unwrap());
        let _ = std::fs::remove_file(&good);
        // Start-up refuses a file it cannot use, naming the key.
        let mut vars = std::collections::BTreeMap::new();
        vars.insert(
            "STELLAR_TIERS_FILE".to_string(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/tiers.toml").to_string(),
        );
        vars.insert(
            "STELLAR_BILLING_ENGINE_CA_FILE".to_string(),
            good.display().to_string(),
        );
        let config = Config::from_parts(None, &vars).unwrap();
        let e = Settings::from_config(&config).unwrap_err().to_string();
        assert!(
            e.contains("billing.engine_ca_file") && e.contains("cannot read"),
            "{e}"
        );
    }
}
