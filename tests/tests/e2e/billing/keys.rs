//! Key rotation and the last-key guard against the real billing binary, on SQLite and
//! PostgreSQL: `POST /auth/api-keys/{id}/rotate` replaces a key in one step (also at the tier's
//! key limit, with both change-feed rows), and `DELETE` of an account's last active key is a 409
//! that changes nothing, so no account can lock itself out.

use serde_json::Value;
use stellar_common::keys::{hash_hex, is_well_formed};
use stellar_tests::both_dbs;
use stellar_tests::harness::{billing_stack, Backend, Stack};
use uuid::Uuid;

const LAST_KEY: &str =
    "This is your last active key; rotate it instead (POST /auth/api-keys/{id}/rotate)";

async fn rotate(s: &Stack, id: &str, key: &str) -> (u16, Value) {
    s.post(
        &format!("/auth/api-keys/{id}/rotate"),
        "",
        &[("X-API-Key", key)],
    )
    .await
}

async fn revoke(s: &Stack, id: &str, key: &str) -> (u16, Value) {
    let r = s
        .http
        .delete(format!("{}/auth/api-keys/{id}", s.billing().url))
        .header("X-API-Key", key)
        .send()
        .await
        .expect("billing answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// (id, name, is_active) of every key of the account, as billing lists them.
async fn keys(s: &Stack, key: &str) -> Vec<(String, Option<String>, bool)> {
    let (st, v) = s.get("/auth/api-keys", Some(key)).await;
    assert_eq!(st, 200, "{v}");
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["name"].as_str().map(str::to_string),
                k["is_active"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn feed_rows(s: &Stack, user: Uuid, hash: &str, kind: &str) -> i64 {
    stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM change_feed WHERE user_id = $1 AND key_hash = $2 AND kind = $3")
        .bind(user).bind(hash).bind(kind).fetch_one(p).await)
    .unwrap()
}

async fn all_feed_rows(s: &Stack, user: Uuid) -> i64 {
    s.count("SELECT COUNT(*) FROM change_feed WHERE user_id = $1", user)
        .await
}

async fn rotation_and_last_key(backend: Backend) {
    let Some(s) = billing_stack(backend, false, &[]).await else {
        return;
    };

    // A free account: one key, and the free tier allows one, so no replacement can be created
    // first.
    let (uid, key) = s.register("carol@example.com").await;
    let list = keys(&s, &key).await;
    assert_eq!(list.len(), 1);
    let old_id = list[0].0.clone();
    let (st, v) = s.create_key(&key, "{}").await;
    assert_eq!(st, 403, "at the free tier's key limit: {v}");

    // Revoking the last key: 409 with the documented message, and nothing changes.
    let feed_before = all_feed_rows(&s, uid).await;
    let (st, v) = revoke(&s, &old_id, &key).await;
    assert_eq!((st, v["detail"].as_str()), (409, Some(LAST_KEY)), "{v}");
    assert_eq!(s.get("/auth/usage", Some(&key)).await.0, 200, "still works");
    assert_eq!(keys(&s, &key).await, list, "no key changed");
    assert_eq!(
        all_feed_rows(&s, uid).await,
        feed_before,
        "no change-feed row"
    );

    // Rotation at the limit: 201, same name, the old key refused at once, the new one works.
    let (st, v) = rotate(&s, &old_id, &key).await;
    assert_eq!(st, 201, "{v}");
    let new_key = v["api_key"].as_str().unwrap().to_string();
    let new_id = v["id"].as_str().unwrap().to_string();
    assert!(is_well_formed(&new_key), "{new_key}");
    assert_ne!(new_key, key);
    assert_ne!(new_id, old_id);
    assert_eq!(v["name"], "Default");
    assert_eq!(v["replaces"].as_str(), Some(old_id.as_str()));
    assert_eq!(v["key_prefix"].as_str(), Some(&new_key[..15]));
    assert!(
        chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap()).is_ok(),
        "{v}"
    );
    let mut fields: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "api_key",
            "created_at",
            "id",
            "key_prefix",
            "name",
            "replaces"
        ]
    );
    assert_eq!(s.get("/auth/usage", Some(&key)).await.0, 401, "old key");
    assert_eq!(s.get("/auth/api-keys", Some(&key)).await.0, 401, "old key");
    let u = s.usage(&new_key).await;
    assert_eq!(
        (u["keys_used"].as_i64(), u["keys_limit"].as_i64()),
        (Some(1), Some(1))
    );
    let list = keys(&s, &new_key).await;
    assert_eq!(
        list,
        [
            (new_id.clone(), Some("Default".to_string()), true),
            (old_id.clone(), Some("Default".to_string()), false),
        ]
    );
    assert_eq!(feed_rows(&s, uid, &hash_hex(&key), "key_revoked").await, 1);
    assert_eq!(
        feed_rows(&s, uid, &hash_hex(&new_key), "key_created").await,
        1
    );

    // The revoked key cannot be rotated again (404), nor revoked into a 409.
    let (st, v) = rotate(&s, &old_id, &new_key).await;
    assert_eq!(st, 404, "{v}");
    assert!(v["detail"].is_string());
    assert_eq!(
        revoke(&s, &old_id, &new_key).await.0,
        200,
        "revoking twice is fine"
    );

    // Someone else's key: 404 for rotate and revoke, and it keeps working.
    let (_, dave) = s.register("dave@example.com").await;
    let (st, v) = rotate(&s, &new_id, &dave).await;
    assert_eq!(st, 404, "not the caller's key: {v}");
    assert_eq!(revoke(&s, &new_id, &dave).await.0, 404);
    assert_eq!(s.get("/auth/usage", Some(&new_key)).await.0, 200);
    assert_eq!(keys(&s, &new_key).await, list);
    assert_eq!(rotate(&s, "not-a-uuid", &dave).await.0, 404);
    assert_eq!(rotate(&s, &Uuid::new_v4().to_string(), &dave).await.0, 404);
    let (st, v) = s
        .post(&format!("/auth/api-keys/{new_id}/rotate"), "", &[])
        .await;
    assert_eq!((st, v["detail"].is_string()), (401, true));
    let (st, v) = s
        .get(&format!("/auth/api-keys/{new_id}/rotate"), Some(&new_key))
        .await;
    assert_eq!((st, v["detail"].is_string()), (405, true));

    // The rotated key is again the last one: still 409.
    let (st, v) = revoke(&s, &new_id, &new_key).await;
    assert_eq!((st, v["detail"].as_str()), (409, Some(LAST_KEY)), "{v}");
    assert_eq!(s.get("/auth/usage", Some(&new_key)).await.0, 200);

    // A named key on a paid tier: rotation keeps the name, authenticated by another key.
    stellar_common::with_db!(&s.adb.db, p => sqlx::query("UPDATE users SET tier = 'pro' WHERE id = $1").bind(uid).execute(p).await.map(|_| ())).unwrap();
    let (st, v) = s.create_key(&new_key, r#"{"name":"ci runner"}"#).await;
    assert_eq!(st, 201, "{v}");
    let (ci_id, ci_key) = (
        v["id"].as_str().unwrap().to_string(),
        v["api_key"].as_str().unwrap().to_string(),
    );
    let (st, v) = rotate(&s, &ci_id, &new_key).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["name"], "ci runner");
    let (ci2_id, ci2_key) = (
        v["id"].as_str().unwrap().to_string(),
        v["api_key"].as_str().unwrap().to_string(),
    );
    assert_eq!(s.get("/auth/usage", Some(&ci_key)).await.0, 401);
    assert_eq!(s.get("/auth/usage", Some(&ci2_key)).await.0, 200);
    assert_eq!(s.usage(&new_key).await["keys_used"].as_i64(), Some(2));

    // With two active keys one can be revoked (even the caller's own), then the other is last.
    let (st, v) = revoke(&s, &new_id, &new_key).await;
    assert_eq!((st, v["revoked"].as_bool()), (200, Some(true)), "{v}");
    let (st, v) = revoke(&s, &ci2_id, &ci2_key).await;
    assert_eq!((st, v["detail"].as_str()), (409, Some(LAST_KEY)), "{v}");
    assert_eq!(s.get("/auth/usage", Some(&ci2_key)).await.0, 200);

    // Concurrent revocations of an account's last two keys: one at most succeeds, and a key
    // always remains.
    let mut survivor = ci2_key;
    for round in 0..5 {
        let (st, v) = s
            .create_key(&survivor, &format!(r#"{{"name":"race {round}"}}"#))
            .await;
        assert_eq!(st, 201, "{v}");
        let other = v["api_key"].as_str().unwrap().to_string();
        let active: Vec<_> = keys(&s, &survivor)
            .await
            .into_iter()
            .filter(|k| k.2)
            .collect();
        assert_eq!(active.len(), 2);
        // Each request is authenticated by the key the other one revokes.
        let (a, b) = (active[0].0.clone(), active[1].0.clone());
        let (ka, kb) = if hash_of_id(&s, &a).await == hash_hex(&survivor) {
            (survivor.clone(), other.clone())
        } else {
            (other.clone(), survivor.clone())
        };
        let (ra, rb) = tokio::join!(revoke(&s, &a, &kb), revoke(&s, &b, &ka));
        // The first to commit wins; the other finds no other active key (409) or, when it is
        // authenticated after that commit, a revoked key (401).
        let ok = [ra.0, rb.0].iter().filter(|c| **c == 200).count();
        assert_eq!(ok, 1, "round {round}: {ra:?}, {rb:?}");
        for (code, v) in [&ra, &rb] {
            assert!([200, 401, 409].contains(code), "round {round}: {code} {v}");
        }
        let left = s
            .count(
                "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND is_active = TRUE",
                uid,
            )
            .await;
        assert_eq!(left, 1, "round {round}: exactly one key is left");
        if s.get("/auth/usage", Some(&survivor)).await.0 != 200 {
            survivor = other;
        }
        assert_eq!(s.get("/auth/usage", Some(&survivor)).await.0, 200);
    }

    let m = s.metrics().await;
    assert!(
        m.contains("stellar_billing_account_events_total{event=\"key_rotated\"} 2"),
        "{m}"
    );
    eprintln!("key rotation test ran on {backend:?}");
}

async fn hash_of_id(s: &Stack, id: &str) -> String {
    let id = Uuid::parse_str(id).unwrap();
    stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar::<_, String>(
        "SELECT key_hash FROM api_keys WHERE id = $1").bind(id).fetch_one(p).await)
    .unwrap()
}

both_dbs!(rotation_and_the_last_key, super::rotation_and_last_key);
