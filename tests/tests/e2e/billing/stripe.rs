//! Stripe end to end: Checkout Session request at the fake (form-encoded, subscription mode,
//! user id in client_reference_id and both metadata) → webhooks signed here with Stripe's
//! documented `t=…,v1=…` scheme → tier through the gateway within 1 s; stale timestamps, wrong
//! secrets, v0-only headers, several v1 values, tampering, oversized bodies, reordering,
//! portal and cancel at period end.

use chrono::Utc;
use serde_json::{json, Value};
use std::time::Duration;
use stellar_tests::both_dbs;
use stellar_tests::fakes::stripe_signature;
use stellar_tests::harness::{Backend, Stack, STRIPE_PRICE_PRO, STRIPE_PRICE_TEAM, STRIPE_WHSEC};
use uuid::Uuid;

fn event(id: &str, ty: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "type": ty, "created": created, "livemode": false, "api_version": "2025-03-31.basil",
           "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null}, "data": {"object": object}})
    .to_string()
}

fn subscription(
    user: Uuid,
    status: &str,
    price: &str,
    period_end: i64,
    cancel_at_period_end: bool,
) -> Value {
    json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status, "cancel_at_period_end": cancel_at_period_end,
           "cancel_at": null, "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price}, "current_period_end": period_end}]},
           "metadata": {"user_id": user.to_string(), "tier": "team"}})
}

async fn deliver(s: &Stack, body: &str, header: Option<String>) -> (u16, Value) {
    let header =
        header.unwrap_or_else(|| stripe_signature(STRIPE_WHSEC, Utc::now().timestamp(), body));
    s.post("/webhook/stripe", body, &[("Stripe-Signature", &header)])
        .await
}

