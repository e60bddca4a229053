//! Billing accounts and keys against the real binary, on SQLite and PostgreSQL: registration
//! (409 without a key for a known e-mail), validation, body limits, JSON errors, key CRUD with
//! the tier's key limit, revoked keys, usage and its history, tiers, pages and metrics.

use serde_json::json;
use stellar_tests::both_dbs;
use stellar_tests::harness::{billing_stack, Backend};

async fn accounts_and_keys(backend: Backend) {
    let Some(s) = billing_stack(backend, false, &[]).await else {
        return;
    };

    // Register: normalised e-mail, free tier, a well-formed key shown once.
    let (status, v) = s
        .post("/auth/register", r#"{"email":"  Alice@Example.COM "}"#, &[])
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["email"].as_str(), v["tier"].as_str()),
        (Some("alice@example.com"), Some("free"))
    );
    let key = v["api_key"].as_str().unwrap().to_string();
    assert!(stellar_common::keys::is_well_formed(&key), "{key}");

    // The same e-mail again (any spelling) gets 409 and no key.
    let (status, v) = s
        .post("/auth/register", r#"{"email":"alice@example.com"}"#, &[])
        .await;
    assert_eq!(
        (status, v["detail"].as_str()),
        (409, Some("Email already registered"))
    );
    assert!(v.get("api_key").is_none());
    assert_eq!(
        s.post("/auth/register", r#"{"email":"ALICE@example.com "}"#, &[])
            .await
            .0,
        409
    );

    // Bad input: JSON errors with `detail`, never plain text.
    for (body, want) in [
        (r#"{"email":"not-an-email"}"#, 422),
        (r#"{"email":"a@b"}"#, 422),
        (r#"{"mail":"x@example.com"}"#, 422),
        (r#"{"email": 5}"#, 422),
        (r#"{"email":"#, 400),
        ("", 400),
        ("not json", 400),
    ] {
        let (st, v) = s.post("/auth/register", body, &[]).await;
        assert_eq!(st, want, "{body} → {v}");
        assert!(v["detail"].is_string(), "{body} → {v}");
    }
    let big = format!(r#"{{"email":"{}@example.com"}}"#, "a".repeat(70 * 1024));
    let (st, v) = s.post("/auth/register", &big, &[]).await;
    assert_eq!(st, 413, "{v}");
    assert!(v["detail"].is_string());
    let (st, v) = s.get("/no/such/path", None).await;
    assert_eq!((st, v["detail"].is_string()), (404, true));
    let r = s
        .http
        .put(format!("{}/auth/register", s.billing().url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].is_string());

    // Auth: missing, malformed, unknown keys are 401.
    assert_eq!(s.get("/auth/usage", None).await.0, 401);
    assert_eq!(s.get("/auth/usage", Some("sk-stellar-nothex")).await.0, 401);
    assert_eq!(
        s.get(
            "/auth/usage",
            Some("sk-stellar-00000000000000000000000000000000")
        )
        .await
        .0,
        401
    );
    let r = s
        .http
        .get(format!("{}/auth/usage", s.billing().url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "Bearer works too");
    let r = s
        .http
        .get(format!("{}/auth/usage", s.billing().url))
        .header("X-Stellar-User", "someone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "identity headers are not trusted");

    // Usage.
    let u = s.usage(&key).await;
    assert_eq!(u["tier"], "free");
    assert_eq!(
        (u["memories_used"].as_i64(), u["memories_limit"].as_i64()),
        (Some(0), Some(5000))
    );
    assert_eq!(
        (
            u["keys_used"].as_i64(),
            u["keys_limit"].as_i64(),
            u["requests_per_minute"].as_i64()
        ),
        (Some(1), Some(1), Some(60))
    );
    assert_eq!(
        (
            u["subscription_status"].as_str(),
            u["current_period_end"].is_null()
        ),
        (Some("none"), true)
    );

    // Keys: the free tier allows one active key.
    let (st, v) = s.get("/auth/api-keys", Some(&key)).await;
    assert_eq!(st, 200);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["key_prefix"].as_str().unwrap(), &key[..15]);
    assert!(keys[0].get("key_hash").is_none());
    let first_id = keys[0]["id"].as_str().unwrap().to_string();
    let (st, v) = s.create_key(&key, r#"{"name":"second"}"#).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("limit"));

    // Upgrade in the DB (as a webhook would) and create more keys, up to pro's 5.
    let uid = uuid::Uuid::parse_str(u["user_id"].as_str().unwrap()).unwrap();
    stellar_common::with_db!(&s.adb.db, p => sqlx::query("UPDATE users SET tier = 'pro' WHERE id = $1").bind(uid).execute(p).await.map(|_| ())).unwrap();
    let (st, v) = s.create_key(&key, r#"{"name":"ci"}"#).await;
    assert_eq!(st, 201, "{v}");
    let second = v["api_key"].as_str().unwrap().to_string();
    assert!(stellar_common::keys::is_well_formed(&second));
    assert_eq!(v["name"], "ci");
    let second_id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.create_key(&key, "").await.0,
        201,
        "no body → default name"
    );
    assert_eq!(
        s.create_key(&key, &json!({"name": "x".repeat(101)}).to_string())
            .await
            .0,
        422
    );
    assert_eq!(s.create_key(&key, "{bad").await.0, 400);
    for _ in 0..2 {
        assert_eq!(s.create_key(&key, "{}").await.0, 201);
    }
    assert_eq!(s.create_key(&key, "{}").await.0, 403, "pro allows 5");

    // Revoke: the key stops working for billing at once; a stranger's key id is 404.
    let r = s
        .http
        .delete(format!("{}/auth/api-keys/{second_id}", s.billing().url))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["revoked"], true);
    assert_eq!(s.get("/auth/usage", Some(&second)).await.0, 401);
    assert_eq!(s.get("/auth/api-keys", Some(&second)).await.0, 401);
    let feed = s
        .count(
            "SELECT COUNT(*) FROM change_feed WHERE user_id = $1 AND kind = 'key_revoked'",
            uid,
        )
        .await;
    assert_eq!(feed, 1, "revocation wrote the change feed");
    let (_, other) = s.register("bob@example.com").await;
    let r = s
        .http
        .delete(format!("{}/auth/api-keys/{first_id}", s.billing().url))
        .header("X-API-Key", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "not the caller's key");
    let r = s
        .http
        .delete(format!("{}/auth/api-keys/not-a-uuid", s.billing().url))
        .header("X-API-Key", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let (_, v) = s.get("/auth/api-keys", Some(&key)).await;
    let list = v["keys"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(
        list.last().unwrap()["is_active"],
        false,
        "active keys first"
    );

    // Usage history: 24 zero-filled hours, oldest first.
    let now = chrono::Utc::now().timestamp();
    let hour = now - now.rem_euclid(3600);
    stellar_common::with_db!(&s.adb.db, p => {
        for (h, n) in [(hour, 7i64), (hour - 3 * 3600, 2), (hour - 30 * 3600, 99)] {
            sqlx::query("INSERT INTO usage_hourly (user_id, hour_start, requests) VALUES ($1, $2, $3)").bind(uid).bind(h).bind(n).execute(p).await.unwrap();
        }
    });
    let (st, v) = s.get("/auth/usage/history", Some(&key)).await;
    assert_eq!(st, 200);
    let hours = v["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[23]["hour_start"].as_i64(), Some(hour));
    assert_eq!(hours[23]["requests"].as_i64(), Some(7));
    assert_eq!(hours[20]["requests"].as_i64(), Some(2));
    assert_eq!(
        hours
            .iter()
            .map(|h| h["requests"].as_i64().unwrap())
            .sum::<i64>(),
        9,
        "older than 24 h is not shown"
    );

    // Tiers and providers.
    let (st, v) = s.get("/billing/tiers", None).await;
    assert_eq!(st, 200);
    let names: Vec<_> = v["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["free", "pro", "team"]);
    eprintln!("accounts test ran on {backend:?}");
    assert_eq!(v["tiers"][1]["price_krw"], 39000);
    assert_eq!(
        v["providers"],
        json!({"lemonsqueezy": true, "stripe": true, "toss": true})
    );

    // Metrics on their own listener.
    let m = s.metrics().await;
    assert!(
        m.contains("stellar_billing_account_events_total{event=\"registered\"} 2"),
        "{m}"
    );
}

both_dbs!(accounts_keys_and_errors, super::accounts_and_keys);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_are_served_from_the_landing_dir() {
    let dir = stellar_tests::spawn::TempDir::new("landing");
    std::fs::create_dir_all(dir.path().join("static/img")).unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>landing</h1>").unwrap();
    std::fs::write(dir.path().join("dashboard.html"), "<h1>dash</h1>").unwrap();
    std::fs::write(dir.path().join("static/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.path().join("static/style.css"), "body{}").unwrap();
    std::fs::write(dir.path().join("static/img/logo.svg"), "<svg/>").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
    let Some(s) = billing_stack(
        Backend::Sqlite,
        false,
        &[(
            "STELLAR_BILLING_LANDING_DIR",
            dir.path().display().to_string(),
        )],
    )
    .await
    else {
        return;
    };
    for (path, ct, body) in [
        ("/", "text/html", "<h1>landing</h1>"),
        ("/dashboard", "text/html", "<h1>dash</h1>"),
        ("/static/app.js", "text/javascript", "console.log(1)"),
        ("/static/style.css", "text/css", "body{}"),
        ("/static/img/logo.svg", "image/svg+xml", "<svg/>"),
    ] {
        let r = s
            .http
            .get(format!("{}{path}", s.billing().url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ct),
            "{path}"
        );
        assert_eq!(r.text().await.unwrap(), body);
    }
    for path in [
        "/static/missing.js",
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/.hidden",
    ] {
        let (st, v) = s.get(path, None).await;
        assert_eq!(st, 404, "{path}");
        assert!(v["detail"].is_string(), "{path}");
    }
}
