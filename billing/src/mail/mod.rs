//! E-mail: an outbox in the account DB and a worker that empties it.
//!
//! A flow that sends mail calls [`enqueue`] with the transaction that makes its change (so the
//! mail exists if and only if the change commits); [`run`] — started next to the scheduler —
//! claims due rows one at a time, renders them ([`templates`]), builds a multipart/alternative
//! message (plain text and HTML) and hands it to the [`smtp::Transport`]: an SMTP server
//! (`mail.smtp_url`) or, on the embedded default, the log and `{data_dir}/mail/*.eml`. A failed
//! attempt is retried with exponential back-off ([`backoff`]) up to `mail.max_attempts`, its
//! error kept in `last_error`. How rows are claimed so that several billing instances never
//! send one mail twice: [`outbox`].
//!
//! Files: `outbox` (table access), `smtp` (URL parsing, transports), `templates` (rendering).

pub mod outbox;
pub mod smtp;
pub mod templates;

pub use outbox::{enqueue, AccountTx};
pub use templates::{Rendered, Template};

use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message, MultiPart};
use serde::Deserialize;
use smtp::{Delivered, SmtpUrl, Transport};
use std::path::{Path, PathBuf};
use std::time::Duration;
use stellar_common::{Config, ConfigError, Db, Secret};
use tokio::sync::watch;

/// `[mail]` as written in the configuration (every key documented in config/stellar.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSection {
    pub smtp_url: Secret,
    pub from: String,
    pub reply_to: String,
    pub product_name: String,
    pub poll_interval_secs: f64,
    pub send_timeout_secs: f64,
    pub retry_base_secs: f64,
    pub retry_max_secs: f64,
    pub max_attempts: u32,
}

/// Where mail goes, checked.
#[derive(Debug, Clone)]
pub enum Delivery {
    Smtp(SmtpUrl),
    /// No SMTP URL: log each mail and write it under this directory.
    Embedded(PathBuf),
}

/// `[mail]`, decoded and checked.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub delivery: Delivery,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub product_name: String,
    pub poll_interval: Duration,
    pub send_timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_attempts: u32,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        source_name: "configuration".into(),
        message: message.into(),
    }
}

