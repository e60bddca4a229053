//! The read side of the account DB that the gateway needs on a cache miss.

use crate::db::Db;
use crate::with_db;
use uuid::Uuid;

/// Who a key belongs to. Cached by the gateway under the key's hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Principal {
    pub user_id: Uuid,
    pub key_id: Uuid,
    /// Tier name as stored; map it with [`crate::Tiers::get_or_default`].
    pub tier: String,
    /// The key's own restrictions (scoped keys); all empty for an unrestricted key.
    #[sqlx(flatten)]
    pub scope: KeyScope,
}

/// What a key may do beyond its account's limits: read-only, one agent, an expiry, its own
/// requests per minute. The gateway enforces it from the cached principal; billing too.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct KeyScope {
    pub read_only: bool,
    pub agent: Option<String>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub requests_per_minute: Option<i32>,
}

impl KeyScope {
    pub fn is_unrestricted(&self) -> bool {
        *self == KeyScope::default()
    }

    /// Whether the key has expired at `now`.
    pub fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// An agent name (`X-Stellar-Agent`, a key's bound agent): 1–64 of `A-Z a-z 0-9 . _ : -`.
pub fn valid_agent(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 64
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

const PRINCIPAL_SQL: &str = "SELECT k.user_id AS user_id, k.id AS key_id, u.tier AS tier, \
     k.read_only AS read_only, k.agent AS agent, k.expires_at AS expires_at, \
     k.requests_per_minute AS requests_per_minute \
     FROM api_keys k JOIN users u ON u.id = k.user_id \
     WHERE k.key_hash = $1 AND k.is_active = TRUE";

/// The active key with this SHA-256 hex hash, if any. One indexed query.
pub async fn principal_by_hash(db: &Db, key_hash_hex: &str) -> sqlx::Result<Option<Principal>> {
    with_db!(db, p => sqlx::query_as::<_, Principal>(PRINCIPAL_SQL).bind(key_hash_hex).fetch_optional(p).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    async fn sqlite() -> Db {
        crate::testing::temp_sqlite_db().await
    }

    async fn insert_user_and_key(db: &Db, tier: &str, key: &str, active: bool) -> (Uuid, Uuid) {
        let (uid, kid, now) = (Uuid::new_v4(), Uuid::new_v4(), chrono::Utc::now());
        with_db!(db, p => {
            sqlx::query("INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
                .bind(uid).bind(format!("{uid}@example.com")).bind(tier).bind(now).execute(p).await.unwrap();
            sqlx::query("INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, is_active, created_at) VALUES ($1, $2, $3, $4, 'Default', $5, $6)")
                .bind(kid).bind(uid).bind(keys::hash_hex(key)).bind(&key[..15]).bind(active).bind(now).execute(p).await.unwrap();
        });
        (uid, kid)
    }

    async fn lookup_roundtrip(db: Db) {
        let k = keys::generate();
        let (uid, kid) = insert_user_and_key(&db, "pro", &k.plaintext, true).await;
        let p = principal_by_hash(&db, &k.hash).await.unwrap().unwrap();
        assert_eq!(
            p,
            Principal {
                user_id: uid,
                key_id: kid,
                tier: "pro".into(),
                scope: KeyScope::default(),
            }
        );
        assert!(
            principal_by_hash(&db, &keys::hash_hex("sk-stellar-unknown"))
                .await
                .unwrap()
                .is_none()
        );
        let revoked = keys::generate();
        insert_user_and_key(&db, "free", &revoked.plaintext, false).await;
        assert!(principal_by_hash(&db, &revoked.hash)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn principal_lookup_sqlite() {
        lookup_roundtrip(sqlite().await).await;
    }

    #[tokio::test]
    async fn principal_lookup_postgres() {
        let Some(url) = crate::testing::fresh_postgres_db().await else {
            return;
        };
        let db = Db::connect(&url, &Default::default()).await.unwrap();
        db.migrate().await.unwrap();
        lookup_roundtrip(db).await;
    }

    /// A database created by the original Python system: our migrations apply on top of it and
    /// a key row written the original way (SHA-256 hex in api_keys.key_hash) is found.
    #[tokio::test]
    async fn migrations_apply_on_the_original_schema() {
        let Some(url) = crate::testing::fresh_postgres_db().await else {
            return;
        };
        let Db::Postgres(pg) = Db::connect(&url, &Default::default()).await.unwrap() else {
            unreachable!()
        };
        sqlx::raw_sql(include_str!("../tests/fixtures/original_schema.sql"))
            .execute(&pg)
            .await
            .unwrap();
        let key = "sk-stellar-00112233445566778899aabbccddeeff";
        // Exactly as the original server wrote rows: ids by the DB default, hashlib.sha256 hex.
        let uid: Uuid = sqlx::query_scalar(
            "INSERT INTO users (email, tier) VALUES ('old@example.com', 'team') RETURNING id",
        )
        .fetch_one(&pg)
        .await
        .unwrap();
        sqlx::query("INSERT INTO api_keys (user_id, key_hash, key_prefix, name) VALUES ($1, $2, 'sk-stellar-0011', 'Default')")
            .bind(uid).bind(keys::hash_hex(key)).execute(&pg).await.unwrap();
        sqlx::query("INSERT INTO subscription_events (user_id, provider, event_type, tier, amount_cents, raw_data) VALUES ($1, 'stripe', 'created', 'team', 9900, '{}'::jsonb)")
            .bind(uid).execute(&pg).await.unwrap();

        let db = Db::Postgres(pg.clone());
        db.migrate().await.unwrap();
        db.migrate().await.unwrap(); // idempotent
        let p = principal_by_hash(&db, &keys::hash_hex(key))
            .await
            .unwrap()
            .expect("original key found");
        assert_eq!((p.user_id, p.tier.as_str()), (uid, "team"));
        // Old rows got the new columns' defaults; the old data is intact.
        let (status, events): (String, i64) = sqlx::query_as(
            "SELECT u.subscription_status, (SELECT count(*) FROM subscription_events e WHERE e.user_id = u.id) FROM users u WHERE u.id = $1",
        ).bind(uid).fetch_one(&pg).await.unwrap();
        assert_eq!((status.as_str(), events), ("none", 1));
    }

    /// Rows whose addresses differ only by case (the original system compared them as typed):
    /// the identity migration lower-cases the rest, keeps one of each group (the one already
    /// lower-case, else the oldest), lists the others in email_case_conflicts untouched, and
    /// gives every account its owner's membership.
    async fn case_duplicates_are_reported_not_merged(db: &Db, insert: &str) {
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let rows = [
            (ids[0], "Bob@Example.com", "2024-01-01T00:00:00Z"),
            (ids[1], "bob@example.com", "2024-02-01T00:00:00Z"),
            (ids[2], "CAROL@Example.com", "2024-01-01T00:00:00Z"),
            (ids[3], "Dan@Example.com ", "2024-01-01T00:00:00Z"),
        ];
        for (id, email, at) in rows {
            let at: chrono::DateTime<chrono::Utc> = at.parse().unwrap();
            crate::with_db!(db, p => { sqlx::query(insert).bind(id).bind(email).bind(at).execute(p).await.unwrap(); });
        }
        db.migrate().await.unwrap();
        let conflicts: Vec<(Uuid, String, Uuid)> = crate::with_db!(db, p => sqlx::query_as(
            "SELECT user_id, email, canonical_user_id FROM email_case_conflicts").fetch_all(p).await.unwrap());
        assert_eq!(
            conflicts,
            vec![(ids[0], "Bob@Example.com".to_string(), ids[1])]
        );
        let mut emails: Vec<String> = crate::with_db!(db, p => sqlx::query_scalar(
            "SELECT email FROM users ORDER BY email").fetch_all(p).await.unwrap());
        emails.sort();
        assert_eq!(
            emails,
            [
                "Bob@Example.com",
                "bob@example.com",
                "carol@example.com",
                "dan@example.com"
            ]
        );
        let owners: i64 = crate::with_db!(db, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM members WHERE role = 'owner' AND id = account_id").fetch_one(p).await.unwrap());
        assert_eq!(owners, 4);
        db.migrate().await.unwrap(); // idempotent
    }

    #[tokio::test]
    async fn identity_migration_on_the_original_schema() {
        let Some(url) = crate::testing::fresh_postgres_db().await else {
            return;
        };
        let db = Db::connect(&url, &Default::default()).await.unwrap();
        let Db::Postgres(pg) = &db else {
            unreachable!()
        };
        sqlx::raw_sql(include_str!("../tests/fixtures/original_schema.sql"))
            .execute(pg)
            .await
            .unwrap();
        case_duplicates_are_reported_not_merged(
            &db,
            "INSERT INTO users (id, email, tier, created_at) VALUES ($1, $2, 'free', $3)",
        )
        .await;
    }

    #[tokio::test]
    async fn identity_migration_on_sqlite_accounts_before_it() {
        // The SQLite migrations before the identity one, applied from a copy of their files.
        let dir = std::env::temp_dir().join(format!("stellar-mig-{}", Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("m")).unwrap();
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite");
        for f in std::fs::read_dir(src).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if name.as_str() < "0004" {
                std::fs::copy(&f, dir.join("m").join(&name)).unwrap();
            }
        }
        let url = format!("sqlite://{}", dir.join("a.db").display());
        let db = Db::connect(&url, &Default::default()).await.unwrap();
        let Db::Sqlite(p) = &db else { unreachable!() };
        sqlx::migrate::Migrator::new(dir.join("m"))
            .await
            .unwrap()
            .run(p)
            .await
            .unwrap();
        case_duplicates_are_reported_not_merged(
            &db,
            "INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, 'free', $3, $3)",
        )
        .await;
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn migrations_apply_on_an_empty_postgres_twice() {
        let Some(url) = crate::testing::fresh_postgres_db().await else {
            return;
        };
        let db = Db::connect(&url, &Default::default()).await.unwrap();
        db.migrate().await.unwrap();
        db.migrate().await.unwrap();
        assert!(db.ping().await);
    }
}
