//! Fronting a server that is not ours (issue 16): a minimal Stellar Memory stand-in written
//! here, speaking HTTPS with a certificate from a test CA made with `openssl`, in single-key
//! mode. `stellar up --engine-url https://localhost:PORT --engine-api-key … --engine-ca-file …`
//! runs billing and the gateway in front of it (no engine of ours): requests reach it over TLS
//! with SNI and `Host` set to its name, its own key, the account named by `X-Stellar-User`, and
//! never the client's key. Billing's export (`GET /auth/export`) reads the same server over TLS
//! with the CA file the launcher passes it too, and the gateway's quota reconciliation reaches it
//! through the TLS bridge with the same SNI and `Host`. A gateway that does not trust the test
//! CA refuses the upstream (502): certificate verification is on.

use crate::launcher_up::{env_for, start_up, still_listening};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use stellar_tests::harness::*;
use stellar_tests::spawn::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

const UPSTREAM_KEY: &str = "upstream-secret";

/// A test CA and a certificate for `localhost` signed by it: (ca.pem, server.pem, server.key).
fn test_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Stellar Test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// What the stand-in saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    sni: Option<String>,
    line: String,
    fields: HashMap<String, String>,
}

struct StandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The stand-in: HTTP/1.1 keep-alive over TLS, the engine contract's health, store, stats and
/// timeline (what billing's export reads), per `X-Stellar-User`, only for callers with its own
/// key.
async fn stand_in(cert: &Path, key: &Path) -> StandIn {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let memories: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, log, memories) = (acceptor.clone(), log.clone(), memories.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let mut lines = head.split("\r\n");
                    let line = lines.next().unwrap_or_default().to_string();
                    let fields: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = fields
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + len {
                        let mut chunk = [0u8; 4096];
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + len);
                    log.lock().unwrap().push(Seen {
                        sni: sni.clone(),
                        line: line.clone(),
                        fields: fields.clone(),
                    });
                    let user = fields.get("x-stellar-user").cloned().unwrap_or_default();
                    let (status, body) =
                        if fields.get("x-api-key").map(String::as_str) != Some(UPSTREAM_KEY) {
                            (401, json!({"detail": "Invalid API key"}))
                        } else {
                            let mut m = memories.lock().unwrap();
                            let n = m.entry(user).or_default();
                            let mut parts = line.split(' ');
                            let method = parts.next().unwrap_or_default();
                            let path = parts.next().unwrap_or_default();
                            let path = path.split('?').next().unwrap_or_default();
                            match [method, path] {
                                ["GET", "/api/v1/health"] => (
                                    200,
                                    json!({"healthy": true, "total_memories": *n, "warnings": []}),
                                ),
                                ["POST", "/api/v1/store"] => {
                                    *n += 1;
                                    (200, json!({"id": format!("m{n}"), "zone": 1, "score": 0.5}))
                                }
                                ["GET", "/api/v1/stats"] => (
                                    200,
                                    json!({"total_memories": *n, "zones": {}, "capacities": {}}),
                                ),
                                // What billing's export pages through: every memory at once
                                // (`start` and `limit` ignored; the export skips what it has).
                                ["GET", "/api/v1/timeline"] => (
                                    200,
                                    Value::Array(
                                        (1..=*n)
                                            .map(|i| {
                                                json!({
                                                    "timestamp": 1.7e9 + i as f64,
                                                    "memory_id": format!("m{i}"),
                                                    "content": "fronted",
                                                    "zone": 1,
                                                    "importance": 0.5,
                                                    "emotion": null,
                                                })
                                            })
                                            .collect(),
                                    ),
                                ),
                                _ => (404, json!({"detail": "Not Found"})),
                            }
                        };
                    let body = body.to_string();
                    let resp = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if tls.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    StandIn { addr, seen }
}

