//! `stellar up`: run the engine, billing and the gateway on one machine with the embedded
//! defaults (SQLite files under `./data/`), wait until each is healthy, print where to reach
//! them and a freshly issued free-tier API key, and stop them all cleanly on Ctrl-C / SIGTERM.
//!
//! The services are the sibling binaries of this executable, started as child processes with
//! this process's environment (so every `STELLAR_*` setting reaches them) and `--config` passed
//! through. Start order follows the dependencies (engine, billing — which applies the account
//! DB migrations — then the gateway); stop order is the reverse, gateway first, so no request
//! is accepted that could not be served. If this process is killed outright, the kernel sends
//! each service SIGTERM (`stellar_common::telemetry::exit_with_parent`), so none is left behind.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use stellar_common::Config;
use tokio::process::{Child, Command};

/// Addresses the launcher needs from the configuration.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub engine: SocketAddr,
    pub billing: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_metrics: SocketAddr,
}

#[derive(serde::Deserialize)]
struct Listen {
    addr: SocketAddr,
}

#[derive(serde::Deserialize)]
struct GatewayListen {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
}

impl Addresses {
    pub fn from_config(cfg: &Config) -> Result<Addresses, stellar_common::ConfigError> {
        let engine: Listen = cfg.section("engine")?;
        let billing: Listen = cfg.section("billing")?;
        let gateway: GatewayListen = cfg.section("gateway")?;
        Ok(Addresses {
            engine: engine.addr,
            billing: billing.addr,
            gateway: gateway.addr,
            gateway_metrics: gateway.metrics_addr,
        })
    }
}

/// Where to connect to reach a listener: a wildcard bind address (0.0.0.0, [::]) is reached
/// over loopback.
fn dial_addr(listen: SocketAddr) -> SocketAddr {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// The settings that point billing and the gateway at the fronted server (they win over the
/// launcher's own engine address): its URL, its key and the CA file trusted for it, given to
/// both, since billing calls it too (data rights).
fn front_env(cmd: &mut Command, bin: &str, f: &Front) {
    let url = f.engine_url.trim().trim_end_matches('/');
    match bin {
        "stellar-gateway" => {
            cmd.env("STELLAR_GATEWAY_ENGINE_UPSTREAM", url);
            if let Some(k) = &f.engine_api_key {
                cmd.env("STELLAR_GATEWAY_UPSTREAM_API_KEY", k);
            }
            if let Some(ca) = &f.engine_ca_file {
                cmd.env("STELLAR_GATEWAY_ENGINE_CA_FILE", ca);
            }
        }
        "stellar-billing" => {
            cmd.env("STELLAR_BILLING_ENGINE_URL", url);
            if let Some(k) = &f.engine_api_key {
                cmd.env("STELLAR_BILLING_ENGINE_API_KEY", k);
            }
            // Billing calls the server itself (export, account deletion): the same trust.
            if let Some(ca) = &f.engine_ca_file {
                cmd.env("STELLAR_BILLING_ENGINE_CA_FILE", ca);
            }
        }
        _ => {}
    }
}

/// The fronted server must be an http(s) URL; its health is asked once (trusting
/// `engine_ca_file` too), and an unreachable server is reported (the gateway still starts: the
/// server may come up later).
async fn check_front(f: &Front) -> anyhow::Result<()> {
    let url = url::Url::parse(f.engine_url.trim())
        .map_err(|e| anyhow::anyhow!("--engine-url {:?}: {e}", f.engine_url))?;
    if !matches!(url.scheme(), "http" | "https") || url.path() != "/" {
        bail!("--engine-url must be http://host[:port] or https://host[:port]");
    }
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(5));
    if let Some(ca) = &f.engine_ca_file {
        let pem =
            std::fs::read(ca).with_context(|| format!("--engine-ca-file {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--engine-ca-file {}", ca.display()))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    let base = f.engine_url.trim().trim_end_matches('/');
    println!("Fronting {base}");
    let health = format!("{base}/api/v1/health");
    match http.build()?.get(&health).send().await {
        Ok(r) => println!("  {health}: {}", r.status()),
        Err(e) => eprintln!("warning: {health} is not answering yet: {e}"),
    }
    Ok(())
}

/// One service the launcher runs.
struct Managed {
    name: &'static str,
    child: Child,
}

/// The services in start order: binary name and its health URL.
fn services(a: &Addresses) -> Vec<(&'static str, String)> {
    vec![
        (
            "stellar-engine",
            format!("http://{}/api/v1/health", dial_addr(a.engine)),
        ),
        (
            "stellar-billing",
            format!("http://{}/healthz", dial_addr(a.billing)),
        ),
        (
            "stellar-gateway",
            format!("http://{}/healthz", dial_addr(a.gateway_metrics)),
        ),
    ]
}

/// Where the service binaries are: next to this executable.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the stellar executable")?;
    let p = exe
        .parent()
        .context("executable has no directory")?
        .join(name);
    if !p.exists() {
        bail!(
            "{} not found next to {} (build the workspace: cargo build --release)",
            name,
            exe.display()
        );
    }
    Ok(p)
}

