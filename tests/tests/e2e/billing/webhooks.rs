//! Webhooks to customers and alerts (issue 15), end to end on SQLite and PostgreSQL: the real
//! `stellar-billing` binary (with `auth.immediate_key`, so `POST /auth/register` answers with a
//! key), its webhook worker posting to a small axum receiver in this test on a free port (which
//! checks every `Stellar-Signature` itself, with the secret it was shown and the documented
//! scheme), and its mail worker sending to the SMTP catcher.
//!
//! - a registered endpoint gets a signed `key.created` after a key is created; a receiver that
//!   answers 500 then 200 gets it retried and delivered, both attempts recorded;
//! - resend delivers the same event again; rotate-secret changes the signing key;
//! - the URL and event rules (422), and a member may not manage webhooks (403);
//! - a memory-quota alert is sent once by mail and webhook, not again while it holds, and again
//!   after going below and back above; a rate-limit alert from usage_minutes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stellar_common::{keys, with_db, Db};
use stellar_tests::both_dbs;
use stellar_tests::harness::{billing_stack, Backend, Stack};
use stellar_tests::smtp::SmtpCatcher;
use uuid::Uuid;

/* ---------- the receiver ---------- */

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    signature: String,
    event_id: String,
    content_type: String,
    body: String,
    status: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct Shared {
    hits: Mutex<Vec<Hit>>,
    /// Statuses to answer, in order; 200 once empty.
    script: Mutex<VecDeque<u16>>,
}

