//! The deployment files agree with the code: fly.toml's process groups are the binaries the
//! Dockerfile builds, the public service and health check point at the gateway's listeners as
//! configured in config/production.toml, every service accepts the production configuration,
//! and the runtime image runs as an unprivileged user.

use std::process::Command;
use stellar_tests::spawn::{bin_path, repo_root};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn fly_toml_matches_the_binaries_and_the_production_config() {
    let fly: toml::Table = read("fly.toml").parse().expect("fly.toml parses");
    let prod: toml::Table = read("config/production.toml")
        .parse()
        .expect("production.toml parses");
    let dockerfile = read("Dockerfile");

    let processes = fly["processes"].as_table().expect("[processes]");
    let mut groups: Vec<&str> = processes.keys().map(String::as_str).collect();
    groups.sort();
    assert_eq!(groups, ["billing", "engine", "gateway"]);
    for (group, cmd) in processes {
        let bin = cmd.as_str().unwrap().split_whitespace().next().unwrap();
        assert_eq!(
            bin,
            format!("stellar-{group}"),
            "process group {group} runs its own binary"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "the Dockerfile builds and copies {bin}"
        );
    }

    // Only the gateway is public; its health check is the gateway's /healthz on the metrics port.
    let http = fly["http_service"].as_table().unwrap();
    assert_eq!(
        http["processes"].as_array().unwrap(),
        &vec![toml::Value::from("gateway")]
    );
    let gw = prod["gateway"].as_table().unwrap();
    assert_eq!(
        http["internal_port"].as_integer().unwrap(),
        port_of(gw["addr"].as_str().unwrap())
    );
    let check = http["checks"].as_array().unwrap()[0].as_table().unwrap();
    assert_eq!(check["path"].as_str(), Some("/healthz"));
    assert_eq!(
        check["port"].as_integer().unwrap(),
        port_of(gw["metrics_addr"].as_str().unwrap())
    );
    for svc in fly["services"].as_array().unwrap() {
        let svc = svc.as_table().unwrap();
        assert!(
            svc.get("ports").is_none(),
            "billing and engine get no public port: {svc:?}"
        );
    }
    // The gateway reaches the other groups where they listen.
    let engine_port = port_of(prod["engine"]["addr"].as_str().unwrap());
    let billing_port = port_of(prod["billing"]["addr"].as_str().unwrap());
    assert!(gw["engine_upstream"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{engine_port}")));
    assert!(gw["billing_upstream"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{billing_port}")));

    // Non-root runtime, slim image, multi-stage.
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim_start().starts_with("USER ") && !l.contains("root")),
        "runs as non-root"
    );
    assert!(dockerfile.contains("slim"));
}

#[test]
fn every_service_accepts_the_production_configuration() {
    for bin in ["stellar-engine", "stellar-billing", "stellar-gateway"] {
        let out = Command::new(bin_path(bin))
            .args(["--check-config", "--config"])
            .arg(repo_root().join("config/production.toml"))
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{bin} rejects config/production.toml: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And a bad value is refused with the key named (not silently accepted by --check-config).
    let out = Command::new(bin_path("stellar-gateway"))
        .arg("--check-config")
        .env("STELLAR_GATEWAY_ADDR", "nowhere")
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.addr"));
}
