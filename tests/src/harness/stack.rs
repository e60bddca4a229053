//! [`Stack`]: the services one end-to-end test runs, in a temporary directory on one account DB.
//!
//! [`Stack::builder`] picks any of the engine, billing (configured with the fake payment
//! providers of `crate::fakes`, unless [`StackBuilder::without_providers`]) and the gateway;
//! [`stack`] and [`billing_stack`] are the two usual shapes, [`full_stack`], [`echo_gateway`],
//! [`gateway_to`], [`capture_gateway`] and [`browser_stack`] other common ones. Each service gets
//! the harness's environment for tests (free ports, short timers, the stack's tier table) and
//! then the test's overrides, which win over a default of the same name. Services start in
//! dependency order: engine, billing (its public URL is the gateway's address, chosen first),
//! gateway (in front of the stack's engine and billing, or of upstreams the test gives).
//! [`Stack::start_gateway`] starts more gateways, or one in front of upstreams that exist only
//! once the stack runs.

use super::{account_db, AccountDb, Backend};
use crate::fakes::{FakeLemon, FakeStripe, FakeToss};
use crate::spawn::{free_addr, Service, TempDir};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
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

/// A service's environment: names and values.
type Env = Vec<(String, String)>;

fn owned(env: &[(&str, String)]) -> Env {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// `defaults`, with each of `overrides` replacing the default of the same name (or added).
fn merged(defaults: Vec<(&str, String)>, overrides: &[(String, String)]) -> Env {
    let mut env = owned(&defaults);
    for (k, v) in overrides {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Start `bin`; `make` gives its environment (on fresh free ports), health URL and addresses. A
/// "free" port can be taken by another process before the service binds it: then it is tried
/// again with new ports, up to 5 times.
async fn start_service<T>(
    bin: &'static str,
    mut make: impl FnMut() -> (Env, String, T),
) -> (Service, T) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (env, health, addrs) = make();
        let started = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, String)> =
                env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            Service::start(bin, &env, &health)
        })
        .await
        .unwrap();
        match started {
            Ok(svc) => return (svc, addrs),
            Err(e) if attempt < 5 && e.to_string().contains("Address already in use") => {}
            Err(e) => panic!("{bin} starts: {e:?}"),
        }
    }
}

/// The engine: `addr` serves the API, `metrics` (an address) `/metrics`.
pub struct Engine {
    pub svc: Service,
    pub addr: String,
    pub metrics: String,
}

impl Engine {
    /// How many memories the engine holds for `user`, asked directly (not through a gateway).
    pub async fn total_memories(&self, user: Uuid) -> i64 {
        super::client()
            .get(format!("http://{}/api/v1/stats", self.addr))
            .header("X-Stellar-User", user.to_string())
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["total_memories"]
            .as_i64()
            .unwrap()
    }
}

/// A gateway: `addr` is its public listener, `metrics` (an address) serves `/metrics`,
/// `/healthz` and `/readyz`.
pub struct Gateway {
    pub svc: Service,
    pub addr: String,
    pub metrics: String,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Billing and the fake providers it is configured with.
pub struct Billing {
    pub svc: Service,
    pub addr: String,
    /// `http://{addr}`.
    pub url: String,
    pub metrics_url: String,
    pub lemon: FakeLemon,
    pub stripe: FakeStripe,
    pub toss: FakeToss,
}

impl Billing {
    /// Everything billing has printed so far.
    pub fn log(&self) -> String {
        self.svc.log()
    }
}

/// The services of one test. Every stack has a directory and an account DB; the services are
/// those its builder asked for ([`Stack::engine`], [`Stack::gw`] and [`Stack::billing`] panic
/// when asked for one that was not).
pub struct Stack {
    pub dir: TempDir,
    pub adb: AccountDb,
    /// A client that does not follow redirects (billing answers some with 303).
    pub http: reqwest::Client,
    pub engine: Option<Engine>,
    pub billing: Option<Billing>,
    pub gw: Option<Gateway>,
    tiers: Option<PathBuf>,
}

/// What [`Stack::builder`] starts.
pub struct StackBuilder {
    backend: Backend,
    tag: String,
    tiers: Option<String>,
    engine: Option<Env>,
    billing: Option<Env>,
    providers: bool,
    gateway: Option<Env>,
    engine_upstream: Option<String>,
    billing_upstream: Option<String>,
}

impl StackBuilder {
    /// The tier table of the gateway and billing (default: `config/stellar.toml`'s).
    pub fn tiers(mut self, tiers: &str) -> Self {
        self.tiers = Some(tiers.to_string());
        self
    }

