//! Wiring: the pingora server with three services — the proxy, the ops listener, and one
//! maintenance background service that owns the account DB pool (created on its runtime, which
//! lives as long as the process) and runs the loops: change feed, usage write-behind, quota
//! reconciliation, and bucket sweeping.

use crate::auth::AuthCache;
use crate::config::{self, GatewayConfig};
use crate::limits::{Limiter, LocalBuckets, LocalLimiter, Rate, SystemClock};
use crate::metrics;
use crate::ops::OpsApp;
use crate::proxy::{Gateway, Upstreams};
use crate::quota::{self, InFlight};
use crate::redis_limit::RedisLimiter;
use crate::tier_meta::{TierMeta, TierMetas};
use crate::usage::Usage;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use stellar_common::db::DbOptions;
use stellar_common::{CommonConfig, Db, Tiers};

struct Maintenance {
    gw: Arc<GatewaySharedHandles>,
    db_url: String,
}

/// The handles the maintenance loops need (a subset of [`Gateway`]).
struct GatewaySharedHandles {
    cfg: Arc<GatewayConfig>,
    db: Arc<OnceLock<Db>>,
    auth: Arc<AuthCache>,
    limiter: Arc<dyn Limiter>,
    ip_buckets: Arc<LocalBuckets<std::net::IpAddr>>,
    usage: Arc<Usage>,
    inflight: Arc<InFlight>,
    /// The engine as the proxy reaches it (through the TLS bridge for `https://`, with the
    /// upstream's `Host`), for the reconciler.
    engine: quota::EngineAt,
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let g = &self.gw;
        // SQLite serialises writers, and every connection keeps its own page cache and thread:
        // a few are enough, more only cost memory.
        let max_connections = if self.db_url.starts_with("sqlite:") {
            g.cfg
                .db_max_connections
                .min(g.cfg.sqlite_max_connections.max(1))
        } else {
            g.cfg.db_max_connections
        };
        let opts = DbOptions {
            max_connections,
            acquire_timeout: g.cfg.db_timeout(),
            sqlite_cache_kib: Some(g.cfg.sqlite_cache_kib),
        };
        let redacted = stellar_common::db::redact_url(&self.db_url);
        let db = loop {
            match Db::connect(&self.db_url, &opts).await {
                Ok(db) => break db,
                Err(e) => {
                    tracing::warn!(db = %redacted, error = %e, "account DB unreachable, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        if g.cfg.migrate {
            // Billing migrates too; on a race the loser's error is harmless once the winner is done.
            if let Err(e) = db.migrate().await {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e2) = db.migrate().await {
                    tracing::warn!(error = %e, retry_error = %e2, "migrations failed (billing may own them)");
                }
            }
        }
        let Some(reader) = crate::feed::start_reader(&db, &mut shutdown).await else {
            return;
        };
        // Published only now: readiness (and every DB-backed request) waits for the feed cursor.
        let _ = g.db.set(db.clone());
        tracing::info!(db = %redacted, "account DB connected");
        let poll = Duration::from_millis(g.cfg.feed_poll_ms.max(10));
        tokio::spawn(crate::feed::run(
            db.clone(),
            reader,
            g.auth.clone(),
            poll,
            shutdown.clone(),
        ));
        if g.cfg.reconcile_interval_secs > 0 {
            tokio::spawn(reconcile_loop(db.clone(), g.clone(), shutdown.clone()));
        }

        let mut flush = tokio::time::interval(Duration::from_secs(g.cfg.usage_flush_secs.max(1)));
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                // On time, or early when the usage history fills a shard (bounded memory).
                _ = flush.tick() => {
                    if let Err(e) = g.usage.flush(&db).await {
                        tracing::warn!(error = %e, "usage flush failed, kept for the next one");
                    }
                }
                _ = g.usage.2.pressure.notified() => {
                    if let Err(e) = g.usage.flush(&db).await {
                        tracing::warn!(error = %e, "usage flush failed, kept for the next one");
                    }
                }
                _ = sweep.tick() => {
                    g.limiter.sweep();
                    g.ip_buckets.sweep();
                    g.auth.sweep().await;
                    metrics::CACHE_ENTRIES.with_label_values(&["principals"]).set(g.auth.len() as i64);
                    metrics::CACHE_ENTRIES.with_label_values(&["ip_buckets"]).set(g.ip_buckets.len() as i64);
                }
                _ = shutdown.changed() => break,
            }
        }
        // Shutting down: the grace period lets in-flight requests finish; flush what they counted.
        tokio::time::sleep(Duration::from_secs(
            g.cfg.grace_period_secs.saturating_sub(1).min(3),
        ))
        .await;
        if let Err(e) = g.usage.flush(&db).await {
            tracing::warn!(error = %e, "final usage flush failed");
        }
        tracing::info!("maintenance stopped");
    }
}

async fn reconcile_loop(db: Db, g: Arc<GatewaySharedHandles>, mut shutdown: ShutdownWatch) {
    let http = reqwest::Client::builder()
        .timeout(quota::ENGINE_TIMEOUT)
        .build()
        .unwrap_or_default();
    let every = Duration::from_secs(g.cfg.reconcile_interval_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match quota::reconcile_once(
            &db,
            &http,
            &g.engine,
            &g.cfg.upstream_api_key,
            &g.inflight,
            quota::RECONCILE_BATCH,
        )
        .await
        {
            Ok((checked, corrected)) => {
                tracing::debug!(checked, corrected, "quota reconciliation round")
            }
            Err(e) => tracing::warn!(error = %e, "quota reconciliation failed"),
        }
    }
}