struct Receiver {
    url: String,
    shared: Arc<Shared>,
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let status = s.script.lock().unwrap().pop_front().unwrap_or(200);
    s.hits.lock().unwrap().push(Hit {
        signature: h("stellar-signature"),
        event_id: h("stellar-event-id"),
        content_type: h("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let shared = Arc::new(Shared::default());
        shared.script.lock().unwrap().extend(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, shared }
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    async fn wait_for(&self, s: &Stack, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "receiver: {} request(s), expected {n}\nbilling log:\n{}",
                hits.len(),
                s.billing().log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The documented scheme, written here from the docs: `t=<unix>,v1=<hex HMAC-SHA256(secret,
/// "<t>.<body>")>`, signed within 5 minutes of now.
fn signed_by(secret: &str, hit: &Hit) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in hit.signature.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", hit.body).as_bytes());
    let want = hex::encode(mac.finalize().into_bytes());
    let fresh = (chrono::Utc::now().timestamp() - t).abs() <= 300;
    fresh && v1.contains(&want)
}

/* ---------- the stack ---------- */

fn env(smtp: &str) -> Vec<(&'static str, String)> {
    [
        ("STELLAR_AUTH_IMMEDIATE_KEY", "true"),
        ("STELLAR_MAIL_SMTP_URL", smtp),
        ("STELLAR_MAIL_FROM", "Hooks Test <mail@hooks.test>"),
        ("STELLAR_MAIL_PRODUCT_NAME", "Hooks Test"),
        ("STELLAR_MAIL_POLL_INTERVAL_SECS", "0.1"),
        ("STELLAR_WEBHOOKS_POLL_INTERVAL_SECS", "0.1"),
        ("STELLAR_WEBHOOKS_RETRY_BASE_SECS", "0.2"),
        ("STELLAR_WEBHOOKS_RETRY_MAX_SECS", "0.5"),
        ("STELLAR_WEBHOOKS_TIMEOUT_SECS", "2.0"),
        ("STELLAR_ALERTS_INTERVAL_SECS", "0.2"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// Billing, the SMTP catcher it mails to, and a registered account (id, key).
struct Env {
    s: Stack,
    c: SmtpCatcher,
    uid: Uuid,
    key: String,
}

async fn start(backend: Backend, email: &str) -> Option<Env> {
    let c = SmtpCatcher::start().await;
    let env = env(&c.url());
    let s = billing_stack(backend, false, &env).await?;
    let (uid, key) = s.register(email).await;
    Some(Env { s, c, uid, key })
}

async fn call(s: &Stack, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = s
        .http
        .request(m, format!("{}{path}", s.billing().url))
        .header("X-API-Key", key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("billing answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn exec(db: &Db, sql: &str, a: Uuid, n: i64) {
    with_db!(db, p => sqlx::query(sql).bind(a).bind(n).execute(p).await.map(|_| ())).unwrap();
}

async fn count(db: &Db, sql: &str, a: Uuid) -> i64 {
    with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).bind(a).fetch_one(p).await).unwrap()
}

async fn endpoints(s: &Stack, account: Uuid) -> i64 {
    count(
        &s.adb.db,
        "SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = $1",
        account,
    )
    .await
}

/// A person in `account` with `role`, and a key they created.
async fn member_with_key(db: &Db, account: Uuid, email: &str, role: &str) -> String {
    let (mid, kid, k, now) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        keys::generate(),
        chrono::Utc::now(),
    );
    with_db!(db, p => {
        sqlx::query("INSERT INTO members (id, account_id, email, role, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(mid).bind(account).bind(email).bind(role).bind(now).execute(p).await.unwrap();
        sqlx::query("INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, is_active, created_at, created_by, created_by_email) \
                     VALUES ($1, $2, $3, $4, 'm', TRUE, $5, $6, $7)")
            .bind(kid).bind(account).bind(&k.hash).bind(&k.display_prefix).bind(now).bind(mid).bind(email)
            .execute(p).await.unwrap();
    });
    k.plaintext
}

async fn register_endpoint(s: &Stack, key: &str, url: &str, events: Value) -> (String, String) {
    let (st, v) = call(
        s,
        "POST",
        "/auth/webhooks",
        key,
        Some(json!({"url": url, "events": events})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let secret = v["secret"]
        .as_str()
        .expect("the secret is shown")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (v["id"].as_str().unwrap().to_string(), secret)
}

async fn deliveries(s: &Stack, key: &str, endpoint: &str) -> Vec<Value> {
    let (st, v) = call(
        s,
        "GET",
        &format!("/auth/webhooks/{endpoint}/deliveries"),
        key,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

/* ---------- delivery, retry, resend, rotation ---------- */

async fn delivery_retry_resend_rotate(backend: Backend) {
    let Some(Env { s, uid, key, .. }) = start(backend, "hooks@example.com").await else {
        return;
    };
    // Room for more keys than the free tier's one.
    exec(
        &s.adb.db,
        "UPDATE users SET tier = 'pro', charge_attempts = $2 WHERE id = $1",
        uid,
        0,
    )
    .await;
    let r = Receiver::start(&[500]).await;

    // The rules: https (http only on loopback), known events.
    for (url, events, what) in [
        (
            "http://hooks.example.com/x",
            json!(["*"]),
            "http off loopback",
        ),
        ("ftp://127.0.0.1/x", json!(["*"]), "not http(s)"),
        (
            "https://u:p@hooks.example.com/x",
            json!(["*"]),
            "credentials",
        ),
        (r.url.as_str(), json!(["key.exploded"]), "unknown event"),
        (r.url.as_str(), json!([]), "no events"),
    ] {
        let (st, v) = call(
            &s,
            "POST",
            "/auth/webhooks",
            &key,
            Some(json!({"url": url, "events": events})),
        )
        .await;
        assert_eq!(st, 422, "{what}: {v}");
        assert!(v["detail"].is_string(), "{v}");
    }
    assert_eq!(endpoints(&s, uid).await, 0);

    let (ep, secret) =
        register_endpoint(&s, &key, &r.url, json!(["key.created", "key.revoked"])).await;
    let (st, v) = call(&s, "GET", "/auth/webhooks", &key, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["webhooks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["webhooks"][0]["url"], r.url.as_str());
    assert_eq!(
        v["webhooks"][0]["events"],
        json!(["key.created", "key.revoked"])
    );
    assert!(
        !v.to_string().contains("whsec_"),
        "no secret in the list: {v}"
    );

    // A key is created: the event is queued in its transaction and delivered, 500 then 200.
    let (st, created) = call(
        &s,
        "POST",
        "/auth/api-keys",
        &key,
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let hits = r.wait_for(&s, 2).await;
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 200]
    );
    for h in &hits {
        assert!(signed_by(&secret, h), "bad signature: {h:?}");
        assert!(!signed_by("whsec_other", h));
        assert_eq!(h.content_type, "application/json");
    }
    assert_eq!(hits[0].body, hits[1].body, "a retry sends the same body");
    let ev = hits[1].json();
    assert_eq!(ev["type"], "key.created");
    assert_eq!(ev["account_id"], uid.to_string());
    assert_eq!(ev["data"]["key_id"], created["id"]);
    assert_eq!(ev["data"]["name"], "ci");
    assert_eq!(ev["data"]["key_prefix"], created["key_prefix"]);
    assert_eq!(hits[1].event_id, ev["id"].as_str().unwrap());
    assert!(ev["created_at"].is_string());

    // Recorded: delivered after two attempts, each with its status code.
    let mut list = Vec::new();
    s.until(Duration::from_secs(10), "delivery recorded", || async {
        let d = deliveries(&s, &key, &ep).await;
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    list.extend(deliveries(&s, &key, &ep).await);
    assert_eq!(list.len(), 1, "{list:?}");
    let d = &list[0];
    assert_eq!(d["event_type"], "key.created");
    assert_eq!(d["event_id"], ev["id"]);
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["last_status_code"], 200);
    assert!(
        d["last_error"].is_null() && d["delivered_at"].is_string(),
        "{d}"
    );
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(
        log.iter()
            .map(|a| a["status_code"].clone())
            .collect::<Vec<_>>(),
        [json!(500), json!(200)]
    );
    assert_eq!(log[0]["error"], "HTTP 500");

    // Resend: the same event, again, signed afresh.
    let (st, v) = call(
        &s,
        "POST",
        &format!(
            "/auth/webhooks/deliveries/{}/resend",
            d["id"].as_str().unwrap()
        ),
        &key,
        None,
    )
    .await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["event_id"], ev["id"]);
    let hits = r.wait_for(&s, 3).await;
    assert_eq!(hits[2].event_id, hits[1].event_id);
    assert_eq!(hits[2].body, hits[1].body);
    assert!(signed_by(&secret, &hits[2]));
    let (st, _) = call(
        &s,
        "POST",
        &format!("/auth/webhooks/deliveries/{}/resend", Uuid::new_v4()),
        &key,
        None,
    )
    .await;
    assert_eq!(st, 404);

    // Events the endpoint did not choose are not sent: a rotation.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/auth/api-keys/{}/rotate", created["id"].as_str().unwrap()),
        &key,
        None,
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let new_key_id = v["id"].as_str().unwrap().to_string();

    // Rotate the secret: the next delivery is signed with the new one only.
    let (st, v) = call(
        &s,
        "POST",
        &format!("/auth/webhooks/{ep}/rotate-secret"),
        &key,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let secret2 = v["secret"].as_str().unwrap().to_string();
    assert!(secret2.starts_with("whsec_") && secret2 != secret);
    let (st, v) = call(
        &s,
        "DELETE",
        &format!("/auth/api-keys/{new_key_id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let hits = r.wait_for(&s, 4).await;
    let revoked = &hits[3];
    assert_eq!(revoked.json()["type"], "key.revoked", "{revoked:?}");
    assert_eq!(revoked.json()["data"]["key_id"], new_key_id.as_str());
    assert!(signed_by(&secret2, revoked), "signed with the new secret");
    assert!(!signed_by(&secret, revoked), "not with the old one");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(r.hits().len(), 4, "no key.rotated, nothing twice");
    assert_eq!(deliveries(&s, &key, &ep).await.len(), 3);

    // Audit rows for the endpoint's changes; deletion drops it and its deliveries.
    for action in [
        "webhook_created",
        "webhook_secret_rotated",
        "webhook_resent",
    ] {
        let n = count(
            &s.adb.db,
            &format!(
                "SELECT COUNT(*) FROM audit_events WHERE account_id = $1 AND action = '{action}'"
            ),
            uid,
        )
        .await;
        assert_eq!(n, 1, "{action}");
    }
    let (st, _) = call(&s, "DELETE", &format!("/auth/webhooks/{ep}"), &key, None).await;
    assert_eq!(st, 200);
    let (st, _) = call(&s, "DELETE", &format!("/auth/webhooks/{ep}"), &key, None).await;
    assert_eq!(st, 404);
    assert_eq!(
        count(
            &s.adb.db,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE account_id = $1",
            uid
        )
        .await,
        0
    );
}

both_dbs!(
    webhook_is_signed_retried_resent_and_rotated,
    super::delivery_retry_resend_rotate,
    2
);

/* ---------- roles ---------- */

async fn members_cannot_manage(backend: Backend) {
    let Some(Env {
        s, uid, key: owner, ..
    }) = start(backend, "boss@example.com").await
    else {
        return;
    };
    let member = member_with_key(&s.adb.db, uid, "m@example.com", "member").await;
    let admin = member_with_key(&s.adb.db, uid, "a@example.com", "admin").await;
    let r = Receiver::start(&[]).await;
    let (ep, _) = register_endpoint(&s, &owner, &r.url, json!(["*"])).await;

    let body = json!({"url": r.url, "events": ["*"]});
    for (method, path, body) in [
        ("POST", "/auth/webhooks".to_string(), Some(body.clone())),
        ("GET", "/auth/webhooks".to_string(), None),
        ("DELETE", format!("/auth/webhooks/{ep}"), None),
        ("POST", format!("/auth/webhooks/{ep}/rotate-secret"), None),
        ("GET", format!("/auth/webhooks/{ep}/deliveries"), None),
        (
            "PUT",
            "/auth/alerts".to_string(),
            Some(json!({"rate_limited_minutes": 1})),
        ),
    ] {
        let (st, v) = call(&s, method, &path, &member, body).await;
        assert_eq!(st, 403, "{method} {path}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .starts_with("Your role (member) cannot"),
            "{v}"
        );
    }
    assert_eq!(endpoints(&s, uid).await, 1, "nothing changed");
    // A member reads the thresholds; an admin manages both.
    let (st, v) = call(&s, "GET", "/auth/alerts", &member, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"memory_percent": [80, 100], "rate_limited_minutes": 5, "key_expiring_days": 7,
               "payment_failed": true, "raised": []})
    );
    register_endpoint(&s, &admin, &r.url, json!(["alert.memory_quota"])).await;
    let (st, v) = call(
        &s,
        "PUT",
        "/auth/alerts",
        &admin,
        Some(json!({"memory_percent": [90, 50], "key_expiring_days": 0})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["memory_percent"], json!([50, 90]));
    assert_eq!(v["key_expiring_days"], 0);
    assert_eq!(
        v["rate_limited_minutes"], 5,
        "absent fields keep their value"
    );
    for bad in [
        json!({"memory_percent": [0]}),
        json!({"memory_percent": [101]}),
        json!({"rate_limited_minutes": -1}),
        json!({"key_expiring": 3}),
    ] {
        let (st, v) = call(&s, "PUT", "/auth/alerts", &admin, Some(bad.clone())).await;
        assert_eq!(st, 422, "{bad}: {v}");
    }
    let (_, v) = call(&s, "GET", "/auth/alerts", &owner, None).await;
    assert_eq!(
        v["memory_percent"],
        json!([50, 90]),
        "a refused PUT changed nothing"
    );
}

both_dbs!(
    a_member_cannot_manage_webhooks,
    super::members_cannot_manage,
    2
);

/* ---------- alerts ---------- */

async fn alerts_once_per_crossing(backend: Backend) {
    let Some(Env { s, c, uid, key }) = start(backend, "quota@example.com").await else {
        return;
    };
    member_with_key(&s.adb.db, uid, "admin@example.com", "admin").await;
    member_with_key(&s.adb.db, uid, "member@example.com", "member").await;
    let r = Receiver::start(&[]).await;
    let (_, secret) = register_endpoint(
        &s,
        &key,
        &r.url,
        json!(["alert.memory_quota", "alert.rate_limited"]),
    )
    .await;
    let set_used = |n: i64| {
        let db = s.adb.db.clone();
        async move {
            exec(
                &db,
                "UPDATE account_usage SET memories_used = $2 WHERE user_id = $1",
                uid,
                n,
            )
            .await
        }
    };
    let alert_mails = |c: &SmtpCatcher| {
        c.messages()
            .into_iter()
            .filter(|m| {
                m.mail()
                    .header("Subject")
                    .is_some_and(|s| s.contains("of your memory quota used"))
            })
            .collect::<Vec<_>>()
    };

    // Free tier: 5000 memories. 79 % raises nothing.
    set_used(3950).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(alert_mails(&c).is_empty());
    assert!(r.hits().is_empty());

    // 82 %: one mail to the owner and one to the admin, one webhook event.
    set_used(4100).await;
    let hits = r.wait_for(&s, 1).await;
    let ev = hits[0].json();
    assert!(signed_by(&secret, &hits[0]));
    assert_eq!(ev["type"], "alert.memory_quota");
    assert_eq!(
        ev["data"],
        json!({"threshold_percent": 80, "memories_used": 4100, "memories_limit": 5000})
    );
    c.wait_for(2, Duration::from_secs(15)).await;
    let mails = alert_mails(&c);
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    to.sort();
    assert_eq!(
        to,
        ["admin@example.com", "quota@example.com"],
        "owner and admins, not members"
    );
    let m = mails[0].mail();
    assert_eq!(
        m.header("Subject").unwrap(),
        "Hooks Test: 80 % of your memory quota used"
    );
    assert!(
        m.text().unwrap().contains("4100 of the 5000 memories"),
        "{:?}",
        m.text()
    );
    assert!(
        m.links().iter().any(|l| l.ends_with("/dashboard")),
        "{:?}",
        m.links()
    );

    // Not again while it holds (several evaluations at 0.2 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(alert_mails(&c).len(), 2);
    assert_eq!(r.hits().len(), 1);
    let (_, v) = call(&s, "GET", "/auth/alerts", &key, None).await;
    assert_eq!(v["raised"][0]["alert"], "memory_quota:80", "{v}");
    assert_eq!(
        count(
            &s.adb.db,
            "SELECT COUNT(*) FROM audit_events WHERE account_id = $1 AND action = 'alert_raised'",
            uid
        )
        .await,
        1
    );

    // Below: re-armed (nothing sent). Above again: raised again.
    set_used(1000).await;
    s.until(Duration::from_secs(10), "re-armed", || async {
        call(&s, "GET", "/auth/alerts", &key, None).await.1["raised"] == json!([])
    })
    .await;
    assert_eq!(r.hits().len(), 1);
    set_used(4200).await;
    let hits = r.wait_for(&s, 2).await;
    assert_eq!(hits[1].json()["data"]["memories_used"], 4200);
    assert_ne!(hits[1].event_id, hits[0].event_id);
    c.wait_for(4, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(alert_mails(&c).len(), 4);
    assert_eq!(r.hits().len(), 2);

    // Requests refused by the rate limit in each of the last 5 minutes (the gateways' counts).
    let minute = chrono::Utc::now().timestamp() / 60 * 60;
    for i in 0..=6 {
        with_db!(&s.adb.db, p => sqlx::query(
            "INSERT INTO usage_minutes (user_id, key_id, agent, route, status_class, minute_start, requests) VALUES ($1, $2, '', 'store', '429', $3, 3)")
            .bind(uid).bind(Uuid::new_v4()).bind(minute - 60 * i).execute(p).await.map(|_| ())).unwrap();
    }
    let hits = r.wait_for(&s, 3).await;
    let ev = hits[2].json();
    assert_eq!(ev["type"], "alert.rate_limited", "{ev}");
    assert_eq!(ev["data"]["minutes"], 5);
    s.until(Duration::from_secs(15), "rate-limit mails", || async {
        c.messages()
            .iter()
            .filter(|m| {
                m.mail()
                    .header("Subject")
                    .is_some_and(|s| s.contains("rate limit"))
            })
            .count()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(r.hits().len(), 3, "raised once");
}

both_dbs!(
    memory_alert_is_sent_once_per_crossing_by_mail_and_webhook,
    super::alerts_once_per_crossing,
    2
);