    /// Start the engine, with `env` over the harness's defaults.
    pub fn engine(mut self, env: &[(&str, String)]) -> Self {
        self.engine = Some(owned(env));
        self
    }

    /// Start the fake providers and billing configured with them, with `env` over the harness's
    /// defaults (among them `STELLAR_AUTH_IMMEDIATE_KEY=true`: registration answers with the key).
    pub fn billing(mut self, env: &[(&str, String)]) -> Self {
        self.billing = Some(owned(env));
        self
    }

    /// Billing without any payment provider configured (the fakes run, unused), as a deployment
    /// that has none yet.
    pub fn without_providers(mut self) -> Self {
        self.providers = false;
        self
    }

    /// Start a gateway, with `env` over the harness's defaults, in front of the stack's engine and
    /// billing (an address where nothing listens for one that is not started), or of
    /// [`StackBuilder::upstreams`].
    pub fn gateway(mut self, env: &[(&str, String)]) -> Self {
        self.gateway = Some(owned(env));
        self
    }

    /// The gateway's engine upstream, instead of the stack's engine.
    pub fn engine_upstream(mut self, addr: &str) -> Self {
        self.engine_upstream = Some(addr.to_string());
        self
    }

    /// The gateway's billing upstream, instead of the stack's billing.
    pub fn billing_upstream(mut self, addr: &str) -> Self {
        self.billing_upstream = Some(addr.to_string());
        self
    }

    /// Both upstreams of the gateway, instead of the stack's own.
    pub fn upstreams(self, engine: &str, billing: &str) -> Self {
        self.engine_upstream(engine).billing_upstream(billing)
    }

