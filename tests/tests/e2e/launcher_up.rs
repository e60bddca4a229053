//! `stellar up`: starts all three services, prints the URLs and a working free-tier key, and
//! stops everything cleanly on SIGTERM; a bad setting stops it at start naming the key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use stellar_tests::spawn::{bin_path, free_addr, repo_root, signal, TempDir};

/// Stops `stellar up` (and so its services) if the test fails half-way.
pub(crate) struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            signal(self.0.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub(crate) fn env_for(dir: &TempDir) -> Vec<(&'static str, String)> {
    vec![
        ("STELLAR_DATA_DIR", dir.path().display().to_string()),
        ("STELLAR_ENGINE_ADDR", free_addr()),
        ("STELLAR_ENGINE_METRICS_ADDR", free_addr()),
        ("STELLAR_BILLING_ADDR", free_addr()),
        ("STELLAR_BILLING_METRICS_ADDR", free_addr()),
        ("STELLAR_GATEWAY_ADDR", free_addr()),
        ("STELLAR_METRICS_ADDR", free_addr()),
        ("STELLAR_GATEWAY_GRACE_PERIOD_SECS", "1".into()),
    ]
}

/// Start `stellar up` with `env` and extra `args`; wait until it prints the API key. Returns
/// the running launcher, the lines it printed and the key.
pub(crate) fn start_up(
    env: &[(&'static str, String)],
    args: &[&str],
) -> (Guard, Vec<String>, String) {
    let mut cmd = Command::new(bin_path("stellar"));
    cmd.arg("up")
        .args(args)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Guard(cmd.spawn().expect("start stellar up"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("[stellar up] {line}");
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = Vec::new();
    let key = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("stellar up printed no API key in time");
        printed.push(line.clone());
        if let Some(k) = line.strip_prefix("API key: ") {
            break k.trim().to_string();
        }
    };
    (child, printed, key)
}

/// The listen addresses in `env` that are still accepting connections.
pub(crate) fn still_listening(env: &[(&'static str, String)]) -> Vec<String> {
    env.iter()
        .filter(|(k, _)| k.ends_with("_ADDR"))
        .filter(|(_, v)| std::net::TcpStream::connect(v).is_ok())
        .map(|(k, v)| format!("{k} ({v})"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_prints_a_working_key_and_stops_cleanly() {
    let dir = TempDir::new("up");
    let env = env_for(&dir);
    let gateway = env
        .iter()
        .find(|(k, _)| *k == "STELLAR_GATEWAY_ADDR")
        .unwrap()
        .1
        .clone();
    let (mut child, printed, key) = start_up(&env, &[]);
    assert!(stellar_common::keys::is_well_formed(&key), "{key}");
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("http://{gateway}"))),
        "public URL printed: {printed:?}"
    );
    assert!(
        printed.iter().any(|l| l.contains("/metrics")),
        "metrics URL printed: {printed:?}"
    );

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{gateway}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let stored = http
        .post(format!("http://{gateway}/api/v1/store"))
        .header("X-API-Key", &key)
        .json(&serde_json::json!({"content": "first light"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.status(),
        200,
        "{}",
        stored.text().await.unwrap_or_default()
    );
    let recalled: serde_json::Value = http
        .get(format!("http://{gateway}/api/v1/recall?q=light"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recalled[0]["content"], "first light");

    signal(child.0.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "stellar up did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit, got {status}");
    let left = still_listening(&env);
    assert!(left.is_empty(), "still listening after stop: {left:?}");
}

/// A launcher killed outright (SIGKILL: no chance to stop anything) takes its services down
/// with it: the kernel sends each of them SIGTERM, and they drain and exit.
#[test]
fn a_killed_launcher_leaves_no_service_behind() {
    let dir = TempDir::new("up-killed");
    let env = env_for(&dir);
    let (mut child, _, _) = start_up(&env, &[]);
    let pid = child.0.id();
    let services: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        services.len(),
        3,
        "engine, billing and gateway: {services:?}"
    );
    let left = still_listening(&env);
    assert_eq!(
        left.len(),
        env.iter().filter(|(k, _)| k.ends_with("_ADDR")).count(),
        "all up: {left:?}"
    );

    signal(pid, "KILL");
    let _ = child.0.wait();
    // A service that has exited is gone, or a zombie when nothing reaps orphans here.
    let running = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while services.iter().any(running) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive: Vec<&u32> = services.iter().filter(|p| running(p)).collect();
    for p in &alive {
        signal(**p, "KILL");
    }
    assert!(
        alive.is_empty(),
        "services still running 30 s after the launcher was killed: {alive:?}"
    );
    let left = still_listening(&env);
    assert!(left.is_empty(), "still listening: {left:?}");
}

#[test]
fn bad_setting_fails_at_start_naming_the_key() {
    let dir = TempDir::new("up-bad");
    let out = Command::new(bin_path("stellar"))
        .arg("up")
        .current_dir(repo_root())
        .env("STELLAR_DATA_DIR", dir.path())
        .env("STELLAR_GATEWAY_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gateway.addr") && err.contains("STELLAR_GATEWAY_ADDR"),
        "{err}"
    );
}

#[test]
fn every_binary_has_help() {
    for bin in [
        "stellar",
        "stellar-engine",
        "stellar-billing",
        "stellar-gateway",
    ] {
        let out = Command::new(bin_path(bin)).arg("--help").output().unwrap();
        assert!(out.status.success(), "{bin} --help failed");
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .to_lowercase()
                .contains("usage"),
            "{bin} --help prints usage"
        );
    }
}
