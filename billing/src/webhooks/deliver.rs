//! The delivery worker: claim due rows of `webhook_deliveries` (a lease, as the mail outbox's
//! claim: see `mail::outbox`), POST each to its endpoint — signed, with a timeout, never
//! following a redirect, reading at most `webhooks.max_response_bytes` of the answer — and
//! record the attempt. Up to `webhooks.concurrency` deliveries are in flight at once, so one
//! slow endpoint does not hold up the others. Nothing here runs on a request's path.

use super::store::status;
use super::{signature, WebhooksConfig};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use stellar_common::{with_db, Db};
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

/// When a delivery that failed its attempt number `attempts` (1-based) is tried again:
/// `retry_base` doubling up to `retry_max` after the attempt (`mail::backoff`), but never past
/// `created_at + max_age`, where one last attempt is made; `None` (give up: failed) once that
/// moment has passed.
pub fn next_attempt(
    cfg: &WebhooksConfig,
    attempts: u32,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let deadline = created_at + chrono::Duration::from_std(cfg.max_age).ok()?;
    if now >= deadline {
        return None;
    }
    let wait = crate::mail::backoff(attempts, cfg.retry_base, cfg.retry_max);
    let next = chrono::Duration::from_std(wait)
        .ok()
        .and_then(|w| now.checked_add_signed(w))
        .unwrap_or(deadline);
    Some(next.min(deadline))
}

/// A claimed row with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: String,
    /// Including this attempt.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

const DUE_SQL: &str =
    "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 LIMIT 1";

const CLAIM: &str = "UPDATE webhook_deliveries SET claim_token = $1, attempts = attempts + 1, next_attempt_at = $2 \
     WHERE id = (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
     ORDER BY next_attempt_at, id LIMIT 1 {lock}) \
     AND status = 'pending' AND next_attempt_at <= $3 \
     RETURNING id, endpoint_id, event_id, event_type, payload, attempts, created_at";