fn secs(key: &str, v: f64, min: f64) -> Result<Duration, ConfigError> {
    if !v.is_finite() || v < min {
        return Err(invalid(
            key,
            format!("must be a number of seconds >= {min}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

impl MailConfig {
    /// Decode `[mail]`; `data_dir` holds the embedded default's `mail/` directory.
    pub fn from_config(config: &Config, data_dir: &Path) -> Result<MailConfig, ConfigError> {
        Self::from_section(config.section("mail")?, data_dir)
    }

    pub fn from_section(s: MailSection, data_dir: &Path) -> Result<MailConfig, ConfigError> {
        let delivery = if s.smtp_url.is_empty() {
            Delivery::Embedded(data_dir.join("mail"))
        } else {
            Delivery::Smtp(
                SmtpUrl::parse(s.smtp_url.expose()).map_err(|m| invalid("mail.smtp_url", m))?,
            )
        };
        let from: Mailbox = s.from.trim().parse().map_err(|e| {
            invalid(
                "mail.from",
                format!("{e}; expected an address, e.g. \"Stellar Gate <no-reply@example.com>\""),
            )
        })?;
        let reply_to = match s.reply_to.trim() {
            "" => None,
            r => Some(r.parse::<Mailbox>().map_err(|e| {
                invalid(
                    "mail.reply_to",
                    format!("{e}; expected an address or nothing"),
                )
            })?),
        };
        if s.product_name.trim().is_empty() {
            return Err(invalid("mail.product_name", "must not be empty"));
        }
        let retry_base = secs("mail.retry_base_secs", s.retry_base_secs, 0.01)?;
        let retry_max = secs("mail.retry_max_secs", s.retry_max_secs, 0.01)?;
        if retry_max < retry_base {
            return Err(invalid(
                "mail.retry_max_secs",
                "must not be below mail.retry_base_secs",
            ));
        }
        if s.max_attempts == 0 {
            return Err(invalid("mail.max_attempts", "must be at least 1"));
        }
        Ok(MailConfig {
            delivery,
            from,
            reply_to,
            product_name: s.product_name.trim().to_string(),
            poll_interval: secs("mail.poll_interval_secs", s.poll_interval_secs, 0.01)?,
            send_timeout: secs("mail.send_timeout_secs", s.send_timeout_secs, 0.1)?,
            retry_base,
            retry_max,
            max_attempts: s.max_attempts,
        })
    }

    /// The transport this configuration names.
    pub fn transport(&self) -> anyhow::Result<Transport> {
        Ok(match &self.delivery {
            Delivery::Smtp(url) => Transport::smtp(url, self.send_timeout)
                .map_err(|e| anyhow::anyhow!("mail.smtp_url {}: {e}", url.redacted()))?,
            Delivery::Embedded(dir) => Transport::embedded(dir),
        })
    }

    /// How long a claim holds a row: the longest a send can take, and a margin.
    fn lease(&self) -> Duration {
        self.send_timeout * 4 + Duration::from_secs(60)
    }
}

/// The wait after failed attempt number `attempts` (1-based): `base`, doubling each time,
/// never more than `max`. No jitter: rows fail at their own times already, and a fixed schedule
/// is what an operator reading `next_attempt_at` expects.
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    base.checked_mul(1u32 << exp).unwrap_or(max).min(max)
}

/// The message for one claimed row: From, optional Reply-To, To, Subject, Date, a Message-ID
/// derived from the row (the same on a retry, so a receiver can spot a duplicate), and a
/// multipart/alternative body with the plain text first.
pub fn build_message(
    cfg: &MailConfig,
    id: i64,
    created_at: DateTime<Utc>,
    to: &str,
    rendered: &Rendered,
) -> Result<Message, String> {
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("bad recipient address {to:?}: {e}"))?;
    let domain = cfg.from.email.domain().to_string();
    let mut b = Message::builder()
        .from(cfg.from.clone())
        .to(to)
        .subject(rendered.subject.clone())
        .date_now()
        .message_id(Some(format!(
            "<outbox.{id}.{}@{domain}>",
            created_at.timestamp()
        )))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ));
    if let Some(r) = &cfg.reply_to {
        b = b.reply_to(r.clone());
    }
    b.multipart(MultiPart::alternative_plain_html(
        rendered.text.clone(),
        rendered.html.clone(),
    ))
    .map_err(|e| format!("building the message: {e}"))
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    pub failed: usize,
}

/// Send every row that is due now, one claim at a time, and return what happened. Stops early
/// when `shutdown` turns true (the row in hand is finished first).
pub async fn deliver_due(
    db: &Db,
    cfg: &MailConfig,
    transport: &Transport,
    shutdown: &watch::Receiver<bool>,
) -> sqlx::Result<Pass> {
    let mut pass = Pass::default();
    while !*shutdown.borrow() {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let now = Utc::now();
        let lease_until = now + chrono::Duration::from_std(cfg.lease()).unwrap_or_default();
        let Some(row) = outbox::claim_next(db, &token, now, lease_until).await? else {
            break;
        };
        match attempt(cfg, transport, &row).await {
            Ok((delivered, rendered, link)) => {
                record_sent(db, row.id).await?;
                pass.sent += 1;
                match delivered {
                    Delivered::File(path) => tracing::info!(
                        to = %row.recipient,
                        subject = %rendered.subject,
                        link = %link,
                        file = %path.display(),
                        "mail written (no SMTP server configured, so not sent)"
                    ),
                    Delivered::Smtp => tracing::info!(
                        outbox_id = row.id,
                        template = %row.template,
                        attempts = row.attempts,
                        "mail sent"
                    ),
                }
            }
            Err((error, permanent)) => {
                let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
                let give_up = permanent || attempts >= cfg.max_attempts;
                let wait = backoff(attempts, cfg.retry_base, cfg.retry_max);
                let retry_at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                outbox::mark_failed(db, row.id, &token, &error, retry_at, give_up).await?;
                pass.failed += 1;
                if give_up {
                    tracing::error!(outbox_id = row.id, template = %row.template, attempts, error = %error,
                        "mail not sent; giving up (the row stays in the outbox as failed)");
                } else {
                    tracing::warn!(outbox_id = row.id, template = %row.template, attempts, error = %error,
                        retry_in_secs = wait.as_secs_f64(), "mail not sent; will retry");
                }
            }
        }
    }
    Ok(pass)
}

/// Record a send that happened. Tried a few times over a couple of seconds: until it is
/// recorded, the row's lease is all that keeps it from being sent again.
async fn record_sent(db: &Db, id: i64) -> sqlx::Result<()> {
    let mut tries = 0;
    loop {
        match outbox::mark_sent(db, id, Utc::now()).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 4 => {
                tries += 1;
                tracing::warn!(outbox_id = id, error = %e, "recording a sent mail failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Render, build and send one row. Errors carry whether retrying can help: a row that cannot
/// be rendered or addressed never will be; anything the server says may change (a full mailbox,
/// a greylist, a misconfigured relay), so SMTP errors are retried.
async fn attempt(
    cfg: &MailConfig,
    transport: &Transport,
    row: &outbox::Claimed,
) -> Result<(Delivered, Rendered, String), (String, bool)> {
    let template: Template = row
        .payload
        .as_deref()
        .ok_or_else(|| "the row has no payload".to_string())
        .and_then(|p| serde_json::from_str(p).map_err(|e| format!("unreadable payload: {e}")))
        .map_err(|e| (e, true))?;
    let rendered = template.render(&cfg.product_name);
    let message = build_message(cfg, row.id, row.created_at, &row.recipient, &rendered)
        .map_err(|e| (e, true))?;
    let name = format!(
        "{}-{:08}-{}.eml",
        row.created_at.format("%Y%m%dT%H%M%SZ"),
        row.id,
        row.template
    );
    let delivered = transport
        .send(&message, &name)
        .await
        .map_err(|e| (e, false))?;
    Ok((delivered, rendered, template.link().to_string()))
}

/// The worker: every `mail.poll_interval_secs`, send what is due. Stops when `shutdown` turns
/// true; a DB error is logged and the next poll tries again.
pub async fn run(
    db: Db,
    cfg: MailConfig,
    transport: Transport,
    mut shutdown: watch::Receiver<bool>,
) {
    match &cfg.delivery {
        Delivery::Smtp(url) => tracing::info!(smtp = %url.redacted(), "mail worker started"),
        Delivery::Embedded(dir) => tracing::info!(
            dir = %dir.display(),
            "mail worker started; no SMTP server configured (mail.smtp_url): mails are logged and written as .eml files"
        ),
    }
    loop {
        if let Err(e) = deliver_due(&db, &cfg, &transport, &shutdown).await {
            tracing::error!(error = %e, "mail worker: outbox query failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_interval) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::debug!("mail worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(env: &[(&str, &str)]) -> Result<MailConfig, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c = Config::from_parts(None, &env)?;
        MailConfig::from_config(&c, Path::new("/var/lib/stellar"))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (b, m) = (Duration::from_secs(30), Duration::from_secs(3600));
        let got: Vec<u64> = (1..=10).map(|n| backoff(n, b, m).as_secs()).collect();
        assert_eq!(got, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(backoff(0, b, m), b, "attempt 0 reads as the first");
        assert_eq!(backoff(u32::MAX, b, m), m, "no overflow");
        let ms = Duration::from_millis(200);
        assert_eq!(
            backoff(3, ms, Duration::from_secs(1)),
            Duration::from_millis(800)
        );
        assert_eq!(
            backoff(4, ms, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn defaults_are_the_embedded_mode() {
        let c = cfg(&[]).unwrap();
        match &c.delivery {
            Delivery::Embedded(d) => assert_eq!(d, Path::new("/var/lib/stellar/mail")),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.from.email.to_string(), "no-reply@localhost");
        assert_eq!(c.product_name, "Stellar Gate");
        assert!(c.reply_to.is_none());
        assert!(c.max_attempts >= 1);
        assert!(c.transport().is_ok());
    }

    #[test]
    fn env_overrides_and_smtp_url() {
        let c = cfg(&[
            (
                "STELLAR_MAIL_SMTP_URL",
                "smtp://u:pw@relay.example.com?tls=required",
            ),
            ("STELLAR_MAIL_FROM", "Acme <hello@acme.example>"),
            ("STELLAR_MAIL_REPLY_TO", "support@acme.example"),
            ("STELLAR_MAIL_MAX_ATTEMPTS", "3"),
        ])
        .unwrap();
        let Delivery::Smtp(u) = &c.delivery else {
            panic!("smtp expected")
        };
        assert_eq!((u.port, u.tls), (587, smtp::TlsMode::Required));
        assert!(!format!("{c:?}").contains("pw@"), "{c:?}");
        assert_eq!(c.from.name.as_deref(), Some("Acme"));
        assert_eq!(
            c.reply_to.unwrap().email.to_string(),
            "support@acme.example"
        );
        assert_eq!(c.max_attempts, 3);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v, key) in [
            ("STELLAR_MAIL_SMTP_URL", "http://x", "mail.smtp_url"),
            (
                "STELLAR_MAIL_SMTP_URL",
                "smtp://u:topsecret@h?tls=maybe",
                "mail.smtp_url",
            ),
            ("STELLAR_MAIL_FROM", "not an address", "mail.from"),
            ("STELLAR_MAIL_REPLY_TO", "@@", "mail.reply_to"),
            ("STELLAR_MAIL_PRODUCT_NAME", " ", "mail.product_name"),
            (
                "STELLAR_MAIL_POLL_INTERVAL_SECS",
                "0",
                "mail.poll_interval_secs",
            ),
            ("STELLAR_MAIL_RETRY_BASE_SECS", "-1", "mail.retry_base_secs"),
            ("STELLAR_MAIL_RETRY_MAX_SECS", "0.5", "mail.retry_max_secs"),
            ("STELLAR_MAIL_MAX_ATTEMPTS", "0", "mail.max_attempts"),
            ("STELLAR_MAIL_MAX_ATTEMPTS", "-2", "mail.max_attempts"),
            (
                "STELLAR_MAIL_SEND_TIMEOUT_SECS",
                "soon",
                "mail.send_timeout_secs",
            ),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{k}={v}: {e}");
            assert!(!e.contains("topsecret"), "{e}");
        }
    }

    #[test]
    fn message_has_both_parts_and_the_headers() {
        let c = cfg(&[("STELLAR_MAIL_REPLY_TO", "help@example.com")]).unwrap();
        let r = Template::SignIn {
            link: "http://127.0.0.1:8080/auth/link?t=x".into(),
        }
        .render(&c.product_name);
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let m = build_message(&c, 42, t, "bob@example.com", &r).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        for want in [
            "From: \"Stellar Gate\" <no-reply@localhost>",
            "Reply-To: help@example.com",
            "To: bob@example.com",
            "Subject: Your Stellar Gate sign-in link",
            "Message-ID: <outbox.42.1700000000@localhost>",
            "Auto-Submitted: auto-generated",
            "Content-Type: multipart/alternative",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
        ] {
            assert!(raw.contains(want), "{want} missing in:\n{raw}");
        }
        assert!(
            raw.find("text/plain") < raw.find("text/html"),
            "plain text first"
        );
        let e = build_message(&c, 1, t, "not an address", &r).unwrap_err();
        assert!(e.contains("bad recipient"), "{e}");
    }
}
