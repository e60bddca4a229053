//! Nothing gets past the gateway (issue 12), through the real binaries: request targets another
//! server could read differently are refused before any quota or upstream sees them; framing
//! that could desynchronise an upstream never reaches it; trailers, underscore lookalikes and
//! `HTTP2-Settings` never carry anything to an upstream; oversized or early-refused billing
//! bodies get billing's (or the gateway's) 413 instead of a 502; idle upstream connections are
//! closed on time; silent new connections and connection floods from one IP are bounded.
//!
//! A [`Capture`] upstream records exactly the bytes that reached it.

use std::time::{Duration, Instant};
use stellar_tests::accounts;
use stellar_tests::both_dbs;
use stellar_tests::harness::*;
use tokio::io::AsyncWriteExt;

/// Tiers where a free account may store exactly one memory.
const ONE_MEMORY: &str = "[free]\nmax_memories = 1\nmax_agents = 3\nrequests_per_minute = 100000\nburst = 100000\nmax_api_keys = 5\nprice_usd = 0\nprice_krw = 0\n\n[pro]\nmax_memories = 10\nmax_agents = 5\nrequests_per_minute = 100000\nburst = 100000\nmax_api_keys = 5\nprice_usd = 29\nprice_krw = 39000\n";

fn addr_of(gw: &Gateway) -> String {
    gw.url("").trim_start_matches("http://").to_string()
}

/// Status code of a raw answer (0 when there is none).
fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The quota cannot be walked around: at the limit, every spelling of a store that the engine
/// (or another server) might read as `/api/v1/store` is refused with a JSON 400, and neither the
/// engine's count nor the quota moves.
async fn lookalike_store_targets(backend: Backend) {
    let Some(s) = stack(backend, "gw-targets", ONE_MEMORY, &[]).await else {
        return;
    };
    let (adb, engine, gw) = (&s.adb, s.engine(), s.gw());
    let acct = accounts::create_account(&adb.db, "free").await;
    let addr = addr_of(gw);
    let store = |target: &str| {
        let body = r#"{"content":"the launch is on Friday"}"#;
        format!(
            "POST {target} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            acct.key,
            body.len()
        )
    };
    let out = raw_exchange(&addr, store("/api/v1/store").as_bytes(), "").await;
    assert_eq!(status_of(&out), 200, "{out}");
    // The quota is now full: a real store is refused by the quota.
    let out = raw_exchange(&addr, store("/api/v1/store").as_bytes(), "").await;
    assert_eq!(status_of(&out), 403, "{out}");

    for target in [
        "/api/v1/store#",
        "/api/v1/store#x",
        "/api/v1/store;x=1",
        "/api/v1/st%6Fre",
        "/api/v1/%73tore",
        "/api/v1//store",
        "//api/v1/store",
        "/api/v1/./store",
        "/api/v1/x/../store",
        "/api/v1%2Fstore",
        "/api/v1/store%00",
        "/api/v1\\store",
        "http://gw/api/v1/store",
        "gw:80",
        "*",
    ] {
        let out = raw_exchange(&addr, store(target).as_bytes(), "").await;
        assert_eq!(status_of(&out), 400, "{target}: {out}");
        assert!(out.contains("application/json"), "{target}: {out}");
        assert!(
            out.contains("\"detail\":\"Bad request: "),
            "{target}: {out}"
        );
    }
    assert_eq!(engine.total_memories(acct.user_id).await, 1);
    assert_eq!(accounts::memories_used(&adb.db, acct.user_id).await, 1);
}
both_dbs!(
    lookalike_store_targets_are_refused,
    super::lookalike_store_targets
);

