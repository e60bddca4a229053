//! The one end-to-end harness: which account DB a test runs on ([`Backend`], [`both_dbs!`](crate::both_dbs)),
//! the services it starts ([`Stack`], built with [`Stack::builder`]), the small upstreams that
//! show what a gateway forwarded ([`start_echo`], [`Capture`], [`serve_raw`]), and the readers
//! every area uses (metrics, polling).
//!
//! - `mod.rs`: [`Backend`], [`both_dbs!`](crate::both_dbs), [`AccountDb`], clients, metrics and polling helpers;
//! - `stack.rs`: [`Stack`] and its builder: the fake payment providers, engine, billing and
//!   gateway binaries on free ports, each with the harness's defaults and a test's overrides;
//! - `upstream.rs`: the echo upstream, the capture upstream and raw-socket helpers.

mod stack;
mod upstream;

pub use stack::*;
pub use upstream::*;

use crate::spawn::{pg_url_for_test, TempDir};
use std::time::{Duration, Instant};
use stellar_common::Db;

/// Which account DB a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run `$body(Backend)` as two tests, `$name::sqlite` and `$name::postgres`, so that nextest
/// runs them in parallel. On PostgreSQL the body gets `None` from [`Stack`]'s `start` when no
/// server is reachable outside CI (it returns, and the skip is printed); in CI (`CI=true`) that
/// is a failure (`stellar_common::testing`). An optional third argument sets the runtime's
/// worker threads (default 4).
#[macro_export]
macro_rules! both_dbs {
    ($name:ident, $body:path) => {
        $crate::both_dbs!($name, $body, 4);
    };
    ($name:ident, $body:path, $threads:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn sqlite() {
                $body($crate::harness::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn postgres() {
                $body($crate::harness::Backend::Postgres).await
            }
        }
    };
}

/// Tiers with limits big enough never to get in the way.
pub const ROOMY_TIERS: &str = "[free]\nmax_memories = 100000\nmax_agents = 3\nrequests_per_minute = 100000\nburst = 100000\nmax_api_keys = 5\nprice_usd = 0\nprice_krw = 0\n\n[pro]\nmax_memories = 200000\nmax_agents = 5\nrequests_per_minute = 200000\nburst = 200000\nmax_api_keys = 5\nprice_usd = 29\nprice_krw = 39000\n";

/// An account DB for one test, migrated (as billing would have).
pub struct AccountDb {
    pub url: String,
    pub db: Db,
    pub backend: Backend,
}

/// A SQLite file in `dir`, or a fresh PostgreSQL database. `None` (test skipped, reason printed)
/// when PostgreSQL is wanted but unreachable outside CI.
pub async fn account_db(backend: Backend, dir: &TempDir) -> Option<AccountDb> {
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/accounts.db", dir.path().display()),
        Backend::Postgres => tokio::task::spawn_blocking(pg_url_for_test).await.ok()??,
    };
    let db = crate::accounts::open(&url).await;
    Some(AccountDb { url, db, backend })
}

/// A client with a roomy pool and a 30 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Through the gateway `gw`: register a new account at billing (`POST /auth/register`), then
/// give it a second key (`POST /auth/api-keys`). Returns (first key, second key, second key's id).
pub async fn register_with_two_keys(gw: &Gateway) -> (String, String, String) {
    let c = client();
    let email = format!("{}@gw-test.example", uuid::Uuid::new_v4().simple());
    let r = c
        .post(gw.url("/auth/register"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register through the gateway");
    let first = r.json::<serde_json::Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .post(gw.url("/auth/api-keys"))
        .header("X-API-Key", &first)
        .json(&serde_json::json!({ "name": "second" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "second key through the gateway");
    let v = r.json::<serde_json::Value>().await.unwrap();
    (
        first,
        v["api_key"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// Revoke key `id` through the gateway with billing's `DELETE /auth/api-keys/{id}`,
/// authenticated by `with_key`. Returns when billing has answered 200.
pub async fn revoke_through_billing(gw: &Gateway, id: &str, with_key: &str) {
    let r = client()
        .delete(gw.url(&format!("/auth/api-keys/{id}")))
        .header("X-API-Key", with_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "billing revokes the key");
    let v = r.json::<serde_json::Value>().await.unwrap();
    assert_eq!(v["revoked"], true);
}

/// The gateway's `/metrics` text.
pub async fn metrics_text(gw: &Gateway) -> String {
    get_text(&format!("http://{}/metrics", gw.metrics)).await
}

/// The body of `GET url`, as text.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sum of all samples of `name` whose labels contain every `filters` pair (`k="v"`).
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Poll `f` until it returns true or `within` passes; returns the time it took.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
