//! Prometheus metrics, registered once in the default registry through pingora-prometheus's
//! re-export (a different `prometheus` major would register into a registry nobody serves).
//! Labels are bounded: route names, status codes, tier names, outcomes — never a key or an
//! account id.

use crate::auth::CacheOutcome;
use crate::routing::Route;
use crate::upstream::UpstreamKind;
use once_cell::sync::Lazy;
use pingora_prometheus::prometheus::{
    register_histogram, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Histogram, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub static REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_requests_total",
        "Requests by route, response status and tier.",
        &["route", "status", "tier"]
    )
    .expect("metric")
});

pub static REQUEST_SECONDS: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "gateway_request_duration_seconds",
        "Whole-request latency, by route.",
        &["route"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric")
});

pub static UPSTREAM_SECONDS: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "gateway_upstream_duration_seconds",
        "Time from sending the request upstream to its response header, by upstream.",
        &["upstream"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("metric")
});

pub static AUTH_CACHE: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_auth_cache_total",
        "Principal lookups by outcome (hit, miss, negative_hit).",
        &["result"]
    )
    .expect("metric")
});

/// Handles of [`AUTH_CACHE`] by [`crate::auth::CacheOutcome`] (hit, miss, negative hit), and of
/// the latency histograms by route / upstream: no label lookup per request.
pub static AUTH_CACHE_BY_OUTCOME: Lazy<[IntCounter; CacheOutcome::ALL.len()]> =
    Lazy::new(|| CacheOutcome::ALL.map(|o| AUTH_CACHE.with_label_values(&[o.label()])));

pub static REQUEST_SECONDS_BY_ROUTE: Lazy<[Histogram; Route::ALL.len()]> =
    Lazy::new(|| Route::ALL.map(|r| REQUEST_SECONDS.with_label_values(&[r.label()])));

pub static UPSTREAM_SECONDS_BY_UPSTREAM: Lazy<[Histogram; UpstreamKind::ALL.len()]> =
    Lazy::new(|| UpstreamKind::ALL.map(|u| UPSTREAM_SECONDS.with_label_values(&[u.label()])));

pub static AUTH_REJECTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_auth_rejections_total",
        "Requests refused by auth, by reason.",
        &["reason"]
    )
    .expect("metric")
});

pub static LIMITER: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_limiter_decisions_total",
        "Rate-limiter decisions by tier (or ip), decision and backend.",
        &["tier", "decision", "backend"]
    )
    .expect("metric")
});

pub static REDIS_UP: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "gateway_limiter_redis_up",
        "1 while the Redis limiter answers, 0 while the local fallback decides."
    )
    .expect("metric")
});

pub static REDIS_ERRORS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_limiter_redis_errors_total",
        "Redis limiter calls that failed, by kind.",
        &["kind"]
    )
    .expect("metric")
});

pub static QUOTA_REJECTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_quota_rejections_total",
        "Requests refused by a quota, by kind and tier.",
        &["kind", "tier"]
    )
    .expect("metric")
});

pub static QUOTA_CORRECTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_quota_reconciliations_total",
        "Quota reconciliation outcomes.",
        &["outcome"]
    )
    .expect("metric")
});

pub static DB_QUERIES: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_db_queries_total",
        "Account DB queries issued by this gateway, by operation.",
        &["op"]
    )
    .expect("metric")
});

pub static DB_ERRORS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_db_errors_total",
        "Account DB calls that failed, by operation.",
        &["op"]
    )
    .expect("metric")
});

pub static FEED_LAG: Lazy<Histogram> = Lazy::new(|| {
    register_histogram!(
        "gateway_change_feed_lag_seconds",
        "Time from a change's created_at in the account DB to its eviction here (the revocation bound).",
        vec![0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 30.0]
    )
    .expect("metric")
});

pub static FEED_EVICTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "gateway_change_feed_events_total",
        "Change-feed rows applied, by kind.",
        &["kind"]
    )
    .expect("metric")
});

pub static CACHE_ENTRIES: Lazy<IntGaugeVec> = Lazy::new(|| {
    register_int_gauge_vec!(
        "gateway_cache_entries",
        "Entries in in-memory tables (principals, buckets).",
        &["table"]
    )
    .expect("metric")
});

pub static INFLIGHT: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!("gateway_inflight_requests", "Requests being processed.").expect("metric")
});

pub static CONNECTIONS_REFUSED: Lazy<IntCounter> = Lazy::new(|| {
    register_int_counter!(
        "gateway_connections_refused_total",
        "Client connections refused because their IP held gateway.max_connections_per_ip."
    )
    .expect("metric")
});

/// Touch every metric so `/metrics` lists them from the start (with zero values where labels
/// are fixed).
pub fn init() {
    Lazy::force(&REQUESTS);
    Lazy::force(&CONNECTIONS_REFUSED);
    Lazy::force(&REQUEST_SECONDS);
    Lazy::force(&UPSTREAM_SECONDS);
    Lazy::force(&AUTH_CACHE_BY_OUTCOME);
    Lazy::force(&AUTH_REJECTIONS);
    Lazy::force(&LIMITER);
    Lazy::force(&REDIS_UP);
    Lazy::force(&REDIS_ERRORS);
    Lazy::force(&QUOTA_REJECTIONS);
    Lazy::force(&QUOTA_CORRECTIONS);
    DB_QUERIES.with_label_values(&["principal"]);
    Lazy::force(&DB_ERRORS);
    Lazy::force(&FEED_LAG);
    Lazy::force(&FEED_EVICTIONS);
    Lazy::force(&CACHE_ENTRIES);
    Lazy::force(&INFLIGHT);
}