async fn stripe_flow(backend: Backend) {
    let Some((s, uid, key)) = super::customer(backend, 2, "grace@example.com").await else {
        return;
    };
    let now = Utc::now().timestamp();

    // Checkout Session: form-encoded, the documented parameters.
    let (st, v) = s
        .post(
            "/billing/stripe/checkout",
            r#"{"tier":"pro","email":"grace@example.com"}"#,
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["checkout_url"]
        .as_str()
        .unwrap()
        .starts_with("https://checkout.stripe.com/c/pay/cs_test_"));
    let req = s
        .billing()
        .stripe
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/checkout/sessions")
        .unwrap();
    assert_eq!(req.headers["authorization"], "Bearer sk_test_fake");
    assert!(
        req.body.contains("line_items%5B0%5D%5Bprice%5D="),
        "brackets percent-encoded: {}",
        req.body
    );
    let f = req.form();
    assert_eq!(f["mode"], "subscription");
    assert_eq!(f["line_items[0][price]"], STRIPE_PRICE_PRO);
    assert_eq!(f["line_items[0][quantity]"], "1");
    assert_eq!(f["client_reference_id"], uid.to_string());
    assert_eq!(f["metadata[user_id]"], uid.to_string());
    assert_eq!(f["subscription_data[metadata][user_id]"], uid.to_string());
    assert_eq!(f["customer_email"], "grace@example.com");
    assert!(
        f["success_url"].contains("{CHECKOUT_SESSION_ID}"),
        "{}",
        f["success_url"]
    );
    let r = s
        .get_with_key(
            "/billing/stripe/checkout?tier=team&email=grace@example.com",
            Some(&key),
        )
        .await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("https://checkout.stripe.com/"));

    // checkout.session.completed links the ids; customer.subscription.created sets the tier.
    let session = json!({"id": "cs_1", "object": "checkout.session", "mode": "subscription", "status": "complete", "payment_status": "paid",
        "client_reference_id": uid.to_string(), "customer": "cus_1", "subscription": "sub_1", "metadata": {"user_id": uid.to_string()}});
    assert_eq!(
        deliver(
            &s,
            &event("evt_1", "checkout.session.completed", now, session),
            None
        )
        .await
        .0,
        200
    );
    let created = event(
        "evt_2",
        "customer.subscription.created",
        now,
        subscription(uid, "active", STRIPE_PRICE_PRO, now + 30 * 86400, false),
    );
    assert_eq!(deliver(&s, &created, None).await.0, 200);
    s.expect_tier(&key, "pro", Duration::from_secs(1)).await;
    let (_, status, end, _, provider) = s.account(uid).await;
    assert_eq!(
        (status.as_str(), provider.as_deref()),
        ("active", Some("stripe"))
    );
    assert_eq!(
        end.unwrap().timestamp(),
        now + 30 * 86400,
        "period end read from the items (basil)"
    );

    // Replay: no-op.
    let n = s
        .count(
            "SELECT COUNT(*) FROM subscription_events WHERE user_id = $1",
            uid,
        )
        .await;
    assert_eq!(deliver(&s, &created, None).await.1["outcome"], "duplicate");
    assert_eq!(
        s.count(
            "SELECT COUNT(*) FROM subscription_events WHERE user_id = $1",
            uid
        )
        .await,
        n
    );

    // Signature failures: 400 and nothing written.
    let upgrade = event(
        "evt_3",
        "customer.subscription.updated",
        now + 1,
        subscription(uid, "active", STRIPE_PRICE_TEAM, now + 30 * 86400, false),
    );
    let good_t = Utc::now().timestamp();
    let stale = stripe_signature(STRIPE_WHSEC, good_t - 301, &upgrade);
    let wrong_secret = stripe_signature("whsec_other", good_t, &upgrade);
    let no_prefix = stripe_signature("test_secret", good_t, &upgrade);
    let v0_only = stripe_signature(STRIPE_WHSEC, good_t, &upgrade).replace("v1=", "v0=");
    let tampered_body = upgrade.replace(STRIPE_PRICE_TEAM, STRIPE_PRICE_PRO);
    for (body, header, what) in [
        (&upgrade, stale, "stale timestamp"),
        (&upgrade, wrong_secret, "wrong secret"),
        (&upgrade, no_prefix, "secret without whsec_ prefix"),
        (&upgrade, v0_only, "only v0"),
        (
            &tampered_body,
            stripe_signature(STRIPE_WHSEC, good_t, &upgrade),
            "tampered body",
        ),
        (&upgrade, String::new(), "no header"),
    ] {
        let (st, v) = deliver(&s, body, Some(header)).await;
        assert_eq!(st, 400, "{what}: {v}");
    }
    assert_eq!(
        s.count(
            "SELECT COUNT(*) FROM subscription_events WHERE user_id = $1",
            uid
        )
        .await,
        n
    );
    assert_eq!(
        s.count(
            "SELECT COUNT(*) FROM processed_webhooks WHERE event_id = 'evt_3' AND $1 IS NOT NULL",
            uid
        )
        .await,
        0
    );

    // Several v1 values, one right (secret rolling): accepted. Plan change to team.
    let right = stripe_signature(STRIPE_WHSEC, good_t, &upgrade);
    let sig = right.split(",v1=").nth(1).unwrap();
    let multi = format!("t={good_t},v1={},v1={sig},v0=deadbeef", "0".repeat(64));
    assert_eq!(deliver(&s, &upgrade, Some(multi)).await.0, 200);
    s.expect_tier(&key, "team", Duration::from_secs(1)).await;

    // Oversized body: 413, nothing written. Unknown event: 200.
    let big = event(
        "evt_big",
        "customer.subscription.updated",
        now + 2,
        json!({"pad": "x".repeat(1100 * 1024)}),
    );
    assert_eq!(deliver(&s, &big, None).await.0, 413);
    assert_eq!(
        deliver(
            &s,
            &event("evt_4", "charge.refund.updated", now, json!({"id": "re_1"})),
            None
        )
        .await
        .0,
        200
    );

    // Payment failed → past_due (tier kept); invoice.paid (basil shape) → active.
    let invoice = |status: &str| {
        json!({"id": "in_1", "object": "invoice", "customer": "cus_1", "status": status, "billing_reason": "subscription_cycle",
               "amount_paid": 9900, "currency": "usd",
               "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1", "metadata": {"user_id": uid.to_string()}}},
               "lines": {"data": [{"period": {"start": now, "end": now + 60 * 86400}, "pricing": {"price_details": {"price": STRIPE_PRICE_TEAM}}}]}})
    };
    assert_eq!(
        deliver(
            &s,
            &event("evt_5", "invoice.payment_failed", now + 3, invoice("open")),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(s.account(uid).await.1, "past_due");
    assert_eq!(s.account(uid).await.0, "team");
    assert_eq!(
        deliver(
            &s,
            &event("evt_6", "invoice.paid", now + 4, invoice("paid")),
            None
        )
        .await
        .0,
        200
    );
    let (tier, status, end, _, _) = s.account(uid).await;
    assert_eq!((tier.as_str(), status.as_str()), ("team", "active"));
    assert_eq!(end.unwrap().timestamp(), now + 60 * 86400);

    // Portal and cancel at period end.
    let (st, v) = s.get("/billing/portal", Some(&key)).await;
    assert_eq!(
        (st, v["url"].as_str()),
        (200, Some("https://billing.stripe.com/p/session/test_1"))
    );
    let portal = s
        .billing()
        .stripe
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/billing_portal/sessions")
        .unwrap();
    assert_eq!(portal.form()["customer"], "cus_1");
    s.billing().stripe.price.lock().unwrap().0 = STRIPE_PRICE_TEAM.into();
    let (st, v) = s
        .post(
            "/billing/cancel",
            "",
            &[("Authorization", &format!("Bearer {key}"))],
        )
        .await;
    assert_eq!(
        (st, v["subscription_status"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    let cancel = s
        .billing()
        .stripe
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/subscriptions/sub_1")
        .unwrap();
    assert_eq!(cancel.form()["cancel_at_period_end"], "true");
    assert_eq!(
        s.account(uid).await.0,
        "team",
        "tier kept until the period ends"
    );

    // Reordered: deleted (newer) then an older update; the account stays free.
    let later = Utc::now().timestamp() + 100;
    let deleted = event(
        "evt_7",
        "customer.subscription.deleted",
        later,
        subscription(uid, "canceled", STRIPE_PRICE_TEAM, later, false),
    );
    let old_update = event(
        "evt_8",
        "customer.subscription.updated",
        later - 50,
        subscription(uid, "active", STRIPE_PRICE_TEAM, later + 86400, false),
    );
    assert_eq!(deliver(&s, &deleted, None).await.0, 200);
    s.expect_tier(&key, "free", Duration::from_secs(1)).await;
    assert_eq!(deliver(&s, &old_update, None).await.1["outcome"], "stale");
    assert_eq!(s.account(uid).await.0, "free");
    assert_eq!(s.account(uid).await.1, "expired");

    // An event for nobody: acknowledged, nothing written.
    let stranger = event(
        "evt_9",
        "customer.subscription.created",
        now,
        json!({"id": "sub_x", "customer": "cus_x", "status": "active", "metadata": {}}),
    );
    assert_eq!(deliver(&s, &stranger, None).await.0, 200);
}

both_dbs!(stripe_end_to_end, super::stripe_flow);
