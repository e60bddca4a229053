//! Rate limits end to end: the account bucket empties → 429 with `Retry-After`, the rate-limit
//! headers (original and IETF draft-11) and an RFC 9457 body; headers on every proxied
//! response; per-IP buckets on unauthenticated routes and failed auth.

use std::time::Duration;
use stellar_tests::accounts;
use stellar_tests::both_dbs;
use stellar_tests::harness::*;

const TINY: &str = "[free]\nmax_memories = 100\nmax_agents = 1\nrequests_per_minute = 6\nburst = 3\nmax_api_keys = 1\nprice_usd = 0\nprice_krw = 0\n";

async fn bucket_empties(backend: Backend) {
    let echo = start_echo().await;
    let Some(s) = Stack::builder(backend, "gw-429")
        .tiers(TINY)
        .engine(&[])
        .billing_upstream(&echo)
        .gateway(&[
            ("STELLAR_GATEWAY_IP_REQUESTS_PER_MINUTE", "60".into()),
            ("STELLAR_GATEWAY_IP_BURST", "2".into()),
        ])
        .start()
        .await
    else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = gw.url("/api/v1/stats");
    for left in (0..3).rev() {
        let r = c
            .get(&url)
            .header("X-API-Key", &acct.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit"], "6");
        assert_eq!(h["x-ratelimit-remaining"], left.to_string().as_str());
        // Absolute Unix seconds, as the original system sent it: now ≤ reset ≤ now + 30 s.
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            reset + 1 >= now && reset <= now + 31,
            "reset {reset}, now {now}"
        );
        assert_eq!(h["ratelimit-policy"], "\"free\";q=6;w=60");
        assert!(h["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with(&format!("\"free\";r={left};t=")));
        assert!(h.get("x-request-id").is_some());
    }
    let r = c
        .get(&url)
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=10).contains(&retry),
        "one token per 10 s: Retry-After {retry}"
    );
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"free\";r=0;t="));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(body["status"], 429);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    assert_eq!(body["violated-policies"], serde_json::json!(["free"]));

    // Waiting Retry-After seconds is enough (one token refills every 10 s).
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = c
        .get(&url)
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "admitted after Retry-After");

    let m = metrics_text(gw).await;
    assert!(
        metric_sum(
            &m,
            "gateway_limiter_decisions_total",
            &["tier=\"free\"", "decision=\"denied\""]
        ) >= 1.0
    );

    // Per-IP: unauthenticated sign-up (burst 2 for this test), and failed auth attempts.
    let reg = gw.url("/auth/register");
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(
            c.post(&reg)
                .json(&serde_json::json!({"email": "a@b.c"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&codes[..2], &[200, 200], "the echo billing answered");
    assert_eq!(codes[3], 429, "{codes:?}");
}

async fn failed_auth_is_ip_limited(backend: Backend) {
    let Some((s, _echo)) = echo_gateway(
        backend,
        "gw-ipauth",
        TINY,
        &[
            ("STELLAR_GATEWAY_IP_REQUESTS_PER_MINUTE", "6".into()),
            ("STELLAR_GATEWAY_IP_BURST", "5".into()),
        ],
    )
    .await
    else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get(gw.url("/api/v1/stats"))
            .header("X-API-Key", &acct.key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut codes = Vec::new();
    for _ in 0..8 {
        let k = stellar_common::keys::generate().plaintext;
        codes.push(
            c.get(gw.url("/api/v1/stats"))
                .header("X-API-Key", k)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&codes[..5], &[401; 5]);
    assert_eq!(&codes[5..], &[429; 3], "{codes:?}");
    let m = metrics_text(gw).await;
    // Once throttled, unknown keys cost no more DB lookups.
    assert_eq!(
        metric_sum(&m, "gateway_db_queries_total", &["op=\"principal\""]),
        6.0
    );
    // A (cached) good key still works from the same IP.
    assert_eq!(
        c.get(gw.url("/api/v1/stats"))
            .header("X-API-Key", &acct.key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

both_dbs!(bucket_empties_429_with_headers, super::bucket_empties);
both_dbs!(failed_auth_ip_limited, super::failed_auth_is_ip_limited);
