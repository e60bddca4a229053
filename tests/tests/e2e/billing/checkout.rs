//! Checkout for an e-mail without an account, on SQLite and PostgreSQL: the account is created
//! exactly as `POST /auth/register` would, and its first key is returned once (JSON `api_key`,
//! or the GET form's HTML page); an existing e-mail gets register's 409 without the account's
//! key and checks out with it (no new key); a refused checkout creates nothing; the key works and is never logged. Also: bad query strings are JSON 4xx, webhook
//! bodies between the API limit and the webhook limit are accepted, unsigned Toss event names do
//! not become metric labels, and a retried Toss confirmation never starts a second charge while
//! the first one's outcome is unknown.

use chrono::Utc;
use serde_json::{json, Value};
use std::time::Duration;
use stellar_tests::both_dbs;
use stellar_tests::fakes::{stripe_signature, TossMode};
use stellar_tests::harness::{billing_stack, Backend, Stack, STRIPE_PRICE_PRO, STRIPE_WHSEC};
use uuid::Uuid;

async fn checkout(s: &Stack, provider: &str, email: &str) -> (u16, Value) {
    s.post(
        &format!("/billing/{provider}/checkout"),
        &json!({"tier": "pro", "email": email}).to_string(),
        &[],
    )
    .await
}

/// A checkout by the holder of `key`.
async fn checkout_as(s: &Stack, provider: &str, email: &str, key: &str) -> (u16, Value) {
    s.post(
        &format!("/billing/{provider}/checkout"),
        &json!({"tier": "pro", "email": email}).to_string(),
        &[("X-API-Key", key)],
    )
    .await
}

async fn users_with_email(s: &Stack, email: &str) -> i64 {
    stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users WHERE email = $1")
        .bind(email).fetch_one(p).await)
    .unwrap()
}

async fn get_page(s: &Stack, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    get_page_as(s, path, None).await
}

async fn get_page_as(
    s: &Stack,
    path: &str,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = s.get_with_key(path, key).await;
    let (st, h) = (r.status().as_u16(), r.headers().clone());
    (st, h, r.text().await.unwrap())
}

/// The key shown in the interstitial page (`<code id="new-key">…</code>`).
fn key_in_page(html: &str) -> String {
    let start = html.find("id=\"new-key\">").expect("key element") + "id=\"new-key\">".len();
    html[start..start + 43].to_string()
}

