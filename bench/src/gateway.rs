//! `stellar-bench gateway`: what the gateway costs, measured against the same upstream three
//! ways in one run — (a) the engine directly, (b) through the gateway with auth, limiter and
//! quota on (tier limits so large nothing is refused), (c) through nginx as a plain
//! `proxy_pass` with upstream keep-alive and no auth, and the floor under any proxy: a relay that
//! only copies bytes (`crate::relay`) — plus the gateway's memory with 100,000
//! distinct cached keys, the cost of the Redis limiter per request, and two gateways sharing
//! one Redis.
//!
//! Throughput and latency percentiles come from `wrk` (closed loop, `--latency`); the "p99
//! added at half load" figure comes from an open-loop fixed-rate client (raw keep-alive sockets)
//! at half of (a)'s peak rate, and at half of (b)'s peak when that is lower, for the gateway and
//! for nginx and the relay at the same rates. Each proxy's CPU time per request is read from `/proc` around
//! its wrk run.
//! The request is `GET /api/v1/stats` of one tenant, the cheapest engine call, so the proxy's
//! own cost dominates the difference. Everything runs on this machine: load generator, proxies
//! and engine share the cores, which the report states.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stellar_tests::accounts;
use stellar_tests::spawn::{free_addr, Service, TempDir};

/// Options of `stellar-bench gateway`.
#[derive(Debug, Clone)]
pub struct GatewayBenchOpts {
    /// Directory with the release binaries (stellar-engine, stellar-gateway).
    pub bin_dir: PathBuf,
    /// Seconds per wrk run.
    pub duration_secs: u64,
    /// Concurrent connections per wrk run.
    pub connections: u32,
    /// Distinct keys for the memory measurement (0 = skip).
    pub rss_keys: usize,
    /// Also measure the Redis limiter and two gateways sharing it (needs `redis-server`).
    pub redis: bool,
    /// Gateway proxy threads, and nginx worker processes (the same number, for a fair match).
    pub workers: usize,
    /// Only the memory measurement (no wrk, nginx, fixed-rate or Redis runs).
    pub only_rss: bool,
    /// Rounds of the fixed-rate runs (each round runs every rate and path once); with more
    /// than one, the report adds the median "p99 added" per rate and path.
    pub rounds: usize,
}

impl Default for GatewayBenchOpts {
    fn default() -> Self {
        GatewayBenchOpts {
            bin_dir: PathBuf::from("target/release"),
            duration_secs: 10,
            connections: 64,
            rss_keys: 100_000,
            redis: true,
            workers: 2,
            only_rss: false,
            rounds: 1,
        }
    }
}

pub(crate) const TIERS: &str = "[free]\nmax_memories = 100000000\nmax_agents = 100\nrequests_per_minute = 1000000000\nburst = 1000000000\nmax_api_keys = 5\nprice_usd = 0\nprice_krw = 0\n";

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WrkResult {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) non2xx: u64,
}

fn parse_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

fn parse_wrk(out: &str) -> WrkResult {
    let mut r = WrkResult::default();
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_latency(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_latency(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non2xx = v.trim().parse().unwrap_or(0);
        }
    }
    r
}

fn wrk_cmd(url: &str, headers: &[(&str, String)], secs: u64, conns: u32) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(url).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

