//! The fault matrix (issue 12): the account DB, the engine, billing or Redis goes away, the
//! engine gets slow, the gateway restarts under load. Real processes throughout; a dependency is
//! cut by killing its process or by severing a test-owned TCP relay in front of it
//! (`stellar_tests::relay`: the machine's PostgreSQL server keeps running for the other tests).
//!
//! For each fault: clients only ever see the documented answers (502 engine unreachable, 503
//! account DB unreachable with the principal not cached, 504 engine timed out, each with a JSON
//! `detail`), nothing acknowledged is lost (every store answered 200 is in the engine, and the
//! quota counter agrees with the engine once things are back), and service resumes by itself
//! when the dependency returns. Timeouts are generous: these run on a loaded 2-core machine.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stellar_tests::accounts::{self, TestAccount};
use stellar_tests::harness::*;
use stellar_tests::relay::Relay;
use stellar_tests::spawn::{free_addr, free_port, RedisServer};
use uuid::Uuid;

/// What a client saw over a run.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer (connection refused or reset).
    conn_errors: u64,
    /// Ids of the memories whose store was answered 200.
    stored: Vec<String>,
    /// Non-2xx answers without a JSON `detail`.
    bad_bodies: Vec<String>,
    /// 200s after `mark` was set (for "service resumed").
    ok_after_mark: u64,
    /// Non-200 answers after `mark` was set.
    errors_after_mark: u64,
    /// The first body seen for each non-200 status.
    first_error: BTreeMap<u16, String>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statuses {:?}, {} without an answer, {} stores acknowledged, {} 200s and {} others after the mark, first errors {:?}",
            self.statuses,
            self.conn_errors,
            self.stored.len(),
            self.ok_after_mark,
            self.errors_after_mark,
            self.first_error
        )
    }
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        for (s, n) in o.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.conn_errors += o.conn_errors;
        self.stored.extend(o.stored);
        self.bad_bodies.extend(o.bad_bodies);
        self.ok_after_mark += o.ok_after_mark;
        self.errors_after_mark += o.errors_after_mark;
        for (s, b) in o.first_error {
            self.first_error.entry(s).or_insert(b);
        }
    }

    /// Every HTTP answer had one of `allowed` statuses, and every error carried a JSON detail.
    fn assert_only(&self, allowed: &[u16], what: &str) {
        let other: Vec<_> = self
            .statuses
            .iter()
            .filter(|(s, _)| !allowed.contains(s))
            .collect();
        assert!(
            other.is_empty(),
            "{what}: statuses outside {allowed:?}: {other:?} (all: {self:?})"
        );
        assert!(
            self.bad_bodies.is_empty(),
            "{what}: error answers without a JSON detail: {:?}",
            self.bad_bodies
        );
    }
}

