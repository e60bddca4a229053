//! Scoped keys end to end (issue 15), on SQLite and PostgreSQL: keys created at billing
//! through the gateway with a restriction, enforced by the gateway from its cached principal —
//! a read-only key refused on store (an RFC 9457 problem naming the scope), an agent-bound key
//! named upstream and refused on another agent, an expiry effective to the second, a key's own
//! rate below the account's, a scope change effective within 1 s, a scoped key unable to mint an
//! unrestricted one, and rotation with an overlap.

use serde_json::{json, Value};
use std::time::Duration;
use stellar_tests::both_dbs;
use stellar_tests::harness::*;

async fn create_key(gw: &Gateway, with: &str, body: Value) -> Value {
    let r = client()
        .post(gw.url("/auth/api-keys"))
        .header("X-API-Key", with)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "create {body}");
    r.json().await.unwrap()
}

async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    key: &str,
    agent: Option<&str>,
) -> (u16, Value) {
    let c = client();
    let mut r = match method {
        "POST" => c
            .post(gw.url(path))
            .json(&json!({"content": "scoped keys keep secrets", "importance": 0.5})),
        _ => c.get(gw.url(path)),
    }
    .header("X-API-Key", key);
    if let Some(a) = agent {
        r = r.header("X-Stellar-Agent", a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut v: Value = r.json().await.unwrap_or(Value::Null);
    if status == 403 {
        assert_eq!(ct, "application/problem+json", "{v}");
        v["content_type"] = json!(ct);
    }
    (status, v)
}

async fn scoped_keys(backend: Backend) {
    let Some(s) = full_stack(backend, "gw-scoped", &[]).await else {
        return;
    };
    let gw = s.gw();
    let (owner, second, second_id) = register_with_two_keys(gw).await;

    // Read-only: reads pass, a store is a 403 problem naming the scope; nothing is stored.
    let ro = create_key(gw, &owner, json!({"name": "ro", "read_only": true})).await;
    assert_eq!(ro["read_only"], true, "{ro}");
    let ro_key = ro["api_key"].as_str().unwrap().to_string();
    assert_eq!(call(gw, "GET", "/api/v1/stats", &ro_key, None).await.0, 200);
    let (status, v) = call(gw, "POST", "/api/v1/store", &ro_key, None).await;
    assert_eq!(
        (status, v["scope"].as_str()),
        (403, Some("read_only")),
        "{v}"
    );
    assert_eq!(v["status"], 403);
    let (_, stats) = call(gw, "GET", "/api/v1/stats", &owner, None).await;
    assert_eq!(stats["total_memories"], 0, "{stats}");
    // A scoped key reads the account at billing but cannot change it (no key minting).
    let r = client()
        .post(gw.url("/auth/api-keys"))
        .header("X-API-Key", &ro_key)
        .json(&json!({"name": "escape"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client()
        .get(gw.url("/auth/usage"))
        .header("X-API-Key", &ro_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Agent-bound: the gateway names the agent; another agent is refused.
    let bot = create_key(gw, &owner, json!({"name": "bot", "agent": "bot-1"})).await;
    let bot_key = bot["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        call(gw, "POST", "/api/v1/store", &bot_key, None).await.0,
        200
    );
    assert_eq!(
        call(gw, "POST", "/api/v1/store", &bot_key, Some("bot-1"))
            .await
            .0,
        200
    );
    let (status, v) = call(
        gw,
        "GET",
        "/api/v1/recall?q=secrets",
        &bot_key,
        Some("bot-2"),
    )
    .await;
    assert_eq!((status, v["scope"].as_str()), (403, Some("agent")), "{v}");
    let (_, in_bot) = call(gw, "GET", "/api/v1/stats", &owner, Some("bot-1")).await;
    let (_, in_default) = call(gw, "GET", "/api/v1/stats", &owner, None).await;
    assert_eq!(
        (
            in_bot["total_memories"].as_i64(),
            in_default["total_memories"].as_i64()
        ),
        (Some(2), Some(0)),
        "the bound key's memories are in its agent's space"
    );

    // A scope change reaches the gateway within 1 s: the read-only key becomes read-write.
    let r = client()
        .patch(gw.url(&format!("/auth/api-keys/{}", ro["id"].as_str().unwrap())))
        .header("X-API-Key", &owner)
        .json(&json!({"read_only": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let took = eventually(Duration::from_secs(1), || {
        let (gw, k) = (&gw, ro_key.clone());
        async move { call(gw, "POST", "/api/v1/store", &k, None).await.0 == 200 }
    })
    .await
    .expect("a scope change is applied by the gateway within 1 s");
    eprintln!("scope change effective after {took:?}");

    // Its own rate: 2 per minute (burst 2), below the account's 100,000.
    let slow = create_key(
        gw,
        &owner,
        json!({"name": "slow", "requests_per_minute": 2}),
    )
    .await;
    let slow_key = slow["api_key"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(
            call(gw, "GET", "/api/v1/stats", &slow_key, None).await.0,
            200
        );
    }
    assert_eq!(
        call(gw, "GET", "/api/v1/stats", &slow_key, None).await.0,
        429
    );
    assert_eq!(call(gw, "GET", "/api/v1/stats", &owner, None).await.0, 200);

    // (Five keys is the tier's limit.)
    revoke_through_billing(gw, slow["id"].as_str().unwrap(), &owner).await;

    // Expiry: working until its second, refused from it on (checked on every request).
    let soon = create_key(gw, &owner, json!({"name": "soon", "expires_in_secs": 2})).await;
    let soon_key = soon["api_key"].as_str().unwrap().to_string();
    let expires: chrono::DateTime<chrono::Utc> =
        soon["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        call(gw, "GET", "/api/v1/stats", &soon_key, None).await.0,
        200
    );
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1000)).await;
    let (status, v) = call(gw, "GET", "/api/v1/stats", &soon_key, None).await;
    assert_eq!(
        (status, v["detail"].as_str()),
        (401, Some("API key expired"))
    );

    // Rotation with an overlap: both keys work, then only the new one.
    let r = client()
        .post(gw.url(&format!("/auth/api-keys/{second_id}/rotate")))
        .header("X-API-Key", &owner)
        .json(&json!({"overlap_secs": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rotated: Value = r.json().await.unwrap();
    let new_key = rotated["api_key"].as_str().unwrap().to_string();
    assert_eq!(
        call(gw, "GET", "/api/v1/stats", &new_key, None).await.0,
        200
    );
    assert_eq!(call(gw, "GET", "/api/v1/stats", &second, None).await.0, 200);
    eventually(Duration::from_secs(5), || {
        let (gw, k) = (&gw, second.clone());
        async move { call(gw, "GET", "/api/v1/stats", &k, None).await.0 == 401 }
    })
    .await
    .expect("the old key stops at the end of the overlap");
    assert_eq!(
        call(gw, "GET", "/api/v1/stats", &new_key, None).await.0,
        200
    );
}

both_dbs!(scoped_keys_end_to_end, super::scoped_keys);
