//! Prometheus metrics, in a registry of the engine's own (never the process-global default), served
//! on a separate listener so scraping never competes with the API port or needs tenant headers.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets from 50 µs to 2.5 s: recall and store live in the lowest few.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

pub struct Metrics {
    pub registry: Registry,
    /// Memories per zone, summed over tenants (refreshed at scrape time).
    pub memories: IntGaugeVec,
    /// Tenants (user, agent spaces) the engine holds.
    pub tenants: IntGauge,
    /// Latency of each operation, from request to response (or of each reorbit pass).
    pub op_seconds: HistogramVec,
    /// HTTP requests by route, method and status.
    pub requests: IntCounterVec,
    /// Time to commit one storage transaction.
    pub db_commit_seconds: Histogram,
    /// Changes per storage transaction (how well group commit batches).
    pub db_batch_ops: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("stellar_engine".into()), None)
            .expect("valid registry prefix");
        let memories = IntGaugeVec::new(
            Opts::new(
                "memories",
                "Memories per zone (0 core .. 4 cloud), all tenants",
            ),
            &["zone"],
        )
        .expect("metric");
        let tenants = IntGauge::new("tenants", "Tenant spaces held in memory").expect("metric");
        let op_seconds = HistogramVec::new(
            HistogramOpts::new("operation_duration_seconds", "Latency of engine operations")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("metric");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric");
        let db_commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "db_commit_duration_seconds",
                "Time to commit one storage transaction",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("metric");
        let db_batch_ops = Histogram::with_opts(
            HistogramOpts::new("db_batch_ops", "Changes committed per storage transaction")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
        )
        .expect("metric");
        for c in [
            Box::new(memories.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tenants.clone()),
            Box::new(op_seconds.clone()),
            Box::new(requests.clone()),
            Box::new(db_commit_seconds.clone()),
            Box::new(db_batch_ops.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for z in 0..crate::model::ZONES {
            memories.with_label_values(&[&z.to_string()]).set(0);
        }
        Metrics {
            registry,
            memories,
            tenants,
            op_seconds,
            requests,
            db_commit_seconds,
            db_batch_ops,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