/// An existing Stellar Memory server to front instead of starting our engine
/// (`stellar up --engine-url`).
#[derive(Debug, Clone, Default)]
pub struct Front {
    /// `http://host[:port]` or `https://host[:port]`.
    pub engine_url: String,
    /// Sent to that server as `X-API-Key` (its own single-key mode), if it wants one.
    pub engine_api_key: Option<String>,
    /// Extra CA certificates (PEM) trusted for an `https://` server.
    pub engine_ca_file: Option<PathBuf>,
}

/// Run everything until a signal arrives or a service dies. Returns the process exit code.
/// With `front`, billing and the gateway run in front of that server and no engine is started.
pub async fn up(config_path: Option<&Path>, front: Option<Front>) -> anyhow::Result<i32> {
    let cfg = stellar_common::config::exit_on_error(Config::load(config_path));
    let addrs = stellar_common::config::exit_on_error(Addresses::from_config(&cfg));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;

    if let Some(f) = &front {
        check_front(f).await?;
    }
    let mut running: Vec<Managed> = Vec::new();
    for (bin, health) in services(&addrs) {
        if bin == "stellar-engine" && front.is_some() {
            continue;
        }
        let mut cmd = Command::new(sibling(bin)?);
        if let Some(p) = config_path {
            cmd.arg("--config").arg(p);
        }
        if bin == "stellar-gateway" {
            // The gateway fronts the engine and billing this launcher just started, wherever
            // they were configured to listen.
            cmd.env(
                "STELLAR_GATEWAY_ENGINE_UPSTREAM",
                dial_addr(addrs.engine).to_string(),
            );
            cmd.env(
                "STELLAR_GATEWAY_BILLING_UPSTREAM",
                dial_addr(addrs.billing).to_string(),
            );
        }
        if bin == "stellar-billing" {
            // Billing reads and erases memories (export, account deletion) in the engine this
            // launcher just started, as the gateway forwards to it.
            cmd.env(
                "STELLAR_BILLING_ENGINE_URL",
                format!("http://{}", dial_addr(addrs.engine)),
            );
        }
        if let Some(f) = &front {
            front_env(&mut cmd, bin, f);
        }
        if bin == "stellar-billing" && cfg.source("auth.immediate_key") == "defaults" {
            // The one-command local run keeps the original behaviour (the first key in the
            // answer to POST /auth/register, and `API key:` printed below) unless the operator
            // chose otherwise in the file or the environment.
            cmd.env("STELLAR_AUTH_IMMEDIATE_KEY", "true");
        }
        // Each service gets SIGTERM from the kernel if this process dies, even by SIGKILL
        // (`exit_with_parent`); that is tied to the thread that spawns it, here always the
        // main thread (the runtime is single-threaded).
        cmd.env(
            stellar_common::telemetry::PARENT_PID_ENV,
            std::process::id().to_string(),
        );
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut running).await;
                bail!("starting {bin}: {e}");
            }
        };
        running.push(Managed { name: bin, child });
        if let Err(e) = wait_healthy(
            &http,
            &health,
            running.last_mut().expect("just pushed"),
            Duration::from_secs(60),
        )
        .await
        {
            stop_all(&mut running).await;
            return Err(e);
        }
    }

    let key = match issue_key(&http, dial_addr(addrs.gateway)).await {
        Ok(k) => k,
        Err(e) => {
            stop_all(&mut running).await;
            bail!("the services started but issuing a first API key through the gateway failed: {e:#}");
        }
    };
    println!();
    println!("Stellar Gate is up.");
    println!("  Public URL:  http://{}", addrs.gateway);
    println!("  Dashboard:   http://{}/dashboard", addrs.gateway);
    println!("  Metrics:     http://{}/metrics", addrs.gateway_metrics);
    println!("API key: {key}");
    println!("  Try:  curl -s -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\");
    println!(
        "          -d '{{\"content\":\"hello, stars\"}}' http://{}/api/v1/store",
        addrs.gateway
    );
    println!("Press Ctrl-C to stop.");

    let code = wait_for_exit(&mut running).await;
    stop_all(&mut running).await;
    Ok(code)
}

