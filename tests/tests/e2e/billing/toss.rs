//! TossPayments end to end against the fake: checkout data for the SDK, confirm (billing key
//! issued and stored encrypted, first charge) → tier through the gateway within 1 s; renewals by
//! the scheduler; a charge whose answer is lost, and billing killed -9 between Toss charging and
//! billing recording it — never charged twice; declines → past_due → retries → free; cancel;
//! BILLING_DELETED; unsigned webhooks re-checked against the API.

use chrono::{Duration as CDuration, Utc};
use serde_json::json;
use std::time::Duration;
use stellar_tests::both_dbs;
use stellar_tests::fakes::TossMode;
use stellar_tests::harness::{Backend, Stack, TOSS_CK};
use uuid::Uuid;

/// The Toss checkout of the account whose API key is `key` (an e-mail with an account checks
/// out only with its key).
async fn checkout(s: &Stack, email: &str, key: &str) -> String {
    let (st, v) = s
        .post(
            "/billing/toss/checkout",
            &json!({"tier": "pro", "email": email}).to_string(),
            &[("X-API-Key", key)],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["client_key"].as_str(), v["amount"].as_i64()),
        (Some(TOSS_CK), Some(39000))
    );
    assert!(v["success_url"]
        .as_str()
        .unwrap()
        .contains("/billing/toss/success"));
    assert!(v["sdk_url"]
        .as_str()
        .unwrap()
        .starts_with("https://js.tosspayments.com/"));
    v["customer_key"].as_str().unwrap().to_string()
}

async fn confirm(s: &Stack, email: &str, ck: &str, auth: &str) -> (u16, serde_json::Value) {
    s.post(
        "/billing/toss/confirm",
        &json!({"customerKey": ck, "authKey": auth, "tier": "pro", "email": email}).to_string(),
        &[],
    )
    .await
}

async fn latest_order(s: &Stack, uid: Uuid) -> (String, String) {
    stellar_common::with_db!(&s.adb.db, p => sqlx::query_as::<_, (String, String)>(
        "SELECT order_id, status FROM toss_charges WHERE user_id = $1 ORDER BY created_at DESC, attempt DESC LIMIT 1")
        .bind(uid).fetch_one(p).await).unwrap()
}

async fn period_end(s: &Stack, uid: Uuid) -> chrono::DateTime<Utc> {
    s.account(uid).await.2.expect("period end")
}

