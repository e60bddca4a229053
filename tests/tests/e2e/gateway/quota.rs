//! Memory quota and agent limit end to end, on the real engine: exact under 50 concurrent
//! stores, forget frees a slot, failed stores release, agents bounded, downgrade refuses stores
//! but keeps reads, and reconciliation corrects drift.

use std::time::Duration;
use stellar_tests::accounts;
use stellar_tests::both_dbs;
use stellar_tests::harness::*;

const LIMIT: i64 = 60;

fn tiers() -> String {
    format!(
        "[free]\nmax_memories = {LIMIT}\nmax_agents = 2\nrequests_per_minute = 100000\nburst = 100000\nmax_api_keys = 1\nprice_usd = 0\nprice_krw = 0\n\n\
         [pro]\nmax_memories = 1000\nmax_agents = 5\nrequests_per_minute = 100000\nburst = 100000\nmax_api_keys = 5\nprice_usd = 29\nprice_krw = 39000\n"
    )
}

async fn store(
    c: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    agent: Option<&str>,
    text: &str,
) -> reqwest::Response {
    let mut r = c
        .post(gw.url("/api/v1/store"))
        .header("X-API-Key", key)
        .json(&serde_json::json!({"content": text}));
    if let Some(a) = agent {
        r = r.header("X-Stellar-Agent", a);
    }
    r.send().await.unwrap()
}

async fn quota(backend: Backend) {
    let Some(s) = stack(backend, "gw-quota", &tiers(), &[]).await else {
        return;
    };
    let (adb, engine, gw) = (&s.adb, s.engine(), s.gw());
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Fill to limit − 1.
    let mut ids = Vec::new();
    for i in 0..LIMIT - 1 {
        let r = store(&c, gw, &acct.key, None, &format!("memory {i}")).await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        accounts::memories_used(&adb.db, acct.user_id).await,
        LIMIT - 1
    );

    // 50 concurrent stores at limit − 1: exactly one succeeds.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (c, url, key) = (c.clone(), gw.url("/api/v1/store"), acct.key.clone());
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .header("X-API-Key", key)
                    .json(&serde_json::json!({"content": format!("race {i}")}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<serde_json::Value>().await.unwrap())
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = None;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            403 => refused = Some(body),
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert_eq!(ok, 1, "exactly one store fits");
    assert_eq!(accounts::memories_used(&adb.db, acct.user_id).await, LIMIT);
    let body = refused.unwrap();
    assert_eq!(body["used"], LIMIT);
    assert_eq!(body["limit"], LIMIT);
    assert_eq!(body["next_tier"], "pro");
    assert!(body["detail"].as_str().unwrap().contains("pro"), "{body}");
    assert_eq!(
        engine.total_memories(acct.user_id).await,
        LIMIT,
        "the engine holds exactly the limit"
    );

    // Forget frees a slot; a failed forget (404) does not.
    let r = c
        .delete(gw.url(&format!("/api/v1/forget/{}", ids[0])))
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        accounts::memories_used(&adb.db, acct.user_id).await,
        LIMIT - 1
    );
    let r = c
        .delete(gw.url(&format!("/api/v1/forget/{}", ids[0])))
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        accounts::memories_used(&adb.db, acct.user_id).await,
        LIMIT - 1
    );
    // A store the engine rejects (422: empty content) releases its reservation.
    let r = store(&c, gw, &acct.key, None, "").await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        accounts::memories_used(&adb.db, acct.user_id).await,
        LIMIT - 1
    );
    assert_eq!(
        store(&c, gw, &acct.key, None, "fits again").await.status(),
        200
    );
    assert_eq!(
        store(&c, gw, &acct.key, None, "too many").await.status(),
        403
    );

    // Upgrade: stores go on at once (tier change via the feed).
    accounts::set_tier(&adb.db, acct.user_id, "pro").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store(&c, gw, &acct.key, None, "pro now").await.status(),
        200
    );
    // Agents: pro allows 5; use 3.
    for a in ["a1", "a2", "a3"] {
        assert_eq!(
            store(&c, gw, &acct.key, Some(a), "agent memory")
                .await
                .status(),
            200,
            "{a}"
        );
    }
    // Downgrade: data stays, reads go on (also in known agents), stores are refused.
    accounts::set_tier(&adb.db, acct.user_id, "free").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = store(&c, gw, &acct.key, None, "refused").await;
    assert_eq!(r.status(), 403);
    let r = c
        .get(gw.url("/api/v1/recall?q=memory"))
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.json::<Vec<serde_json::Value>>().await.unwrap().is_empty());
    let r = c
        .get(gw.url("/api/v1/memories"))
        .header("X-API-Key", &acct.key)
        .header("X-Stellar-Agent", "a3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a known agent is readable after a downgrade"
    );
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["total"], 1);
    // A new agent beyond free's 2 is refused with 403 and the numbers.
    let r = c
        .get(gw.url("/api/v1/stats"))
        .header("X-API-Key", &acct.key)
        .header("X-Stellar-Agent", "a4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["used"].as_i64(), body["limit"].as_i64()),
        (Some(3), Some(2)),
        "{body}"
    );
    // An invalid agent name never reaches the engine.
    let r = c
        .get(gw.url("/api/v1/stats"))
        .header("X-API-Key", &acct.key)
        .header("X-Stellar-Agent", "../etc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let m = metrics_text(gw).await;
    assert!(metric_sum(&m, "gateway_quota_rejections_total", &["kind=\"memories\""]) >= 49.0);
    assert!(metric_sum(&m, "gateway_quota_rejections_total", &["kind=\"agents\""]) >= 1.0);
}