/// Flags shared with load tasks: stop, and a mark from which 200s are counted separately.
#[derive(Clone, Default)]
struct Control {
    stop: Arc<AtomicBool>,
    mark: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

/// One client looping until stopped: stores (`POST /api/v1/store`) or reads (`GET
/// /api/v1/stats`) through `gateway` with `key`, 10 ms apart.
fn load(
    gateway: String,
    key: String,
    stores: bool,
    ctl: Control,
) -> tokio::task::JoinHandle<Tally> {
    tokio::spawn(async move {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut t = Tally::default();
        let mut i = 0u64;
        while !ctl.stop.load(Ordering::SeqCst) {
            i += 1;
            ctl.sent.fetch_add(1, Ordering::SeqCst);
            let r = if stores {
                c.post(format!("http://{gateway}/api/v1/store")).json(
                    &json!({"content": format!("fault matrix memory {i} {}", Uuid::new_v4())}),
                )
            } else {
                c.get(format!("http://{gateway}/api/v1/stats"))
            };
            match r.header("X-API-Key", &key).send().await {
                Err(_) => t.conn_errors += 1,
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    *t.statuses.entry(status).or_default() += 1;
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    if status == 200 {
                        if ctl.mark.load(Ordering::SeqCst) {
                            t.ok_after_mark += 1;
                        }
                        if stores {
                            t.stored.push(body["id"].as_str().unwrap_or("").to_string());
                        }
                    } else {
                        if ctl.mark.load(Ordering::SeqCst) {
                            t.errors_after_mark += 1;
                        }
                        t.first_error
                            .entry(status)
                            .or_insert_with(|| body.to_string());
                        if body.get("detail").is_none() {
                            t.bad_bodies.push(format!("{status} {body}"));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t
    })
}

impl Control {
    /// `clients` load clients through `gw` with `key`; the first `storing` of them store, the
    /// others read.
    fn load(&self, gw: &Gateway, key: &str, clients: usize, storing: usize) -> Vec<Load> {
        (0..clients)
            .map(|i| load(gw.addr.clone(), key.to_string(), i < storing, self.clone()))
            .collect()
    }

    /// Stop the load and add up what its clients saw.
    async fn halt(&self, tasks: Vec<Load>) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Tally::default();
        for t in tasks {
            all.merge(t.await.unwrap());
        }
        all
    }

    /// Set the mark, let the load run `secs` more, then [`Control::halt`] it.
    async fn mark_then_halt(&self, secs: u64, tasks: Vec<Load>) -> Tally {
        self.mark.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        self.halt(tasks).await
    }
}

/// A running load client.
type Load = tokio::task::JoinHandle<Tally>;

/// The usual fault stack: SQLite, the engine and a gateway (with `env`), and a free account
/// whose key the change feed has had time to deliver.
async fn loaded_stack(tag: &str, env: &[(&str, String)]) -> Option<(Stack, TestAccount)> {
    let s = stack(Backend::Sqlite, tag, ROOMY_TIERS, env).await?;
    let acct = accounts::create_account(&s.adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Some((s, acct))
}

/// `n` stores through `gw` with `key`, each answered 200: what a client saw.
async fn acked_stores(gw: &Gateway, key: &str, n: usize) -> Tally {
    let mut acked = Tally::default();
    for _ in 0..n {
        let (s, v) = store(gw, key).await;
        assert_eq!(s, 200, "{v}");
        acked.stored.push(v["id"].as_str().unwrap().to_string());
    }
    acked
}

/// The ids of `user`'s memories, asked from the engine directly.
async fn engine_ids(engine: &str, user: Uuid) -> HashSet<String> {
    let v: Value = client()
        .get(format!("http://{engine}/api/v1/memories?limit=100000"))
        .header("X-Stellar-User", user.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Nothing lost: every store answered 200 is in the engine, and the quota counter comes to
/// agree with the engine's count (the gateway's reconciliation runs every second here).
async fn assert_nothing_lost(engine: &Engine, db: &stellar_common::Db, user: Uuid, t: &Tally) {
    let ids = engine_ids(&engine.addr, user).await;
    let missing: Vec<_> = t.stored.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} stores answered 200 are not in the engine: {missing:?}",
        missing.len()
    );
    let (db2, total) = (db.clone(), engine.total_memories(user).await);
    let agreed = eventually(Duration::from_secs(30), || {
        let db = db2.clone();
        async move { accounts::memories_used(&db, user).await == total }
    })
    .await;
    assert!(
        agreed.is_some(),
        "quota counter {} never agreed with the engine's {total}",
        accounts::memories_used(db, user).await
    );
}

async fn status_and_body(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.expect("the gateway answers");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn get_stats(gw: &Gateway, key: &str) -> (u16, Value) {
    status_and_body(
        client()
            .get(gw.url("/api/v1/stats"))
            .header("X-API-Key", key),
    )
    .await
}

async fn store(gw: &Gateway, key: &str) -> (u16, Value) {
    status_and_body(
        client()
            .post(gw.url("/api/v1/store"))
            .header("X-API-Key", key)
            .json(&json!({"content": "a memory stored around a fault"})),
    )
    .await
}

/// Poll until `f` gives `want` (or panic after `within`).
async fn until_status<F, Fut>(within: Duration, what: &str, want: u16, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let deadline = Instant::now() + within;
    loop {
        let (s, v) = f().await;
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {s} {v} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const RECONCILE: (&str, &str) = ("STELLAR_GATEWAY_RECONCILE_INTERVAL_SECS", "1");

/// Account DB (PostgreSQL) cut off behind a relay: a cached key keeps reading, an uncached one
/// gets 503, stores get 503 (the quota needs the DB), readiness says so; when the DB is back
/// everything works again and the quota agrees with the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn account_db_down_then_back() {
    let Some(s) = Stack::builder(Backend::Postgres, "fault-db")
        .tiers(ROOMY_TIERS)
        .engine(&[])
        .start()
        .await
    else {
        return;
    };
    let (adb, engine) = (&s.adb, s.engine());
    let mut url = reqwest::Url::parse(&adb.url).unwrap();
    let pg = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let relay = Relay::start(&pg).await;
    let relay_port: u16 = relay.addr.rsplit(':').next().unwrap().parse().unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(relay_port)).unwrap();
    let gw = s
        .start_gateway(
            &engine.addr,
            &free_addr(),
            &[
                ("STELLAR_DB_URL", url.to_string()),
                ("STELLAR_GATEWAY_DB_TIMEOUT_MS", "800".into()),
                (RECONCILE.0, RECONCILE.1.into()),
            ],
        )
        .await;
    let cached = accounts::create_account(&adb.db, "free").await;
    let uncached = accounts::create_account(&adb.db, "free").await;
    let mut acked = acked_stores(&gw, &cached.key, 5).await;
    assert_eq!(get_stats(&gw, &cached.key).await.0, 200);

    relay.sever();
    let t = Instant::now();
    let (s, v) = get_stats(&gw, &uncached.key).await;
    assert_eq!(s, 503, "uncached key, DB unreachable: {v}");
    assert!(v["detail"].is_string(), "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "503 in {:?}",
        t.elapsed()
    );
    for _ in 0..3 {
        let (s, v) = get_stats(&gw, &cached.key).await;
        assert_eq!(s, 200, "a cached key keeps reading: {v}");
    }
    let (s, v) = store(&gw, &cached.key).await;
    assert_eq!(s, 503, "a store needs the quota in the DB: {v}");
    assert!(v["detail"].is_string(), "{v}");
    // A burst during the outage: only 200 (cached reads) and 503.
    let ctl = Control::default();
    let mut tasks = ctl.load(&gw, &cached.key, 2, 1);
    tasks.extend(ctl.load(&gw, &uncached.key, 1, 0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = ctl.halt(tasks).await;
    during.assert_only(&[200, 503], "account DB down");
    assert_eq!(during.conn_errors, 0, "{during:?}");
    assert!(
        during.statuses.get(&503).copied().unwrap_or(0) > 0,
        "{during:?}"
    );
    let (s, _) = status_and_body(client().get(format!("http://{}/readyz", gw.metrics))).await;
    assert_eq!(s, 503, "not ready without the account DB");

    relay.restore();
    until_status(
        Duration::from_secs(30),
        "uncached key after the DB is back",
        200,
        || get_stats(&gw, &uncached.key),
    )
    .await;
    // (Stores acknowledged here are checked below through the engine's count.)
    until_status(
        Duration::from_secs(30),
        "store after the DB is back",
        200,
        || store(&gw, &cached.key),
    )
    .await;
    until_status(Duration::from_secs(30), "ready again", 200, || {
        status_and_body(client().get(format!("http://{}/readyz", gw.metrics)))
    })
    .await;
    acked.merge(during);
    assert_nothing_lost(engine, &adb.db, cached.user_id, &acked).await;
}

/// The engine is killed under a store load: only 200 and 502 (with a JSON detail); when it is
/// back (same port), stores succeed again, every acknowledged store is there, and the quota
/// agrees with the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_down_then_back() {
    let Some((mut s, acct)) =
        loaded_stack("fault-engine", &[(RECONCILE.0, RECONCILE.1.into())]).await
    else {
        return;
    };
    let ctl = Control::default();
    let tasks = ctl.load(s.gw(), &acct.key, 4, 3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.engine_mut().svc.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, v) = store(s.gw(), &acct.key).await;
    assert_eq!(st, 502, "store with the engine down: {v}");
    assert!(v["detail"].is_string(), "{v}");
    tokio::task::block_in_place(|| s.engine_mut().svc.restart()).expect("engine restarts");
    let t = ctl.mark_then_halt(2, tasks).await;
    t.assert_only(&[200, 502], "engine down");
    assert_eq!(t.conn_errors, 0, "the gateway always answered: {t:?}");
    assert!(t.statuses.get(&502).copied().unwrap_or(0) > 0, "{t:?}");
    assert!(t.ok_after_mark > 0, "service resumed: {t:?}");
    assert_nothing_lost(s.engine(), &s.adb.db, acct.user_id, &t).await;
}

/// Billing is killed: its routes get 502 with a JSON detail, engine routes are untouched; when
/// billing is back its routes work again and every account registered before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_down_then_back() {
    let Some(mut s) = full_stack(
        Backend::Sqlite,
        "fault-billing",
        &[
            ("STELLAR_GATEWAY_IP_REQUESTS_PER_MINUTE", "100000".into()),
            ("STELLAR_GATEWAY_IP_BURST", "100000".into()),
        ],
    )
    .await
    else {
        return;
    };
    // (Fields, not accessors: billing is killed below while the gateway is in use.)
    let (adb, gw, billing) = (&s.adb, s.gw.as_ref().unwrap(), s.billing.as_mut().unwrap());
    let c = client();
    let register = |email: String| {
        let c = c.clone();
        let url = gw.url("/auth/register");
        async move { status_and_body(c.post(url).json(&json!({ "email": email }))).await }
    };
    let mut keys = Vec::new();
    for i in 0..3 {
        let (s, v) = register(format!(
            "before{i}-{}@fault.example",
            Uuid::new_v4().simple()
        ))
        .await;
        assert_eq!(s, 201, "{v}");
        keys.push(v["api_key"].as_str().unwrap().to_string());
    }

    billing.svc.kill9();
    for _ in 0..3 {
        let (s, v) = register(format!("during-{}@fault.example", Uuid::new_v4().simple())).await;
        assert_eq!(s, 502, "register with billing down: {v}");
        assert!(v["detail"].is_string(), "{v}");
        let (s, v) =
            status_and_body(c.get(gw.url("/auth/usage")).header("X-API-Key", &keys[0])).await;
        assert_eq!(s, 502, "usage with billing down: {v}");
        assert!(v["detail"].is_string(), "{v}");
        assert_eq!(
            get_stats(gw, &keys[0]).await.0,
            200,
            "engine routes unaffected"
        );
    }

    tokio::task::block_in_place(|| billing.svc.restart()).expect("billing restarts");
    until_status(
        Duration::from_secs(30),
        "register after billing is back",
        201,
        || register(format!("after-{}@fault.example", Uuid::new_v4().simple())),
    )
    .await;
    for k in &keys {
        let (s, v) = status_and_body(c.get(gw.url("/auth/usage")).header("X-API-Key", k)).await;
        assert_eq!(s, 200, "an account registered before the outage: {v}");
    }
    let users: i64 = stellar_common::with_db!(&adb.db, p => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(p).await)
        .unwrap();
    assert_eq!(users, 4, "3 before, none during, 1 after");
}

/// Redis (the shared limiter) is killed under load: the gateway falls back to its local buckets
/// without failing a request, and goes back to Redis once it is back on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_then_back() {
    let port = free_port();
    let Some(mut redis) = RedisServer::start(port) else {
        return;
    };
    let Some((s, acct)) = loaded_stack(
        "fault-redis",
        &[
            ("STELLAR_GATEWAY_REDIS_URL", redis.url()),
            ("STELLAR_GATEWAY_REDIS_RETRY_MS", "300".into()),
        ],
    )
    .await
    else {
        return;
    };
    let decisions = |backend: &'static str| {
        let gw = s.gw();
        async move {
            metric_sum(
                &metrics_text(gw).await,
                "gateway_limiter_decisions_total",
                &[&format!("backend=\"{backend}\"")],
            )
        }
    };
    let ctl = Control::default();
    let tasks = ctl.load(s.gw(), &acct.key, 3, 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(decisions("redis").await > 0.0, "Redis decides at first");
    redis.stop();
    let local_before = decisions("fallback").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        decisions("fallback").await > local_before,
        "the local fallback buckets decide while Redis is down"
    );
    let mut redis = RedisServer::start(port).expect("redis-server restarts on its port");
    let redis_back = decisions("redis").await;
    let back = eventually(Duration::from_secs(20), || async {
        decisions("redis").await > redis_back
    })
    .await;
    let t = ctl.halt(tasks).await;
    redis.stop();
    assert!(back.is_some(), "the gateway went back to Redis");
    t.assert_only(&[200], "Redis down");
    assert_eq!(t.conn_errors, 0, "{t:?}");
}

/// The engine becomes slow (its answers held back 3 s behind a relay; the gateway's read
/// timeout is 1 s): 504 with a JSON detail, promptly; when it is fast again, so is everything,
/// every acknowledged store is there and the quota agrees with the engine (stores that timed
/// out may or may not have been stored: the reconciliation settles it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_engine_then_fast() {
    let Some(s) = Stack::builder(Backend::Sqlite, "fault-slow")
        .tiers(ROOMY_TIERS)
        .engine(&[])
        .start()
        .await
    else {
        return;
    };
    let (adb, engine) = (&s.adb, s.engine());
    let relay = Relay::start(&engine.addr).await;
    let gw = s
        .start_gateway(
            &relay.addr,
            &free_addr(),
            &[
                ("STELLAR_GATEWAY_READ_TIMEOUT_SECS", "1".into()),
                (RECONCILE.0, RECONCILE.1.into()),
            ],
        )
        .await;
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut acked = acked_stores(&gw, &acct.key, 3).await;

    relay.set_delay(Duration::from_secs(3));
    for what in ["store", "stats"] {
        let t = Instant::now();
        let (s, v) = if what == "store" {
            store(&gw, &acct.key).await
        } else {
            get_stats(&gw, &acct.key).await
        };
        assert_eq!(s, 504, "{what} with a slow engine: {v}");
        assert!(v["detail"].is_string(), "{v}");
        assert!(
            t.elapsed() < Duration::from_millis(2900),
            "the 504 comes at the read timeout, before the engine answers: {:?}",
            t.elapsed()
        );
    }
    let ctl = Control::default();
    let tasks = ctl.load(&gw, &acct.key, 3, 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.set_delay(Duration::ZERO);
    let t = ctl.mark_then_halt(3, tasks).await;
    t.assert_only(&[200, 504], "slow engine");
    assert_eq!(t.conn_errors, 0, "{t:?}");
    assert!(t.ok_after_mark > 0, "fast again: {t:?}");
    let (s, v) = get_stats(&gw, &acct.key).await;
    assert_eq!(s, 200, "{v}");
    acked.merge(t);
    assert_nothing_lost(engine, &adb.db, acct.user_id, &acked).await;
}

/// The gateway restarts (SIGTERM, clean exit, started again on the same ports) under a load of
/// stores and reads: every HTTP answer is a 200 (clients may see refused connections while no
/// gateway listens; a 503 "account service unavailable" from a gateway that serves before its
/// healthy account DB is connected is a defect), every acknowledged store is in the engine, and
/// the quota agrees with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_restart_under_load() {
    let Some((mut s, acct)) =
        loaded_stack("fault-restart", &[(RECONCILE.0, RECONCILE.1.into())]).await
    else {
        return;
    };
    let ctl = Control::default();
    let tasks = ctl.load(s.gw(), &acct.key, 6, 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let clean = tokio::task::block_in_place(|| s.gw_mut().svc.stop());
    assert!(clean, "the gateway exits cleanly on SIGTERM under load");
    tokio::task::block_in_place(|| s.gw_mut().svc.restart()).expect("gateway restarts");
    let t = ctl.mark_then_halt(2, tasks).await;
    t.assert_only(&[200], "gateway restart");
    assert!(t.ok_after_mark > 0, "served after the restart: {t:?}");
    eprintln!(
        "restart under load: {:?}, {} without an answer",
        t.statuses, t.conn_errors
    );
    assert_nothing_lost(s.engine(), &s.adb.db, acct.user_id, &t).await;
}
