//! Lemon Squeezy end to end: checkout request at the fake → signed webhooks (signature computed
//! here, from the documented algorithm) → tier visible (through the gateway when it runs) —
//! plus replays, reordering, tampering, unknown events, cancel with grace, dunning with grace.

use chrono::{Duration as CDuration, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use stellar_tests::both_dbs;
use stellar_tests::fakes::lemon_signature;
use stellar_tests::harness::{Backend, Stack, LEMON_SECRET};
use uuid::Uuid;

fn ts(offset_secs: i64) -> String {
    (Utc::now() + CDuration::seconds(offset_secs)).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn subscription(
    event: &str,
    sub: &str,
    user: Uuid,
    status: &str,
    variant: i64,
    updated: &str,
    ends_at: Option<String>,
) -> String {
    json!({
        "meta": {"event_name": event, "test_mode": true, "webhook_id": Uuid::new_v4().to_string(), "custom_data": {"user_id": user.to_string(), "tier": "team"}},
        "data": {"type": "subscriptions", "id": sub, "attributes": {
            "store_id": 1, "customer_id": 77, "order_id": 5, "product_id": 9, "variant_id": variant, "user_email": "x@example.com",
            "status": status, "cancelled": status == "cancelled", "renews_at": ts(30 * 86400), "ends_at": ends_at,
            "created_at": ts(-60), "updated_at": updated, "test_mode": true}}
    })
    .to_string()
}

fn invoice(event: &str, sub: i64, updated: &str) -> String {
    json!({
        "meta": {"event_name": event, "webhook_id": Uuid::new_v4().to_string()},
        "data": {"type": "subscription-invoices", "id": "555", "attributes": {
            "store_id": 1, "subscription_id": sub, "customer_id": 77, "billing_reason": "renewal", "status": "paid",
            "total": 2900, "currency": "USD", "created_at": updated, "updated_at": updated}}
    })
    .to_string()
}

async fn deliver(s: &Stack, body: &str, sig: Option<String>) -> (u16, Value) {
    let sig = sig.unwrap_or_else(|| lemon_signature(LEMON_SECRET, body));
    let event = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["meta"]["event_name"].as_str().map(str::to_string))
        .unwrap_or_default();
    s.post(
        "/webhook/lemonsqueezy",
        body,
        &[("X-Signature", &sig), ("X-Event-Name", &event)],
    )
    .await
}

async fn events(s: &Stack, uid: Uuid) -> i64 {
    s.count(
        "SELECT COUNT(*) FROM subscription_events WHERE user_id = $1",
        uid,
    )
    .await
}

async fn lemon_flow(backend: Backend) {
    let Some((s, uid, key)) = super::customer(backend, 2, "carol@example.com").await else {
        return;
    };

    // Checkout: well-formed JSON:API request with our user id and the tier in custom data.
    let (st, v) = s
        .post(
            "/billing/lemonsqueezy/checkout",
            r#"{"tier":"pro","email":"Carol@example.com"}"#,
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["checkout_url"]
            .as_str()
            .unwrap()
            .starts_with("https://stellar.lemonsqueezy.com/checkout/custom/"),
        "{v}"
    );
    let req = s
        .billing()
        .lemon
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/checkouts")
        .expect("checkout request");
    assert_eq!(req.headers["authorization"], "Bearer ls_test_api_key");
    assert_eq!(req.headers["content-type"], "application/vnd.api+json");
    let b = req.json();
    assert_eq!(
        b["data"]["attributes"]["checkout_data"]["custom"]["user_id"],
        uid.to_string()
    );
    assert_eq!(
        b["data"]["attributes"]["checkout_data"]["custom"]["tier"],
        "pro"
    );
    assert_eq!(
        b["data"]["attributes"]["checkout_data"]["email"],
        "carol@example.com"
    );
    assert_eq!(b["data"]["relationships"]["variant"]["data"]["id"], "111");
    assert_eq!(b["data"]["relationships"]["store"]["data"]["id"], "1");
    // GET form: 303 to the provider.
    let r = s
        .get_with_key(
            "/billing/lemonsqueezy/checkout?tier=team&email=carol@example.com",
            Some(&key),
        )
        .await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("https://stellar.lemonsqueezy.com/"));
    for body in [
        r#"{"tier":"gold","email":"c@example.com"}"#,
        r#"{"tier":"free","email":"c@example.com"}"#,
        r#"{"tier":"pro","email":"nope"}"#,
    ] {
        assert_eq!(
            s.post("/billing/lemonsqueezy/checkout", body, &[]).await.0,
            422,
            "{body}"
        );
    }
    // Checkout for a new e-mail creates the account (no key), so the webhook can map to it.
    assert_eq!(
        s.post(
            "/billing/lemonsqueezy/checkout",
            r#"{"tier":"pro","email":"dave@example.com"}"#,
            &[]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.post("/auth/register", r#"{"email":"dave@example.com"}"#, &[])
            .await
            .0,
        409
    );

    // subscription_created → pro, visible within 1 s.
    let created = subscription(
        "subscription_created",
        "9001",
        uid,
        "active",
        111,
        &ts(0),
        None,
    );
    assert_eq!(deliver(&s, &created, None).await.0, 200);
    s.expect_tier(&key, "pro", Duration::from_secs(1)).await;
    let n = events(&s, uid).await;

    // The same delivery again: a no-op.
    let (st, v) = deliver(&s, &created, None).await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(events(&s, uid).await, n);

    // Tampered body (variant changed, old signature), missing or garbage signature: 400, nothing written.
    let tampered = created.replace("\"variant_id\":111", "\"variant_id\":222");
    assert_ne!(tampered, created);
    assert_eq!(
        deliver(&s, &tampered, Some(lemon_signature(LEMON_SECRET, &created)))
            .await
            .0,
        400
    );
    assert_eq!(s.post("/webhook/lemonsqueezy", &created, &[]).await.0, 400);
    assert_eq!(deliver(&s, &created, Some("zz".into())).await.0, 400);
    assert_eq!(
        deliver(
            &s,
            &created,
            Some(lemon_signature("wrong_secret", &created))
        )
        .await
        .0,
        400
    );
    assert_eq!(events(&s, uid).await, n);
    assert_eq!(s.account(uid).await.0, "pro");

    // Unknown event: acknowledged.
    let unknown = json!({"meta": {"event_name": "license_key_created", "webhook_id": "w-unknown"}, "data": {"type": "license-keys", "id": "1"}}).to_string();
    assert_eq!(deliver(&s, &unknown, None).await.0, 200);

    // Reordered: a cancel at t+20 arrives before an (older) update at t+10; the old one must not
    // reactivate the subscription.
    let ends = ts(10 * 86400);
    let cancelled = subscription(
        "subscription_cancelled",
        "9001",
        uid,
        "cancelled",
        111,
        &ts(20),
        Some(ends.clone()),
    );
    let older = subscription(
        "subscription_updated",
        "9001",
        uid,
        "active",
        222,
        &ts(10),
        None,
    );
    assert_eq!(deliver(&s, &cancelled, None).await.0, 200);
    let (st, v) = deliver(&s, &older, None).await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("stale")));
    let (tier, status, end, cancel_flag, provider) = s.account(uid).await;
    assert_eq!(
        (
            tier.as_str(),
            status.as_str(),
            cancel_flag,
            provider.as_deref()
        ),
        ("pro", "cancelled", true, Some("lemonsqueezy"))
    );
    assert!(end.unwrap() > Utc::now() + CDuration::days(9));
    let u = s.usage(&key).await;
    assert_eq!(
        (
            u["subscription_status"].as_str(),
            u["cancel_at_period_end"].as_bool()
        ),
        (Some("cancelled"), Some(true))
    );

    // Resumed (plan change to team), payment failed → past_due (tier kept), payment success → active.
    assert_eq!(
        deliver(
            &s,
            &subscription(
                "subscription_resumed",
                "9001",
                uid,
                "active",
                222,
                &ts(30),
                None
            ),
            None
        )
        .await
        .0,
        200
    );
    s.expect_tier(&key, "team", Duration::from_secs(1)).await;
    assert_eq!(
        deliver(
            &s,
            &invoice("subscription_payment_failed", 9001, &ts(40)),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(s.account(uid).await.1, "past_due");
    assert_eq!(
        deliver(
            &s,
            &invoice("subscription_payment_success", 9001, &ts(41)),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(s.account(uid).await.1, "active");

    // Expired → free.
    assert_eq!(
        deliver(
            &s,
            &subscription(
                "subscription_expired",
                "9001",
                uid,
                "expired",
                222,
                &ts(50),
                Some(ts(50))
            ),
            None
        )
        .await
        .0,
        200
    );
    s.expect_tier(&key, "free", Duration::from_secs(1)).await;
    assert_eq!(s.account(uid).await.1, "expired");
    assert!(
        s.count(
            "SELECT COUNT(*) FROM change_feed WHERE user_id = $1 AND kind = 'tier_changed'",
            uid
        )
        .await
            >= 4
    );

    // Dunning: payment failed and nothing else → free after the grace period (2 s here).
    let (u2, k2) = s.register("erin@example.com").await;
    assert_eq!(
        deliver(
            &s,
            &subscription(
                "subscription_created",
                "9002",
                u2,
                "active",
                111,
                &ts(0),
                None
            ),
            None
        )
        .await
        .0,
        200
    );
    s.expect_tier(&k2, "pro", Duration::from_secs(1)).await;
    assert_eq!(
        deliver(
            &s,
            &invoice("subscription_payment_failed", 9002, &ts(1)),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(s.account(u2).await.1, "past_due");
    s.until(
        Duration::from_secs(6),
        "past_due → free after grace",
        || async { s.account(u2).await.0 == "free" },
    )
    .await;
    s.expect_tier(&k2, "free", Duration::from_secs(1)).await;

    // Cancel through billing: DELETE at Lemon Squeezy, tier kept until ends_at, then free.
    let (u3, k3) = s.register("frank@example.com").await;
    assert_eq!(
        deliver(
            &s,
            &subscription(
                "subscription_created",
                "9003",
                u3,
                "active",
                111,
                &ts(0),
                None
            ),
            None
        )
        .await
        .0,
        200
    );
    s.expect_tier(&k3, "pro", Duration::from_secs(1)).await;
    let (st, v) = s.get("/billing/portal", Some(&k3)).await;
    assert_eq!(
        (st, v["url"].as_str()),
        (200, Some("https://store.example/billing?sig=abc"))
    );
    *s.billing().lemon.cancel_ends_at.lock().unwrap() = ts(2);
    let (st, v) = s.post("/billing/cancel", "", &[("X-API-Key", &k3)]).await;
    assert_eq!(
        (st, v["subscription_status"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    assert!(s
        .billing()
        .lemon
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path == "/v1/subscriptions/9003"));
    assert_eq!(
        s.account(u3).await.0,
        "pro",
        "tier kept until the period ends"
    );
    s.until(
        Duration::from_secs(6),
        "cancelled → free at period end",
        || async { s.account(u3).await.0 == "free" },
    )
    .await;
    assert_eq!(s.account(u3).await.1, "expired");

    let m = s.metrics().await;
    assert!(m.contains("stellar_billing_webhooks_total{event=\"subscription_created\",outcome=\"applied\",provider=\"lemonsqueezy\"}"), "{m}");
    assert!(m.contains("outcome=\"duplicate\""), "{m}");
    assert!(
        m.contains("stellar_billing_checkouts_total{outcome=\"ok\",provider=\"lemonsqueezy\"}"),
        "{m}"
    );
}

both_dbs!(lemonsqueezy_end_to_end, super::lemon_flow);
