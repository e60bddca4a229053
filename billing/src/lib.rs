//! Stellar Gate's billing sidecar: the only writer of the account DB.
//!
//! A request flows `routes` → (`extract`: body limit, JSON, API-key auth) → `accounts` for keys
//! and usage, or a provider in `providers/` (one module per provider behind the `Provider`
//! trait) for checkout and webhooks. Providers only translate and never write account state:
//! every subscription change, and every account write a provider needs (an `Effect`), goes
//! through the state machine in `subscription`, which applies it, its audit row and its
//! change-feed row in one transaction. `scheduler` runs Toss renewals and grace-period expiry.
//! `mail` is the e-mail outbox (enqueued in the caller's transaction) and the worker that sends it.
//! `webhooks` is the same for events to customers' endpoints; `alerts` raises threshold alerts
//! (by mail and webhook) from a periodic evaluator.
//! `error` is the one error type, turned into JSON at one boundary.
//!
//! Files:
//! - `lib.rs`: [`run`] (account DB, metrics listener, scheduler, router, bounded drain);
//!   `main.rs` only parses flags and configuration.
//! - `routes/`: the HTTP API (docs/billing-api.md). `mod.rs` is the router; `account`
//!   (`/auth/*`), `checkout` (plans, checkout, portal, cancel), `toss` (Toss's card page,
//!   redirects and confirmation), `webhooks` (the providers' incoming ones), `webhooks_out`
//!   (customers' endpoints, their deliveries, alert thresholds), `pages` (landing, dashboard,
//!   static files);
//!   `tests` drives the router in-process with `oneshot`.
//! - `extract`: extractors whose rejections are our JSON errors; `error`: `ApiError` → JSON.
//! - `accounts`: users, API keys and usage, each write with its change-feed row;
//!   `key_scope`: scoped keys (read-only, agent, expiry, own rate); `usage_history`: the
//!   gateways' per-minute and per-hour counts, read back and pruned.
//! - `identity/`: people — sign-up and sign-in links, sessions, members and roles, audit log,
//!   abuse limits (its `mod.rs` maps the files).
//! - `subscription/`: the state machine. `status` (`Status`, the stored status type), `decide`
//!   (the pure transition function: start reading here), `apply` (the transaction, effects,
//!   the expiry sweep).
//! - `data_rights/`: export and account deletion against the memory engine over HTTP (its
//!   `mod.rs` gives the order of the deletion's steps and why); the routes are `routes/data`.
//! - `webhooks/`: customers' endpoints, the event outbox written in the change's transaction,
//!   the delivery worker (its `mod.rs` maps the files); `alerts/`: thresholds, the pure
//!   `decide` (once per crossing), the evaluator that mails and emits them.
//! - `providers/`: the `Provider` trait and helpers in `mod.rs`; `lemon`, `stripe`, and `toss/`
//!   (`client`: the HTTP API without SQL; `ledger`: `toss_charges`; `charges`: confirmation,
//!   renewals, the reconciler; `webhook`).
//! - `money`: `Money { minor, currency }`, the one conversion to the DB's amount column.
//! - `scheduler`, `settings` (config sections), `crypto` (billing keys at rest), `metrics`,
//!   `state`; `testing` (unit tests only: a temporary SQLite account DB and the state around it).

pub mod accounts;
pub mod alerts;
pub mod crypto;
pub mod data_rights;
pub mod error;
pub mod extract;
pub mod identity;
pub mod key_scope;
pub mod mail;
pub mod metrics;
pub mod money;
pub mod openapi;
pub mod providers;
pub mod routes;
pub mod scheduler;
pub mod settings;
pub mod state;
pub mod subscription;
#[cfg(test)]
mod testing;
pub mod usage_history;
pub mod webhooks;

use settings::Settings;
use state::AppState;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use stellar_common::db::{redact_url, DbOptions};
use stellar_common::Db;
use tokio::net::TcpListener;

