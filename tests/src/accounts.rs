//! Account DB fixtures for end-to-end tests: create accounts and keys, revoke keys and change
//! tiers by writing the account DB exactly as billing does (the row change plus a change-feed
//! row in one transaction), so gateway tests do not depend on billing's HTTP API.

use chrono::Utc;
use stellar_common::feed::{kind, APPEND_SQL};
use stellar_common::{keys, with_db, Db};
use uuid::Uuid;

/// An account with one key.
#[derive(Debug, Clone)]
pub struct TestAccount {
    pub user_id: Uuid,
    pub key_id: Uuid,
    /// The plaintext key (what clients send).
    pub key: String,
    pub key_hash: String,
}

/// Connect to the account DB and apply the migrations (billing would have).
pub async fn open(url: &str) -> Db {
    let db = Db::connect(url, &Default::default())
        .await
        .expect("connect account DB");
    db.migrate().await.expect("migrate account DB");
    db
}

/// A new user on `tier` with one active key and a zeroed usage row.
pub async fn create_account(db: &Db, tier: &str) -> TestAccount {
    let user_id = Uuid::new_v4();
    let now = Utc::now();
    with_db!(db, p => {
        sqlx::query("INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(user_id).bind(format!("{}@test.example", user_id.simple())).bind(tier).bind(now)
            .execute(p).await.expect("insert user");
        sqlx::query("INSERT INTO account_usage (user_id, memories_used, agents_used) VALUES ($1, 0, 0)")
            .bind(user_id).execute(p).await.expect("insert usage");
    });
    let (key_id, key) = add_key(db, user_id).await;
    TestAccount {
        user_id,
        key_id,
        key_hash: keys::hash_hex(&key),
        key,
    }
}

/// Another active key for `user`; returns (key id, plaintext).
pub async fn add_key(db: &Db, user: Uuid) -> (Uuid, String) {
    let k = keys::generate();
    let id = Uuid::new_v4();
    with_db!(db, p => {
        let mut tx = p.begin().await.expect("begin");
        sqlx::query("INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, is_active, created_at) VALUES ($1, $2, $3, $4, 'Default', TRUE, $5)")
            .bind(id).bind(user).bind(&k.hash).bind(&k.display_prefix).bind(Utc::now())
            .execute(&mut *tx).await.expect("insert key");
        sqlx::query(APPEND_SQL).bind(Some(user)).bind(Some(k.hash.as_str())).bind(kind::KEY_CREATED).bind(Utc::now())
            .execute(&mut *tx).await.expect("feed");
        tx.commit().await.expect("commit");
    });
    (id, k.plaintext)
}

/// Many accounts at once (one key each), for the benchmark's cache-size run. No feed rows.
pub async fn create_many(db: &Db, tier: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let now = Utc::now();
    for chunk in 0..n.div_ceil(1000) {
        let count = (n - chunk * 1000).min(1000);
        with_db!(db, p => {
            let mut tx = p.begin().await.expect("begin");
            for _ in 0..count {
                let (u, id, k) = (Uuid::new_v4(), Uuid::new_v4(), keys::generate());
                sqlx::query("INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
                    .bind(u).bind(format!("{}@bench.example", u.simple())).bind(tier).bind(now).execute(&mut *tx).await.expect("user");
                sqlx::query("INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, is_active, created_at) VALUES ($1, $2, $3, $4, 'Default', TRUE, $5)")
                    .bind(id).bind(u).bind(&k.hash).bind(&k.display_prefix).bind(now).execute(&mut *tx).await.expect("key");
                out.push(k.plaintext);
            }
            tx.commit().await.expect("commit");
        });
    }
    out
}

/// Deactivate a key, as billing's `DELETE /auth/api-keys/{id}` does.
pub async fn revoke_key(db: &Db, key_id: Uuid) {
    with_db!(db, p => {
        let mut tx = p.begin().await.expect("begin");
        let (user, hash): (Uuid, String) = sqlx::query_as("SELECT user_id, key_hash FROM api_keys WHERE id = $1")
            .bind(key_id).fetch_one(&mut *tx).await.expect("key row");
        sqlx::query("UPDATE api_keys SET is_active = FALSE WHERE id = $1").bind(key_id).execute(&mut *tx).await.expect("revoke");
        sqlx::query(APPEND_SQL).bind(Some(user)).bind(Some(hash.as_str())).bind(kind::KEY_REVOKED).bind(Utc::now())
            .execute(&mut *tx).await.expect("feed");
        tx.commit().await.expect("commit");
    });
}

/// Move an account to `tier`, as a webhook or a lapsed subscription does.
pub async fn set_tier(db: &Db, user: Uuid, tier: &str) {
    with_db!(db, p => {
        let mut tx = p.begin().await.expect("begin");
        sqlx::query("UPDATE users SET tier = $1, updated_at = $2 WHERE id = $3").bind(tier).bind(Utc::now()).bind(user)
            .execute(&mut *tx).await.expect("tier");
        sqlx::query(APPEND_SQL).bind(Some(user)).bind(None::<String>).bind(kind::TIER_CHANGED).bind(Utc::now())
            .execute(&mut *tx).await.expect("feed");
        tx.commit().await.expect("commit");
    });
}

/// `account_usage.memories_used`.
pub async fn memories_used(db: &Db, user: Uuid) -> i64 {
    with_db!(db, p => sqlx::query_scalar::<_, i64>("SELECT memories_used FROM account_usage WHERE user_id = $1")
        .bind(user).fetch_optional(p).await.expect("usage")).unwrap_or(0)
}

/// Overwrite `account_usage.memories_used` (to simulate drift).
pub async fn set_memories_used(db: &Db, user: Uuid, n: i64) {
    with_db!(db, p => sqlx::query("UPDATE account_usage SET memories_used = $1 WHERE user_id = $2").bind(n).bind(user)
        .execute(p).await.map(|_| ()).expect("usage"));
}

/// Requests recorded in `usage_hourly` for `user`.
pub async fn hourly_requests(db: &Db, user: Uuid) -> i64 {
    with_db!(db, p => sqlx::query_scalar::<_, i64>("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM usage_hourly WHERE user_id = $1")
        .bind(user).fetch_one(p).await.expect("hourly"))
}

/// `api_keys.last_used_at` is set.
pub async fn key_last_used_set(db: &Db, key_id: Uuid) -> bool {
    with_db!(db, p => sqlx::query_scalar::<_, Option<chrono::DateTime<Utc>>>("SELECT last_used_at FROM api_keys WHERE id = $1")
        .bind(key_id).fetch_one(p).await.expect("key")).is_some()
}
