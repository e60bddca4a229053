//! Billing's answers to an attacker (issue 12), on SQLite and PostgreSQL:
//! - an unauthenticated checkout never binds to, reveals or reuses an existing account's provider
//!   customer (Stripe `customer`, Lemon Squeezy's custom `user_id`, Toss `customerKey`), and an
//!   unauthenticated Toss confirmation cannot attach a card to someone else's account; with that
//!   account's own API key the checkout is the account's, as before;
//! - a checkout that cannot go on (the provider refused, or its answer or our Toss set-up is
//!   unusable) creates nothing: no user, no key, no change-feed row;
//! - a JSON body that is not the documented object (an array, a string, null, …) is a 4xx JSON
//!   error on every JSON endpoint and changes nothing;
//! - every 401 carries `WWW-Authenticate`.

use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use stellar_tests::both_dbs;
use stellar_tests::harness::{billing_stack, Backend, Stack};
use uuid::Uuid;

const WWW_AUTHENTICATE: &str = r#"Bearer realm="stellar""#;

/// The account columns a checkout or confirmation could touch.
type Row = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
);

async fn row(s: &Stack, uid: Uuid) -> Row {
    stellar_common::with_db!(&s.adb.db, p => sqlx::query_as(
        "SELECT provider, provider_customer_id, toss_customer_key, billing_key_enc, updated_at FROM users WHERE id = $1")
        .bind(uid).fetch_one(p).await)
    .unwrap()
}

/// (users, api_keys, change_feed) row counts.
async fn totals(s: &Stack) -> (i64, i64, i64) {
    let mut out = [0i64; 3];
    for (i, t) in ["users", "api_keys", "change_feed"].iter().enumerate() {
        let sql = format!("SELECT COUNT(*) FROM {t}");
        out[i] = stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar::<_, i64>(&sql).fetch_one(p).await)
            .unwrap();
    }
    (out[0], out[1], out[2])
}

async fn post_checkout(
    s: &Stack,
    provider: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    s.post(
        &format!("/billing/{provider}/checkout"),
        &body.to_string(),
        headers,
    )
    .await
}

/// GET `path`: status, the `Location` and `WWW-Authenticate` headers, and the body.
async fn get_raw(
    s: &Stack,
    path: &str,
    key: Option<&str>,
) -> (u16, Option<String>, Option<String>, String) {
    let r = s.get_with_key(path, key).await;
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (st, loc, www) = (r.status().as_u16(), h("location"), h("www-authenticate"));
    (st, loc, www, r.text().await.unwrap())
}

/// Every request any fake provider received, as text (paths and bodies).
fn provider_traffic(s: &Stack) -> String {
    let mut all = s.billing().stripe.requests();
    all.extend(s.billing().lemon.requests());
    all.extend(s.billing().toss.requests());
    all.iter()
        .map(|r| format!("{} {}\n", r.path, r.body))
        .collect()
}