    /// Start everything. `None` (the reason printed) when the backend is PostgreSQL and no
    /// server is reachable outside CI; in CI that is a failure.
    pub async fn start(self) -> Option<Stack> {
        let dir = TempDir::new(&self.tag);
        let adb = account_db(self.backend, &dir).await?;
        let tiers = self.tiers.map(|t| {
            let path = dir.path().join("tiers.toml");
            std::fs::write(&path, t).unwrap();
            path
        });
        let mut s = Stack {
            dir,
            adb,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            engine: None,
            billing: None,
            gw: None,
            tiers,
        };
        if let Some(env) = &self.engine {
            s.engine = Some(s.start_engine(env).await);
        }
        // Billing's public URL is the gateway's address, so that one is chosen now.
        let gw_addr = free_addr();
        if let Some(env) = &self.billing {
            s.billing = Some(s.start_billing(&gw_addr, self.providers, env).await);
        }
        if let Some(env) = &self.gateway {
            let engine = self
                .engine_upstream
                .clone()
                .unwrap_or_else(|| s.engine.as_ref().map_or_else(free_addr, |e| e.addr.clone()));
            let billing = self.billing_upstream.clone().unwrap_or_else(|| {
                s.billing
                    .as_ref()
                    .map_or_else(free_addr, |b| b.addr.clone())
            });
            s.gw = Some(s.gateway_at(Some(gw_addr), &engine, &billing, env).await);
        }
        Some(s)
    }
}

/// The engine and a gateway in front of it (no billing behind it), with `tiers` and the
/// gateway's extra environment: what most gateway tests run on. `None` as [`StackBuilder::start`].
pub async fn stack(
    backend: Backend,
    tag: &str,
    tiers: &str,
    gateway_env: &[(&str, String)],
) -> Option<Stack> {
    let b = Stack::builder(backend, tag).tiers(tiers).engine(&[]);
    b.gateway(gateway_env).start().await
}

/// The engine, billing and a gateway in front of both, with roomy tiers and the gateway's extra
/// environment. `None` as [`StackBuilder::start`].
pub async fn full_stack(backend: Backend, tag: &str, env: &[(&str, String)]) -> Option<Stack> {
    let all = Stack::builder(backend, tag).engine(&[]).billing(&[]);
    all.tiers(super::ROOMY_TIERS).gateway(env).start().await
}

/// What the browser tests drive: on SQLite with `tiers`, the engine, billing serving the real
/// landing pages (with `billing_env`; with the fake providers or none) and a gateway in front
/// of both, each logging at `info`.
pub async fn browser_stack(tiers: &str, providers: bool, billing_env: &[(&str, String)]) -> Stack {
    let info = [("RUST_LOG", "info".to_string())];
    let mut env = vec![
        info[0].clone(),
        (
            "STELLAR_BILLING_LANDING_DIR",
            crate::spawn::repo_root()
                .join("landing")
                .display()
                .to_string(),
        ),
    ];
    env.extend_from_slice(billing_env);
    let b = Stack::builder(Backend::Sqlite, "browser")
        .tiers(tiers)
        .engine(&info)
        .billing(&env)
        .gateway(&info);
    let b = if providers { b } else { b.without_providers() };
    b.start().await.expect("SQLite is always there")
}

/// A gateway in front of an echo upstream as its engine and billing ([`super::start_echo`]), with
/// `tiers` and the gateway's extra environment; also the echo's address. `None` as
/// [`StackBuilder::start`].
pub async fn echo_gateway(
    backend: Backend,
    tag: &str,
    tiers: &str,
    gateway_env: &[(&str, String)],
) -> Option<(Stack, String)> {
    let echo = super::start_echo().await;
    let s = gateway_to(backend, tag, tiers, &echo, &echo, gateway_env).await?;
    Some((s, echo))
}

/// A gateway (SQLite, roomy tiers, its extra environment) in front of a [`super::Capture`]
/// upstream as its engine and billing; also the capture. `None` as [`StackBuilder::start`].
pub async fn capture_gateway(
    tag: &str,
    gateway_env: &[(&str, String)],
) -> Option<(Stack, super::Capture)> {
    let up = super::Capture::start().await;
    let s = gateway_to(
        Backend::Sqlite,
        tag,
        super::ROOMY_TIERS,
        &up.addr,
        &up.addr,
        gateway_env,
    )
    .await?;
    Some((s, up))
}

/// A gateway alone (the stack runs no engine or billing) in front of the upstreams `engine`
/// and `billing`, with `tiers` and its extra environment. `None` as [`StackBuilder::start`].
pub async fn gateway_to(
    backend: Backend,
    tag: &str,
    tiers: &str,
    engine: &str,
    billing: &str,
    gateway_env: &[(&str, String)],
) -> Option<Stack> {
    Stack::builder(backend, tag)
        .tiers(tiers)
        .upstreams(engine, billing)
        .gateway(gateway_env)
        .start()
        .await
}

/// Billing and the fake providers, with billing's extra environment; with `front`, also the
/// engine and a gateway in front of billing, so tier changes can be checked end to end. `None`
/// as [`StackBuilder::start`].
pub async fn billing_stack(
    backend: Backend,
    front: bool,
    billing_env: &[(&str, String)],
) -> Option<Stack> {
    let b = Stack::builder(backend, "billing").billing(billing_env);
    if front {
        b.engine(&[]).gateway(&[]).start().await
    } else {
        b.start().await
    }
}

impl Stack {
    /// A stack on `backend` in a new temporary directory named after `tag`; nothing runs until
    /// [`StackBuilder::start`].
    pub fn builder(backend: Backend, tag: &str) -> StackBuilder {
        StackBuilder {
            backend,
            tag: tag.to_string(),
            tiers: None,
            engine: None,
            billing: None,
            providers: true,
            gateway: None,
            engine_upstream: None,
            billing_upstream: None,
        }
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("this stack runs no engine")
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("this stack runs no engine")
    }