async fn call(gw: &str, method: &str, path: &str, key: &str) -> (u16, Value) {
    let c = client();
    let r = match method {
        "POST" => c
            .post(format!("http://{gw}{path}"))
            .json(&json!({"content": "fronted"})),
        _ => c.get(format!("http://{gw}{path}")),
    };
    let r = r.header("X-API-Key", key).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn stellar_up_fronts_an_existing_https_server() {
    let dir = TempDir::new("front");
    let (ca, cert, key) = test_certs(dir.path());
    let s = stand_in(&cert, &key).await;
    let url = format!("https://localhost:{}", s.addr.port());
    let mut env = env_for(&dir);
    // Quota reconciliation every second: its stats requests go through the TLS bridge too.
    env.push(("STELLAR_GATEWAY_RECONCILE_INTERVAL_SECS", "1".into()));
    let ca = ca.display().to_string();
    let (_up, printed, client_key) = start_up(
        &env,
        &[
            "--engine-url",
            &url,
            "--engine-api-key",
            UPSTREAM_KEY,
            "--engine-ca-file",
            &ca,
        ],
    );
    assert!(
        printed.iter().any(|l| l.starts_with("Fronting ")),
        "{printed:?}"
    );
    let engine_addr = env
        .iter()
        .find(|(k, _)| *k == "STELLAR_ENGINE_ADDR")
        .unwrap()
        .1
        .clone();
    assert!(
        !still_listening(&env)
            .iter()
            .any(|l| l.contains(&engine_addr)),
        "no engine of ours runs"
    );
    let gw = env
        .iter()
        .find(|(k, _)| *k == "STELLAR_GATEWAY_ADDR")
        .unwrap()
        .1
        .clone();

    let (status, stored) = call(&gw, "POST", "/api/v1/store", &client_key).await;
    assert_eq!(
        (status, stored["id"].as_str()),
        (200, Some("m1")),
        "{stored}"
    );
    let (status, stats) = call(&gw, "GET", "/api/v1/stats", &client_key).await;
    assert_eq!(
        (status, stats["total_memories"].as_u64()),
        (200, Some(1)),
        "{stats}"
    );
    let (status, health) = call(&gw, "GET", "/api/v1/health", &client_key).await;
    assert_eq!(
        (status, health["total_memories"].as_u64()),
        (200, Some(1)),
        "health with a key: the caller's space"
    );
    let r = client()
        .get(format!("http://{gw}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let health: Value = r.json().await.unwrap();
    assert_eq!(
        health["total_memories"], 0,
        "without a key: no tenant's data"
    );

    // The export: billing reads the timeline from the same server, over TLS trusting the CA
    // file `stellar up` gave it too (`billing.engine_ca_file`).
    let r = client()
        .get(format!("http://{gw}/auth/export"))
        .header("X-API-Key", &client_key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{body}");
    assert_eq!(
        (
            lines[0]["id"].as_str(),
            lines[0]["content"].as_str(),
            &lines[0]["agent"]
        ),
        (Some("m1"), Some("fronted"), &Value::Null),
        "{body}"
    );

    // A reconciliation round (every second here) has asked the server too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let by = |prefix: &str| {
        s.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                r.fields
                    .get("x-request-id")
                    .is_some_and(|id| id.starts_with(prefix))
            })
            .cloned()
            .collect::<Vec<Seen>>()
    };
    while by("reconcile-").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconciliation request reached the server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        by("reconcile-")
            .iter()
            .all(|r| r.line.starts_with("GET /api/v1/stats ")),
        "{:?}",
        by("reconcile-")
    );
    assert!(
        by("billing-data-")
            .iter()
            .any(|r| r.line.starts_with("GET /api/v1/timeline?")),
        "billing's export reached the server: {:?}",
        by("billing-data-")
    );

    // What came through the gateway, billing and the reconciler (each names every request; the
    // launcher's own health check at start does not): TLS with SNI, `Host` the server's name.
    let seen: Vec<Seen> = s
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.fields.contains_key("x-request-id"))
        .cloned()
        .collect();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(
        seen.iter().any(|r| r.line == "POST /api/v1/store HTTP/1.1"),
        "the path forwarded as sent: {seen:?}"
    );
    let host = format!("localhost:{}", s.addr.port());
    for r in &seen {
        assert_eq!(r.sni.as_deref(), Some("localhost"), "{r:?}");
        assert_eq!(r.fields.get("host"), Some(&host), "{r:?}");
        assert_eq!(
            r.fields.get("x-api-key").map(String::as_str),
            Some(UPSTREAM_KEY),
            "{r:?}"
        );
        assert!(
            !r.fields.values().any(|v| v.contains(&client_key)),
            "the client's key never goes upstream: {r:?}"
        );
    }
    let users: Vec<_> = seen
        .iter()
        .filter_map(|r| r.fields.get("x-stellar-user"))
        .collect();
    assert!(
        users.len() >= 3 && users.iter().all(|u| uuid::Uuid::parse_str(u).is_ok()),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_certificate_the_gateway_does_not_trust_is_refused() {
    let tmp = TempDir::new("front-untrusted");
    let (ca, cert, key) = test_certs(tmp.path());
    let s = stand_in(&cert, &key).await;
    let url = format!("https://localhost:{}", s.addr.port());
    let gw_env = [("STELLAR_GATEWAY_UPSTREAM_API_KEY", UPSTREAM_KEY.to_string())];
    let Some(stack) = Stack::builder(Backend::Sqlite, "front-untrusted")
        .engine_upstream(&url)
        .gateway(&gw_env)
        .start()
        .await
    else {
        return;
    };
    let acct = stellar_tests::accounts::create_account(&stack.adb.db, "free").await;
    let (status, _) = call(&stack.gw().addr, "GET", "/api/v1/stats", &acct.key).await;
    assert_eq!(
        status, 502,
        "an unverified certificate is an unusable upstream"
    );
    assert!(
        s.seen.lock().unwrap().is_empty(),
        "no request crossed an unverified connection"
    );
    // The same gateway settings trusting the test CA reach it.
    let trusted = [
        gw_env[0].clone(),
        ("STELLAR_GATEWAY_ENGINE_CA_FILE", ca.display().to_string()),
    ];
    let gw = stack.start_gateway(&url, "127.0.0.1:9", &trusted).await;
    let (status, stats) = call(&gw.addr, "GET", "/api/v1/stats", &acct.key).await;
    assert_eq!(
        (status, stats["total_memories"].as_u64()),
        (200, Some(0)),
        "{stats}"
    );
}