async fn unauthenticated_checkout(backend: Backend) {
    let Some(s) = billing_stack(backend, false, &[]).await else {
        return;
    };
    // The victim had a Stripe subscription and a Toss customerKey; the second victim never
    // checked out with Toss.
    let (uid, key) = s.register("victim@example.com").await;
    stellar_common::with_db!(&s.adb.db, p => sqlx::query(
        "UPDATE users SET provider = 'stripe', provider_customer_id = 'cus_victim', toss_customer_key = 'ck-victim-0001' WHERE id = $1")
        .bind(uid).execute(p).await.map(|_| ()))
    .unwrap();
    let (uid2, _) = s.register("victim2@example.com").await;
    let before = (row(&s, uid).await, row(&s, uid2).await, totals(&s).await);
    let secrets = ["cus_victim", "ck-victim-0001"];
    let ids = [uid.to_string(), uid2.to_string()];

    // POST, every provider, any spelling of the e-mail: the answer register gives (409, no key,
    // no checkout), nothing of the account's in it, no provider asked on its behalf.
    for provider in ["stripe", "lemonsqueezy", "toss"] {
        for email in [
            "victim@example.com",
            " VICTIM@example.com",
            "victim2@example.com",
        ] {
            let (st, v) =
                post_checkout(&s, provider, &json!({"tier": "pro", "email": email}), &[]).await;
            assert_eq!(st, 409, "{provider} {email}: {v}");
            assert!(
                v["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("Email already registered"),
                "{v}"
            );
            let text = v.to_string();
            assert!(
                v.get("checkout_url").is_none() && v.get("api_key").is_none(),
                "{v}"
            );
            for x in secrets.iter().map(|x| x.to_string()).chain(ids.clone()) {
                assert!(!text.contains(&x), "{provider}: {x} revealed: {v}");
            }
        }
    }
    // GET forms: no redirect to a checkout, no Toss page with the customerKey.
    for path in [
        "/billing/stripe/checkout?tier=pro&email=victim%40example.com",
        "/billing/lemonsqueezy/checkout?tier=pro&email=victim%40example.com",
        "/billing/toss/checkout?tier=pro&email=victim%40example.com",
        "/billing/toss/pay?tier=pro&email=victim%40example.com",
        "/billing/toss/pay?tier=pro&email=victim2%40example.com",
    ] {
        let (st, loc, _, body) = get_raw(&s, path, None).await;
        assert_eq!((st, loc.as_deref()), (409, None), "{path}: {body}");
        assert!(!body.contains("ck-victim") && !body.contains("requestBillingAuth"));
    }
    let traffic = provider_traffic(&s);
    for x in secrets.iter().map(|x| x.to_string()).chain(ids.clone()) {
        assert!(!traffic.contains(&x), "{x} sent to a provider:\n{traffic}");
    }

    // An unauthenticated Toss confirmation cannot attach a card to the victim: not with the
    // customerKey of an account the attacker made, nor with a guess.
    let (st, v) = post_checkout(
        &s,
        "toss",
        &json!({"tier": "pro", "email": "attacker@example.com"}),
        &[],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let attacker_ck = v["customer_key"].as_str().unwrap().to_string();
    let attacker_key = v["api_key"].as_str().unwrap().to_string();
    for (email, ck) in [
        ("victim@example.com", attacker_ck.as_str()),
        ("victim2@example.com", attacker_ck.as_str()),
        ("victim2@example.com", ""),
        ("victim@example.com", "ck-victim-0002"),
    ] {
        let (st, v) = s
            .post(
                "/billing/toss/confirm",
                &json!({"customerKey": ck, "authKey": "auth_ok", "tier": "pro", "email": email})
                    .to_string(),
                &[],
            )
            .await;
        assert_eq!(st, 403, "{email} {ck}: {v}");
        let (st, loc, _, _) = get_raw(
            &s,
            &format!(
                "/billing/toss/success?customerKey={ck}&authKey=auth_ok&tier=pro&email={email}"
            ),
            None,
        )
        .await;
        assert_eq!(st, 303);
        assert!(loc.unwrap().contains("checkout=failed"));
    }
    assert!(
        !s.billing()
            .toss
            .requests()
            .iter()
            .any(|r| r.path.contains("/authorizations/")),
        "no card registration was attempted"
    );
    assert_eq!(
        (row(&s, uid).await, row(&s, uid2).await),
        (before.0.clone(), before.1.clone()),
        "the accounts are untouched"
    );
    let after = totals(&s).await;
    assert_eq!(
        (after.0, after.1),
        (before.2 .0 + 1, before.2 .1 + 1),
        "only the attacker's own account"
    );

    // The attacker's own key does not make the victim's e-mail theirs.
    for (provider, header) in [("stripe", "X-API-Key"), ("toss", "Authorization")] {
        let value = if header == "Authorization" {
            format!("Bearer {attacker_key}")
        } else {
            attacker_key.clone()
        };
        let (st, v) = post_checkout(
            &s,
            provider,
            &json!({"tier": "pro", "email": "victim@example.com"}),
            &[(header, &value)],
        )
        .await;
        assert_eq!(st, 403, "{provider}: {v}");
        assert!(!v.to_string().contains("ck-victim"), "{v}");
    }
    // A key that is not valid is a 401, never a fallback to the unauthenticated path.
    let bogus = "sk-stellar-00000000000000000000000000000000";
    let (st, v) = post_checkout(
        &s,
        "stripe",
        &json!({"tier": "pro", "email": "someone.new@example.com"}),
        &[("X-API-Key", bogus)],
    )
    .await;
    assert_eq!(st, 401, "{v}");
    let (st, _, www, _) = get_raw(
        &s,
        "/billing/stripe/checkout?tier=pro&email=someone.new%40example.com",
        Some(bogus),
    )
    .await;
    assert_eq!((st, www.as_deref()), (401, Some(WWW_AUTHENTICATE)));
    assert_eq!(after, totals(&s).await);
    let traffic = provider_traffic(&s);
    for x in secrets.iter().map(|x| x.to_string()).chain(ids.clone()) {
        assert!(!traffic.contains(&x), "{x} sent to a provider:\n{traffic}");
    }

    // With the account's own key (either header), the checkout is the account's, as before.
    let (st, v) = post_checkout(
        &s,
        "stripe",
        &json!({"tier": "pro", "email": "Victim@example.com"}),
        &[("X-API-Key", &key)],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(v.get("api_key").is_none());
    let f = s
        .billing()
        .stripe
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/v1/checkout/sessions")
        .unwrap()
        .form();
    assert_eq!(
        (
            f.get("customer").map(String::as_str),
            f["client_reference_id"].as_str()
        ),
        (Some("cus_victim"), uid.to_string().as_str())
    );
    let bearer = format!("Bearer {key}");
    let (st, v) = post_checkout(
        &s,
        "lemonsqueezy",
        &json!({"tier": "pro"}),
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(st, 200, "the e-mail may be left out with a key: {v}");
    let b = s
        .billing()
        .lemon
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/v1/checkouts")
        .unwrap()
        .json();
    assert_eq!(
        (
            b["data"]["attributes"]["checkout_data"]["custom"]["user_id"].as_str(),
            b["data"]["attributes"]["checkout_data"]["email"].as_str()
        ),
        (Some(uid.to_string().as_str()), Some("victim@example.com"))
    );
    let (st, v) = post_checkout(
        &s,
        "toss",
        &json!({"tier": "pro", "email": "victim@example.com"}),
        &[("X-API-Key", &key)],
    )
    .await;
    assert_eq!(
        (st, v["customer_key"].as_str()),
        (200, Some("ck-victim-0001")),
        "{v}"
    );
    // Its checkout page carries the customerKey, so the browser needs no key header there.
    let page = v["checkout_url"].as_str().unwrap();
    let path = &page[page.find("/billing/").unwrap()..];
    let (st, _, _, html) = get_raw(&s, path, None).await;
    assert_eq!(st, 200, "{html}");
    assert!(html.contains("requestBillingAuth") && html.contains("ck-victim-0001"));
    let (st, loc, _, _) = get_raw(
        &s,
        "/billing/stripe/checkout?tier=pro&email=victim%40example.com",
        Some(&key),
    )
    .await;
    assert_eq!(st, 303);
    assert!(loc.unwrap().starts_with("https://checkout.stripe.com/"));
    // And the card the key holder registers lands on the account.
    let (st, v) = s
        .post(
            "/billing/toss/confirm",
            &json!({"customerKey": "ck-victim-0001", "authKey": "auth_ok", "tier": "pro", "email": "victim@example.com"})
                .to_string(),
            &[],
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(row(&s, uid).await.3.is_some());
    assert_eq!(totals(&s).await.0, after.0, "no account was created");
}

/// A Stripe stand-in that accepts every Checkout Session but answers with a URL no browser
/// may be sent to.
async fn stripe_with_unusable_url() -> String {
    let app = Router::new().route(
        "/v1/checkout/sessions",
        post(|| async { Json(json!({"id": "cs_bad", "url": "javascript:alert(1)"})) }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

async fn unusable_checkout_creates_nothing(backend: Backend) {
    let stripe = stripe_with_unusable_url().await;
    for (var, value, provider) in [
        // Billing's own Toss page would be at an unusable address.
        (
            "STELLAR_BILLING_PUBLIC_URL",
            "ftp://billing.example".to_string(),
            "toss",
        ),
        // Toss's API cannot be reached at such a base: the card could never be registered.
        ("TOSS_API_BASE", "ftp://toss.example".to_string(), "toss"),
        // Stripe accepted, but its checkout URL is not one a browser may be sent to.
        ("STRIPE_API_BASE", stripe.clone(), "stripe"),
        // Stripe cannot be reached at all.
        (
            "STRIPE_API_BASE",
            "http://127.0.0.1:9".to_string(),
            "stripe",
        ),
    ] {
        let Some(s) = billing_stack(backend, false, &[(var, value.clone())]).await else {
            return;
        };
        let before = totals(&s).await;
        let (st, v) = post_checkout(
            &s,
            provider,
            &json!({"tier": "pro", "email": "refused@example.com"}),
            &[],
        )
        .await;
        assert_eq!(st, 502, "{var}={value}: {v}");
        assert!(v.get("api_key").is_none() && v["detail"].is_string(), "{v}");
        assert_eq!(
            totals(&s).await,
            before,
            "{var}={value}: POST created something"
        );
        let (st, _, _, body) = get_raw(
            &s,
            &format!("/billing/{provider}/checkout?tier=pro&email=refused%40example.com"),
            None,
        )
        .await;
        assert_eq!(st, 502, "{var}={value}: {body}");
        assert!(!body.contains("sk-stellar-"));
        assert_eq!(
            totals(&s).await,
            before,
            "{var}={value}: GET created something"
        );
        if provider == "toss" {
            let (st, _, _, body) = get_raw(
                &s,
                "/billing/toss/pay?tier=pro&email=refused%40example.com",
                None,
            )
            .await;
            assert_eq!(st, 502, "{var}={value}: {body}");
            assert_eq!(totals(&s).await, before);
        }
        // The e-mail is still free.
        s.register("refused@example.com").await;
    }
}

async fn non_object_bodies(backend: Backend) {
    let Some(s) = billing_stack(backend, false, &[]).await else {
        return;
    };
    let (uid, key) = s.register("existing@example.com").await;
    let (_, other_key) = s.register("toss.owner@example.com").await;
    let (st, v) = post_checkout(
        &s,
        "toss",
        &json!({"tier": "pro", "email": "toss.owner@example.com"}),
        &[("X-API-Key", &other_key)],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let ck = v["customer_key"].as_str().unwrap().to_string();
    let before = totals(&s).await;
    let keys_of = |u: Uuid| {
        let s = &s;
        async move {
            s.count(
                "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND is_active = TRUE",
                u,
            )
            .await
        }
    };
    let wrong_shapes = [
        "[]".to_string(),
        r#"["existing@example.com"]"#.to_string(),
        r#"["brand.new@example.com"]"#.to_string(),
        r#""existing@example.com""#.to_string(),
        "null".to_string(),
        "42".to_string(),
        "true".to_string(),
        r#"[{"email":"brand.new@example.com"}]"#.to_string(),
    ];
    for body in &wrong_shapes {
        let (st, v) = s.post("/auth/register", body, &[]).await;
        assert_eq!(st, 422, "register {body} → {v}");
        assert!(v["detail"].is_string(), "{v}");
    }
    let malformed = ["[", r#"["a@example.com""#, "[1,]"];
    for body in malformed {
        let (st, v) = s.post("/auth/register", body, &[]).await;
        assert_eq!(st, 400, "register {body} → {v}");
        assert!(v["detail"].is_string(), "{v}");
    }
    // The other JSON endpoints: key creation, checkout, Toss confirmation.
    let checkouts = [
        r#"["pro","brand.new@example.com"]"#,
        r#"["pro"]"#,
        "[]",
        "null",
    ];
    for body in checkouts {
        for provider in ["stripe", "lemonsqueezy", "toss"] {
            let (st, v) = s
                .post(&format!("/billing/{provider}/checkout"), body, &[])
                .await;
            assert_eq!(st, 422, "{provider} checkout {body} → {v}");
            assert!(v["detail"].is_string(), "{v}");
        }
    }
    for body in [r#"["my key"]"#, "[]", r#""name""#, "7"] {
        let (st, v) = s.create_key(&key, body).await;
        assert_eq!(st, 422, "create key {body} → {v}");
        assert!(v["detail"].is_string(), "{v}");
    }
    let confirm = json!([ck, "auth_ok", "pro", "toss.owner@example.com"]).to_string();
    let (st, v) = s.post("/billing/toss/confirm", &confirm, &[]).await;
    assert_eq!(st, 422, "confirm {confirm} → {v}");
    assert_eq!(totals(&s).await, before, "nothing was created");
    assert_eq!(keys_of(uid).await, 1);
    assert!(
        s.billing().toss.requests().is_empty(),
        "no card registration started"
    );
    assert!(s.billing().stripe.requests().is_empty() && s.billing().lemon.requests().is_empty());
    // The documented shapes still work.
    let (st, v) = s.create_key(&key, r#"{"name":"second"}"#).await;
    assert_eq!(st, 403, "free tier allows one key: {v}");
    let (st, v) = s
        .post(
            "/auth/register",
            r#"{"email":"brand.new@example.com"}"#,
            &[],
        )
        .await;
    assert_eq!(st, 201, "{v}");
}

async fn unauthorized_has_www_authenticate(backend: Backend) {
    let Some(s) = billing_stack(backend, false, &[]).await else {
        return;
    };
    let (_, key) = s.register("holder@example.com").await;
    let kid = s.get("/auth/api-keys", Some(&key)).await.1["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let unknown = "sk-stellar-0123456789abcdef0123456789abcdef";
    let credentials: [(&str, Option<String>); 5] = [
        ("none", None),
        ("x-api-key", Some("sk-stellar-nothex".into())),
        ("x-api-key", Some(unknown.into())),
        ("authorization", Some(format!("Bearer {unknown}"))),
        ("authorization", Some("Bearer".into())),
    ];
    let requests = [
        ("GET", "/auth/usage".to_string()),
        ("GET", "/auth/usage/history".to_string()),
        ("GET", "/auth/api-keys".to_string()),
        ("POST", "/auth/api-keys".to_string()),
        ("DELETE", format!("/auth/api-keys/{kid}")),
        ("POST", format!("/auth/api-keys/{kid}/rotate")),
        ("GET", "/billing/portal".to_string()),
        ("POST", "/billing/cancel".to_string()),
    ];
    for (method, path) in &requests {
        for (header, value) in &credentials {
            let mut r = s.http.request(
                method.parse().unwrap(),
                format!("{}{path}", s.billing().url),
            );
            if let Some(v) = value {
                r = r.header(*header, v);
            }
            let r = r.send().await.unwrap();
            let st = r.status().as_u16();
            let www = r
                .headers()
                .get_all("www-authenticate")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(st, 401, "{method} {path} ({header}: {value:?}) → {v}");
            assert_eq!(www, [WWW_AUTHENTICATE], "{method} {path} ({header})");
            assert!(v["detail"].is_string(), "{v}");
        }
    }
    // Other errors do not ask for credentials.
    for (st, path) in [(404, "/no/such/path"), (404, "/billing/portal")] {
        let r = s
            .http
            .get(format!("{}{path}", s.billing().url))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), st, "{path}");
        assert!(r.headers().get("www-authenticate").is_none(), "{path}");
    }
    // The key still works: the failures above changed nothing.
    assert_eq!(s.usage(&key).await["keys_used"], 1);
}

both_dbs!(
    unauthenticated_checkout_never_binds_an_existing_account,
    super::unauthenticated_checkout
);

both_dbs!(
    a_checkout_that_cannot_go_on_creates_nothing,
    super::unusable_checkout_creates_nothing
);

both_dbs!(
    non_object_json_bodies_are_422_and_change_nothing,
    super::non_object_bodies
);

both_dbs!(
    every_401_carries_www_authenticate,
    super::unauthorized_has_www_authenticate
);