    pub fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("this stack runs no gateway")
    }

    pub fn gw_mut(&mut self) -> &mut Gateway {
        self.gw.as_mut().expect("this stack runs no gateway")
    }

    pub fn billing(&self) -> &Billing {
        self.billing.as_ref().expect("this stack runs no billing")
    }

    pub fn billing_mut(&mut self) -> &mut Billing {
        self.billing.as_mut().expect("this stack runs no billing")
    }

    async fn start_engine(&self, overrides: &[(String, String)]) -> Engine {
        let data = self.dir.path().join("engine");
        std::fs::create_dir_all(&data).unwrap();
        let (svc, (addr, metrics)) = start_service("stellar-engine", || {
            let (addr, metrics) = (free_addr(), free_addr());
            let defaults = vec![
                ("STELLAR_ENGINE_ADDR", addr.clone()),
                ("STELLAR_ENGINE_METRICS_ADDR", metrics.clone()),
                ("STELLAR_DATA_DIR", data.display().to_string()),
                ("STELLAR_ENGINE_DB_URL", String::new()),
                ("RUST_LOG", "info".to_string()),
            ];
            let health = format!("http://{addr}/api/v1/health");
            (merged(defaults, overrides), health, (addr, metrics))
        })
        .await;
        Engine { svc, addr, metrics }
    }

    async fn start_billing(
        &self,
        public: &str,
        providers: bool,
        overrides: &[(String, String)],
    ) -> Billing {
        let lemon = FakeLemon::start(LEMON_API_KEY).await;
        let stripe = FakeStripe::start(STRIPE_KEY, STRIPE_PRICE_PRO).await;
        let toss = FakeToss::start(TOSS_SK).await;
        let (svc, (addr, metrics)) = start_service("stellar-billing", || {
            let (addr, metrics) = (free_addr(), free_addr());
            let mut defaults = vec![
                ("STELLAR_BILLING_ADDR", addr.clone()),
                ("STELLAR_BILLING_METRICS_ADDR", metrics.clone()),
                ("STELLAR_DB_URL", self.adb.url.clone()),
                ("STELLAR_DATA_DIR", self.dir.path().display().to_string()),
                ("STELLAR_BILLING_PUBLIC_URL", format!("http://{public}")),
                ("STELLAR_BILLING_SCHEDULER_INTERVAL_SECS", "0.2".into()),
                ("STELLAR_BILLING_PROVIDER_TIMEOUT_SECS", "5.0".into()),
                // The tests register through the API and use the key at once.
                ("STELLAR_AUTH_IMMEDIATE_KEY", "true".into()),
                // The gateways' usage flush, which account deletion waits for.
                ("STELLAR_GATEWAY_USAGE_FLUSH_SECS", "1".into()),
                ("RUST_LOG", "info,stellar_billing=debug".into()),
            ];
            if let Some(e) = &self.engine {
                // Export and account deletion reach the stack's engine.
                defaults.push(("STELLAR_BILLING_ENGINE_URL", format!("http://{}", e.addr)));
            }
            let fakes = vec![
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
            ];
            if providers {
                defaults.extend(fakes);
            }
            if let Some(t) = &self.tiers {
                defaults.push(("STELLAR_TIERS_FILE", t.display().to_string()));
            }
            let health = format!("http://{addr}/healthz");
            (merged(defaults, overrides), health, (addr, metrics))
        })
        .await;
        Billing {
            svc,
            url: format!("http://{addr}"),
            addr,
            metrics_url: format!("http://{metrics}/metrics"),
            lemon,
            stripe,
            toss,
        }
    }

    /// Start another gateway of this stack (its account DB, tiers and directory) in front of
    /// `engine` and `billing`, with `env` over the harness's defaults (`STELLAR_DB_URL` among
    /// them, to reach the DB another way). Waits until `/readyz` says the DB is reachable.
    pub async fn start_gateway(
        &self,
        engine: &str,
        billing: &str,
        env: &[(&str, String)],
    ) -> Gateway {
        self.gateway_at(None, engine, billing, &owned(env)).await
    }

