//! Gateway auth end to end (real engine and gateway binaries, SQLite and PostgreSQL): the 401s,
//! the cached path costing no DB query, revocation and tier changes within 1 s through the
//! change feed (written to the account DB directly, and a key revoked through billing's HTTP
//! API behind the gateway), and the account DB going away (cached keys keep working, others get
//! 503).

use std::time::Duration;
use stellar_tests::accounts;
use stellar_tests::both_dbs;
use stellar_tests::harness::*;

async fn status_of(c: &reqwest::Client, url: &str, key: Option<&str>) -> u16 {
    let mut r = c.get(url);
    if let Some(k) = key {
        r = r.header("X-API-Key", k);
    }
    r.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn unauthorized_and_cached(backend: Backend) {
    let Some(s) = stack(backend, "gw-auth", ROOMY_TIERS, &[]).await else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let c = client();
    let stats = gw.url("/api/v1/stats");

    // Health is public.
    assert_eq!(status_of(&c, &gw.url("/api/v1/health"), None).await, 200);

    // Missing, malformed, unknown, revoked: 401 with a JSON detail.
    let r = c.get(&stats).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].is_string(), "{body}");
    let before_bad = metric_sum(
        &metrics_text(gw).await,
        "gateway_db_queries_total",
        &["op=\"principal\""],
    );
    for bad in [
        "sk-stellar-123",
        "sk-stellar-0123456789ABCDEF0123456789abcdef",
        "Bearer x",
        "not a key",
    ] {
        assert_eq!(status_of(&c, &stats, Some(bad)).await, 401, "{bad}");
    }
    let r = c
        .get(&stats)
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let after_bad = metric_sum(
        &metrics_text(gw).await,
        "gateway_db_queries_total",
        &["op=\"principal\""],
    );
    assert_eq!(
        before_bad, after_bad,
        "malformed keys must not cost a DB query"
    );
    let unknown = stellar_common::keys::generate().plaintext;
    assert_eq!(status_of(&c, &stats, Some(&unknown)).await, 401);
    assert_eq!(status_of(&c, &stats, Some(&unknown)).await, 401);
    let m = metrics_text(gw).await;
    assert!(
        metric_sum(&m, "gateway_auth_cache_total", &["result=\"negative_hit\""]) >= 1.0,
        "negative cache used"
    );

    let acct = accounts::create_account(&adb.db, "free").await;
    let revoked = accounts::create_account(&adb.db, "free").await;
    accounts::revoke_key(&adb.db, revoked.key_id).await;
    assert_eq!(status_of(&c, &stats, Some(&revoked.key)).await, 401);

    // Let the feed deliver the rows the fixtures wrote (they evict, harmlessly), then warm up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Both key headers work.
    assert_eq!(status_of(&c, &stats, Some(&acct.key)).await, 200);
    let r = c
        .get(&stats)
        .header("Authorization", format!("Bearer {}", acct.key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The cached path: 200 requests, zero principal queries.
    let before = metric_sum(
        &metrics_text(gw).await,
        "gateway_db_queries_total",
        &["op=\"principal\""],
    );
    let hits_before = metric_sum(
        &metrics_text(gw).await,
        "gateway_auth_cache_total",
        &["result=\"hit\""],
    );
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (c, u, k) = (c.clone(), stats.clone(), acct.key.clone());
            tokio::spawn(async move { status_of(&c, &u, Some(&k)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let m = metrics_text(gw).await;
    assert_eq!(
        metric_sum(&m, "gateway_db_queries_total", &["op=\"principal\""]),
        before,
        "cache hits cost no DB query"
    );
    assert!(metric_sum(&m, "gateway_auth_cache_total", &["result=\"hit\""]) - hits_before >= 200.0);

    // Write-behind: usage_hourly and last_used_at get flushed (never per request).
    let db = adb.db.clone();
    let user = acct.user_id;
    assert!(
        eventually(Duration::from_secs(5), || {
            let db = db.clone();
            async move { accounts::hourly_requests(&db, user).await >= 202 }
        })
        .await
        .is_some(),
        "usage_hourly flushed"
    );
    assert!(accounts::key_last_used_set(&adb.db, acct.key_id).await);
    let m = metrics_text(gw).await;
    assert!(m.contains("gateway_db_queries_total{op=\"usage_flush\"}"));
}

async fn revocation_and_tier_change(backend: Backend) {
    let tiers = "[free]\nmax_memories = 100\nmax_agents = 1\nrequests_per_minute = 1000\nburst = 1000\nmax_api_keys = 2\nprice_usd = 0\nprice_krw = 0\n\n\
                 [pro]\nmax_memories = 1000\nmax_agents = 5\nrequests_per_minute = 3000\nburst = 3000\nmax_api_keys = 5\nprice_usd = 29\nprice_krw = 39000\n";
    let Some(s) = stack(backend, "gw-revoke", tiers, &[]).await else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let c = client();
    let stats = gw.url("/api/v1/stats");
    let acct = accounts::create_account(&adb.db, "free").await;
    let (_, second_key) = accounts::add_key(&adb.db, acct.user_id).await;

    // Warm the cache, then revoke: refused within 1 s, no restart.
    assert_eq!(status_of(&c, &stats, Some(&acct.key)).await, 200);
    let r = c
        .get(&stats)
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["ratelimit-policy"], "\"free\";q=1000;w=60");
    accounts::revoke_key(&adb.db, acct.key_id).await;
    let took = eventually(Duration::from_secs(1), || {
        let (c, u, k) = (c.clone(), stats.clone(), acct.key.clone());
        async move { status_of(&c, &u, Some(&k)).await == 401 }
    })
    .await
    .expect("revoked key refused within 1 s");
    eprintln!("revocation effective after {took:?}");
    // The account's other key still works.
    assert_eq!(status_of(&c, &stats, Some(&second_key)).await, 200);

    // Tier change: the new tier's policy shows within 1 s.
    accounts::set_tier(&adb.db, acct.user_id, "pro").await;
    let took = eventually(Duration::from_secs(1), || {
        let (c, u, k) = (c.clone(), stats.clone(), second_key.clone());
        async move {
            let r = c.get(&u).header("X-API-Key", &k).send().await.unwrap();
            r.headers()
                .get("ratelimit-policy")
                .is_some_and(|v| v == "\"pro\";q=3000;w=60")
        }
    })
    .await
    .expect("tier change effective within 1 s");
    eprintln!("tier change effective after {took:?}");
    let m = metrics_text(gw).await;
    assert!(
        metric_sum(&m, "gateway_change_feed_lag_seconds_count", &[]) >= 2.0,
        "lag observed"
    );
}

/// The real path of a revocation: the account holder deletes a key at billing, through the
/// gateway (`/auth/*` goes to billing), and the gateway refuses the key within 1 s.
async fn revocation_through_billing(backend: Backend) {
    let Some(s) = full_stack(backend, "gw-revoke-billing", &[]).await else {
        return;
    };
    let gw = s.gw();
    let c = client();
    let stats = gw.url("/api/v1/stats");
    let (first, second, second_id) = register_with_two_keys(gw).await;

    // Both keys work through the gateway (and are cached now).
    assert_eq!(status_of(&c, &stats, Some(&first)).await, 200);
    assert_eq!(status_of(&c, &stats, Some(&second)).await, 200);
    assert_eq!(status_of(&c, &stats, Some(&second)).await, 200);

    revoke_through_billing(gw, &second_id, &first).await;
    let took = eventually(Duration::from_secs(1), || {
        let (c, u, k) = (c.clone(), stats.clone(), second.clone());
        async move { status_of(&c, &u, Some(&k)).await == 401 }
    })
    .await
    .expect("key revoked at billing refused by the gateway within 1 s");
    eprintln!("revocation through billing effective after {took:?}");
    // Billing refuses it too, and the account's other key still works everywhere.
    let r = c
        .get(gw.url("/auth/api-keys"))
        .header("X-API-Key", &second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(status_of(&c, &stats, Some(&first)).await, 200);
}

/// The account DB goes away: a cached key keeps working, an uncached one gets 503 (not 401).
async fn db_gone(backend: Backend) {
    let Some(s) = stack(
        backend,
        "gw-dbgone",
        ROOMY_TIERS,
        &[("STELLAR_GATEWAY_DB_TIMEOUT_MS", "800".into())],
    )
    .await
    else {
        return;
    };
    let (dir, adb, gw) = (&s.dir, &s.adb, s.gw());
    let c = client();
    let stats = gw.url("/api/v1/stats");
    let cached = accounts::create_account(&adb.db, "free").await;
    let uncached = accounts::create_account(&adb.db, "free").await;
    assert_eq!(status_of(&c, &stats, Some(&cached.key)).await, 200);

    // Make the DB really unavailable.
    let _guard: Box<dyn std::any::Any + Send> = match backend {
        Backend::Postgres => {
            // Drop the database (terminating every connection to it).
            let name = reqwest::Url::parse(&adb.url)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_string();
            adb.db.close().await;
            let admin = std::env::var("STELLAR_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap();
            sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
            Box::new(())
        }
        Backend::Sqlite => {
            // The file is destroyed under the running gateway (overwritten with garbage, the
            // WAL truncated): every query on it fails from now on.
            let path = dir.path().join("accounts.db");
            adb.db.close().await;
            std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
            let _ = std::fs::write(dir.path().join("accounts.db-wal"), b"");
            Box::new(())
        }
    };
    let t = std::time::Instant::now();
    let r = c
        .get(&stats)
        .header("X-API-Key", &uncached.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "uncached key with the DB gone");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].is_string());
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "503 comes fast: {:?}",
        t.elapsed()
    );
    for _ in 0..5 {
        assert_eq!(
            status_of(&c, &stats, Some(&cached.key)).await,
            200,
            "cached key keeps working"
        );
    }
    // Readiness reports it.
    let r = c
        .get(format!("http://{}/readyz", gw.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

both_dbs!(unauthorized_and_cached_path, super::unauthorized_and_cached);
both_dbs!(
    revocation_and_tier_change_within_1s,
    super::revocation_and_tier_change
);
both_dbs!(db_gone_cached_works_uncached_503, super::db_gone);
both_dbs!(
    key_revoked_through_billing_refused_within_1s,
    super::revocation_through_billing
);
