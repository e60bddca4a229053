//! A billing stack for one test: the fake providers, the real `stellar-billing` binary pointed
//! at them (SQLite file or a fresh PostgreSQL database), and — when those binaries are built and
//! start — the real gateway and engine in front, so tier changes can be checked end to end.

use super::{FakeLemon, FakeStripe, FakeToss};
use crate::spawn::{free_addr, pg_url_for_test, Service, TempDir};
use serde_json::Value;
use std::time::{Duration, Instant};
use stellar_common::Db;
use uuid::Uuid;

pub const LEMON_API_KEY: &str = "ls_test_api_key";
pub const LEMON_SECRET: &str = "ls_signing_secret";
pub const LEMON_VARIANT_PRO: &str = "111";
pub const LEMON_VARIANT_TEAM: &str = "222";
pub const STRIPE_KEY: &str = "sk_test_fake";
pub const STRIPE_WHSEC: &str = "whsec_test_secret";
pub const STRIPE_PRICE_PRO: &str = "price_pro_test";
pub const STRIPE_PRICE_TEAM: &str = "price_team_test";
pub const TOSS_SK: &str = "test_sk_fake0123";
pub const TOSS_CK: &str = "test_ck_fake0123";
pub const TOSS_ENC_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Front {
    pub gateway: Service,
    pub engine: Service,
    pub url: String,
}

pub struct Stack {
    pub backend: Backend,
    pub billing: Service,
    pub url: String,
    pub metrics_url: String,
    pub db: Db,
    pub lemon: FakeLemon,
    pub stripe: FakeStripe,
    pub toss: FakeToss,
    pub front: Option<Front>,
    pub http: reqwest::Client,
    pub dir: TempDir,
}

/// Run `f` on SQLite, then on PostgreSQL (skipped with a message when no server is reachable
/// outside CI; a failure in CI).
pub async fn each_backend<F, Fut>(f: F)
where
    F: Fn(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f(Backend::Sqlite).await;
    f(Backend::Postgres).await;
}

