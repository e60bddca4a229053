//! End-to-end tests of the memory engine: the real `stellar-engine` binary on free ports with a
//! temporary data directory, driven over HTTP exactly as the gateway or a client of the original
//! Python server would.

use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use stellar_tests::harness::{Backend, Stack};
use stellar_tests::spawn::{bin_path, pg_url_for_test, signal, Service};

/// A running engine and where to reach it.
struct Engine {
    svc: Service,
    base: String,
    metrics: String,
    /// What is left of the harness's stack: its temporary directory (the engine's data).
    _stack: Stack,
}

/// Start the engine with SQLite in a fresh directory (or `db_url`), plus extra environment.
async fn start(db_url: Option<&str>, extra: &[(&str, &str)]) -> Engine {
    let mut env = vec![("STELLAR_ENGINE_DB_URL", db_url.unwrap_or("").to_string())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let mut stack = Stack::builder(Backend::Sqlite, "engine-e2e")
        .engine(&env)
        .start()
        .await
        .expect("SQLite is always there");
    let e = stack.engine.take().unwrap();
    Engine {
        svc: e.svc,
        base: format!("http://{}", e.addr),
        metrics: format!("http://{}/metrics", e.metrics),
        _stack: stack,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A request in a tenant's space (`None` user = the default space).
struct As<'a> {
    e: &'a Engine,
    user: Option<&'a str>,
    agent: Option<&'a str>,
}

impl<'a> As<'a> {
    fn new(e: &'a Engine, user: Option<&'a str>, agent: Option<&'a str>) -> As<'a> {
        As { e, user, agent }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = client().request(method, format!("{}{path}", self.e.base));
        if let Some(u) = self.user {
            r = r.header("X-Stellar-User", u);
        }
        if let Some(a) = self.agent {
            r = r.header("X-Stellar-Agent", a);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.expect("body");
        assert!(
            ct.starts_with("application/json"),
            "status {status}: content-type {ct:?}, body {text:?}"
        );
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
        )
    }

    async fn store(&self, body: Value) -> (u16, Value) {
        self.send(self.req(reqwest::Method::POST, "/api/v1/store").json(&body))
            .await
    }

    async fn store_ok(&self, content: &str, importance: f64) -> String {
        let (s, v) = self
            .store(json!({"content": content, "importance": importance}))
            .await;
        assert_eq!(s, 200, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    async fn recall(&self, q: &str, extra: &str) -> Vec<Value> {
        let (s, v) = self
            .get(&format!("/api/v1/recall?q={}{extra}", urlencode(q)))
            .await;
        assert_eq!(s, 200, "{v}");
        v.as_array().expect("array").clone()
    }

    async fn forget(&self, id: &str) -> (u16, Value) {
        self.send(self.req(reqwest::Method::DELETE, &format!("/api/v1/forget/{id}")))
            .await
    }

    async fn list(&self, query: &str) -> Value {
        let (s, v) = self.get(&format!("/api/v1/memories{query}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn ids(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_endpoint_round_trip() {
    let e = start(None, &[]).await;
    let d = As::new(&e, None, None);

    // store: defaults and response shape.
    let (s, v) = d
        .store(json!({"content": "User prefers dark mode in every editor"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let dark = v["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&dark).is_ok());
    assert_eq!(
        v["zone"], 2,
        "importance 0.5, fresh: score 0.425 is the outer zone"
    );
    assert_eq!(v["score"], 0.425);
    let (_, v) = d.store(json!({"content": "Rust borrow checker rules", "importance": 1.0, "metadata": {"src": "chat"}})).await;
    assert_eq!(v["zone"], 1);
    let borrow = v["id"].as_str().unwrap().to_string();
    let compiler = d
        .store_ok("The Rust compiler got faster this release", 0.2)
        .await;
    let python = d.store_ok("Python garbage collector notes", 0.9).await;
    let happy = d
        .store_ok("I am so happy and excited about the trip", 0.5)
        .await;
    let worried = d
        .store_ok("I am worried and anxious about the trip", 0.5)
        .await;
    let (s, v) = d.store(json!({"content": "Important: remember the deadline, we must ship", "auto_evaluate": true})).await;
    assert_eq!(s, 200);
    assert!(
        v["score"].as_f64().unwrap() > 0.425,
        "auto_evaluate raised importance: {v}"
    );

    // recall: ranked by relevance, only matches, counts go up.
    let hits = d.recall("rust borrow", "").await;
    assert_eq!(ids(&hits, "id"), vec![borrow.clone(), compiler.clone()]);
    assert_eq!(hits[0]["recall_count"], 1);
    assert_eq!(hits[0]["content"], "Rust borrow checker rules");
    assert_eq!(hits[0]["importance"], 1.0);
    assert!(hits[0]["emotion"].is_null());
    for k in [
        "id",
        "content",
        "zone",
        "importance",
        "recall_count",
        "emotion",
    ] {
        assert!(
            hits[0].get(k).is_some(),
            "recall item lacks {k}: {}",
            hits[0]
        );
    }
    let hits = d.recall("borrow", "").await;
    assert_eq!(hits[0]["recall_count"], 2);
    assert!(!ids(&d.recall("rust", "").await, "id").contains(&python));
    assert!(d.recall("volcano", "").await.is_empty());
    // emotion filter: the dominant emotion.
    let joy = d.recall("trip", "&emotion=joy").await;
    assert_eq!(ids(&joy, "id"), vec![happy.clone()]);
    assert_eq!(joy[0]["emotion"]["joy"], 1.0);
    assert_eq!(
        ids(&d.recall("trip", "&emotion=fear").await, "id"),
        vec![worried.clone()]
    );
    assert_eq!(d.recall("trip", "").await.len(), 2);
    assert_eq!(d.recall("trip", "&limit=1").await.len(), 1);

    // memories: sorted by score, total, zone filter, pagination, 200-char previews.
    let long = "x".repeat(300);
    let long_id = d.store_ok(&long, 0.0).await;
    let page = d.list("").await;
    assert_eq!(page["total"], 8);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(
        items[0]["id"],
        json!(borrow),
        "recalled twice with importance 1: highest score"
    );
    let preview = items.iter().find(|i| i["id"] == json!(long_id)).unwrap();
    assert_eq!(preview["content"].as_str().unwrap().len(), 200);
    for k in [
        "id",
        "content",
        "zone",
        "score",
        "recall_count",
        "importance",
        "created_at",
    ] {
        assert!(items[0].get(k).is_some(), "list item lacks {k}");
    }
    let second = d.list("?limit=2&offset=1").await;
    assert_eq!(second["total"], 8);
    assert_eq!(
        ids(second["items"].as_array().unwrap(), "id"),
        ids(&items[1..3], "id")
    );
    let zone2 = d.list("?zone=2").await;
    assert!(zone2["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["zone"] == 2));
    assert_eq!(
        zone2["total"].as_u64().unwrap() as usize,
        zone2["items"].as_array().unwrap().len()
    );

    // timeline: creation order, date filters, limit.
    let (s, tl) = d.get("/api/v1/timeline").await;
    assert_eq!(s, 200);
    let tl = tl.as_array().unwrap().clone();
    assert_eq!(tl.len(), 8);
    assert_eq!(tl[0]["memory_id"], json!(dark));
    assert_eq!(tl[7]["memory_id"], json!(long_id));
    let ts: Vec<f64> = tl
        .iter()
        .map(|i| i["timestamp"].as_f64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    for k in [
        "timestamp",
        "memory_id",
        "content",
        "zone",
        "importance",
        "emotion",
    ] {
        assert!(tl[0].get(k).is_some(), "timeline item lacks {k}");
    }
    let today = chrono::Utc::now().date_naive();
    let (yesterday, tomorrow) = (today.pred_opt().unwrap(), today.succ_opt().unwrap());
    let (_, v) = d.get(&format!("/api/v1/timeline?start={tomorrow}")).await;
    assert_eq!(v, json!([]));
    let (_, v) = d.get(&format!("/api/v1/timeline?end={yesterday}")).await;
    assert_eq!(v, json!([]));
    let (_, v) = d
        .get(&format!(
            "/api/v1/timeline?start={yesterday}&end={today}&limit=3"
        ))
        .await;
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["memory_id"], json!(dark));

    // narrate: a readable text from the relevant memories only.
    let (s, v) = d
        .send(
            d.req(reqwest::Method::POST, "/api/v1/narrate")
                .json(&json!({"topic": "rust"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let text = v["narrative"].as_str().unwrap();
    assert!(
        text.contains("Rust borrow checker rules")
            && text.contains("The Rust compiler got faster this release"),
        "{text}"
    );
    assert!(!text.contains("Python"), "{text}");
    let (_, v) = d
        .send(
            d.req(reqwest::Method::POST, "/api/v1/narrate")
                .json(&json!({"topic": "volcano", "limit": 3})),
        )
        .await;
    assert!(v["narrative"].as_str().unwrap().contains("no memories"));

    // stats and health.
    let (s, st) = d.get("/api/v1/stats").await;
    assert_eq!(s, 200);
    assert_eq!(st["total_memories"], 8);
    assert_eq!(
        st["capacities"],
        json!({"0": 20, "1": 100, "2": 1000, "3": null, "4": null})
    );
    let zone_sum: u64 = (0..5)
        .map(|z| st["zones"][z.to_string()].as_u64().unwrap())
        .sum();
    assert_eq!(zone_sum, 8);
    let (s, h) = d.get("/api/v1/health").await;
    assert_eq!(s, 200);
    assert_eq!(
        h,
        json!({"healthy": true, "total_memories": 8, "warnings": []})
    );

    // forget.
    let (s, v) = d.forget(&python).await;
    assert_eq!((s, v), (200, json!({"removed": true})));
    let (s, v) = d.forget(&python).await;
    assert_eq!((s, v), (404, json!({"detail": "Memory not found"})));
    let (s, _) = d.forget("not-a-uuid").await;
    assert_eq!(s, 404);
    assert!(d.recall("python", "").await.is_empty());
    assert_eq!(d.list("").await["total"], 7);

    // FastAPI-style answers for unknown routes and methods; test hooks are off by default.
    let (s, v) = d.get("/api/v1/nope").await;
    assert_eq!((s, v), (404, json!({"detail": "Not Found"})));
    let (s, v) = d.send(d.req(reqwest::Method::PUT, "/api/v1/store")).await;
    assert_eq!((s, v), (405, json!({"detail": "Method Not Allowed"})));
    let (s, _) = d.send(d.req(reqwest::Method::POST, "/_test/reorbit")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn validation_errors_have_fastapi_shape() {
    let e = start(None, &[]).await;
    let d = As::new(&e, None, None);
    let post = |path: &str, body: &str, ct: Option<&str>| {
        let mut r = d.req(reqwest::Method::POST, path).body(body.to_string());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let json_ct = Some("application/json");

    let (s, v) = d.store(json!({"importance": 0.5})).await;
    assert_eq!(s, 422);
    assert_eq!(
        v,
        json!({"detail": [{"type": "missing", "loc": ["body", "content"], "msg": "Field required", "input": {"importance": 0.5}}]})
    );

    let (s, v) = d.store(json!({"content": ""})).await;
    assert_eq!(s, 422);
    assert_eq!(
        v["detail"][0],
        json!({"type": "string_too_short", "loc": ["body", "content"], "msg": "String should have at least 1 character", "input": "", "ctx": {"min_length": 1}})
    );

    let (s, v) = d.store(json!({"content": "y".repeat(10_001)})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "string_too_long");
    assert_eq!(v["detail"][0]["ctx"], json!({"max_length": 10000}));
    assert_eq!(
        v["detail"][0]["msg"],
        "String should have at most 10000 characters"
    );
    // Exactly at the limit (in characters, not bytes) is fine.
    let (s, _) = d.store(json!({"content": "é".repeat(10_000)})).await;
    assert_eq!(s, 200);

    let (s, v) = d.store(json!({"content": "x", "importance": 1.5})).await;
    assert_eq!(s, 422);
    assert_eq!(
        v["detail"][0],
        json!({"type": "less_than_equal", "loc": ["body", "importance"], "msg": "Input should be less than or equal to 1", "input": 1.5, "ctx": {"le": 1.0}})
    );
    let (s, v) = d.store(json!({"content": "x", "importance": -0.1})).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "greater_than_equal");
    assert_eq!(
        v["detail"][0]["msg"],
        "Input should be greater than or equal to 0"
    );

    // Every bad field is reported at once.
    let (s, v) = d
        .store(
            json!({"content": 5, "importance": "high", "metadata": [], "auto_evaluate": "perhaps"}),
        )
        .await;
    assert_eq!(s, 422);
    let types: Vec<&str> = v["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["string_type", "float_parsing", "dict_type", "bool_parsing"]
    );

    let (s, v) = d
        .send(post("/api/v1/store", "{\"content\": ", json_ct))
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "json_invalid");
    assert_eq!(v["detail"][0]["loc"], json!(["body", 12]));
    assert_eq!(v["detail"][0]["msg"], "JSON decode error");
    let (s, v) = d
        .send(post("/api/v1/store", "[\"content\"]", json_ct))
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "model_attributes_type");
    assert_eq!(v["detail"][0]["loc"], json!(["body"]));
    let (s, v) = d.send(post("/api/v1/store", "", json_ct)).await;
    assert_eq!(
        (s, v),
        (
            422,
            json!({"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}]})
        )
    );
    // Not declared as JSON: FastAPI does not parse it, and neither do we.
    let (s, v) = d
        .send(post(
            "/api/v1/store",
            "{\"content\": \"x\"}",
            Some("text/plain"),
        ))
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "model_attributes_type");
    // No content type at all: parsed as JSON, like FastAPI.
    let (s, _) = d
        .send(post(
            "/api/v1/store",
            "{\"content\": \"no content type\"}",
            None,
        ))
        .await;
    assert_eq!(s, 200);

    // Query parameters.
    let (s, v) = d.get("/api/v1/recall").await;
    assert_eq!(
        (s, v),
        (
            422,
            json!({"detail": [{"type": "missing", "loc": ["query", "q"], "msg": "Field required", "input": null}]})
        )
    );
    let (s, v) = d.get("/api/v1/recall?q=x&limit=many").await;
    assert_eq!(s, 422);
    assert_eq!(
        v["detail"][0],
        json!({"type": "int_parsing", "loc": ["query", "limit"], "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "many"})
    );
    let (s, v) = d.get("/api/v1/memories?zone=inner").await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["query", "zone"]));
    let (s, v) = d.get("/api/v1/timeline?start=last-tuesday").await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["query", "start"]));

    // narrate: topic required, limit 1..=50.
    let (s, v) = d.send(post("/api/v1/narrate", "{}", json_ct)).await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["loc"], json!(["body", "topic"]));
    let (s, v) = d
        .send(post(
            "/api/v1/narrate",
            "{\"topic\": \"t\", \"limit\": 0}",
            json_ct,
        ))
        .await;
    assert_eq!(s, 422);
    assert_eq!(
        v["detail"][0],
        json!({"type": "greater_than_equal", "loc": ["body", "limit"], "msg": "Input should be greater than or equal to 1", "input": 0, "ctx": {"ge": 1}})
    );
    let (s, v) = d
        .send(post(
            "/api/v1/narrate",
            "{\"topic\": \"t\", \"limit\": 51}",
            json_ct,
        ))
        .await;
    assert_eq!(s, 422);
    assert_eq!(v["detail"][0]["type"], "less_than_equal");

    // recall limit: default 5, capped at 50.
    for i in 0..60 {
        d.store_ok(&format!("capped item number {i}"), 0.5).await;
    }
    assert_eq!(d.recall("capped", "").await.len(), 5);
    assert_eq!(d.recall("capped", "&limit=100").await.len(), 50);
    assert_eq!(d.recall("capped", "&limit=7").await.len(), 7);

    // Body size limit: 413 with a JSON detail, not a dropped connection.
    let big = format!("{{\"content\": \"{}\"}}", "z".repeat(2 * 1024 * 1024));
    let (s, v) = d.send(post("/api/v1/store", &big, json_ct)).await;
    assert_eq!(s, 413);
    assert!(v["detail"].as_str().unwrap().contains("limit"), "{v}");
    assert_eq!(
        d.list("?limit=0").await["total"],
        62,
        "nothing partial was stored"
    );
}

#[tokio::test]
async fn tenants_are_isolated() {
    let e = start(None, &[]).await;
    let alice = As::new(&e, Some("alice"), None);
    let alice_bot = As::new(&e, Some("alice"), Some("bot"));
    let bob = As::new(&e, Some("bob"), None);
    let anon = As::new(&e, None, None);

    let a = alice
        .store_ok("alice secret recipe for lemon cake", 0.9)
        .await;
    let ab = alice_bot
        .store_ok("bot notes about lemon cake orders", 0.5)
        .await;
    let n = anon.store_ok("default space lemon cake", 0.5).await;

    assert!(bob.recall("lemon cake", "").await.is_empty());
    assert_eq!(bob.list("").await["total"], 0);
    let (_, tl) = bob.get("/api/v1/timeline").await;
    assert_eq!(tl, json!([]));
    let (_, st) = bob.get("/api/v1/stats").await;
    assert_eq!(st["total_memories"], 0);
    let (s, v) = bob
        .send(
            bob.req(reqwest::Method::POST, "/api/v1/narrate")
                .json(&json!({"topic": "lemon cake"})),
        )
        .await;
    assert_eq!(s, 200);
    assert!(!v["narrative"].as_str().unwrap().contains("secret"), "{v}");

    // Another tenant's id is simply not found, and stays stored.
    for id in [&a, &ab, &n] {
        let (s, v) = bob.forget(id).await;
        assert_eq!((s, v), (404, json!({"detail": "Memory not found"})));
    }
    let (s, _) = alice_bot.forget(&a).await;
    assert_eq!(
        s, 404,
        "an agent sub-space is separate from the user's own space"
    );

    assert_eq!(
        ids(&alice.recall("lemon cake", "").await, "id"),
        vec![a.clone()]
    );
    assert_eq!(
        ids(&alice_bot.recall("lemon cake", "").await, "id"),
        vec![ab.clone()]
    );
    assert_eq!(
        ids(&anon.recall("lemon cake", "").await, "id"),
        vec![n.clone()]
    );
    let (_, h) = anon.get("/api/v1/health").await;
    assert_eq!(h["total_memories"], 1);

    let (s, _) = alice.forget(&a).await;
    assert_eq!(s, 200);
    assert!(alice.recall("lemon", "").await.is_empty());
    assert_eq!(alice_bot.list("").await["total"], 1);
}

/// Store concurrently while the engine is stopped (SIGTERM) or killed (SIGKILL); every store that
/// was answered 2xx must be there after a restart.
async fn acknowledged_stores_survive(e: &mut Engine, kill: bool) -> usize {
    let pid = e.svc.pid().unwrap();
    let (_, st) = As::new(e, None, None).get("/api/v1/stats").await;
    let initial = st["total_memories"].as_u64().unwrap();
    let base = e.base.clone();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut acked = Vec::new();
            let mut server_errors = 0;
            for i in 0..10_000 {
                let r = c
                    .post(format!("{base}/api/v1/store"))
                    .json(&json!({"content": format!("durable w{w} i{i}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        acked.push(v["id"].as_str().unwrap().to_string());
                    }
                    // A 5xx is a bug, not the engine going down; count it and stop.
                    Ok(r) if r.status().is_server_error() => {
                        server_errors += 1;
                        break;
                    }
                    // Refused, reset or cut short: the engine is going down.
                    _ => break,
                }
            }
            (acked, server_errors)
        }));
    }
    // Let some stores through, then pull the plug mid-stream. (Generous deadline: the machine
    // may be busy building other crates.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, st) = As::new(e, None, None).get("/api/v1/stats").await;
        if st["total_memories"].as_u64().unwrap() >= initial + 200 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if kill {
        signal(pid, "KILL");
    } else {
        signal(pid, "TERM");
    }
    let mut acked = HashSet::new();
    for t in tasks {
        let (ids, server_errors) = t.await.unwrap();
        assert_eq!(
            server_errors,
            0,
            "stores failed with 5xx; log:\n{}",
            e.svc.log()
        );
        acked.extend(ids);
    }
    if kill {
        e.svc.kill9();
    } else {
        assert!(e.svc.stop(), "SIGTERM exits cleanly; log:\n{}", e.svc.log());
    }
    e.svc.restart().expect("restart");
    let page = As::new(e, None, None).list("?limit=100000").await;
    let present: HashSet<String> = ids(page["items"].as_array().unwrap(), "id")
        .into_iter()
        .collect();
    let lost: Vec<&String> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged stores lost after {}",
        lost.len(),
        if kill { "kill -9" } else { "SIGTERM" }
    );
    assert!(
        acked.len() >= 100,
        "only {} stores were acknowledged",
        acked.len()
    );
    acked.len()
}

#[tokio::test]
async fn restart_and_kill9_keep_everything_acknowledged() {
    let mut e = start(None, &[]).await;
    let d = As::new(&e, None, None);
    let id = d.store_ok("persisted across restarts", 0.7).await;
    assert_eq!(d.recall("persisted", "").await[0]["recall_count"], 1);
    assert!(e.svc.stop());
    e.svc.restart().unwrap();
    let d = As::new(&e, None, None);
    let hits = d.recall("persisted", "").await;
    assert_eq!(ids(&hits, "id"), vec![id.clone()]);
    assert_eq!(hits[0]["recall_count"], 2, "recall counts are persisted");
    e.svc.kill9();
    e.svc.restart().unwrap();
    let d = As::new(&e, None, None);
    assert_eq!(d.recall("persisted", "").await[0]["recall_count"], 3);
    let (s, _) = d.forget(&id).await;
    assert_eq!(s, 200);
    e.svc.kill9();
    e.svc.restart().unwrap();
    assert!(
        As::new(&e, None, None)
            .recall("persisted", "")
            .await
            .is_empty(),
        "a forget is durable too"
    );

    acknowledged_stores_survive(&mut e, false).await;
    acknowledged_stores_survive(&mut e, true).await;
}

/// Read SSE frames until one arrives or `within` passes.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    within: Duration,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let data = frame
                .trim()
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data frame: {frame:?}"));
            return Some(serde_json::from_str(data).expect("frame is JSON"));
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => buf.push_str(std::str::from_utf8(&chunk.expect("chunk")).unwrap()),
            Ok(None) => panic!("event stream ended"),
            Err(_) => return None,
        }
    }
}

/// The next frame that is not a heartbeat.
async fn next_change(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
    within: Duration,
) -> Option<Value> {
    loop {
        let ev = next_event(stream, buf, within).await?;
        if ev["event"] != "heartbeat" {
            return Some(ev);
        }
    }
}

#[tokio::test]
async fn sse_streams_changes_per_tenant_and_heartbeats() {
    let mut e = start(None, &[("STELLAR_ENGINE_HEARTBEAT_SECS", "1")]).await;
    let alice = As::new(&e, Some("alice"), None);
    let bob = As::new(&e, Some("bob"), None);
    let resp = alice
        .req(reqwest::Method::GET, "/api/v1/events")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let wait = Duration::from_secs(5);

    let before = chrono::Utc::now().timestamp() as f64 - 1.0;
    let id = alice.store_ok("an event-worthy memory", 0.5).await;
    let ev = next_change(&mut stream, &mut buf, wait)
        .await
        .expect("on_store");
    assert_eq!(ev["event"], "on_store");
    assert!(ev["ts"].as_f64().unwrap() >= before);

    // Bob's changes are not on Alice's stream: the next thing she sees is her own recall.
    bob.store_ok("bob's own memory", 0.5).await;
    assert_eq!(alice.recall("event", "").await.len(), 1);
    let ev = next_change(&mut stream, &mut buf, wait).await.unwrap();
    assert_eq!(ev["event"], "on_recall");
    let (s, _) = alice.forget(&id).await;
    assert_eq!(s, 200);
    assert_eq!(
        next_change(&mut stream, &mut buf, wait).await.unwrap()["event"],
        "on_forget"
    );

    // Idle: a heartbeat within the configured second (plus slack), and again after it.
    let started = Instant::now();
    let hb = next_event(&mut stream, &mut buf, Duration::from_secs(3))
        .await
        .expect("heartbeat");
    assert_eq!(hb, json!({"event": "heartbeat"}));
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(
        next_event(&mut stream, &mut buf, Duration::from_secs(3))
            .await
            .unwrap(),
        json!({"event": "heartbeat"})
    );

    // SIGTERM: open event streams end instead of holding the shutdown for the grace period.
    let started = Instant::now();
    assert!(e.svc.stop(), "clean exit; log:\n{}", e.svc.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("stream ends promptly");
    assert!(
        end.is_none() || end.is_some_and(|c| c.is_err()),
        "stream ended"
    );
}

#[tokio::test]
async fn metrics_listener_reports_zones_and_latencies() {
    let e = start(None, &[]).await;
    let d = As::new(&e, None, None);
    for i in 0..3 {
        d.store_ok(&format!("metric memory {i}"), 0.5).await;
    }
    d.store_ok("important one", 1.0).await;
    d.recall("metric", "").await;
    let text = client()
        .get(&e.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in metrics:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // The three recalled memories moved inward; the important one sits in zone 1 too.
    let total: f64 = (0..5)
        .map(|z| value(&format!("stellar_engine_memories{{zone=\"{z}\"}}")))
        .sum();
    assert_eq!(total, 4.0);
    assert_eq!(value("stellar_engine_memories{zone=\"1\"}"), 4.0);
    assert_eq!(
        value("stellar_engine_operation_duration_seconds_count{operation=\"store\"}"),
        4.0
    );
    assert_eq!(
        value("stellar_engine_operation_duration_seconds_count{operation=\"recall\"}"),
        1.0
    );
    assert_eq!(value("stellar_engine_http_requests_total{method=\"POST\",route=\"/api/v1/store\",status=\"200\"}"), 4.0);
    assert!(value("stellar_engine_db_commit_duration_seconds_count") >= 1.0);
    // The API port does not serve metrics.
    let (s, _) = d.get("/metrics").await;
    assert_eq!(s, 404);
}

/// Move the engine's clock 31 days on, recall the "kept" memory, and run a reorbit.
async fn advance_a_month(d: &As<'_>) -> Value {
    let post = |path: &str, body: Value| d.req(reqwest::Method::POST, path).json(&body);
    let (s, _) = d
        .send(post(
            "/_test/clock/advance",
            json!({"secs": 31.0 * 86_400.0}),
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(d.recall("monthly recalled", "").await.len(), 1);
    let (s, totals) = d.send(post("/_test/reorbit", json!({}))).await;
    assert_eq!(s, 200);
    totals
}

#[tokio::test]
async fn decay_and_forget_follow_the_test_clock() {
    let e = start(None, &[("STELLAR_ENGINE_TEST_CLOCK", "true")]).await;
    let d = As::new(&e, None, None);
    let old = d.store_ok("a note nobody recalls", 0.5).await;
    let kept = d.store_ok("a note recalled every month", 1.0).await;

    let resp = d
        .req(reqwest::Method::GET, "/api/v1/events")
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();

    let t = advance_a_month(&d).await;
    assert_eq!(t["decayed"], 1, "{t}");
    assert_eq!(t["forgotten"], 0);
    let cloud = d.list("?zone=4").await;
    assert_eq!(
        ids(cloud["items"].as_array().unwrap(), "id"),
        vec![old.clone()]
    );
    let mut seen = Vec::new();
    while let Some(ev) = next_event(&mut stream, &mut buf, Duration::from_millis(500)).await {
        seen.push(ev["event"].as_str().unwrap().to_string());
    }
    assert!(
        seen.contains(&"on_reorbit".to_string()) && seen.contains(&"on_decay".to_string()),
        "{seen:?}"
    );

    advance_a_month(&d).await;
    let t = advance_a_month(&d).await;
    assert_eq!(t["forgotten"], 1, "93 days without recall: forgotten; {t}");
    let page = d.list("").await;
    assert_eq!(
        ids(page["items"].as_array().unwrap(), "id"),
        vec![kept.clone()]
    );
    let (s, _) = d.forget(&old).await;
    assert_eq!(s, 404);
}

#[test]
fn help_and_bad_config() {
    let out = std::process::Command::new(bin_path("stellar-engine"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("STELLAR_ENGINE_ADDR"),
        "{help}"
    );

    let out = std::process::Command::new(bin_path("stellar-engine"))
        .env("STELLAR_ENGINE_HEARTBEAT_SECS", "often")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("engine.heartbeat_secs"), "{err}");
    let out = std::process::Command::new(bin_path("stellar-engine"))
        .env("STELLAR_ENGINE_DB_URL", "mysql://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("engine.db_url"));
}

#[tokio::test]
async fn core_flow_on_postgres() {
    let Some(url) = pg_url_for_test() else { return };
    let mut e = start(Some(&url), &[]).await;
    let alice = As::new(&e, Some("alice"), None);
    let bob = As::new(&e, Some("bob"), None);
    let a = alice
        .store_ok("postgres keeps alice's tea preference", 0.8)
        .await;
    let b = bob
        .store_ok("postgres keeps bob's coffee preference", 0.8)
        .await;
    assert_eq!(
        ids(&alice.recall("preference", "").await, "id"),
        vec![a.clone()]
    );
    let (s, _) = bob.forget(&a).await;
    assert_eq!(s, 404);
    e.svc.kill9();
    e.svc.restart().unwrap();
    let alice = As::new(&e, Some("alice"), None);
    let hits = alice.recall("tea", "").await;
    assert_eq!(ids(&hits, "id"), vec![a.clone()]);
    assert_eq!(hits[0]["recall_count"], 2);
    let bob = As::new(&e, Some("bob"), None);
    let (s, _) = bob.forget(&b).await;
    assert_eq!(s, 200);
    assert!(e.svc.stop());
    e.svc.restart().unwrap();
    assert_eq!(As::new(&e, Some("bob"), None).list("").await["total"], 0);
    assert_eq!(As::new(&e, Some("alice"), None).list("").await["total"], 1);
    acknowledged_stores_survive(&mut e, true).await;
}