async fn checkout_flow(backend: Backend) {
    let Some(s) = billing_stack(backend, false, &[]).await else {
        return;
    };
    let mut shown_keys = Vec::new();

    // POST, new e-mail (Stripe): a key, once; it works; the session carries that account's id.
    let (st, v) = checkout(&s, "stripe", "  New.Buyer@Example.com").await;
    assert_eq!(st, 200, "{v}");
    let key = v["api_key"]
        .as_str()
        .expect("a key for a new e-mail")
        .to_string();
    assert!(stellar_common::keys::is_well_formed(&key), "{key}");
    shown_keys.push(key.clone());
    let u = s.usage(&key).await;
    assert_eq!(
        (
            u["email"].as_str(),
            u["tier"].as_str(),
            u["keys_used"].as_i64()
        ),
        (Some("new.buyer@example.com"), Some("free"), Some(1))
    );
    let uid = Uuid::parse_str(u["user_id"].as_str().unwrap()).unwrap();
    let session = s
        .billing()
        .stripe
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/v1/checkout/sessions")
        .unwrap();
    assert_eq!(session.form()["client_reference_id"], uid.to_string());
    assert_eq!(
        session.form()["subscription_data[metadata][user_id]"],
        uid.to_string()
    );

    // Paying gives that key the tier: the paid customer has access.
    let now = Utc::now().timestamp();
    let created = json!({"id": "evt_new_1", "object": "event", "type": "customer.subscription.created", "created": now,
        "data": {"object": {"id": "sub_new", "object": "subscription", "customer": "cus_new", "status": "active",
        "cancel_at_period_end": false, "cancel_at": null,
        "items": {"data": [{"price": {"id": STRIPE_PRICE_PRO}, "current_period_end": now + 30 * 86400}]},
        "metadata": {"user_id": uid.to_string()}}}})
    .to_string();
    let sig = stripe_signature(STRIPE_WHSEC, now, &created);
    let (st, v) = s
        .post("/webhook/stripe", &created, &[("Stripe-Signature", &sig)])
        .await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("applied")), "{v}");
    s.expect_tier(&key, "pro", Duration::from_secs(1)).await;

    // The same e-mail again (any provider, any spelling): register's 409 and no key; with the
    // account's key it checks out for the account, still without a new key.
    for provider in ["stripe", "lemonsqueezy", "toss"] {
        let (st, v) = checkout(&s, provider, "New.Buyer@example.com").await;
        assert_eq!(st, 409, "{provider}: {v}");
        assert!(v.get("api_key").is_none(), "{provider}: {v}");
        let (st, v) = checkout_as(&s, provider, "new.buyer@example.com", &key).await;
        assert_eq!(st, 200, "{provider}: {v}");
        assert!(v.get("api_key").is_none(), "{provider}: {v}");
    }
    let (st, v) = s
        .post(
            "/auth/register",
            r#"{"email":"NEW.BUYER@example.com"}"#,
            &[],
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(v.get("api_key").is_none());
    assert_eq!(users_with_email(&s, "new.buyer@example.com").await, 1);

    // A registered e-mail: no key either.
    let (_, reg_key) = s.register("registered@example.com").await;
    shown_keys.push(reg_key.clone());
    let (st, v) = checkout(&s, "lemonsqueezy", "registered@example.com").await;
    assert_eq!(st, 409, "{v}");
    assert!(v.get("api_key").is_none(), "{v}");
    let (st, v) = checkout_as(&s, "lemonsqueezy", "registered@example.com", &reg_key).await;
    assert_eq!(st, 200, "{v}");
    assert!(v.get("api_key").is_none(), "{v}");

    // Bad input creates nothing.
    for (body, want) in [
        (json!({"tier": "free", "email": "nobody1@example.com"}), 422),
        (json!({"tier": "gold", "email": "nobody1@example.com"}), 422),
        (json!({"tier": "pro", "email": "nobody1@"}), 422),
        (json!({"tier": "pro"}), 422),
    ] {
        let (st, v) = s
            .post("/billing/stripe/checkout", &body.to_string(), &[])
            .await;
        assert_eq!(st, want, "{body} → {v}");
        assert!(v["detail"].is_string(), "{v}");
    }
    let (st, v) = checkout(&s, "paypal", "nobody1@example.com").await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(users_with_email(&s, "nobody1@example.com").await, 0);

    // Toss (POST), new e-mail: the key, and the customerKey the account keeps.
    let (st, v) = checkout(&s, "toss", "toss.buyer@example.com").await;
    assert_eq!(st, 200, "{v}");
    let tkey = v["api_key"].as_str().unwrap().to_string();
    shown_keys.push(tkey.clone());
    let ck = v["customer_key"].as_str().unwrap().to_string();
    let tuid = Uuid::parse_str(s.usage(&tkey).await["user_id"].as_str().unwrap()).unwrap();
    let stored: Option<String> = stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar("SELECT toss_customer_key FROM users WHERE id = $1")
        .bind(tuid).fetch_one(p).await)
    .unwrap();
    assert_eq!(stored.as_deref(), Some(ck.as_str()));
    let (_, v) = checkout_as(&s, "toss", "toss.buyer@example.com", &tkey).await;
    assert_eq!(v["customer_key"].as_str(), Some(ck.as_str()));
    assert!(v.get("api_key").is_none());

    // GET form, new e-mail: a page with the key (once) and a link on to the provider.
    let (st, h, html) = get_page(
        &s,
        "/billing/lemonsqueezy/checkout?tier=pro&email=get.buyer%40example.com",
    )
    .await;
    assert_eq!(st, 200, "{html}");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-store");
    let gkey = key_in_page(&html);
    assert!(stellar_common::keys::is_well_formed(&gkey), "{gkey}");
    shown_keys.push(gkey.clone());
    assert!(html.contains("shown only once"), "{html}");
    assert!(
        html.contains("id=\"continue\" class=\"btn btn-primary\" href=\"https://"),
        "{html}"
    );
    assert!(html.contains("Continue to payment"));
    assert_eq!(s.usage(&gkey).await["email"], "get.buyer@example.com");
    // Again: the account exists, so 409 without its key, a plain redirect (no key) with it.
    let again = "/billing/lemonsqueezy/checkout?tier=pro&email=get.buyer%40example.com";
    let (st, h, html) = get_page(&s, again).await;
    assert_eq!(st, 409, "{html}");
    assert!(h.get("location").is_none() && !html.contains("sk-stellar-"));
    let (st, h, html) = get_page_as(&s, again, Some(&gkey)).await;
    assert_eq!(st, 303, "{html}");
    assert!(h["location"].to_str().unwrap().starts_with("https://"));
    assert!(!html.contains("sk-stellar-"));

    // GET Toss page, new e-mail: the key page first, whose link (with the account's
    // customerKey, which a browser link can carry where a key header cannot) comes back to the
    // SDK page. Without the customerKey, the account's page is not anyone's to open.
    let toss_page = "/billing/toss/pay?tier=pro&email=toss.get%40example.com";
    let (st, _, html) = get_page(&s, toss_page).await;
    assert_eq!(st, 200);
    let tgkey = key_in_page(&html);
    assert!(stellar_common::keys::is_well_formed(&tgkey), "{html}");
    shown_keys.push(tgkey.clone());
    let link = format!("{}&amp;customerKey=", toss_page.replace('&', "&amp;"));
    let at = html.find(&link).expect("the link back to the Toss page") + link.len();
    let link_ck = &html[at..at + 36];
    let tguid = Uuid::parse_str(s.usage(&tgkey).await["user_id"].as_str().unwrap()).unwrap();
    let stored: Option<String> = stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar("SELECT toss_customer_key FROM users WHERE id = $1")
        .bind(tguid).fetch_one(p).await)
    .unwrap();
    assert_eq!(stored.as_deref(), Some(link_ck), "{html}");
    let (st, h, html) = get_page(&s, &format!("{toss_page}&customerKey={link_ck}")).await;
    assert_eq!(st, 200, "{html}");
    assert!(html.contains("requestBillingAuth") && !html.contains("sk-stellar-"));
    assert_eq!(h["referrer-policy"], "no-referrer");
    let (st, _, html) = get_page(&s, toss_page).await;
    assert_eq!(st, 409, "{html}");
    let wrong = format!("{toss_page}&customerKey={ck}");
    let (st, _, html) = get_page(&s, &wrong).await;
    assert_eq!(st, 403, "another account's customerKey: {html}");

    // Missing or malformed query parameters: JSON 422, nothing created.
    for path in [
        "/billing/stripe/checkout?tier=pro",
        "/billing/stripe/checkout",
        "/billing/toss/pay?email=x%40example.com",
        "/billing/toss/success?authKey=a",
    ] {
        let (st, v) = s.get(path, None).await;
        assert_eq!(st, 422, "{path} → {v}");
        assert!(v["detail"].is_string(), "{path} → {v}");
    }

    // The keys are in no log line.
    let log = s.billing().log();
    for k in &shown_keys {
        assert!(!log.contains(k.as_str()), "a key was logged");
    }
    assert!(!log.contains("sk-stellar-"), "no key material in the log");
}

