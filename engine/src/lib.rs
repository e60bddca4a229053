//! `stellar-engine`: the memory engine, our implementation of the Stellar Memory REST API v1
//! (`shared/engine-api.md`), the default upstream behind the gateway.
//!
//! Layout, in the order a request goes through it:
//! - [`http`]: routes, FastAPI-compatible validation and error shapes, the SSE stream, the
//!   per-request span and metrics middleware.
//! - [`engine`]: tenants (`X-Stellar-User` × `X-Stellar-Agent`), each with a [`space`]; every
//!   change is applied in RAM under the tenant's lock and written through [`storage`] before the
//!   response is sent; change events per tenant.
//! - [`space`]: one tenant's memories, their five zones (ordered sets) and their full-text
//!   [`index`] (BM25). [`model`] holds the scoring, zone and decay rules as pure functions.
//! - [`analysis`]: introspection, confident recall, reasoning, contradictions, self-learning of
//!   a tenant's score weights and the benchmark, as pure functions over memories (the
//!   original's rules); `engine` runs them per tenant and persists the learned weights.
//! - [`storage`]: SQLite (WAL) or PostgreSQL behind a single writer task with group commit.
//! - [`clock`]: injected time, so decay and forgetting are testable; [`metrics`]: Prometheus.
//!
//! At start the engine loads every row into RAM and rebuilds the index, then serves reads
//! without touching the database. A reorbit runs every `reorbit_interval_secs` (and once at
//! start) to rescore, re-lay the zones, decay and forget.

pub mod analysis;
pub mod clock;
pub mod engine;
pub mod http;
pub mod index;
pub mod metrics;
pub mod model;
pub mod space;
pub mod storage;

use clock::{Clock, OffsetClock, SystemClock};
use engine::{Engine, Params};
use metrics::Metrics;
use serde::Deserialize;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The `[engine]` section of `config/stellar.toml` (every key documented there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// API listener; loopback, because the engine trusts the tenant headers.
    pub addr: SocketAddr,
    /// Prometheus `/metrics` listener.
    pub metrics_addr: SocketAddr,
    /// `sqlite://…` or `postgres://…`; empty means `sqlite://{data_dir}/engine.db`.
    pub db_url: String,
    /// Seconds between reorbits.
    pub reorbit_interval_secs: u64,
    /// Seconds of silence on an event stream before a heartbeat is sent.
    pub heartbeat_secs: u64,
    /// Days without recall after which a memory in zone 2 or beyond decays into the cloud.
    pub decay_after_days: f64,
    /// Days without recall after which a decayed memory is forgotten.
    pub forget_after_days: f64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Seconds to let in-flight requests finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Enables `/_test/clock/advance` and `/_test/reorbit` (end-to-end tests only).
    pub test_clock: bool,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db_url: String,
    pub reorbit_interval: Duration,
    pub heartbeat: Duration,
    pub params: Params,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub test_clock: bool,
}

impl Settings {
    /// Check the section and fill in the SQLite default; errors name the key.
    pub fn new(
        cfg: &EngineConfig,
        data_dir: &std::path::Path,
    ) -> Result<Settings, stellar_common::ConfigError> {
        let bad = |key: &str, message: &str| stellar_common::ConfigError::Invalid {
            key: format!("engine.{key}"),
            source_name: "configuration".into(),
            message: message.into(),
        };
        if cfg.reorbit_interval_secs == 0 {
            return Err(bad(
                "reorbit_interval_secs",
                "expected a whole number of seconds ≥ 1",
            ));
        }
        if cfg.heartbeat_secs == 0 {
            return Err(bad(
                "heartbeat_secs",
                "expected a whole number of seconds ≥ 1",
            ));
        }
        if !(cfg.decay_after_days.is_finite() && cfg.decay_after_days >= 0.0) {
            return Err(bad("decay_after_days", "expected a number of days ≥ 0"));
        }
        if !(cfg.forget_after_days.is_finite() && cfg.forget_after_days >= cfg.decay_after_days) {
            return Err(bad(
                "forget_after_days",
                "expected a number of days ≥ decay_after_days",
            ));
        }
        if cfg.max_body_bytes < 1024 {
            return Err(bad("max_body_bytes", "expected a size in bytes ≥ 1024"));
        }
        let db_url = stellar_common::config::default_sqlite_url(&cfg.db_url, data_dir, "engine.db");
        if !(db_url.starts_with("sqlite:")
            || db_url.starts_with("postgres:")
            || db_url.starts_with("postgresql:"))
        {
            return Err(bad(
                "db_url",
                "expected sqlite://path, postgres://… or empty",
            ));
        }
        Ok(Settings {
            db_url,
            reorbit_interval: Duration::from_secs(cfg.reorbit_interval_secs),
            heartbeat: Duration::from_secs(cfg.heartbeat_secs),
            params: Params {
                decay_after_days: cfg.decay_after_days,
                forget_after_days: cfg.forget_after_days,
            },
            max_body_bytes: cfg.max_body_bytes,
            shutdown_grace: Duration::from_secs(cfg.shutdown_grace_secs),
            test_clock: cfg.test_clock,
        })
    }
}

/// Run the engine on the given listeners until `shutdown` resolves, then stop accepting, let
/// in-flight requests finish (within the grace period), commit what is queued and close storage.
pub async fn run(
    settings: Settings,
    api: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let test_clock = settings
        .test_clock
        .then(|| Arc::new(OffsetClock::default()));
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(c) => c.clone(),
        None => Arc::new(SystemClock),
    };
    let storage = storage::Storage::open(&settings.db_url, metrics.clone()).await?;
    let backend = storage.backend();
    let engine = Engine::open(storage, clock, settings.params, metrics.clone()).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let reorbit = tokio::spawn(reorbit_loop(
        engine.clone(),
        settings.reorbit_interval,
        stop_rx.clone(),
    ));
    let state = http::AppState {
        engine: engine.clone(),
        metrics: metrics.clone(),
        max_body_bytes: settings.max_body_bytes,
        heartbeat: settings.heartbeat,
        shutdown: stop_rx.clone(),
        test_clock,
    };
    tracing::info!(
        addr = %api.local_addr()?,
        metrics_addr = %metrics_listener.local_addr()?,
        storage = backend,
        test_clock = settings.test_clock,
        "stellar-engine listening"
    );
    let api_server = axum::serve(api, http::router(state))
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future();
    let metrics_server = axum::serve(
        metrics_listener,
        http::metrics_router(engine.clone(), metrics),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()))
    .into_future();
    let grace = settings.shutdown_grace;
    let deadline = async move {
        stopped(stop_rx).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = async { tokio::try_join!(api_server, metrics_server) } => { r?; }
        _ = deadline => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; dropping remaining connections"),
    }
    let _ = reorbit.await;
    // Everything acknowledged is already committed; this commits whatever is still queued.
    engine.storage().close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn reorbit_loop(engine: Arc<Engine>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // The Ref that wait_for returns is not Send: drop it inside the branch's future.
            _ = async { let _ = stop.wait_for(|v| *v).await; } => return,
            _ = ticker.tick() => {
                match engine.reorbit().await {
                    Ok(t) => tracing::debug!(moved = t.moved, decayed = t.decayed, forgotten = t.forgotten, "reorbit"),
                    Err(e) => tracing::error!(error = %e, "reorbit failed"),
                }
            }
        }
    }
}