/// Options for [`Stack::start`].
#[derive(Default, Clone)]
pub struct Opts {
    /// Also start engine + gateway in front of billing.
    pub front: bool,
    /// Extra environment for billing.
    pub env: Vec<(&'static str, String)>,
}

async fn start_service(
    bin: &'static str,
    env: Vec<(&'static str, String)>,
    health: String,
) -> anyhow::Result<Service> {
    tokio::task::spawn_blocking(move || Service::start(bin, &env, &health)).await?
}

impl Stack {
    /// `None` when the backend is PostgreSQL and no server is reachable (outside CI).
    pub async fn start(backend: Backend, opts: Opts) -> Option<Stack> {
        let dir = TempDir::new("billing");
        let db_url = match backend {
            Backend::Sqlite => format!("sqlite://{}/accounts.db", dir.path().display()),
            Backend::Postgres => tokio::task::spawn_blocking(pg_url_for_test)
                .await
                .unwrap()?,
        };
        let lemon = FakeLemon::start(LEMON_API_KEY).await;
        let stripe = FakeStripe::start(STRIPE_KEY, STRIPE_PRICE_PRO).await;
        let toss = FakeToss::start(TOSS_SK).await;
        // A "free" port can be taken by another process before billing binds it: retry with new ports.
        let mut attempt = 0;
        let (billing, addr, maddr, gw_addr) = loop {
            attempt += 1;
            let (addr, maddr, gw_addr) = (free_addr(), free_addr(), free_addr());
            let env = billing_env(
                &addr, &maddr, &gw_addr, &db_url, &dir, &lemon, &stripe, &toss, &opts.env,
            );
            match start_service("stellar-billing", env, format!("http://{addr}/healthz")).await {
                Ok(b) => break (b, addr, maddr, gw_addr),
                Err(e) if attempt < 5 && e.to_string().contains("Address already in use") => {
                    continue
                }
                Err(e) => panic!("billing starts: {e:?}"),
            }
        };
        let db = Db::connect(&db_url, &Default::default())
            .await
            .expect("test connects to the account DB");
        let front = if opts.front {
            start_front(&db_url, &gw_addr, &addr, dir.path()).await
        } else {
            None
        };
        Some(Stack {
            backend,
            billing,
            url: format!("http://{addr}"),
            metrics_url: format!("http://{maddr}/metrics"),
            db,
            lemon,
            stripe,
            toss,
            front,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            dir,
        })
    }

    pub async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.url))
            .body(body.to_string())
            .header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.expect("billing answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        let resp = r.send().await.expect("billing answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn register(&self, email: &str) -> (Uuid, String) {
        let (s, v) = self
            .post(
                "/auth/register",
                &serde_json::json!({ "email": email }).to_string(),
                &[],
            )
            .await;
        assert_eq!(s, 201, "{v}");
        (
            Uuid::parse_str(v["user_id"].as_str().unwrap()).unwrap(),
            v["api_key"].as_str().unwrap().to_string(),
        )
    }

    pub async fn usage(&self, key: &str) -> Value {
        let (s, v) = self.get("/auth/usage", Some(key)).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Wait until `key`'s tier is `tier`: through the gateway when it runs (within `within`,
    /// the requirement is 1 s), else through billing's /auth/usage.
    pub async fn expect_tier(&self, key: &str, tier: &str, within: Duration) {
        let want_rpm = match tier {
            "free" => 60,
            "pro" => 300,
            "team" => 1000,
            _ => 0,
        };
        let deadline = Instant::now() + within;
        loop {
            let seen = match &self.front {
                Some(f) => {
                    let r = self
                        .http
                        .get(format!("{}/api/v1/stats", f.url))
                        .header("X-API-Key", key)
                        .send()
                        .await
                        .expect("gateway answers");
                    let limit = r
                        .headers()
                        .get("x-ratelimit-limit")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let policy = r
                        .headers()
                        .get("ratelimit-policy")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    limit == Some(want_rpm) || policy.contains(&format!("\"{tier}\""))
                }
                None => self.usage(key).await["tier"] == tier,
            };
            if seen {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tier {tier} not visible {} within {within:?}",
                if self.front.is_some() {
                    "through the gateway"
                } else {
                    "in billing"
                }
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// (tier, subscription_status, current_period_end, cancel_at_period_end, provider)
    pub async fn account(
        &self,
        user: Uuid,
    ) -> (
        String,
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        bool,
        Option<String>,
    ) {
        stellar_common::with_db!(&self.db, p => sqlx::query_as(
            "SELECT tier, subscription_status, current_period_end, cancel_at_period_end, provider FROM users WHERE id = $1")
            .bind(user).fetch_one(p).await).unwrap()
    }

    pub async fn count(&self, sql: &str, user: Uuid) -> i64 {
        stellar_common::with_db!(&self.db, p => sqlx::query_scalar::<_, i64>(sql).bind(user).fetch_one(p).await).unwrap()
    }

    pub async fn exec(&self, sql: &str, user: Uuid, t: chrono::DateTime<chrono::Utc>) {
        stellar_common::with_db!(&self.db, p => sqlx::query(sql).bind(user).bind(t).execute(p).await.map(|_| ())).unwrap();
    }

    /// Poll `f` until it returns true (or panic after `within`).
    pub async fn until<F, Fut>(&self, within: Duration, what: &str, f: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !f().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\nbilling log:\n{}",
                self.billing.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(&self.metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn kill9_billing(&mut self) {
        self.billing.kill9();
    }

    /// Start billing again (same env, ports and DB); blocks this worker while it comes up.
    pub async fn restart_billing(&mut self) {
        tokio::task::block_in_place(|| self.billing.restart()).expect("billing restarts");
    }
}

async fn start_front(
    db_url: &str,
    gw_addr: &str,
    billing_addr: &str,
    dir: &std::path::Path,
) -> Option<Front> {
    // The gateway and engine are part of this workspace: their absence is a failure, not a skip.
    let (engine_addr, engine_maddr, gw_maddr) = (free_addr(), free_addr(), free_addr());
    let engine = start_service(
        "stellar-engine",
        vec![
            ("STELLAR_ENGINE_ADDR", engine_addr.clone()),
            ("STELLAR_ENGINE_METRICS_ADDR", engine_maddr),
            ("STELLAR_DATA_DIR", dir.join("engine").display().to_string()),
        ],
        format!("http://{engine_addr}/api/v1/health"),
    )
    .await
    .expect("engine starts");
    let gateway = start_service(
        "stellar-gateway",
        vec![
            ("STELLAR_GATEWAY_ADDR", gw_addr.to_string()),
            ("STELLAR_METRICS_ADDR", gw_maddr.clone()),
            ("STELLAR_GATEWAY_ENGINE_UPSTREAM", engine_addr),
            ("STELLAR_GATEWAY_BILLING_UPSTREAM", billing_addr.to_string()),
            ("STELLAR_DB_URL", db_url.to_string()),
            ("STELLAR_DATA_DIR", dir.display().to_string()),
        ],
        format!("http://{gw_maddr}/healthz"),
    )
    .await
    .expect("gateway starts");
    Some(Front {
        gateway,
        engine,
        url: format!("http://{gw_addr}"),
    })
}

#[allow(clippy::too_many_arguments)]
fn billing_env(
    addr: &str,
    maddr: &str,
    gw_addr: &str,
    db_url: &str,
    dir: &TempDir,
    lemon: &FakeLemon,
    stripe: &FakeStripe,
    toss: &FakeToss,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = vec![
        ("STELLAR_BILLING_ADDR", addr.to_string()),
        ("STELLAR_BILLING_METRICS_ADDR", maddr.to_string()),
        ("STELLAR_DB_URL", db_url.to_string()),
        ("STELLAR_DATA_DIR", dir.path().display().to_string()),
        ("STELLAR_BILLING_PUBLIC_URL", format!("http://{gw_addr}")),
        ("STELLAR_BILLING_SCHEDULER_INTERVAL_SECS", "0.2".into()),
        ("STELLAR_BILLING_PROVIDER_TIMEOUT_SECS", "5.0".into()),
        ("LEMON_API_KEY", LEMON_API_KEY.into()),
        ("LEMON_STORE_ID", "1".into()),
        ("LEMON_VARIANT_PRO", LEMON_VARIANT_PRO.into()),
        ("LEMON_VARIANT_TEAM", LEMON_VARIANT_TEAM.into()),
        ("LEMON_WEBHOOK_SECRET", LEMON_SECRET.into()),
        ("LEMON_API_BASE", lemon.url.clone()),
        ("STRIPE_SECRET_KEY", STRIPE_KEY.into()),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_WHSEC.into()),
        ("STRIPE_PRICE_PRO", STRIPE_PRICE_PRO.into()),
        ("STRIPE_PRICE_TEAM", STRIPE_PRICE_TEAM.into()),
        ("STRIPE_API_BASE", stripe.url.clone()),
        ("TOSS_SECRET_KEY", TOSS_SK.into()),
        ("TOSS_CLIENT_KEY", TOSS_CK.into()),
        ("TOSS_ENCRYPTION_KEY", TOSS_ENC_KEY.into()),
        ("TOSS_API_BASE", toss.url.clone()),
        ("TOSS_TIMEOUT_SECS", "1.5".into()),
        ("TOSS_RETRY_SCHEDULE_SECS", "[1, 1]".into()),
        ("RUST_LOG", "info,stellar_billing=debug".into()),
    ];
    for (k, v) in extra.iter().cloned() {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    env
}