/// Start the TLS bridge to an `https://` engine on a thread of its own (its runtime lives as
/// long as the process); returns the loopback address to use as the engine.
fn tls_bridge_thread(
    cfg: &GatewayConfig,
    connect: &str,
    name: &str,
) -> anyhow::Result<std::net::SocketAddr> {
    let ca = (!cfg.engine_ca_file.trim().is_empty())
        .then(|| std::path::PathBuf::from(cfg.engine_ca_file.trim()));
    let tls = crate::tls_bridge::client_config(ca.as_deref())?;
    let timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1)).max(Duration::from_secs(5));
    let (tx, rx) = std::sync::mpsc::channel();
    let (connect, name) = (connect.to_string(), name.to_string());
    std::thread::Builder::new()
        .name("engine-tls".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(anyhow::anyhow!(e)))),
            };
            rt.block_on(async move {
                let r = crate::tls_bridge::start(connect, name, tls, timeout).await;
                let ok = r.is_ok();
                let _ = tx.send(r);
                if ok {
                    std::future::pending::<()>().await;
                }
            });
        })?;
    rx.recv()?
}

/// Build and run the gateway until SIGTERM/SIGINT. Never returns on success (pingora exits).
pub fn run(cfg: GatewayConfig, common: CommonConfig) -> anyhow::Result<()> {
    metrics::init();
    let cfg = Arc::new(cfg);
    let tiers = Arc::new(Tiers::load(&common.tiers_file)?);
    let target = crate::tls_bridge::EngineTarget::parse(&cfg.engine_upstream)
        .map_err(|e| anyhow::anyhow!("gateway.engine_upstream: {e}"))?;
    let engine = match &target.tls_name {
        None => config::resolve("engine_upstream", &target.connect)?,
        Some(name) => tls_bridge_thread(&cfg, &target.connect, name)?,
    };
    let billing = config::resolve("billing_upstream", &cfg.billing_upstream)?;
    let addr = cfg.addr;
    let metrics_addr = cfg.metrics_addr;

    let clock: Arc<SystemClock> = Arc::new(SystemClock::new());
    let limiter: Arc<dyn Limiter> = if cfg.redis_url.trim().is_empty() {
        Arc::new(LocalLimiter(LocalBuckets::new(clock.clone())))
    } else {
        metrics::REDIS_UP.set(1);
        Arc::new(RedisLimiter::new(
            cfg.redis_url.trim(),
            Duration::from_millis(cfg.redis_timeout_ms.max(1)),
            Duration::from_millis(cfg.redis_retry_ms),
            clock.clone(),
        )?)
    };
    let db = Arc::new(OnceLock::new());
    let metas = Arc::new(TierMetas::new(&tiers));
    let auth = Arc::new(AuthCache::new(
        cfg.auth_cache_capacity,
        Duration::from_secs(cfg.auth_cache_ttl_secs.max(1)),
        Duration::from_millis(cfg.negative_cache_ttl_ms),
        tiers.clone(),
        metas.clone(),
        cfg.db_timeout(),
    ));
    let ip_rate = Rate {
        per_minute: cfg.ip_requests_per_minute.max(1),
        burst: cfg.ip_burst.max(1),
    };
    let ip_buckets = Arc::new(LocalBuckets::new(clock));
    let usage = Arc::new(Usage::default());
    let inflight = Arc::new(InFlight::default());

    let gateway = Gateway {
        cfg: cfg.clone(),
        db: db.clone(),
        tiers,
        auth: auth.clone(),
        limiter: limiter.clone(),
        ip_buckets: ip_buckets.clone(),
        ip_rate,
        ip_meta: Arc::new(TierMeta::new("ip", ip_rate)),
        metas,
        upstreams: Upstreams::new(&cfg, engine, target.host.clone(), billing),
        agents: moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(600))
            .build(),
        usage: usage.clone(),
        inflight: inflight.clone(),
        conns: Arc::new(crate::proxy::ConnsPerIp::new(cfg.max_connections_per_ip)),
        cors: crate::cors::Cors::new(&cfg.cors_origins, &cfg.public_url)
            .map_err(|e| anyhow::anyhow!("gateway.cors_origins: {e}"))?,
    };
    let handles = Arc::new(GatewaySharedHandles {
        cfg: cfg.clone(),
        db: db.clone(),
        auth,
        limiter,
        ip_buckets,
        usage,
        inflight,
        engine: quota::EngineAt {
            addr: engine,
            host: target.host.clone(),
        },
    });

    let conf = ServerConf {
        threads: cfg.threads.max(1),
        work_stealing: cfg.work_stealing,
        grace_period_seconds: Some(cfg.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(cfg.shutdown_timeout_secs),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::services::listening::Service::new("gateway".to_string(), gateway);
    proxy.add_tcp(&addr.to_string());
    server.add_service(proxy);

    let mut ops = pingora::services::listening::Service::new(
        "ops".to_string(),
        OpsApp {
            db,
            engine,
            billing,
        },
    );
    ops.add_tcp(&metrics_addr.to_string());
    ops.threads = Some(1);
    server.add_service(ops);

    let db_url = common.account_db_url();
    server.add_service(background_service(
        "maintenance",
        Maintenance {
            gw: handles,
            db_url,
        },
    ));

    tracing::info!(%addr, %metrics_addr, %engine, %billing, limiter = if cfg.redis_url.is_empty() { "local" } else { "redis" }, "gateway starting");
    server.run_forever()
}