/// Methods nobody serves (`CONNECT`, `TRACE`, unknown or lower-case ones) are answered 405 by
/// the gateway with `Allow`, and never forwarded; the known ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn methods_nobody_serves_never_reach_an_upstream() {
    let Some((s, up)) = capture_gateway("gw-methods", &[]).await else {
        return;
    };
    let gw = s.gw();
    let addr = addr_of(gw);
    for (method, target) in [
        ("CONNECT", "127.0.0.1:22"),
        ("CONNECT", "/"),
        ("TRACE", "/"),
        ("TRACE", "/api/v1/stats"),
        ("PROPFIND", "/"),
        ("post", "/auth/register"),
        ("BREW", "/pot"),
    ] {
        let req = format!("{method} {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(&addr, req.as_bytes(), "").await;
        assert_eq!(status_of(&out), 405, "{method} {target}: {out}");
        assert!(
            out.contains("Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            "{out}"
        );
        assert!(out.contains("\"detail\""), "{out}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(up.text(), "", "nothing was forwarded");
    // A method that is served goes through.
    let out = raw_exchange(
        &addr,
        b"GET /landing HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        "",
    )
    .await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(
        up.text().starts_with("GET /landing HTTP/1.1\r\n"),
        "{}",
        up.text()
    );
}

/// Framing a lenient upstream could read differently never reaches one: both framing fields
/// (with an empty or `,` Transfer-Encoding too), bare LF in a chunk extension or a trailer, a
/// missing, doubled or spaced `Host`. Each gets a JSON 400 from the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smuggling_shapes_never_reach_an_upstream() {
    let Some((s, up)) = capture_gateway("gw-smuggle", &[]).await else {
        return;
    };
    let gw = s.gw();
    let addr = addr_of(gw);
    let cases: [&[u8]; 10] = [
        b"POST /auth/register HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello",
        b"POST /auth/register HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: ,\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /auth/register HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /auth/register HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: \r\n\r\n",
        b"POST /auth/register HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nX: y\r\nhello\r\n0\r\n\r\n",
        b"POST /auth/register HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\nX-Stellar-User: v\r\n\r\n",
        b"GET /auth/usage HTTP/1.1\r\n\r\n",
        b"GET /auth/usage HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /auth/usage HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /auth/usage HTTP/1.1\r\nHost: evil@gw\r\n\r\n",
    ];
    for req in cases {
        let out = raw_exchange(&addr, req, "").await;
        let shown = String::from_utf8_lossy(req);
        assert_eq!(status_of(&out), 400, "{shown:?}: {out}");
        assert!(out.contains("application/json"), "{shown:?}: {out}");
        assert!(
            out.contains("\"detail\":\"Bad request: "),
            "{shown:?}: {out}"
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = up.text();
    // The chunked cases' heads may have gone up before the bad chunk line arrived; their bodies
    // never completed there, and the bad bytes never did.
    assert!(!seen.contains("5;a=b"), "{seen}");
    assert!(!seen.contains("X-T: a\n"), "{seen}");
    assert!(!seen.contains("X-Stellar-User"), "{seen}");
    assert!(!seen.contains("Transfer-Encoding: \r\n"), "{seen}");
    assert!(!seen.contains("GET /auth/usage"), "{seen}");
}

/// Trailers, underscore lookalikes and `HTTP2-Settings` never carry anything to an upstream: the
/// chunked body is re-framed (extensions dropped) and only listed, uncontrolled trailers pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailers_and_lookalikes_carry_nothing_upstream() {
    let Some((s, up)) = capture_gateway(
        "gw-trailers",
        &[(
            "STELLAR_GATEWAY_ALLOWED_TRAILERS",
            "x-checksum, x-stellar-user".to_string(),
        )],
    )
    .await
    else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let acct = accounts::create_account(&adb.db, "free").await;
    let addr = addr_of(gw);
    let req = format!(
        "POST /api/v1/store HTTP/1.1\r\nHost: gw\r\nX-API-Key: {}\r\nX_Stellar_User: victim\r\n\
         X-Stellar_Agent: other\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAAQAAP__\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Stellar-User: victim\r\nX-API-Key: sk-stellar-{}\r\n\
         X_Stellar_User: victim\r\nX-Checksum: abc\r\n\r\n",
        acct.key,
        "0".repeat(32)
    );
    let out = raw_exchange(&addr, req.as_bytes(), "ok").await;
    assert_eq!(status_of(&out), 200, "{out}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = up.text();
    let lower = seen.to_ascii_lowercase();
    assert_eq!(
        lower.matches("x-stellar-user: ").count(),
        1,
        "only the gateway's own: {seen}"
    );
    assert!(
        lower.contains(&format!("x-stellar-user: {}", acct.user_id)),
        "{seen}"
    );
    for gone in [
        "victim",
        "x_stellar",
        "x-stellar_agent",
        "http2-settings",
        "upgrade",
        "x-api-key",
        "ext=1",
    ] {
        assert!(!lower.contains(gone), "{gone} reached the upstream: {seen}");
    }
    assert!(
        seen.ends_with("5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"),
        "re-framed body with the listed trailer only: {seen:?}"
    );
}

/// A body billing refuses early reaches the client as billing's own 413, not a 502; a body over
/// the gateway's own billing limit is refused by the gateway; nothing is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_billing_bodies_get_a_413() {
    let Some(s) = Stack::builder(Backend::Sqlite, "gw-billing-413")
        .tiers(ROOMY_TIERS)
        .billing(&[])
        .gateway(&[])
        .start()
        .await
    else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let http = client();
    for size in [5_000_000usize, 300_000] {
        let body = format!(
            r#"{{"email":"big@example.com","pad":"{}"}}"#,
            "x".repeat(size)
        );
        let resp = http
            .post(gw.url("/auth/register"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{size} bytes");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    let users: i64 = stellar_common::with_db!(&adb.db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
        .fetch_one(p)
        .await)
    .unwrap();
    assert_eq!(users, 0, "nothing registered");
}

/// Idle pooled upstream connections are closed once `upstream_idle_timeout_secs` has passed,
/// even when no further request comes to look at the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_upstream_connections_are_closed_on_time() {
    let Some((s, echo)) = echo_gateway(
        Backend::Sqlite,
        "gw-idle-up",
        ROOMY_TIERS,
        &[(
            "STELLAR_GATEWAY_UPSTREAM_IDLE_TIMEOUT_SECS",
            "1".to_string(),
        )],
    )
    .await
    else {
        return;
    };
    let gw = s.gw();
    let gw_pid = gw.svc.pid().expect("gateway running");
    let resp = client().get(gw.url("/landing")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let port: u16 = echo.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        upstream_connections(gw_pid, port) >= 1,
        "the connection is pooled after the answer"
    );
    let closed = eventually(Duration::from_secs(6), || async {
        upstream_connections(gw_pid, port) == 0
    })
    .await;
    let took = closed.expect("the idle connection is closed without further traffic");
    assert!(
        took >= Duration::from_millis(500),
        "not before its time: {took:?}"
    );
}

/// Established TCP connections from process `pid` to `127.0.0.1:port`, from /proc.
fn upstream_connections(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    tcp.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9
                && f[3] == "01"
                && f[2].ends_with(&format!(":{port:04X}"))
                && inodes.contains(f[9])
        })
        .count()
}

/// A new connection that sends nothing is closed after `first_byte_timeout_secs`; one that has
/// served a request waits for the (longer) keep-alive timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_new_connections_are_closed_early() {
    let Some((s, _echo)) = echo_gateway(
        Backend::Sqlite,
        "gw-first-byte",
        ROOMY_TIERS,
        &[("STELLAR_GATEWAY_FIRST_BYTE_TIMEOUT_SECS", "1".to_string())],
    )
    .await
    else {
        return;
    };
    let gw = s.gw();
    let addr = addr_of(gw);
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let out = read_until(&mut silent, "").await;
    let took = started.elapsed();
    assert_eq!(out, "", "closed without an answer");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(4500),
        "{took:?}"
    );

    let mut used = tokio::net::TcpStream::connect(&addr).await.unwrap();
    used.write_all(b"GET /landing HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let out = read_until(&mut used, "\r\n\r\n").await;
    assert_eq!(status_of(&out), 200, "{out}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    used.write_all(b"GET /again HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let out = read_until(&mut used, "").await;
    assert_eq!(
        status_of(&out),
        200,
        "kept alive past the first-byte timeout: {out}"
    );
}

/// One IP holds at most `max_connections_per_ip` connections; the next gets a JSON 429 and is
/// closed, and a place given back is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_per_ip_are_capped() {
    let Some((s, _echo)) = echo_gateway(
        Backend::Sqlite,
        "gw-conn-cap",
        ROOMY_TIERS,
        &[("STELLAR_GATEWAY_MAX_CONNECTIONS_PER_IP", "3".to_string())],
    )
    .await
    else {
        return;
    };
    let gw = s.gw();
    let addr = addr_of(gw);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /landing HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        let out = read_until(&mut s, "\r\n\r\n").await;
        assert_eq!(status_of(&out), 200, "{out}");
        held.push(s);
    }
    let out = raw_exchange(&addr, b"GET /landing HTTP/1.1\r\nHost: gw\r\n\r\n", "").await;
    assert_eq!(status_of(&out), 429, "{out}");
    assert!(out.contains("Too many connections"), "{out}");
    let text = metrics_text(gw).await;
    assert!(metric_sum(&text, "gateway_connections_refused_total", &[]) >= 1.0);

    drop(held.pop());
    let reopened = eventually(Duration::from_secs(5), || async {
        let out = raw_exchange(
            &addr,
            b"GET /landing HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            "",
        )
        .await;
        status_of(&out) == 200
    })
    .await;
    assert!(
        reopened.is_some(),
        "a closed connection gives its place back"
    );
}
