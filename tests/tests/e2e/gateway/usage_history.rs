//! Usage history end to end (issue 15), on SQLite and PostgreSQL: two gateways on one account
//! DB serve an account's requests with two keys, two agents and three route families; billing's
//! `GET /auth/usage/history` (JSON by minute and by hour, grouped by key, agent and route, and
//! the CSV export) then shows exactly what the gateways served, no more, no less.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use stellar_tests::both_dbs;
use stellar_tests::harness::*;

async fn send(gw: &Gateway, method: &str, path: &str, key: &str, agent: Option<&str>) {
    let c = client();
    let mut r = match method {
        "POST" => c
            .post(gw.url(path))
            .json(&serde_json::json!({"content": "counted"})),
        _ => c.get(gw.url(path)),
    }
    .header("X-API-Key", key);
    if let Some(a) = agent {
        r = r.header("X-Stellar-Agent", a);
    }
    assert_eq!(r.send().await.unwrap().status(), 200, "{method} {path}");
}

async fn history(gw: &Gateway, key: &str, query: &str) -> Value {
    let r = client()
        .get(gw.url(&format!("/auth/usage/history?{query}")))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.unwrap()
}

/// Requests per group.
fn by_group(v: &Value) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        *m.entry(r["group"].as_str().unwrap().to_string())
            .or_default() += r["requests"].as_i64().unwrap();
    }
    m
}

async fn two_gateways_add_up(backend: Backend) {
    let Some(s) = full_stack(backend, "gw-usage-history", &[]).await else {
        return;
    };
    let g1 = s.gw();
    let g2 = &s
        .start_gateway(&s.engine().addr, &s.billing().addr, &[])
        .await;
    let (owner, second, second_id) = register_with_two_keys(g1).await;

    for _ in 0..7 {
        send(g1, "POST", "/api/v1/store", &owner, None).await;
    }
    for _ in 0..3 {
        send(g1, "GET", "/api/v1/recall?q=counted", &second, Some("a1")).await;
    }
    for _ in 0..5 {
        send(g2, "GET", "/api/v1/stats", &owner, None).await;
    }
    for _ in 0..4 {
        send(g2, "GET", "/api/v1/recall?q=counted", &second, Some("a1")).await;
    }
    let served = 7 + 3 + 5 + 4;

    // Both gateways flush every second; the totals then stay exactly what was served.
    eventually(Duration::from_secs(10), || {
        let (g, k) = (g1, owner.clone());
        async move { history(g, &k, "granularity=minute").await["total"] == served }
    })
    .await
    .expect("both gateways' counts arrive");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let minute = history(g1, &owner, "granularity=minute&group_by=route").await;
    assert_eq!(minute["total"], served, "{minute}");
    assert_eq!(
        by_group(&minute),
        BTreeMap::from([
            ("read".into(), 5),
            ("recall".into(), 7),
            ("store".into(), 7)
        ])
    );
    let by_key = by_group(&history(g2, &owner, "granularity=hour&group_by=key").await);
    assert_eq!(by_key.get(&second_id), Some(&7), "{by_key:?}");
    assert_eq!(by_key.values().sum::<i64>(), served);
    let by_agent = by_group(&history(g2, &second, "group_by=agent").await);
    assert_eq!(
        by_agent,
        BTreeMap::from([("".into(), 12), ("a1".into(), 7)])
    );
    for r in minute["rows"].as_array().unwrap() {
        assert_eq!(r["status_class"], "2xx", "{r}");
    }

    // The CSV export says the same.
    let r = client()
        .get(g1.url("/auth/usage/history?granularity=minute&group_by=route&format=csv"))
        .header("X-API-Key", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("start,group,status_class,requests"));
    let total: i64 = lines
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, served);

    // Bad ranges are 422 and say why.
    let r = client()
        .get(g1.url("/auth/usage/history?from=yesterday"))
        .header("X-API-Key", &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

both_dbs!(two_gateways_add_up_exactly, super::two_gateways_add_up);