    async fn gateway_at(
        &self,
        addr: Option<String>,
        engine: &str,
        billing: &str,
        overrides: &[(String, String)],
    ) -> Gateway {
        let (svc, (addr, metrics)) = start_service("stellar-gateway", || {
            let (addr, metrics) = (addr.clone().unwrap_or_else(free_addr), free_addr());
            let mut defaults = vec![
                ("STELLAR_GATEWAY_ADDR", addr.clone()),
                ("STELLAR_GATEWAY_METRICS_ADDR", metrics.clone()),
                ("STELLAR_GATEWAY_ENGINE_UPSTREAM", engine.to_string()),
                ("STELLAR_GATEWAY_BILLING_UPSTREAM", billing.to_string()),
                ("STELLAR_DB_URL", self.adb.url.clone()),
                ("STELLAR_DATA_DIR", self.dir.path().display().to_string()),
                ("STELLAR_GATEWAY_GRACE_PERIOD_SECS", "1".to_string()),
                ("STELLAR_GATEWAY_SHUTDOWN_TIMEOUT_SECS", "1".to_string()),
                ("STELLAR_GATEWAY_USAGE_FLUSH_SECS", "1".to_string()),
                (
                    "RUST_LOG",
                    "info,pingora_core=warn,pingora_proxy=warn,sqlx=warn".to_string(),
                ),
            ];
            if let Some(t) = &self.tiers {
                defaults.push(("STELLAR_TIERS_FILE", t.display().to_string()));
            }
            let health = format!("http://{metrics}/readyz");
            (merged(defaults, overrides), health, (addr, metrics))
        })
        .await;
        Gateway { svc, addr, metrics }
    }

    // ---- Billing, asked directly ----

    pub async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.billing().url))
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
        let resp = self.get_with_key(path, key).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` at billing, with `key` in `X-API-Key`: the answer itself (a redirect is not
    /// followed).
    pub async fn get_with_key(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.billing().url));
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        r.send().await.expect("billing answers")
    }

    /// `POST /auth/api-keys` with `body`, authenticated by `key`.
    pub async fn create_key(&self, key: &str, body: &str) -> (u16, Value) {
        self.post("/auth/api-keys", body, &[("X-API-Key", key)])
            .await
    }

    /// `POST /auth/register`: 201 with the account's id and first key.
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
            let seen = match &self.gw {
                Some(gw) => {
                    let r = self
                        .http
                        .get(gw.url("/api/v1/stats"))
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
                if self.gw.is_some() {
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
        stellar_common::with_db!(&self.adb.db, p => sqlx::query_as(
            "SELECT tier, subscription_status, current_period_end, cancel_at_period_end, provider FROM users WHERE id = $1")
            .bind(user).fetch_one(p).await).unwrap()
    }

    /// `sql` (a count with `$1` bound to `user`) on the account DB.
    pub async fn count(&self, sql: &str, user: Uuid) -> i64 {
        stellar_common::with_db!(&self.adb.db, p => sqlx::query_scalar::<_, i64>(sql).bind(user).fetch_one(p).await).unwrap()
    }

    /// `sql` with `$1` bound to `user` and `$2` to `t`, on the account DB.
    pub async fn exec(&self, sql: &str, user: Uuid, t: chrono::DateTime<chrono::Utc>) {
        stellar_common::with_db!(&self.adb.db, p => sqlx::query(sql).bind(user).bind(t).execute(p).await.map(|_| ())).unwrap();
    }

    /// Poll `f` until it returns true (or panic after `within`, with billing's log).
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
                self.billing().log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Billing's `/metrics` text.
    pub async fn metrics(&self) -> String {
        super::get_text(&self.billing().metrics_url).await
    }

    pub async fn kill9_billing(&mut self) {
        self.billing_mut().svc.kill9();
    }

    /// Start billing again (same env, ports and DB); blocks this worker while it comes up.
    pub async fn restart_billing(&mut self) {
        tokio::task::block_in_place(|| self.billing_mut().svc.restart()).expect("billing restarts");
    }
}