/// One claim: its token, when it is made, and until when it holds the row.
pub struct Lease {
    pub token: String,
    pub now: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Lease {
    pub fn new(length: Duration) -> Lease {
        let now = Utc::now();
        Lease {
            token: Uuid::new_v4().simple().to_string(),
            now,
            until: now + chrono::Duration::from_std(length).unwrap_or_default(),
        }
    }
}

/// Claim the oldest due row under `lease` (a cheap read first, so an idle worker does not take
/// SQLite's write lock every poll).
pub async fn claim_next(db: &Db, lease: &Lease) -> sqlx::Result<Option<Claimed>> {
    let due = with_db!(db, p => sqlx::query_scalar::<_, Uuid>(DUE_SQL).bind(lease.now).fetch_optional(p).await)?;
    if due.is_none() {
        return Ok(None);
    }
    let sql = CLAIM.replace(
        "{lock}",
        if db.is_postgres() {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        },
    );
    with_db!(db, p => sqlx::query_as::<_, Claimed>(&sql)
        .bind(&lease.token).bind(lease.until).bind(lease.now)
        .fetch_optional(p).await)
}

/// What one attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status, when the endpoint answered.
    pub status_code: Option<u16>,
    /// Why it is not delivered (`None` for a 2xx).
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

/// The HTTP client deliveries use: the timeout, no redirects, our user agent.
pub fn client(cfg: &WebhooksConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("Stellar-Gate-Webhooks/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .build()
}

/// POST `body` to `url` signed with `secret`; read at most `max_body` bytes of the answer
/// (thrown away: what an endpoint answers is never stored or shown, only its status).
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    event_id: Uuid,
    body: &str,
    max_body: usize,
) -> Outcome {
    let started = Instant::now();
    let t = Utc::now().timestamp();
    let sent = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            signature::HEADER,
            signature::sign(secret, body.as_bytes(), t),
        )
        .header("Stellar-Event-Id", event_id.to_string())
        .body(body.to_string())
        .send()
        .await;
    let (status_code, error) = match sent {
        Err(e) => (None, Some(describe(&e))),
        Ok(mut resp) => {
            let code = resp.status();
            let mut read = 0usize;
            // Drain a little of the body so the connection ends cleanly; never more than the cap.
            while read < max_body {
                match resp.chunk().await {
                    Ok(Some(c)) => read += c.len(),
                    _ => break,
                }
            }
            let error = if code.is_success() {
                None
            } else if code.is_redirection() {
                Some(format!(
                    "HTTP {} (redirects are not followed)",
                    code.as_u16()
                ))
            } else {
                Some(format!("HTTP {}", code.as_u16()))
            };
            (Some(code.as_u16()), error)
        }
    };
    Outcome {
        status_code,
        error,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A transport error in a few words, without the URL's query (which may hold a token).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "error"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

/// Record attempt `row.attempts` of `row`: delivered, due again at `retry_at`, or failed when
/// `retry_at` is `None`. Only the claim that made the attempt may record it; a delivery whose
/// endpoint was deleted meanwhile is gone, and nothing is recorded.
async fn record(
    db: &Db,
    row: &Claimed,
    token: &str,
    outcome: &Outcome,
    retry_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    let now = Utc::now();
    let (st, next) = match (outcome.delivered(), retry_at) {
        (true, _) => (status::DELIVERED, now),
        (false, Some(t)) => (status::PENDING, t),
        (false, None) => (status::FAILED, now),
    };
    let error: Option<String> = outcome
        .error
        .as_ref()
        .map(|e| e.chars().take(500).collect());
    let code = outcome.status_code.map(i32::from);
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        let r = sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, next_attempt_at = $4, claim_token = NULL, last_status_code = $5, \
             last_error = $6, last_attempt_at = $7, delivered_at = CASE WHEN $3 = 'delivered' THEN $7 ELSE delivered_at END \
             WHERE id = $1 AND claim_token = $2 AND status = 'pending'")
            .bind(row.id).bind(token).bind(st).bind(next).bind(code).bind(error.as_deref()).bind(now)
            .execute(&mut *tx).await?;
        if r.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (delivery_id, attempt) DO NOTHING")
                .bind(row.id).bind(row.attempts).bind(now).bind(code).bind(error.as_deref()).bind(outcome.duration_ms)
                .execute(&mut *tx).await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// Send one claimed row and record the outcome.
async fn deliver_one(
    db: Db,
    cfg: WebhooksConfig,
    http: reqwest::Client,
    row: Claimed,
    token: String,
) -> sqlx::Result<bool> {
    let endpoint: Option<(String, String)> = with_db!(&db, p => sqlx::query_as(
        "SELECT url, secret_enc FROM webhook_endpoints WHERE id = $1")
        .bind(row.endpoint_id).fetch_optional(p).await)?;
    let Some((url, secret_enc)) = endpoint else {
        return Ok(false); // deleted meanwhile: its deliveries went with it
    };
    let secret = cfg
        .key()
        .ok_or("no webhooks encryption key")
        .and_then(|k| crate::crypto::decrypt(k, &secret_enc));
    let outcome = match secret {
        Ok(secret) => {
            send(
                &http,
                &url,
                secret.expose(),
                row.event_id,
                &row.payload,
                cfg.max_response_bytes,
            )
            .await
        }
        Err(e) => Outcome {
            status_code: None,
            error: Some(format!(
                "cannot decrypt the endpoint's secret ({e}): was webhooks.encryption_key changed?"
            )),
            duration_ms: 0,
        },
    };
    let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
    let retry_at = if outcome.delivered() {
        None
    } else {
        next_attempt(&cfg, attempts, row.created_at, Utc::now())
    };
    record(&db, &row, &token, &outcome, retry_at).await?;
    match (&outcome.error, retry_at) {
        (None, _) => {
            tracing::info!(delivery_id = %row.id, event = %row.event_type, attempts, "webhook delivered")
        }
        (Some(e), Some(t)) => {
            tracing::warn!(delivery_id = %row.id, event = %row.event_type, attempts, error = %e,
            retry_at = %t, "webhook not delivered; will retry")
        }
        (Some(e), None) => {
            tracing::error!(delivery_id = %row.id, event = %row.event_type, attempts, error = %e,
            "webhook not delivered within webhooks.max_age_secs; failed")
        }
    }
    Ok(outcome.delivered())
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    pub not_delivered: usize,
}

/// Deliver every row that is due now, up to `webhooks.concurrency` at once. Stops claiming when
/// `shutdown` turns true; what is in flight is finished first (each bounded by the timeout).
pub async fn deliver_due(
    db: &Db,
    cfg: &WebhooksConfig,
    http: &reqwest::Client,
    shutdown: &watch::Receiver<bool>,
) -> Pass {
    let lease = cfg.timeout * 2 + Duration::from_secs(60);
    let mut pass = Pass::default();
    let mut set = JoinSet::new();
    let mut exhausted = false;
    loop {
        while !exhausted && set.len() < cfg.concurrency && !*shutdown.borrow() {
            let claim = Lease::new(lease);
            match claim_next(db, &claim).await {
                Ok(Some(row)) => {
                    set.spawn(deliver_one(
                        db.clone(),
                        cfg.clone(),
                        http.clone(),
                        row,
                        claim.token,
                    ));
                }
                Ok(None) => exhausted = true,
                Err(e) => {
                    tracing::error!(error = %e, "webhook worker: claiming a delivery failed");
                    exhausted = true;
                }
            }
        }
        match set.join_next().await {
            None => break,
            Some(Ok(Ok(true))) => pass.delivered += 1,
            Some(Ok(Ok(false))) => pass.not_delivered += 1,
            Some(Ok(Err(e))) => {
                tracing::error!(error = %e, "webhook worker: recording a delivery failed (its lease will run out and it is tried again)");
                pass.not_delivered += 1;
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "webhook worker: a delivery task ended abnormally");
                pass.not_delivered += 1;
            }
        }
        if *shutdown.borrow() {
            exhausted = true;
        }
    }
    pass
}

/// Remove finished deliveries (and their attempts) older than `webhooks.retention_days`.
pub async fn prune(db: &Db, cfg: &WebhooksConfig, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let before = now - chrono::Duration::from_std(cfg.retention).unwrap_or_default();
    with_db!(db, p => sqlx::query(
        "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
        .bind(before).execute(p).await.map(|r| r.rows_affected()))
}

/// The worker: every `webhooks.poll_interval_secs`, deliver what is due; once an hour, prune.
/// Stops when `shutdown` turns true.
pub async fn run(db: Db, cfg: WebhooksConfig, mut shutdown: watch::Receiver<bool>) {
    let http = match client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook worker cannot build its HTTP client; not started");
            return;
        }
    };
    tracing::info!(
        allow_http = cfg.allow_http,
        concurrency = cfg.concurrency,
        "webhook worker started"
    );
    let mut last_prune: Option<Instant> = None;
    loop {
        deliver_due(&db, &cfg, &http, &shutdown).await;
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            match prune(&db, &cfg, Utc::now()).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "old webhook deliveries pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning webhook deliveries failed"),
            }
            last_prune = Some(Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_interval) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    tracing::debug!("webhook worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use stellar_common::Config;

    fn cfg(env: &[(&str, &str)]) -> WebhooksConfig {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WebhooksConfig::from_config(
            &Config::from_parts(None, &env).unwrap(),
            std::path::Path::new("/x"),
        )
        .unwrap()
    }

    #[test]
    fn back_off_doubles_and_stops_at_the_deadline() {
        let c = cfg(&[
            ("STELLAR_WEBHOOKS_RETRY_BASE_SECS", "60"),
            ("STELLAR_WEBHOOKS_RETRY_MAX_SECS", "21600"),
            ("STELLAR_WEBHOOKS_MAX_AGE_SECS", "259200"),
        ]);
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let s = chrono::Duration::seconds;
        // After attempt n at time `now`: 1 min, 2, 4, … capped at 6 h.
        assert_eq!(next_attempt(&c, 1, t0, t0), Some(t0 + s(60)));
        assert_eq!(next_attempt(&c, 2, t0, t0 + s(60)), Some(t0 + s(180)));
        assert_eq!(next_attempt(&c, 10, t0, t0), Some(t0 + s(21600)));
        assert_eq!(next_attempt(&c, 40, t0, t0), Some(t0 + s(21600)));
        // Never past created_at + 3 days: the last try is made at the deadline, then it fails.
        let deadline = t0 + s(259_200);
        assert_eq!(next_attempt(&c, 20, t0, deadline - s(10)), Some(deadline));
        assert_eq!(next_attempt(&c, 21, t0, deadline), None);
        assert_eq!(next_attempt(&c, 21, t0, deadline + s(1)), None);
        // The whole schedule of an endpoint that never answers: about 20 attempts in 3 days.
        let (mut now, mut n) = (t0, 1);
        while let Some(t) = next_attempt(&c, n, t0, now) {
            assert!(t > now && t <= deadline);
            now = t;
            n += 1;
        }
        assert_eq!(now, deadline);
        assert!((18..=24).contains(&n), "{n} attempts");
    }

    #[test]
    fn defaults_are_three_days() {
        let c = cfg(&[]);
        let t0 = Utc::now();
        assert!(next_attempt(&c, 1, t0, t0).is_some());
        assert_eq!(
            next_attempt(&c, 1, t0, t0 + chrono::Duration::days(3)),
            None
        );
    }
}
