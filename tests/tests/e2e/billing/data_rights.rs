//! Data rights end to end (issue 15), on SQLite and PostgreSQL: the real engine, billing (with
//! `billing.engine_url` pointing at that engine) and a gateway in front of both. An account
//! stores memories in its default space and under two agents through the gateway — more than a
//! timeline page each, some longer than the 200 characters `GET /api/v1/memories` shows —, exports
//! them through the gateway (every memory exactly once, full content, its agent), and deletes
//! itself: a member may not (403), a wrong confirmation changes nothing (422), and afterwards its
//! keys are refused by the gateway, the engine holds nothing for it, its rows are gone and the
//! audit row `account_deleted` stays. docs/billing-api.md, "Your data".

use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use stellar_common::{keys, with_db};
use stellar_tests::both_dbs;
use stellar_tests::harness::*;
use uuid::Uuid;

/// What was stored: id → (agent, content).
type Stored = HashMap<String, (Option<String>, String)>;

/// Store `n` memories under `agent` through the gateway; every fifth is 450+ characters long.
/// The first alone (it registers the agent: concurrent first uses may each take a slot of the
/// agent limit for a moment), the rest 16 at a time.
async fn store(gw: &Gateway, key: &str, agent: Option<&str>, n: usize, into: &mut Stored) {
    let c = client();
    let one = |i: usize| {
        let content = if i.is_multiple_of(5) {
            format!(
                "{agent:?} #{i} — 별빛 {}",
                "a long memory of stars ".repeat(20)
            )
        } else {
            format!("{agent:?} #{i}")
        };
        let mut r = c
            .post(gw.url("/api/v1/store"))
            .header("X-API-Key", key)
            .json(&json!({"content": content, "importance": (i % 10) as f64 / 10.0}));
        if let Some(a) = agent {
            r = r.header("X-Stellar-Agent", a);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            assert_eq!(status, 200, "store: {v}");
            (v["id"].as_str().unwrap().to_string(), content)
        }
    };
    let mut results = vec![one(0).await];
    results.extend(
        futures::stream::iter(1..n)
            .map(one)
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await,
    );
    for (id, content) in results {
        into.insert(id, (agent.map(str::to_string), content));
    }
}

/// The engine's count for `user` in `agent`'s space, asked directly.
async fn engine_total(engine: &Engine, user: Uuid, agent: Option<&str>) -> i64 {
    let mut r = client()
        .get(format!("http://{}/api/v1/stats", engine.addr))
        .header("X-Stellar-User", user.to_string());
    if let Some(a) = agent {
        r = r.header("X-Stellar-Agent", a);
    }
    r.send().await.unwrap().json::<Value>().await.unwrap()["total_memories"]
        .as_i64()
        .unwrap()
}

/// A member of `account` (written as an accepted invitation leaves it) and a key they created.
async fn add_member_with_key(adb: &AccountDb, account: Uuid) -> String {
    let (member, key_id, k) = (Uuid::new_v4(), Uuid::new_v4(), keys::generate());
    let email = format!("{}@member.example", member.simple());
    let now = Utc::now();
    with_db!(&adb.db, p => {
        sqlx::query("INSERT INTO members (id, account_id, email, role, created_at) VALUES ($1, $2, $3, 'member', $4)")
            .bind(member).bind(account).bind(&email).bind(now).execute(p).await.unwrap();
        sqlx::query("INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, is_active, created_at, created_by, created_by_email) \
                     VALUES ($1, $2, $3, $4, 'member', TRUE, $5, $6, $7)")
            .bind(key_id).bind(account).bind(&k.hash).bind(&k.display_prefix).bind(now).bind(member).bind(&email)
            .execute(p).await.unwrap();
    });
    k.plaintext
}

async fn count(adb: &AccountDb, sql: &str, account: Uuid) -> i64 {
    with_db!(&adb.db, p => sqlx::query_scalar::<_, i64>(sql).bind(account).fetch_one(p).await)
        .unwrap()
}