/// Warn about accounts whose address differs from another's only by case (listed by the
/// identity migration in `email_case_conflicts`): they cannot be reached by e-mail until an
/// operator resolves them, and nothing was merged.
async fn report_email_conflicts(db: &Db) -> anyhow::Result<()> {
    use stellar_common::with_db;
    let rows: Vec<(uuid::Uuid, uuid::Uuid)> = with_db!(db, p => sqlx::query_as(
        "SELECT user_id, canonical_user_id FROM email_case_conflicts ORDER BY user_id")
        .fetch_all(p).await)?;
    for (user, canonical) in &rows {
        tracing::warn!(user_id = %user, same_address_as = %canonical,
            "account address differs from another account's only by case: not merged, not reachable by e-mail until resolved (table email_case_conflicts)");
    }
    Ok(())
}

/// How long in-flight requests may take to finish after shutdown is signalled.
const DRAIN: Duration = Duration::from_secs(10);

/// Connect and migrate the account DB, start the metrics listener and the scheduler, and serve
/// on `listener` until `shutdown` resolves; then stop accepting and drain (bounded).
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let url = settings.common.account_db_url();
    let db = Db::connect(&url, &DbOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the account DB {}: {e}", redact_url(&url)))?;
    db.migrate()
        .await
        .map_err(|e| anyhow::anyhow!("migrating the account DB failed: {e}"))?;
    report_email_conflicts(&db).await?;

    let mut settings = settings;
    settings.webhooks.ensure_key()?;
    let settings = Arc::new(settings);
    let metrics = Arc::new(metrics::Metrics::new());
    let http = reqwest::Client::builder()
        .user_agent(concat!("stellar-billing/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let providers = Arc::new(providers::Providers::new(
        settings.clone(),
        http,
        db.clone(),
        metrics.clone(),
    ));
    let state = AppState {
        limits: Arc::new(identity::limits::MailLimits::new(
            settings.auth.mail_requests_per_ip_per_hour,
            settings.auth.mails_per_address_per_hour,
        )),
        db: db.clone(),
        settings: settings.clone(),
        metrics: metrics.clone(),
        providers,
    };
    {
        use providers::Provider;
        let p = &state.providers;
        tracing::info!(
            addr = %listener.local_addr()?,
            lemonsqueezy = p.lemon.configured(),
            stripe = p.stripe.configured(),
            toss = p.toss.configured(),
            "billing listening"
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_listener = TcpListener::bind(settings.billing.metrics_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot bind billing.metrics_addr {}: {e}",
                settings.billing.metrics_addr
            )
        })?;
    let metrics_task = tokio::spawn(serve_metrics(
        metrics_listener,
        metrics.clone(),
        db.clone(),
        stop_rx.clone(),
    ));
    let scheduler = tokio::spawn(scheduler::run(state.clone(), stop_rx.clone()));
    let webhook_worker = tokio::spawn(webhooks::run(
        db.clone(),
        settings.webhooks.clone(),
        stop_rx.clone(),
    ));
    let alerts = tokio::spawn(alerts::run(db.clone(), settings.clone(), stop_rx.clone()));
    let mailer = tokio::spawn(mail::run(
        db.clone(),
        settings.mail.clone(),
        settings.mail.transport()?,
        stop_rx.clone(),
    ));

    let app = routes::router(state);
    let mut stop_for_server = stop_rx.clone();
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_for_server.changed().await;
    });
    let server = tokio::spawn(std::future::IntoFuture::into_future(server));
    shutdown.await;
    tracing::info!("shutting down: no new connections; draining");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN, server).await {
        Ok(r) => r??,
        Err(_) => tracing::warn!("drain timed out; closing"),
    }
    let _ = tokio::time::timeout(DRAIN, scheduler).await;
    let _ = tokio::time::timeout(DRAIN, mailer).await;
    let _ = tokio::time::timeout(DRAIN, webhook_worker).await;
    let _ = tokio::time::timeout(DRAIN, alerts).await;
    let _ = metrics_task.await;
    db.close().await;
    Ok(())
}

async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<metrics::Metrics>,
    db: Db,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use axum::routing::get;
    let m = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    m.render(),
                )
            }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let db = db.clone();
                async move {
                    if db.ping().await {
                        (
                            axum::http::StatusCode::OK,
                            axum::Json(serde_json::json!({"status": "ready"})),
                        )
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"detail": "account DB unreachable"})),
                        )
                    }
                }
            }),
        );
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}
