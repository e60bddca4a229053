//! The account DB: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are written once and run on either back-end through [`with_db!`], which expands the
//! same body for each pool type; SQL text sticks to what both accept (`$1` placeholders numbered
//! in order of first appearance, `RETURNING`, `ON CONFLICT`, timestamps bound from Rust).

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// A pool on one of the two back-ends.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run `$body` with `$pool` bound to the concrete pool of `$db`.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    /// How long a query may wait for a connection: small, so an outage is a fast error.
    pub acquire_timeout: Duration,
    /// SQLite only: each connection's page cache in KiB (`PRAGMA cache_size = -N`); `None`
    /// keeps SQLite's default (2 MiB). The OS page cache holds the file anyway, so a reader
    /// with many connections can keep this small.
    pub sqlite_cache_kib: Option<u32>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(2),
            sqlite_cache_kib: None,
        }
    }
}

impl Db {
    /// Connect to `url` (`sqlite://path`, `sqlite::memory:`, `postgres://…`). SQLite files and
    /// their directory are created if missing.
    pub async fn connect(url: &str, opts: &DbOptions) -> anyhow::Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let co = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(co)
                .await?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let co = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                // WAL lets the gateway read while billing writes; NORMAL is durable against a
                // process crash (the OS has the pages) and only a power cut can lose the tail.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let co = match opts.sqlite_cache_kib {
                Some(kib) => co.pragma("cache_size", format!("-{}", kib.max(1))),
                None => co,
            };
            if let Some(dir) = co.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(co)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            anyhow::bail!(
                "unsupported database URL (expected sqlite://… or postgres://…): {}",
                redact_url(url)
            )
        }
    }

    /// Apply the embedded migrations for this back-end (idempotent).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("../migrations/sqlite").run(p).await?,
            Db::Postgres(p) => sqlx::migrate!("../migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> bool {
        with_db!(self, p => sqlx::query("SELECT 1").execute(p).await.is_ok())
    }

    pub async fn close(&self) {
        with_db!(self, p => p.close().await)
    }
}

/// A database URL with any password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            super::redact_url("sqlite://./data/a.db"),
            "sqlite://./data/a.db"
        );
    }
}