async fn wait_healthy(
    http: &reqwest::Client,
    url: &str,
    svc: &mut Managed,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = svc.child.try_wait()? {
            bail!(
                "{} exited with {status} during start-up (see its log above)",
                svc.name
            );
        }
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not become healthy at {url} within {within:?}",
                svc.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Register a throw-away local account through the gateway and return its first key.
async fn issue_key(http: &reqwest::Client, gateway: SocketAddr) -> anyhow::Result<String> {
    let email = format!(
        "local-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let r = http
        .post(format!("http://{gateway}/auth/register"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    match body.get("api_key").and_then(|k| k.as_str()) {
        Some(k) if status.is_success() => Ok(k.to_string()),
        _ => bail!("register answered {status}: {body}"),
    }
}

/// Wait for SIGINT/SIGTERM (→ 0) or for any service to exit on its own (→ 1).
async fn wait_for_exit(running: &mut [Managed]) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return 1;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return 0,
            _ = int.recv() => return 0,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                for s in running.iter_mut() {
                    if let Ok(Some(status)) = s.child.try_wait() {
                        eprintln!("{} exited unexpectedly ({status}); stopping the others", s.name);
                        return 1;
                    }
                }
            }
        }
    }
}

/// SIGTERM in reverse start order, each given time to drain; SIGKILL what does not exit.
async fn stop_all(running: &mut Vec<Managed>) {
    while let Some(mut s) = running.pop() {
        if let Some(pid) = s.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(Duration::from_secs(30), s.child.wait()).await {
            Ok(Ok(status)) => eprintln!("{} stopped ({status})", s.name),
            _ => {
                eprintln!("{} did not stop in time; killing it", s.name);
                let _ = s.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(bin: &str, f: &Front) -> Vec<(String, String)> {
        let mut cmd = Command::new("true");
        front_env(&mut cmd, bin, f);
        let mut v: Vec<(String, String)> = cmd
            .as_std()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        v.sort();
        v
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_fronted_server_reaches_billing_and_the_gateway_alike() {
        let f = Front {
            engine_url: " https://memory.example.com:8443/ ".into(),
            engine_api_key: Some("k".into()),
            engine_ca_file: Some(PathBuf::from("ca dir/internal-ca.pem")),
        };
        assert_eq!(
            envs("stellar-billing", &f),
            pairs(&[
                ("STELLAR_BILLING_ENGINE_API_KEY", "k"),
                ("STELLAR_BILLING_ENGINE_CA_FILE", "ca dir/internal-ca.pem"),
                (
                    "STELLAR_BILLING_ENGINE_URL",
                    "https://memory.example.com:8443"
                ),
            ])
        );
        assert_eq!(
            envs("stellar-gateway", &f),
            pairs(&[
                ("STELLAR_GATEWAY_ENGINE_CA_FILE", "ca dir/internal-ca.pem"),
                (
                    "STELLAR_GATEWAY_ENGINE_UPSTREAM",
                    "https://memory.example.com:8443"
                ),
                ("STELLAR_GATEWAY_UPSTREAM_API_KEY", "k"),
            ])
        );
        let bare = Front {
            engine_url: "http://127.0.0.1:8000".into(),
            ..Front::default()
        };
        assert_eq!(
            envs("stellar-billing", &bare),
            pairs(&[("STELLAR_BILLING_ENGINE_URL", "http://127.0.0.1:8000")])
        );
        assert!(envs("stellar-engine", &f).is_empty());
    }
}