pub(crate) fn wrk(
    url: &str,
    headers: &[(&str, String)],
    secs: u64,
    conns: u32,
) -> anyhow::Result<WrkResult> {
    let out = wrk_cmd(url, headers, secs, conns)
        .output()
        .context("running wrk (is it installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let r = parse_wrk(&text);
    anyhow::ensure!(
        r.rps > 0.0,
        "wrk produced no result: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(r)
}

/// Result of a fixed-rate run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Paced {
    pub(crate) rate: f64,
    pub(crate) achieved: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: usize,
}

/// Open-loop load at `rate` req/s for `secs` over `conns` keep-alive connections (a minimal
/// HTTP/1.1 client on raw sockets, so the load generator costs little CPU of its own). Each
/// connection sends on a fixed schedule. Latency is measured without coordinated omission: a
/// request sent late because the previous answer on its connection was late is timed from its
/// scheduled start; one sent on time is timed from when it was written (so the generator's own
/// 1 ms timer granularity is not charged to the server).
pub(crate) async fn paced(
    addr: &str,
    path: &str,
    headers: &[(&str, String)],
    rate: f64,
    secs: u64,
    conns: usize,
) -> anyhow::Result<Paced> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let req = std::sync::Arc::new(req.into_bytes());
    let interval = Duration::from_secs_f64(conns as f64 / rate.max(1.0));
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (req, addr) = (req.clone(), addr.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<f64> = Vec::new();
            let mut errors = 0usize;
            let Ok(mut sock) = tokio::net::TcpStream::connect(&addr).await else {
                return (lat, 1usize);
            };
            let _ = sock.set_nodelay(true);
            let mut buf = vec![0u8; 16 * 1024];
            let mut next = start + interval.mul_f64(c as f64 / conns as f64);
            while next < deadline {
                let now = Instant::now();
                let sent_from = if now < next {
                    tokio::time::sleep_until(next.into()).await;
                    Instant::now()
                } else {
                    next
                };
                if sock.write_all(&req).await.is_err() {
                    errors += 1;
                    break;
                }
                // Read one response: headers, then Content-Length bytes of body.
                let mut have = 0usize;
                let ok = loop {
                    match sock.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => have += n,
                    }
                    let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
                        if have == buf.len() {
                            break None;
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if have >= end + 4 + len {
                        break Some(head.starts_with("http/1.1 200"));
                    }
                };
                match ok {
                    Some(true) => lat.push(sent_from.elapsed().as_secs_f64() * 1000.0),
                    Some(false) => errors += 1,
                    None => {
                        errors += 1;
                        break;
                    }
                }
                next += interval;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    // Late answers stretch the run: the achieved rate is over the time it really took.
    let took = start.elapsed().as_secs_f64().max(secs as f64);
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Paced {
        rate,
        achieved: all.len() as f64 / took,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors,
    })
}

/// A comparison proxy's process (nginx, the relay), stopped with SIGTERM when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM to nginx's master stops its workers too (SIGKILL would orphan them, still
        // listening and holding the port).
        stellar_tests::spawn::terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// Wait up to 10 s until `child` accepts connections on `listen`.
fn listening(child: Child, listen: &str) -> anyhow::Result<Proc> {
    let proc = Proc { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{listen} is not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

/// The byte-copying relay (`stellar-bench relay`, this same binary) in front of `upstream`.
fn start_relay(listen: &str, upstream: &str, workers: usize) -> anyhow::Result<Proc> {
    let child = Command::new(std::env::current_exe()?)
        .args([
            "relay",
            "--listen",
            listen,
            "--upstream",
            upstream,
            "--threads",
        ])
        .arg(workers.to_string())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the relay")?;
    listening(child, listen)
}

fn start_nginx(dir: &Path, listen: &str, upstream: &str, workers: usize) -> anyhow::Result<Proc> {
    std::fs::create_dir_all(dir.join("logs"))?;
    let conf = format!(
        "worker_processes {workers};\ndaemon off;\npid {pid};\nerror_log {dir}/logs/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 75s;\n  client_body_temp_path {dir}/tmp;\n  proxy_temp_path {dir}/tmp;\n  fastcgi_temp_path {dir}/tmp;\n  uwsgi_temp_path {dir}/tmp;\n  scgi_temp_path {dir}/tmp;\n\
         upstream engine {{ server {upstream}; keepalive 128; keepalive_requests 1000000; }}\n\
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://engine;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        pid = dir.join("nginx.pid").display(),
        dir = dir.display(),
    );
    std::fs::create_dir_all(dir.join("tmp"))?;
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    listening(child, listen)
}

/// CPU seconds (user + system) used so far by these processes and their child processes
/// (nginx's workers are children of its master).
fn cpu_secs(pids: &[u32]) -> f64 {
    let mut all = pids.to_vec();
    for pid in pids {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        all.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    let ticks: u64 = all
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            // Fields after the command name (which may contain spaces): utime is the 14th
            // field of the line, stime the 15th.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            num(11) + num(12)
        })
        .sum();
    // Linux reports these in USER_HZ, 100 per second.
    ticks as f64 / 100.0
}

/// A wrk run against a proxy, with the proxy's CPU time per request.
fn wrk_with_cpu(
    url: &str,
    headers: &[(&str, String)],
    secs: u64,
    conns: u32,
    pids: &[u32],
) -> anyhow::Result<(WrkResult, f64)> {
    let before = cpu_secs(pids);
    let r = wrk(url, headers, secs, conns)?;
    let used = cpu_secs(pids) - before;
    Ok((r, used / (r.rps * secs as f64).max(1.0) * 1e6))
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The anonymous / file-backed split of a process's resident memory (from
/// `/proc/PID/smaps_rollup`), for attributing growth.
fn rss_breakdown(pid: u32) -> String {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return String::new();
    };
    let mib = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    format!(
        "anonymous {:.1} MiB, file-backed {:.1} MiB",
        mib("Anonymous:"),
        mib("Rss:") - mib("Anonymous:")
    )
}

fn gateway_env(
    addr: &str,
    metrics: &str,
    engine: &str,
    db_url: &str,
    tiers: &Path,
    redis: Option<&str>,
    workers: usize,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STELLAR_GATEWAY_ADDR", addr.to_string()),
        ("STELLAR_GATEWAY_METRICS_ADDR", metrics.to_string()),
        ("STELLAR_GATEWAY_ENGINE_UPSTREAM", engine.to_string()),
        ("STELLAR_GATEWAY_BILLING_UPSTREAM", free_addr()),
        ("STELLAR_DB_URL", db_url.to_string()),
        ("STELLAR_TIERS_FILE", tiers.display().to_string()),
        ("STELLAR_GATEWAY_GRACE_PERIOD_SECS", "0".to_string()),
        ("STELLAR_GATEWAY_THREADS", workers.to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    if let Some(r) = redis {
        env.push(("STELLAR_GATEWAY_REDIS_URL", r.to_string()));
    }
    env
}

/// What the gateway benchmark and the soak run against, in `dir`: the release engine, a SQLite
/// account DB with one free account, and the benchmark's tier table.
pub(crate) struct Backdrop {
    pub(crate) engine: Service,
    pub(crate) engine_addr: String,
    pub(crate) db_url: String,
    pub(crate) db: stellar_common::Db,
    pub(crate) acct: accounts::TestAccount,
    pub(crate) tiers: PathBuf,
}

impl Backdrop {
    pub(crate) async fn start(dir: &TempDir) -> anyhow::Result<Backdrop> {
        let engine_addr = free_addr();
        let engine = Service::start(
            "stellar-engine",
            &[
                ("STELLAR_ENGINE_ADDR", engine_addr.clone()),
                ("STELLAR_ENGINE_METRICS_ADDR", free_addr()),
                (
                    "STELLAR_DATA_DIR",
                    dir.path().join("engine").display().to_string(),
                ),
                ("RUST_LOG", "warn".to_string()),
            ],
            &format!("http://{engine_addr}/api/v1/health"),
        )?;
        let db_url = format!("sqlite://{}/accounts.db", dir.path().display());
        let db = accounts::open(&db_url).await;
        let acct = accounts::create_account(&db, "free").await;
        let tiers = dir.path().join("tiers.toml");
        std::fs::write(&tiers, TIERS)?;
        Ok(Backdrop {
            engine,
            engine_addr,
            db_url,
            db,
            acct,
            tiers,
        })
    }
}

/// 50 memories ("{what} memory number N") in `user`'s space, stored at the engine directly.
pub(crate) async fn seed_memories(
    engine: &str,
    user: impl std::fmt::Display,
    what: &str,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for i in 0..50 {
        http.post(format!("http://{engine}/api/v1/store"))
            .header("X-Stellar-User", user.to_string())
            .json(&serde_json::json!({"content": format!("{what} memory number {i}")}))
            .send()
            .await?;
    }
    Ok(())
}

pub(crate) fn start_gateway(
    engine: &str,
    db_url: &str,
    tiers: &Path,
    redis: Option<&str>,
    workers: usize,
) -> anyhow::Result<(Service, String)> {
    let (addr, metrics) = (free_addr(), free_addr());
    let env = gateway_env(&addr, &metrics, engine, db_url, tiers, redis, workers);
    let svc = Service::start("stellar-gateway", &env, &format!("http://{metrics}/readyz"))?;
    Ok((svc, addr))
}

/// The median of `v` (the mean of the middle two for an even count; 0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn row(name: &str, r: &WrkResult) -> String {
    format!(
        "| {name} | {:.0} | {:.2} | {:.2} | {} |\n",
        r.rps, r.p50_ms, r.p99_ms, r.non2xx
    )
}

/// Gateway RSS before and after one request with each of `opts.rss_keys` distinct keys (all
/// cache misses that then get cached). With `STELLAR_BENCH_HOLD_SECS=N` the gateway is kept
/// running N seconds afterwards (its pid on stderr), for inspection.
async fn measure_rss(
    opts: &GatewayBenchOpts,
    engine_addr: &str,
    db: &stellar_common::Db,
    db_url: &str,
    tiers: &Path,
    path: &str,
) -> anyhow::Result<String> {
    let keys = accounts::create_many(db, "free", opts.rss_keys).await;
    let mut md = String::new();
    let (gw, gw_addr) = start_gateway(engine_addr, db_url, tiers, None, opts.workers)?;
    let pid = gw.pid().unwrap_or(0);
    let before = rss_mib(pid);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let keys = std::sync::Arc::new(keys);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, keys, next, url) = (
            client.clone(),
            keys.clone(),
            next.clone(),
            format!("http://{gw_addr}{path}"),
        );
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(k) = keys.get(i) else { break };
                if let Ok(r) = client.get(&url).header("X-API-Key", k).send().await {
                    if r.status().is_success() {
                        ok += 1;
                    }
                    let _ = r.bytes().await;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await?;
    }
    let fill = t.elapsed();
    let after = rss_mib(pid);
    md.push_str(&format!(
        "Memory: {} distinct keys, each used once ({ok} answered 200, {:.1} s, all cache misses then cached): gateway RSS {before:.1} MiB at start → \
         **{after:.1} MiB** (target ≤ 64 MiB: {}).\n\n",
        keys.len(),
        fill.as_secs_f64(),
        if after <= 64.0 { "met" } else { "NOT met" }
    ));
    md.push_str(&format!("At the end: {}.\n\n", rss_breakdown(pid)));
    if let Some(hold) = std::env::var("STELLAR_BENCH_HOLD_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("gateway pid {pid}: held for {hold} s");
        tokio::time::sleep(Duration::from_secs(hold)).await;
        eprintln!(
            "after {hold} s: RSS {:.1} MiB, {}",
            rss_mib(pid),
            rss_breakdown(pid)
        );
    }
    Ok(md)
}

/// Run the whole benchmark and return the Markdown report.
pub async fn run(opts: GatewayBenchOpts) -> anyhow::Result<String> {
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    std::env::set_var("STELLAR_BIN_DIR", &opts.bin_dir);
    let dir = TempDir::new("bench-gw");
    let secs = opts.duration_secs;
    let conns = opts.connections;

    // The upstream: the release engine with a few memories in the tenant.
    let up = Backdrop::start(&dir).await?;
    let (engine_addr, db_url, db, acct, tiers) =
        (&up.engine_addr, &up.db_url, &up.db, &up.acct, &up.tiers);
    let path = "/api/v1/stats";
    if opts.only_rss {
        let md = measure_rss(&opts, engine_addr, db, db_url, tiers, path).await?;
        drop(up);
        return Ok(md);
    }
    seed_memories(engine_addr, acct.user_id, "benchmark").await?;
    let user_hdr = vec![("X-Stellar-User", acct.user_id.to_string())];
    let key_hdr = vec![("X-API-Key", acct.key.clone())];

    let (gw, gw_addr) = start_gateway(engine_addr, db_url, tiers, None, opts.workers)?;
    let nginx_addr = free_addr();
    let nginx = start_nginx(
        &dir.path().join("nginx"),
        &nginx_addr,
        engine_addr,
        opts.workers,
    )?;
    let relay_addr = free_addr();
    let relay = start_relay(&relay_addr, engine_addr, opts.workers)?;

    // Warm-up, then the three ways and the relay.
    for (url, h) in [
        (format!("http://{engine_addr}{path}"), &user_hdr),
        (format!("http://{gw_addr}{path}"), &key_hdr),
        (format!("http://{nginx_addr}{path}"), &user_hdr),
        (format!("http://{relay_addr}{path}"), &user_hdr),
    ] {
        wrk(&url, h, 2, conns)?;
    }
    let direct = wrk(
        &format!("http://{engine_addr}{path}"),
        &user_hdr,
        secs,
        conns,
    )?;
    let gw_pid = gw.pid().unwrap_or(0);
    let (via_gw, gw_cpu) = wrk_with_cpu(
        &format!("http://{gw_addr}{path}"),
        &key_hdr,
        secs,
        conns,
        &[gw_pid],
    )?;
    let (via_nginx, nginx_cpu) = wrk_with_cpu(
        &format!("http://{nginx_addr}{path}"),
        &user_hdr,
        secs,
        conns,
        &[nginx.child.id()],
    )?;
    let (via_relay, relay_cpu) = wrk_with_cpu(
        &format!("http://{relay_addr}{path}"),
        &user_hdr,
        secs,
        conns,
        &[relay.child.id()],
    )?;

    // p99 added at a fixed rate, open loop: at half of the direct peak (the target's
    // definition), and at half of the gateway's own peak when that is lower (above its
    // capacity the run only measures a growing queue, not the cost of the proxy).
    let mut rates = vec![direct.rps / 2.0];
    if via_gw.rps / 2.0 < direct.rps / 2.0 * 0.95 {
        rates.push(via_gw.rps / 2.0);
    }
    // Rounds outside, rates inside: a drift of the machine over the run touches every rate.
    let mut paced_rows = Vec::new();
    for _ in 0..opts.rounds.max(1) {
        for (i, &rate) in rates.iter().enumerate() {
            let d = paced(engine_addr, path, &user_hdr, rate, secs, 64).await?;
            let g = paced(&gw_addr, path, &key_hdr, rate, secs, 64).await?;
            let n = paced(&nginx_addr, path, &user_hdr, rate, secs, 64).await?;
            let r = paced(&relay_addr, path, &user_hdr, rate, secs, 64).await?;
            paced_rows.push((i, d, g, n, r));
        }
    }
    let gw_idle_rss = gw.pid().map_or(0.0, rss_mib);

    let mut md = String::new();
    md.push_str("## Gateway benchmark\n\n");
    md.push_str(&format!(
        "`GET {path}` of one tenant on the release engine; wrk -t2 -c{conns} -d{secs}s; gateway threads = {w}, nginx worker_processes = {w}; \
         load generator, proxies and engine share this machine's {} cores (load average before the run: {load}).\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        w = opts.workers,
    ));
    md.push_str("| path | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|\n");
    md.push_str(&row("(a) engine directly", &direct));
    md.push_str(&row("(b) gateway (auth + limiter + quota)", &via_gw));
    md.push_str(&row("(c) nginx proxy_pass, no auth", &via_nginx));
    md.push_str(&row("floor: TCP relay, copies bytes only", &via_relay));
    md.push_str(&format!(
        "\nCPU per request (user + system, read from /proc): gateway **{gw_cpu:.1} µs**, nginx (master and workers) **{nginx_cpu:.1} µs**, relay **{relay_cpu:.1} µs**.\n"
    ));
    let ratio = via_gw.rps / via_nginx.rps;
    md.push_str(&format!(
        "\nRatios: (b)/(c) throughput = **{ratio:.2}** (target ≥ 0.90: {}); (b)/(a) = {:.2}; (c)/(a) = {:.2}.\n\n",
        if ratio >= 0.9 { "met" } else { "NOT met" },
        via_gw.rps / direct.rps,
        via_nginx.rps / direct.rps
    ));
    md.push_str(
        "Fixed rate, open loop (64 keep-alive connections, raw HTTP/1.1 client, no coordinated omission):\n\n\
         | rate req/s | path | achieved req/s | p50 ms | p99 ms | errors | p99 added |\n|---|---|---|---|---|---|---|\n",
    );
    for (i, d, g, n, r) in &paced_rows {
        let added = g.p99_ms - d.p99_ms;
        let nginx_added = n.p99_ms - d.p99_ms;
        let relay_added = r.p99_ms - d.p99_ms;
        let what = if *i == 0 {
            "½ of (a)'s peak"
        } else {
            "½ of (b)'s peak"
        };
        let overloaded = g.achieved < g.rate * 0.97;
        md.push_str(&format!(
            "| {:.0} ({what}) | (a) direct | {:.0} | {:.2} | {:.2} | {} | |\n| | (b) gateway | {:.0} | {:.2} | {:.2} | {} | **{added:.2} ms** ({}) |\n| | (c) nginx | {:.0} | {:.2} | {:.2} | {} | {nginx_added:.2} ms |\n| | floor: TCP relay | {:.0} | {:.2} | {:.2} | {} | {relay_added:.2} ms |\n",
            d.rate, d.achieved, d.p50_ms, d.p99_ms, d.errors, g.achieved, g.p50_ms, g.p99_ms, g.errors,
            if overloaded {
                "gateway over capacity at this rate"
            } else if added <= 1.0 {
                "target ≤ 1 ms met"
            } else {
                "target ≤ 1 ms NOT met"
            },
            n.achieved, n.p50_ms, n.p99_ms, n.errors,
            r.achieved, r.p50_ms, r.p99_ms, r.errors,
        ));
    }
    md.push('\n');
    if opts.rounds > 1 {
        md.push_str(&format!(
            "Median p99 added over the {} rounds (and rounds within 1 ms):\n\n| rate | gateway | nginx | floor: TCP relay |\n|---|---|---|---|\n",
            opts.rounds
        ));
        for (i, rate) in rates.iter().enumerate() {
            let rows: Vec<_> = paced_rows.iter().filter(|row| row.0 == i).collect();
            let added = |pick: fn(&(usize, Paced, Paced, Paced, Paced)) -> &Paced| {
                let v: Vec<f64> = rows
                    .iter()
                    .map(|row| pick(row).p99_ms - row.1.p99_ms)
                    .collect();
                let (within, n) = (v.iter().filter(|a| **a <= 1.0).count(), v.len());
                format!("{:.2} ms ({within}/{n})", median(v))
            };
            md.push_str(&format!(
                "| {rate:.0} | {} | {} | {} |\n",
                added(|row| &row.2),
                added(|row| &row.3),
                added(|row| &row.4)
            ));
        }
        md.push('\n');
    }
    md.push_str(&format!(
        "Gateway RSS after these runs: {gw_idle_rss:.1} MiB.\n\n"
    ));
    drop(gw);

    // Memory with many distinct cached keys.
    if opts.rss_keys > 0 {
        md.push_str(&measure_rss(&opts, engine_addr, db, db_url, tiers, path).await?);
    }

    // Redis limiter cost, and two gateways sharing one Redis.
    if opts.redis {
        match stellar_tests::spawn::RedisServer::start(stellar_tests::spawn::free_port()) {
            None => md.push_str("Redis: skipped (redis-server not available).\n"),
            Some(redis) => {
                let url = redis.url();
                let (g1, a1) = start_gateway(engine_addr, db_url, tiers, Some(&url), opts.workers)?;
                let (_g2, a2) =
                    start_gateway(engine_addr, db_url, tiers, Some(&url), opts.workers)?;
                wrk(&format!("http://{a1}{path}"), &key_hdr, 2, conns)?;
                let redis_one = wrk(&format!("http://{a1}{path}"), &key_hdr, secs, conns)?;
                // Two gateways at once, half the connections each.
                let c1 =
                    wrk_cmd(&format!("http://{a1}{path}"), &key_hdr, secs, conns / 2).spawn()?;
                let c2 =
                    wrk_cmd(&format!("http://{a2}{path}"), &key_hdr, secs, conns / 2).spawn()?;
                let r1 = parse_wrk(&String::from_utf8_lossy(&c1.wait_with_output()?.stdout));
                let r2 = parse_wrk(&String::from_utf8_lossy(&c2.wait_with_output()?.stdout));
                let (l50, r50) = (via_gw.p50_ms, redis_one.p50_ms);
                let per_req_us =
                    (1.0 / redis_one.rps - 1.0 / via_gw.rps) * 1e6 * f64::from(conns.min(2));
                md.push_str(
                    "| limiter | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|\n",
                );
                md.push_str(&row("local buckets (one gateway)", &via_gw));
                md.push_str(&row("Redis script (one gateway)", &redis_one));
                md.push_str(&row("Redis, two gateways: gateway 1", &r1));
                md.push_str(&row("Redis, two gateways: gateway 2", &r2));
                md.push_str(&format!(
                    "\nRedis limiter cost: p50 {l50:.2} → {r50:.2} ms (+{:.2} ms per request at this load); throughput {:.0} → {:.0} req/s \
                     (≈ {per_req_us:.0} µs of CPU per request on 2 cores). Two gateways together: {:.0} req/s.\n",
                    r50 - l50,
                    via_gw.rps,
                    redis_one.rps,
                    r1.rps + r2.rps
                ));
                drop(g1);
                drop(redis);
            }
        }
    }
    drop(up);
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn parses_wrk_output() {
        let out = "Running 2s test @ http://x\n  Latency Distribution\n     50%  512.00us\n     75%    1.10ms\n     90%    2.00ms\n     99%    1.20s\n  1000 requests in 2.00s\nRequests/sec:  12345.67\nTransfer/sec: 1MB\n";
        let r = parse_wrk(out);
        assert_eq!(r.rps, 12345.67);
        assert!((r.p50_ms - 0.512).abs() < 1e-9);
        assert_eq!(r.p99_ms, 1200.0);
    }
}