/// A provider that refuses (unreachable here): 502, and no account for the new e-mail.
async fn refused_checkout(backend: Backend) {
    let Some(s) = billing_stack(
        backend,
        false,
        &[("STRIPE_API_BASE", "http://127.0.0.1:9".into())],
    )
    .await
    else {
        return;
    };
    let (st, v) = checkout(&s, "stripe", "refused@example.com").await;
    assert_eq!(st, 502, "{v}");
    assert!(v.get("api_key").is_none());
    assert_eq!(users_with_email(&s, "refused@example.com").await, 0);
    let (st, _, _) = get_page(
        &s,
        "/billing/stripe/checkout?tier=pro&email=refused%40example.com",
    )
    .await;
    assert_eq!(st, 502);
    assert_eq!(users_with_email(&s, "refused@example.com").await, 0);
    // Registering afterwards works: nothing was squatted.
    s.register("refused@example.com").await;
}

/// Webhook bodies: over the 64 KiB API limit but under the 1 MiB webhook limit are accepted;
/// Toss event names from unsigned bodies never become metric labels.
async fn webhook_limits_and_labels(backend: Backend) {
    let Some(s) = billing_stack(backend, false, &[]).await else {
        return;
    };
    let now = Utc::now().timestamp();
    let body =
        json!({"id": "evt_large", "object": "event", "type": "invoice.finalized", "created": now,
        "data": {"object": {"id": "in_1", "pad": "x".repeat(300 * 1024)}}})
        .to_string();
    let sig = stripe_signature(STRIPE_WHSEC, now, &body);
    let (st, v) = s
        .post("/webhook/stripe", &body, &[("Stripe-Signature", &sig)])
        .await;
    assert_eq!((st, v["outcome"].as_str()), (200, Some("ignored")), "{v}");
    // The API limit still holds elsewhere.
    let big = json!({"tier": "pro", "email": format!("{}@example.com", "a".repeat(70 * 1024))});
    assert_eq!(
        s.post("/billing/stripe/checkout", &big.to_string(), &[])
            .await
            .0,
        413
    );

    for i in 0..3 {
        let forged = json!({"eventType": format!("attacker_label_{i}"), "data": {}}).to_string();
        let (st, _) = s.post("/webhook/toss", &forged, &[]).await;
        assert_eq!(st, 200);
    }
    let m = s.metrics().await;
    assert!(!m.contains("attacker_label"), "{m}");
    assert!(
        m.contains(
            r#"stellar_billing_webhooks_total{event="other",outcome="ignored",provider="toss"} 3"#
        ),
        "{m}"
    );
}

