//! Two gateways on one PostgreSQL and one Redis (issue 6): the combined admitted rate per
//! account stays within limit + burst, the quota is exact with stores split across both, a key
//! revoked through billing's HTTP API (behind gateway 1) is refused by both within 1 s, and with
//! Redis stopped the gateways fall back to
//! bounded local buckets and return to Redis when it is back.

use std::time::{Duration, Instant};
use stellar_tests::accounts;
use stellar_tests::harness::*;
use stellar_tests::spawn::{free_port, RedisServer};

const TIERS: &str = "[free]\nmax_memories = 30\nmax_agents = 2\nrequests_per_minute = 60\nburst = 10\nmax_api_keys = 2\nprice_usd = 0\nprice_krw = 0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_one_postgres_one_redis() {
    let Some(mut redis) = RedisServer::start(free_port()) else {
        return;
    };
    let redis_url = redis.url();
    let env = [
        ("STELLAR_GATEWAY_REDIS_URL", redis_url.clone()),
        ("STELLAR_GATEWAY_REDIS_RETRY_MS", "300".to_string()),
    ];
    let Some(s) = Stack::builder(Backend::Postgres, "gw-cluster")
        .tiers(TIERS)
        .engine(&[])
        .billing(&[])
        .gateway(&env)
        .start()
        .await
    else {
        return;
    };
    let (adb, g1) = (&s.adb, s.gw());
    let g2 = &s
        .start_gateway(&s.engine().addr, &s.billing().addr, &env)
        .await;
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Combined rate: 60 requests alternating between the gateways, as fast as possible.
    let start = Instant::now();
    let mut admitted = 0;
    for i in 0..60 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        if c.get(gw.url("/api/v1/stats"))
            .header("X-API-Key", &acct.key)
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            admitted += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bound = 10.0 + elapsed * 1.0 + 1.0;
    assert!(
        admitted >= 10 && f64::from(admitted) <= bound,
        "admitted {admitted} in {elapsed:.2}s, bound {bound:.1}"
    );
    for gw in [&g1, &g2] {
        let m = metrics_text(gw).await;
        assert!(
            metric_sum(
                &m,
                "gateway_limiter_decisions_total",
                &["backend=\"redis\""]
            ) > 0.0
        );
    }

    // Quota: 29 stores, then 50 concurrent split across both → exactly 30.
    let q = accounts::create_account(&adb.db, "free").await;
    accounts::set_memories_used(&adb.db, q.user_id, 29).await;
    let roomy = accounts::create_account(&adb.db, "free").await;
    let _ = roomy;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = if i % 2 == 0 {
                g1.url("/api/v1/store")
            } else {
                g2.url("/api/v1/store")
            };
            let (c, key) = (c.clone(), q.key.clone());
            tokio::spawn(async move {
                c.post(url)
                    .header("X-API-Key", key)
                    .json(&serde_json::json!({"content": format!("split {i}")}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    // The bucket (burst 10) refuses some with 429; the quota lets exactly one through.
    assert_eq!(codes.iter().filter(|&&s| s == 200).count(), 1, "{codes:?}");
    assert!(
        codes.iter().all(|&s| s == 200 || s == 403 || s == 429),
        "{codes:?}"
    );
    assert_eq!(accounts::memories_used(&adb.db, q.user_id).await, 30);

    // Revocation at billing (its HTTP API, through gateway 1) reaches both within 1 s.
    let (first, second, second_id) = register_with_two_keys(g1).await;
    for gw in [&g1, &g2] {
        assert_eq!(
            c.get(gw.url("/api/v1/stats"))
                .header("X-API-Key", &second)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    revoke_through_billing(g1, &second_id, &first).await;
    let revoked_at = Instant::now();
    let refused = |gw: &Gateway| {
        let (c, url, key) = (c.clone(), gw.url("/api/v1/stats"), second.clone());
        eventually(Duration::from_secs(1), move || {
            let (c, url, key) = (c.clone(), url.clone(), key.clone());
            async move {
                c.get(url)
                    .header("X-API-Key", key)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    == 401
            }
        })
    };
    // Both polled at once from the moment billing answered: one 1 s bound for the pair.
    let (t1, t2) = tokio::join!(refused(g1), refused(g2));
    assert!(t1.is_some(), "revoked on {} within 1 s", g1.addr);
    assert!(t2.is_some(), "revoked on {} within 1 s", g2.addr);
    assert!(revoked_at.elapsed() < Duration::from_millis(1500));
    eprintln!("revocation through billing: gateway 1 after {t1:?}, gateway 2 after {t2:?}");

    // Redis stops: local fallback, bounded (burst 10 per gateway, not unlimited).
    let f = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    let mut admitted = 0;
    let start = Instant::now();
    for _ in 0..40 {
        if c.get(g1.url("/api/v1/stats"))
            .header("X-API-Key", &f.key)
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            admitted += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        admitted >= 1 && f64::from(admitted) <= 10.0 + elapsed + 1.0,
        "fallback admitted {admitted}"
    );
    let m = metrics_text(g1).await;
    assert_eq!(metric_sum(&m, "gateway_limiter_redis_up", &[]), 0.0);
    assert!(
        metric_sum(
            &m,
            "gateway_limiter_decisions_total",
            &["backend=\"fallback\""]
        ) > 0.0
    );
    assert!(g1.svc.log().contains("falling back to local buckets"));

    // Redis returns on the same port: back to shared buckets.
    let _redis2 = RedisServer::start(redis.port).expect("redis restarts");
    let g = g1;
    let back = eventually(Duration::from_secs(10), || async {
        let _ = c
            .get(g.url("/api/v1/stats"))
            .header("X-API-Key", &acct.key)
            .send()
            .await;
        metric_sum(&metrics_text(g).await, "gateway_limiter_redis_up", &[]) == 1.0
    })
    .await;
    assert!(back.is_some(), "the gateway returns to Redis");
}
