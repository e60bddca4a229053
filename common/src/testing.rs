//! Test support: a fresh PostgreSQL database per test, and a migrated SQLite one.
//!
//! The server is `STELLAR_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! In CI (`CI=true`) an unreachable server fails the test; elsewhere the test prints why and
//! skips its PostgreSQL part.

use sqlx::{Connection, PgConnection};

fn admin_url() -> String {
    std::env::var("STELLAR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Create a new, empty database and return its URL; `None` (with a printed reason) when
/// PostgreSQL is unreachable outside CI. Databases left by earlier runs (older than two hours)
/// are dropped on the way.
pub async fn fresh_postgres_db() -> Option<String> {
    let admin = admin_url();
    let mut conn = match PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) if in_ci() => panic!("PostgreSQL at {admin} is unreachable in CI: {e}"),
        Err(e) => {
            eprintln!("SKIPPED (PostgreSQL part): {admin} is unreachable: {e}");
            return None;
        }
    };
    let now = chrono::Utc::now().timestamp();
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'stellar_t_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for name in stale {
        let ts = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(now);
        if now - ts > 7200 {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let name = format!("stellar_t_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin).expect("admin url");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// Blocking variant for synchronous callers (and callers inside a runtime).
pub fn fresh_postgres_db_blocking() -> Option<String> {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fresh_postgres_db())
    })
    .join()
    .expect("pg helper thread")
}

/// A new, migrated account DB in a SQLite file under the system's temp directory.
pub async fn temp_sqlite_db() -> crate::Db {
    let dir = std::env::temp_dir().join(format!("stellar-test-{}", uuid::Uuid::new_v4()));
    let db = crate::Db::connect(
        &format!("sqlite://{}/a.db", dir.display()),
        &Default::default(),
    )
    .await
    .expect("temp SQLite DB");
    db.migrate().await.expect("migrations");
    db
}