/// A Toss confirmation whose charge answer was lost (503, "pending"), retried by the customer
/// with a new authKey before billing has settled the first charge: no second charge.
async fn toss_retry_never_double_charges(backend: Backend) {
    // Long enough that the reconciler does not settle the lost charge during the test.
    let env = [("STELLAR_BILLING_SCHEDULER_INTERVAL_SECS", "60".into())];
    let Some(s) = billing_stack(backend, false, &env).await else {
        return;
    };
    let (st, v) = checkout(&s, "toss", "retry@example.com").await;
    assert_eq!(st, 200, "{v}");
    let ck = v["customer_key"].as_str().unwrap().to_string();
    s.billing()
        .toss
        .set_mode(TossMode::ChargeThenHang(Duration::from_secs(4)));
    let confirm = |auth: &'static str| {
        let body = json!({"customerKey": ck, "authKey": auth, "tier": "pro", "email": "retry@example.com"})
            .to_string();
        let s = &s;
        async move { s.post("/billing/toss/confirm", &body, &[]).await }
    };
    let (st, v) = confirm("auth_ok").await;
    assert_eq!(st, 503, "the answer was lost: {v}");
    assert_eq!(s.billing().toss.total_charges(), 1);
    s.billing().toss.set_mode(TossMode::Approve);
    let (st, v) = confirm("auth_ok_again").await;
    assert_eq!(st, 503, "still settling the first charge: {v}");
    assert_eq!(s.billing().toss.total_charges(), 1, "never charged twice");
    let n = stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM toss_charges")
        .fetch_one(p).await)
    .unwrap();
    assert_eq!(n, 1, "no second order was started");
}

both_dbs!(
    checkout_for_a_new_email_issues_its_first_key,
    super::checkout_flow
);

both_dbs!(refused_checkout_creates_nothing, super::refused_checkout);

both_dbs!(
    webhook_body_limit_and_bounded_labels,
    super::webhook_limits_and_labels
);

both_dbs!(
    toss_confirmation_retry_never_double_charges,
    super::toss_retry_never_double_charges
);