async fn toss_flow(backend: Backend) {
    let Some((mut s, uid, key)) = super::customer(backend, 4, "henry@example.com").await else {
        return;
    };

    // Checkout: what the SDK needs; the customerKey is stable per account.
    let ck = checkout(&s, "henry@example.com", &key).await;
    assert_eq!(checkout(&s, "HENRY@example.com", &key).await, ck);
    let r = s
        .get_with_key(
            "/billing/toss/checkout?tier=pro&email=henry@example.com",
            Some(&key),
        )
        .await;
    assert_eq!(r.status().as_u16(), 303);
    let page = r.headers()["location"].to_str().unwrap().to_string();
    assert!(page.contains("/billing/toss/pay?"), "{page}");
    let (_, mallory_key) = s.register("mallory@example.com").await;
    let mallory_ck = checkout(&s, "mallory@example.com", &mallory_key).await;

    // A customerKey of another account, or a refused authKey: nothing stored, nothing charged.
    assert_eq!(
        confirm(&s, "henry@example.com", &mallory_ck, "auth_ok")
            .await
            .0,
        403
    );
    assert_eq!(
        confirm(&s, "henry@example.com", "not-issued", "auth_ok")
            .await
            .0,
        403
    );
    assert_eq!(
        confirm(&s, "henry@example.com", &ck, "bad_auth").await.0,
        402
    );
    assert_eq!(s.billing().toss.total_charges(), 0);

    // Confirm: billing key issued, first charge, pro within 1 s.
    let (st, v) = confirm(&s, "henry@example.com", &ck, "auth_ok").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["tier"].as_str(), v["subscription_status"].as_str()),
        (Some("pro"), Some("active"))
    );
    s.expect_tier(&key, "pro", Duration::from_secs(1)).await;
    assert_eq!(s.billing().toss.total_charges(), 1);
    let (first_order, st1) = latest_order(&s, uid).await;
    assert_eq!(st1, "done");
    assert_eq!(s.billing().toss.charges_for(&first_order), 1);
    let issue = s
        .billing()
        .toss
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/billing/authorizations/issue" && r.body.contains("auth_ok"))
        .unwrap();
    assert_eq!(
        issue.headers["authorization"], "Basic dGVzdF9za19mYWtlMDEyMzo=",
        "Basic base64(secret + ':')"
    );
    let charge = s
        .billing()
        .toss
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/v1/billing/bk_"))
        .unwrap();
    assert!(charge.headers.contains_key("idempotency-key"));
    assert_eq!(charge.json()["customerKey"], ck.as_str());
    assert_eq!(charge.json()["amount"], 39000);
    assert!(
        s.billing().toss.problems().is_empty(),
        "{:?}",
        s.billing().toss.problems()
    );
    assert!(period_end(&s, uid).await > Utc::now() + CDuration::days(27));

    // The billing key is stored encrypted and never logged.
    let bk = s
        .billing()
        .toss
        .inner
        .lock()
        .unwrap()
        .billing_keys
        .iter()
        .find(|(_, c)| **c == ck)
        .map(|(k, _)| k.clone())
        .unwrap();
    let (enc, plain): (Option<String>, Option<String>) = stellar_common::with_db!(&s.adb.db, p => sqlx::query_as(
        "SELECT billing_key_enc, billing_key FROM users WHERE id = $1").bind(uid).fetch_one(p).await).unwrap();
    let enc = enc.unwrap();
    assert!(enc.starts_with("v1:") && !enc.contains(&bk) && plain.is_none());
    let raw: i64 = s.count("SELECT COUNT(*) FROM subscription_events WHERE user_id = $1 AND CAST(raw_data AS TEXT) LIKE '%bk_%'", uid).await;
    assert_eq!(raw, 0, "audit rows hold no billing key");

    // Renewal by the scheduler when the period has ended.
    s.exec(
        "UPDATE users SET current_period_end = $2 WHERE id = $1",
        uid,
        Utc::now() - CDuration::seconds(1),
    )
    .await;
    s.until(Duration::from_secs(5), "renewal charged", || async {
        s.billing().toss.total_charges() == 2
    })
    .await;
    s.until(Duration::from_secs(5), "renewal recorded", || async {
        period_end(&s, uid).await > Utc::now() + CDuration::days(27)
    })
    .await;

    // Crash between charge and record: Toss charges, billing is killed before it hears back.
    s.billing()
        .toss
        .set_mode(TossMode::ChargeThenHang(Duration::from_secs(30)));
    s.exec(
        "UPDATE users SET current_period_end = $2 WHERE id = $1",
        uid,
        Utc::now() - CDuration::seconds(1),
    )
    .await;
    s.until(Duration::from_secs(5), "crash charge executed", || async {
        s.billing().toss.total_charges() == 3
    })
    .await;
    s.kill9_billing().await;
    let (crash_order, st) = latest_order(&s, uid).await;
    assert_eq!(st, "pending", "billing died before recording the outcome");
    s.billing().toss.set_mode(TossMode::Approve);
    s.restart_billing().await;
    s.until(
        Duration::from_secs(8),
        "pending charge resolved after restart",
        || async { latest_order(&s, uid).await.1 == "done" },
    )
    .await;
    assert_eq!(
        s.billing().toss.charges_for(&crash_order),
        1,
        "exactly one charge for the interrupted order"
    );
    assert_eq!(s.billing().toss.total_charges(), 3, "nothing charged twice");
    assert!(
        period_end(&s, uid).await > Utc::now() + CDuration::days(27),
        "the account is paid"
    );
    assert_eq!(s.account(uid).await.1, "active");
    s.expect_tier(&key, "pro", Duration::from_secs(1)).await;

    // Lost answer without a crash (client timeout 1.5 s): looked up by orderId, not re-charged.
    s.billing()
        .toss
        .set_mode(TossMode::ChargeThenHang(Duration::from_secs(5)));
    s.exec(
        "UPDATE users SET current_period_end = $2 WHERE id = $1",
        uid,
        Utc::now() - CDuration::seconds(1),
    )
    .await;
    s.until(
        Duration::from_secs(10),
        "lost-answer charge resolved",
        || async {
            s.billing().toss.total_charges() == 4 && latest_order(&s, uid).await.1 == "done"
        },
    )
    .await;
    let (lost_order, _) = latest_order(&s, uid).await;
    assert_eq!(s.billing().toss.charges_for(&lost_order), 1);
    s.billing().toss.set_mode(TossMode::Approve);
    assert!(
        s.billing().toss.problems().is_empty(),
        "{:?}",
        s.billing().toss.problems()
    );
    let lookups = s
        .billing()
        .toss
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/payments/orders/"))
        .count();
    assert!(lookups >= 2, "outcomes were looked up by orderId");

    // Unsigned webhooks are re-checked with the API: an unknown payment is rejected; a known one
    // that is already recorded changes nothing.
    let forged =
        json!({"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2026-01-01T00:00:00.000000",
        "data": {"paymentKey": "pk_forged", "orderId": first_order, "status": "DONE"}})
        .to_string();
    assert_eq!(s.post("/webhook/toss", &forged, &[]).await.0, 400);
    let pk = s.billing().toss.payment(&first_order).unwrap()["paymentKey"]
        .as_str()
        .unwrap()
        .to_string();
    let real =
        json!({"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2026-01-01T00:00:00.000000",
        "data": {"paymentKey": pk, "orderId": first_order, "status": "DONE"}})
        .to_string();
    let before = period_end(&s, uid).await;
    assert_eq!(
        s.post(
            "/webhook/toss",
            &real,
            &[("tosspayments-webhook-transmission-id", "whtrans_1")]
        )
        .await
        .0,
        200
    );
    assert_eq!(period_end(&s, uid).await, before);
    assert_eq!(
        s.post(
            "/webhook/toss",
            r#"{"eventType":"SOMETHING_NEW","data":{}}"#,
            &[]
        )
        .await
        .0,
        200
    );
    assert_eq!(s.post("/webhook/toss", "{not json", &[]).await.0, 400);

    // Declines: past_due at once (tier kept), two retries 1 s apart, then free after the grace.
    let (u2, k2) = s.register("ivy@example.com").await;
    let ck2 = checkout(&s, "ivy@example.com", &k2).await;
    assert_eq!(confirm(&s, "ivy@example.com", &ck2, "auth_ok").await.0, 200);
    s.expect_tier(&k2, "pro", Duration::from_secs(1)).await;
    s.billing()
        .toss
        .set_mode(TossMode::Decline("REJECT_CARD_COMPANY".into()));
    s.exec(
        "UPDATE users SET current_period_end = $2 WHERE id = $1",
        u2,
        Utc::now() - CDuration::seconds(1),
    )
    .await;
    s.until(
        Duration::from_secs(5),
        "declined renewal → past_due",
        || async { s.account(u2).await.1 == "past_due" },
    )
    .await;
    assert_eq!(
        s.account(u2).await.0,
        "pro",
        "tier kept during the grace period"
    );
    s.until(
        Duration::from_secs(10),
        "past_due → free after grace",
        || async { s.account(u2).await.0 == "free" },
    )
    .await;
    s.expect_tier(&k2, "free", Duration::from_secs(1)).await;
    let failed = s
        .count(
            "SELECT COUNT(*) FROM toss_charges WHERE user_id = $1 AND status = 'failed'",
            u2,
        )
        .await;
    assert_eq!(failed, 3, "first attempt and two retries");
    s.billing().toss.set_mode(TossMode::Approve);

    // A declined first charge: 402, still free.
    let (u3, k3) = s.register("jack@example.com").await;
    let ck3 = checkout(&s, "jack@example.com", &k3).await;
    s.billing()
        .toss
        .set_mode(TossMode::Decline("INVALID_CARD_EXPIRATION".into()));
    assert_eq!(
        confirm(&s, "jack@example.com", &ck3, "auth_ok").await.0,
        402
    );
    assert_eq!(s.account(u3).await.0, "free");
    s.billing().toss.set_mode(TossMode::Approve);

    // Cancel: no more renewals; tier kept until the period ends, then free.
    assert_eq!(
        confirm(&s, "jack@example.com", &ck3, "auth_ok2").await.0,
        200
    );
    assert_eq!(s.account(u3).await.0, "pro");
    let charges_before = s.billing().toss.total_charges();
    let (st, v) = s.post("/billing/cancel", "", &[("X-API-Key", &key)]).await;
    assert_eq!(
        (st, v["subscription_status"].as_str()),
        (200, Some("cancelled")),
        "{v}"
    );
    assert_eq!(s.account(uid).await.0, "pro");
    s.exec(
        "UPDATE users SET current_period_end = $2 WHERE id = $1",
        uid,
        Utc::now() - CDuration::seconds(1),
    )
    .await;
    s.until(
        Duration::from_secs(5),
        "cancelled toss → free at period end",
        || async { s.account(uid).await.0 == "free" },
    )
    .await;
    s.expect_tier(&key, "free", Duration::from_secs(1)).await;

    // BILLING_DELETED for jack's key: renewals stop, tier kept until the period ends.
    let bk3 = s
        .billing()
        .toss
        .inner
        .lock()
        .unwrap()
        .billing_keys
        .iter()
        .filter(|(_, c)| **c == ck3)
        .map(|(k, _)| k.clone())
        .collect::<Vec<_>>();
    for k in &bk3 {
        let body = json!({"eventType": "BILLING_DELETED", "createdAt": "2026-01-01T00:00:00.000000", "data": {"billingKey": k, "reason": null}}).to_string();
        assert_eq!(s.post("/webhook/toss", &body, &[]).await.0, 200);
    }
    let (tier, status, _, cancel_flag, _) = s.account(u3).await;
    assert_eq!(
        (tier.as_str(), status.as_str(), cancel_flag),
        ("pro", "cancelled", true)
    );
    s.exec(
        "UPDATE users SET current_period_end = $2 WHERE id = $1",
        u3,
        Utc::now() - CDuration::seconds(1),
    )
    .await;
    s.until(Duration::from_secs(5), "jack → free", || async {
        s.account(u3).await.0 == "free"
    })
    .await;
    assert_eq!(
        s.billing().toss.total_charges(),
        charges_before,
        "no renewal after cancel / BILLING_DELETED"
    );
    assert!(
        s.billing().toss.problems().is_empty(),
        "{:?}",
        s.billing().toss.problems()
    );
    assert!(!s.billing().log().contains(&bk), "billing key never logged");

    let m = s.metrics().await;
    assert!(
        m.contains("stellar_billing_toss_charges_total{kind=\"first\",outcome=\"done\"}"),
        "{m}"
    );
    assert!(m.contains("kind=\"renewal\",outcome=\"declined\""), "{m}");
}

both_dbs!(toss_end_to_end, super::toss_flow);