async fn agents_limit_exact(backend: Backend) {
    let Some((s, _echo)) = echo_gateway(backend, "gw-agents", &tiers(), &[]).await else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 20 distinct agents at once against a limit of 2: exactly 2 get in.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (c, url, key) = (c.clone(), gw.url("/api/v1/stats"), acct.key.clone());
            tokio::spawn(async move {
                c.get(url)
                    .header("X-API-Key", key)
                    .header("X-Stellar-Agent", format!("agent-{i}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 2);
}

/// Engine-side changes the gateway did not see (here: forgets sent to the engine directly) are
/// corrected by the periodic reconciliation.
async fn reconciliation(backend: Backend) {
    let Some(s) = stack(
        backend,
        "gw-reconcile",
        &tiers(),
        &[("STELLAR_GATEWAY_RECONCILE_INTERVAL_SECS", "1".into())],
    )
    .await
    else {
        return;
    };
    let (adb, engine, gw) = (&s.adb, s.engine(), s.gw());
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = Vec::new();
    for (i, agent) in [None, None, Some("x"), Some("x"), Some("y")]
        .into_iter()
        .enumerate()
    {
        let r = store(&c, gw, &acct.key, agent, &format!("m{i}")).await;
        assert_eq!(r.status(), 200);
        ids.push((
            agent,
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    assert_eq!(accounts::memories_used(&adb.db, acct.user_id).await, 5);
    // Two memories vanish behind the gateway's back (as engine-side auto-forget would do).
    for (agent, id) in ids.iter().filter(|(a, _)| a.is_some()).take(2) {
        let mut r = c
            .delete(format!("http://{}/api/v1/forget/{id}", engine.addr))
            .header("X-Stellar-User", acct.user_id.to_string());
        if let Some(a) = agent {
            r = r.header("X-Stellar-Agent", *a);
        }
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    // And the counter drifts upwards on its own.
    let (db, user) = (adb.db.clone(), acct.user_id);
    let took = eventually(Duration::from_secs(5), || {
        let db = db.clone();
        async move { accounts::memories_used(&db, user).await == 3 }
    })
    .await;
    assert!(
        took.is_some(),
        "reconciled to the engine's count, got {}",
        accounts::memories_used(&adb.db, acct.user_id).await
    );
    accounts::set_memories_used(&adb.db, acct.user_id, 42).await;
    let took = eventually(Duration::from_secs(5), || {
        let db = db.clone();
        async move { accounts::memories_used(&db, user).await == 3 }
    })
    .await;
    assert!(took.is_some(), "drift corrected");
}

both_dbs!(quota_exact_forget_downgrade, super::quota);
both_dbs!(
    agents_limit_exact_under_concurrency,
    super::agents_limit_exact
);
both_dbs!(reconciliation_corrects_drift, super::reconciliation);
