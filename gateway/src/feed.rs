//! The change-feed follower: how a revoked key or a changed tier reaches this gateway within a
//! second. A loop polls [`FeedReader`] every `feed_poll_ms`; on PostgreSQL it also `LISTEN`s on
//! `stellar_change_feed`, whose trigger fires on every insert, as a wake-up (the poll stays the
//! source of truth, so a lost notification only costs latency).

use crate::auth::AuthCache;
use crate::metrics::{DB_ERRORS, DB_QUERIES, FEED_EVICTIONS, FEED_LAG};
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use stellar_common::feed::{Change, FeedReader};
use stellar_common::Db;

/// Apply one change to the cache.
pub async fn apply(cache: &AuthCache, c: &Change) {
    if c.kind == stellar_common::feed::kind::KEY_CREATED {
        if let Some(h) = &c.key_hash {
            cache.forget_unknown_hash(h).await;
        }
    } else {
        if let Some(h) = &c.key_hash {
            cache.evict_hash(h).await;
        }
        if let Some(u) = c.user_id {
            cache.evict_user(u).await;
        }
    }
    let lag = (chrono::Utc::now() - c.created_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(0) as f64
        / 1e6;
    FEED_LAG.observe(lag);
    let kind = match c.kind.as_str() {
        k @ ("key_created" | "key_revoked" | "tier_changed") => k,
        _ => "other",
    };
    FEED_EVICTIONS.with_label_values(&[kind]).inc();
}

/// The reader positioned at the feed's head, retrying until the DB answers. Call before the
/// first principal may be cached (the cache then knows nothing older than the cursor).
pub async fn start_reader(db: &Db, shutdown: &mut ShutdownWatch) -> Option<FeedReader> {
    loop {
        DB_QUERIES.with_label_values(&["feed"]).inc();
        match FeedReader::at_head(db.clone()).await {
            Ok(r) => return Some(r),
            Err(e) => {
                DB_ERRORS.with_label_values(&["feed"]).inc();
                tracing::warn!(error = %e, "change feed: cannot read the head yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Follow the feed until shutdown.
pub async fn run(
    db: Db,
    mut reader: FeedReader,
    cache: Arc<AuthCache>,
    poll: Duration,
    mut shutdown: ShutdownWatch,
) {
    cache.set_feed_ready();
    tracing::info!(cursor = reader.cursor(), "change feed: following");
    let mut listener = None;
    loop {
        if listener.is_none() {
            listener = connect_listener(&db).await;
        }
        DB_QUERIES.with_label_values(&["feed"]).inc();
        match reader.poll().await {
            Ok(changes) => {
                for c in &changes {
                    apply(&cache, c).await;
                }
            }
            Err(e) => {
                DB_ERRORS.with_label_values(&["feed"]).inc();
                tracing::warn!(error = %e, "change feed: poll failed");
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            r = notified => {
                if r.is_err() {
                    listener = None;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn connect_listener(db: &Db) -> Option<sqlx::postgres::PgListener> {
    let Db::Postgres(pool) = db else { return None };
    let mut l = sqlx::postgres::PgListener::connect_with(pool).await.ok()?;
    l.listen("stellar_change_feed").await.ok()?;
    Some(l)
}