/// `GET /auth/export` through the gateway with `key`.
async fn export(gw: &Gateway, key: &str) -> reqwest::Response {
    client()
        .get(gw.url("/auth/export"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
}

/// `POST /auth/register` through the gateway: 201 and its answer.
async fn register(gw: &Gateway, email: &str) -> Value {
    let r = client()
        .post(gw.url("/auth/register"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register {email}");
    r.json().await.unwrap()
}

async fn delete_account(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    client()
        .delete(gw.url("/auth/account"))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn stats_status(gw: &Gateway, key: &str) -> u16 {
    client()
        .get(gw.url("/api/v1/stats"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn export_then_delete(backend: Backend) {
    let Some(s) = full_stack(backend, "data-rights", &[]).await else {
        return;
    };
    let (adb, engine, gw) = (&s.adb, s.engine(), s.gw());
    let c = client();

    // An account, and memories in its default space and under two agents.
    let email = format!("{}@data-rights.example", Uuid::new_v4().simple());
    let v = register(gw, &email).await;
    let key = v["api_key"].as_str().unwrap().to_string();
    let account: Uuid = v["user_id"].as_str().unwrap().parse().unwrap();
    let mut stored = Stored::new();
    store(gw, &key, None, 30, &mut stored).await;
    store(gw, &key, Some("alpha"), 250, &mut stored).await;
    store(gw, &key, Some("beta"), 120, &mut stored).await;
    assert_eq!(stored.len(), 400);

    // The export, through the gateway: every memory exactly once, in full, with its agent.
    let r = export(gw, &key).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "application/x-ndjson");
    let disposition = h["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"stellar-memories-")
            && disposition.ends_with(".ndjson\""),
        "{disposition}"
    );
    let body = r.text().await.unwrap();
    assert!(body.ends_with('\n'));
    let mut seen = HashMap::new();
    for line in body.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("error").is_none(), "the export failed: {v}");
        let id = v["id"].as_str().expect("every line has an id").to_string();
        let (agent, content) = stored.get(&id).unwrap_or_else(|| panic!("not stored: {v}"));
        assert_eq!(v["agent"].as_str(), agent.as_deref(), "{v}");
        assert_eq!(
            v["content"].as_str(),
            Some(content.as_str()),
            "full content"
        );
        assert!(v["zone"].is_u64() && v["importance"].is_f64() && v["created_at"].is_f64());
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 400, "every memory");
    assert!(seen.values().all(|n| *n == 1), "each exactly once");
    assert!(
        stored
            .values()
            .filter(|(_, c)| c.chars().count() > 200)
            .count()
            >= 80,
        "long memories were part of it"
    );

    // Who may: a member may neither export nor delete; an agent-bound key may not export.
    let member_key = add_member_with_key(adb, account).await;
    let r = export(gw, &member_key).await;
    assert_eq!(r.status(), 403);
    let r = delete_account(gw, &member_key, json!({ "confirm": email })).await;
    assert_eq!(r.status(), 403);
    let r = c
        .post(gw.url("/auth/api-keys"))
        .header("X-API-Key", &key)
        .json(&json!({"name": "alpha only", "agent": "alpha"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let bound_key = r.json::<Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = export(gw, &bound_key).await;
    assert_eq!(r.status(), 403);

    // A wrong confirmation changes nothing.
    for body in [
        json!({"confirm": "someone-else@data-rights.example"}),
        json!({}),
    ] {
        let r = delete_account(gw, &key, body).await;
        assert_eq!(r.status(), 422);
        assert!(r.json::<Value>().await.unwrap()["detail"].is_string());
    }
    let users = "SELECT COUNT(*) FROM users WHERE id = $1";
    assert_eq!(count(adb, users, account).await, 1);
    assert_eq!(stats_status(gw, &key).await, 200);
    assert_eq!(engine_total(engine, account, Some("alpha")).await, 250);

    // The deletion.
    let r = delete_account(gw, &key, json!({ "confirm": email.to_uppercase() })).await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("stellar_session=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"deleted": true, "memories_deleted": 400})
    );

    // Its keys are refused by the gateway within a second.
    for k in [&key, &member_key, &bound_key] {
        let took = eventually(Duration::from_secs(1), || async {
            stats_status(gw, k).await == 401
        })
        .await;
        assert!(took.is_some(), "a key still works after the deletion");
    }
    // The engine holds nothing for it.
    for agent in [None, Some("alpha"), Some("beta")] {
        assert_eq!(engine_total(engine, account, agent).await, 0, "{agent:?}");
    }
    // Its rows are gone; the audit row stays.
    assert_eq!(count(adb, users, account).await, 0);
    for sql in [
        "SELECT COUNT(*) FROM api_keys WHERE user_id = $1",
        "SELECT COUNT(*) FROM members WHERE account_id = $1",
        "SELECT COUNT(*) FROM account_agents WHERE user_id = $1",
        "SELECT COUNT(*) FROM account_usage WHERE user_id = $1",
    ] {
        assert_eq!(count(adb, sql, account).await, 0, "{sql}");
    }
    let audit: Vec<(String, Option<String>)> = with_db!(&adb.db, p => sqlx::query_as(
        "SELECT actor, target FROM audit_events WHERE account_id = $1 AND action = 'account_deleted'")
        .bind(account).fetch_all(p).await)
    .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].0.starts_with("key:"), "{audit:?}");
    assert_eq!(audit[0].1.as_deref(), Some("memories_deleted:400"));

    // The address is free again.
    assert!(register(gw, &email).await["api_key"].is_string());
}

both_dbs!(export_then_delete_leaves_nothing, super::export_then_delete);
