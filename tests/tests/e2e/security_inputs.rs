//! Bad inputs at each service (issue 12): the engine and billing asked directly, the gateway
//! through its public listener with a capture server behind it as both upstreams. One row per
//! case; each case must get one of the row's 4xx statuses with a JSON body that has a `detail`
//! member (a 401 also carries `WWW-Authenticate`), and change nothing: the engine's memories
//! (ids, recall counts) of every tenant, billing's account-DB rows and the fake providers'
//! request logs, and for the gateway the bytes its upstreams received and the quota counter.
//!
//! Requests are raw bytes on a fresh connection each, so a case controls every byte on the wire
//! (framing, request targets, invalid UTF-8). Every case runs even when an earlier one failed;
//! the test then fails listing all failing rows.

use chrono::Utc;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stellar_tests::accounts;
use stellar_tests::fakes::{lemon_signature, stripe_signature};
use stellar_tests::harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The table machinery.

/// What a row expects.
#[derive(Clone)]
enum Expect {
    /// One of these 4xx statuses, a JSON `detail`, nothing changed (nothing reached an upstream).
    Refused(&'static [u16]),
    /// Refused as above, or forwarded with none of these strings (compared lower-case) in what
    /// the upstream received: for fields the gateway may drop instead of refusing the request.
    RefusedOrClean(Vec<String>),
}

struct Case {
    name: String,
    req: Vec<u8>,
    expect: Expect,
}

fn case(name: impl Into<String>, req: Vec<u8>, want: &'static [u16]) -> Case {
    Case {
        name: name.into(),
        req,
        expect: Expect::Refused(want),
    }
}

/// A request with `Host`, `Content-Length` (when there is a body) and `Connection: close`.
fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: test.local\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// A JSON request (`Content-Type: application/json`) with extra headers.
fn json_req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    req(method, target, &h, body)
}

struct Answer {
    status: u16,
    /// The head, lower-cased.
    head: String,
    body: Vec<u8>,
}

/// Write `bytes` on a new connection (in a task of its own, so a server that answers before it
/// has read everything is still heard) and read one answer: its head, then a Content-Length
/// body, or a chunked one, or until the server closes. At most 10 s.
async fn exchange(addr: &str, bytes: Vec<u8>) -> Result<Answer, String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        // Keep the write side open until the answer is read (a half-close can end an exchange
        // early on some servers).
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(wr);
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok());
            let Some(status) = status else {
                break Err(format!("bad status line: {head}"));
            };
            // Interim answers (100 Continue) are skipped.
            if (100..200).contains(&status) {
                buf.drain(..end + 4);
                continue;
            }
            let body = &buf[end + 4..];
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let chunked = head
                .lines()
                .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
            let done = match len {
                Some(n) => body.len() >= n,
                None if chunked => find(body, b"0\r\n\r\n").is_some(),
                None => false,
            };
            if done {
                let body = match len {
                    Some(n) => body[..n].to_vec(),
                    None => dechunk(body),
                };
                break Ok(Answer { status, head, body });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => {
                // Closed (or timed out): what arrived is the answer, if there is a head.
                let Some(end) = find(&buf, b"\r\n\r\n") else {
                    break Err(format!(
                        "no answer ({}): got {:?}",
                        match other {
                            Err(_) => "timed out".to_string(),
                            Ok(Ok(_)) => "closed".to_string(),
                            Ok(Err(e)) => e.to_string(),
                        },
                        String::from_utf8_lossy(&buf)
                    ));
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok())
                    .unwrap_or(0);
                break Ok(Answer {
                    status,
                    head,
                    body: buf[end + 4..].to_vec(),
                });
            }
        }
    };
    writer.abort();
    result
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The data of a chunked body (best effort: enough to read a JSON error).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(b, b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// A refusal as the suite requires it: one of `want`, 4xx, JSON with `detail`, and a 401 says
/// how to authenticate.
fn judge(a: &Answer, want: &[u16]) -> Result<(), String> {
    let body = String::from_utf8_lossy(&a.body);
    if !want.contains(&a.status) || !(400..500).contains(&a.status) {
        return Err(format!(
            "status {} (want {want:?}); body {body:.200}",
            a.status
        ));
    }
    let v: Value = serde_json::from_slice(&a.body)
        .map_err(|_| format!("{}: body is not JSON: {body:.200}", a.status))?;
    if v.get("detail").is_none() {
        return Err(format!("{}: JSON without detail: {body:.200}", a.status));
    }
    if a.status == 401 && !a.head.contains("\r\nwww-authenticate:") {
        return Err("401 without WWW-Authenticate".into());
    }
    Ok(())
}

/// Run every case through `check` (which returns the case's problems: none when it passed),
/// also after a failure; print the tally, then fail listing every failing case.
async fn run_and_report<F, Fut>(service: &str, cases: Vec<Case>, mut check: F)
where
    F: FnMut(Case) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let mut failures = Vec::new();
    let total = cases.len();
    for c in cases {
        let name = c.name.clone();
        let problems = check(c).await;
        if !problems.is_empty() {
            failures.push(format!("[{service}] {name}: {}", problems.join("; ")));
        }
    }
    eprintln!(
        "{service}: {total} cases, {} failed{}",
        failures.len(),
        failures
            .iter()
            .map(|f| format!("\n  {f}"))
            .collect::<String>()
    );
    assert!(
        failures.is_empty(),
        "{} {service} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Run `cases` against `addr` (a service asked directly: every case is a refusal), with `state`
/// read before and after each, and report.
async fn run_cases<F, Fut>(service: &str, addr: &str, cases: Vec<Case>, state: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let state = &state;
    run_and_report(service, cases, |c| async move {
        let Expect::Refused(want) = c.expect else {
            unreachable!("direct services only have refusals")
        };
        let before = state().await;
        let outcome = exchange(addr, c.req).await.and_then(|a| judge(&a, want));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = state().await;
        let changed = (before != after)
            .then(|| format!("state changed:\n  before {before}\n  after  {after}"));
        outcome.err().into_iter().chain(changed).collect()
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Engine, asked directly.

/// Every tenant's memories (id, recall count, importance) and totals: what no bad request may
/// change. Zones and scores are left out (reorbit may move them on its own).
async fn engine_state(addr: &str) -> String {
    let c = client();
    let mut out = String::new();
    for user in ["", "alice", "bob"] {
        let mut r = c.get(format!("http://{addr}/api/v1/memories?limit=1000"));
        if !user.is_empty() {
            r = r.header("X-Stellar-User", user);
        }
        let v: Value = r.send().await.unwrap().json().await.unwrap();
        let mut items: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{}:{}:{}", i["id"], i["recall_count"], i["importance"]))
            .collect();
        items.sort();
        out.push_str(&format!("{user}={} [{}] ", v["total"], items.join(",")));
    }
    out
}

fn engine_cases(alice_id: &str) -> Vec<Case> {
    let mut v = Vec::new();
    let alice = [("X-Stellar-User", "alice")];
    let store = |name: &str, body: &[u8]| {
        case(
            format!("store {name}"),
            json_req("POST", "/api/v1/store", &alice, body),
            &[422],
        )
    };
    // Malformed JSON.
    for (name, body) in [
        ("open brace", &b"{"[..]),
        ("cut after key", b"{\"content\": "),
        ("trailing comma", b"{\"content\":\"x\",}"),
        ("single quotes", b"{'content':'x'}"),
        ("extra brace", b"{\"content\":\"x\"}}"),
        ("trailing garbage", b"{\"content\":\"x\"} trailing"),
        ("nul", b"nul"),
        ("tru", b"tru"),
        ("unclosed", b"{\"content\":\"x\""),
        ("invalid UTF-8", b"{\"content\":\"\xff\xfe\"}"),
        ("lone surrogate", b"{\"content\":\"\\ud800\"}"),
        ("NaN", b"{\"content\":\"x\",\"importance\":NaN}"),
        ("Infinity", b"{\"content\":\"x\",\"importance\":Infinity}"),
        (
            "number overflow",
            b"{\"content\":\"x\",\"importance\":1e400}",
        ),
        ("raw control char", b"{\"content\":\"a\x01b\"}"),
        ("bad escape", b"{\"content\":\"\\q\"}"),
        ("empty body", b""),
    ] {
        v.push(store(name, body));
    }
    let deep = format!(
        "{{\"content\":\"x\",\"metadata\":{{\"a\":{}1{}}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    v.push(store("nesting 5000 deep", deep.as_bytes()));
    // Wrong types and shapes.
    for (name, body) in [
        ("top-level array", json!([])),
        ("array of content", json!(["content"])),
        ("top-level string", json!("content")),
        ("top-level number", json!(42)),
        ("top-level null", json!(null)),
        ("top-level bool", json!(true)),
        ("empty object", json!({})),
        ("content null", json!({"content": null})),
        ("content number", json!({"content": 5})),
        ("content array", json!({"content": ["a"]})),
        ("content object", json!({"content": {"a": 1}})),
        ("content bool", json!({"content": true})),
        ("content empty", json!({"content": ""})),
        (
            "content 10001 chars",
            json!({"content": "y".repeat(10_001)}),
        ),
        (
            "content 200k chars",
            json!({"content": "y".repeat(200_000)}),
        ),
        (
            "importance string",
            json!({"content": "x", "importance": "high"}),
        ),
        (
            "importance null",
            json!({"content": "x", "importance": null}),
        ),
        ("importance 1.5", json!({"content": "x", "importance": 1.5})),
        (
            "importance -0.1",
            json!({"content": "x", "importance": -0.1}),
        ),
        (
            "importance 1e308",
            json!({"content": "x", "importance": 1e308}),
        ),
        (
            "importance array",
            json!({"content": "x", "importance": [0.5]}),
        ),
        (
            "importance object",
            json!({"content": "x", "importance": {"v": 1}}),
        ),
        ("metadata array", json!({"content": "x", "metadata": []})),
        ("metadata string", json!({"content": "x", "metadata": "m"})),
        ("metadata number", json!({"content": "x", "metadata": 5})),
        ("metadata null", json!({"content": "x", "metadata": null})),
        (
            "auto_evaluate string",
            json!({"content": "x", "auto_evaluate": "perhaps"}),
        ),
        (
            "auto_evaluate 2",
            json!({"content": "x", "auto_evaluate": 2}),
        ),
        (
            "auto_evaluate array",
            json!({"content": "x", "auto_evaluate": []}),
        ),
        (
            "auto_evaluate null",
            json!({"content": "x", "auto_evaluate": null}),
        ),
    ] {
        v.push(store(name, body.to_string().as_bytes()));
    }
    // Not declared as JSON.
    v.push(case(
        "store as text/plain",
        req(
            "POST",
            "/api/v1/store",
            &[("X-Stellar-User", "alice"), ("Content-Type", "text/plain")],
            b"{\"content\":\"x\"}",
        ),
        &[422],
    ));
    v.push(case(
        "store as a form",
        req(
            "POST",
            "/api/v1/store",
            &[
                ("X-Stellar-User", "alice"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"content=x",
        ),
        &[422],
    ));
    let big = format!("{{\"content\": \"{}\"}}", "z".repeat(2 * 1024 * 1024));
    v.push(case(
        "store 2 MiB body",
        json_req("POST", "/api/v1/store", &alice, big.as_bytes()),
        &[413],
    ));
    // Query parameters.
    for target in [
        "/api/v1/recall",
        "/api/v1/recall?limit=5",
        "/api/v1/recall?q=x&limit=many",
        "/api/v1/recall?q=x&limit=1.5",
        "/api/v1/recall?q=x&limit=99999999999999999999999",
        "/api/v1/recall?q=x&limit=",
        "/api/v1/memories?zone=inner",
        "/api/v1/memories?zone=1.5",
        "/api/v1/memories?limit=x",
        "/api/v1/memories?offset=x",
        "/api/v1/memories?offset=1e3",
        "/api/v1/timeline?start=last-tuesday",
        "/api/v1/timeline?end=2024-13-45",
        "/api/v1/timeline?limit=x",
    ] {
        v.push(case(
            format!("GET {target}"),
            req("GET", target, &alice, b""),
            &[422],
        ));
    }
    // narrate.
    for (name, body, want) in [
        ("empty object", &b"{}"[..], &[422][..]),
        ("topic number", b"{\"topic\":5}", &[422]),
        ("topic null", b"{\"topic\":null}", &[422]),
        ("limit 0", b"{\"topic\":\"t\",\"limit\":0}", &[422]),
        ("limit 51", b"{\"topic\":\"t\",\"limit\":51}", &[422]),
        ("limit string", b"{\"topic\":\"t\",\"limit\":\"x\"}", &[422]),
        ("malformed", b"{\"topic\":", &[422]),
        ("array", b"[\"t\"]", &[422]),
        ("empty body", b"", &[422]),
    ] {
        let want: &'static [u16] = if want == [422] { &[422] } else { &[400, 422] };
        v.push(case(
            format!("narrate {name}"),
            json_req("POST", "/api/v1/narrate", &alice, body),
            want,
        ));
    }
    // Path ids: none of these forgets anything (bob cannot forget alice's memory).
    let long = "a".repeat(4000);
    for (name, target, user) in [
        (
            "not a UUID",
            "/api/v1/forget/not-a-uuid".to_string(),
            "alice",
        ),
        (
            "unknown UUID",
            format!("/api/v1/forget/{}", Uuid::new_v4()),
            "alice",
        ),
        (
            "another tenant's id",
            format!("/api/v1/forget/{alice_id}"),
            "bob",
        ),
        (
            "default space, alice's id",
            format!("/api/v1/forget/{alice_id}"),
            "",
        ),
        ("NUL escape", "/api/v1/forget/%00".to_string(), "alice"),
        ("4000-char id", format!("/api/v1/forget/{long}"), "alice"),
        (
            "id with encoded slash",
            format!("/api/v1/forget/x%2F{alice_id}"),
            "bob",
        ),
    ] {
        let h: Vec<(&str, &str)> = if user.is_empty() {
            vec![]
        } else {
            vec![("X-Stellar-User", user)]
        };
        v.push(case(
            format!("forget {name}"),
            req("DELETE", &target, &h, b""),
            &[404],
        ));
    }
    // Methods and paths nobody serves.
    for (method, target) in [
        ("GET", "/api/v1/store".to_string()),
        ("PUT", "/api/v1/store".to_string()),
        ("DELETE", "/api/v1/recall".to_string()),
        ("PATCH", "/api/v1/stats".to_string()),
        ("POST", format!("/api/v1/forget/{alice_id}")),
        ("PUT", format!("/api/v1/forget/{alice_id}")),
        ("GET", format!("/api/v1/forget/{alice_id}")),
        ("POST", "/api/v1/memories".to_string()),
        ("POST", "/api/v1/health".to_string()),
    ] {
        v.push(case(
            format!("{method} {target}"),
            json_req(method, &target, &alice, b"{\"content\":\"x\"}"),
            &[405],
        ));
    }
    for (method, target) in [
        ("GET", "/api/v1/nope"),
        ("POST", "/api/v2/store"),
        ("POST", "/api/v1/store/extra"),
        ("POST", "/api/v1/STORE"),
    ] {
        v.push(case(
            format!("{method} {target}"),
            json_req(method, target, &alice, b"{\"content\":\"x\"}"),
            &[404],
        ));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_refuses_bad_input_and_changes_nothing() {
    let Some(s) = Stack::builder(Backend::Sqlite, "sec-engine")
        .engine(&[])
        .start()
        .await
    else {
        return;
    };
    let engine = s.engine();
    let c = client();
    let mut alice_id = String::new();
    for (user, n) in [("", 1), ("alice", 3), ("bob", 2)] {
        for i in 0..n {
            let mut r = c
                .post(format!("http://{}/api/v1/store", engine.addr))
                .json(&json!({"content": format!("seed memory {i} of {user}")}));
            if !user.is_empty() {
                r = r.header("X-Stellar-User", user);
            }
            let v: Value = r.send().await.unwrap().json().await.unwrap();
            if user == "alice" {
                alice_id = v["id"].as_str().unwrap().to_string();
            }
        }
    }
    let cases = engine_cases(&alice_id);
    assert!(cases.len() >= 80, "{} engine cases", cases.len());
    let addr = engine.addr.clone();
    run_cases("engine", &addr, cases, || engine_state(&addr)).await;
}

// ---------------------------------------------------------------------------------------------
// Billing, asked directly.

/// Every table's row count, each account's tier and status, the active keys, and how many
/// requests each fake provider has received.
async fn billing_state(s: &Stack) -> String {
    let mut out = String::new();
    for table in [
        "users",
        "api_keys",
        "subscription_events",
        "account_usage",
        "account_agents",
        "usage_hourly",
        "processed_webhooks",
        "change_feed",
        "toss_charges",
    ] {
        let n = stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(p).await)
        .unwrap();
        out.push_str(&format!("{table}={n} "));
    }
    let users: Vec<(String, String, String)> =
        stellar_common::with_db!(&s.adb.db, p => sqlx::query_as(
        "SELECT email, tier, subscription_status FROM users ORDER BY email").fetch_all(p).await)
        .unwrap();
    let active: Vec<(String,)> = stellar_common::with_db!(&s.adb.db, p => sqlx::query_as(
        "SELECT key_hash FROM api_keys WHERE is_active ORDER BY key_hash").fetch_all(p).await)
    .unwrap();
    // Calls that create something at a provider (checkouts, charges, billing keys); look-ups
    // (GET, as the Toss webhook's verification does) change nothing.
    let writes =
        |r: Vec<stellar_tests::fakes::Recorded>| r.iter().filter(|r| r.method != "GET").count();
    out.push_str(&format!(
        "users={users:?} active_keys={} provider writes: lemon={} stripe={} toss={}",
        active.len(),
        writes(s.billing().lemon.requests()),
        writes(s.billing().stripe.requests()),
        writes(s.billing().toss.requests())
    ));
    out
}

struct BillingFixture {
    /// A pro account (room for more keys), its key, and one of its key ids.
    owner_key: String,
    owner_email: String,
    /// Another account's key id (not the owner's to touch).
    other_key_id: Uuid,
    /// A free account with one key, which it cannot revoke.
    solo_key: String,
    solo_key_id: Uuid,
    revoked_key: String,
    owner_id: Uuid,
}

fn billing_cases(f: &BillingFixture) -> Vec<Case> {
    let mut v = Vec::new();
    let owner = [("X-API-Key", f.owner_key.as_str())];
    // Registration: malformed (400), wrong shapes and invalid e-mails (422), a known e-mail (409).
    for (name, body) in [
        ("open brace", &b"{"[..]),
        ("missing value", b"{\"email\":}"),
        ("trailing comma", b"{\"email\":\"a@b.example\",}"),
        ("nul", b"nul"),
        ("single quotes", b"{'email':'a@b.example'}"),
        ("invalid UTF-8", b"{\"email\":\"\xff@b.example\"}"),
        ("empty body", b""),
        ("whitespace body", b"  \n "),
    ] {
        v.push(case(
            format!("register malformed: {name}"),
            json_req("POST", "/auth/register", &[], body),
            &[400],
        ));
    }
    for (name, body) in [
        ("empty array", json!([])),
        (
            "array with a new e-mail",
            json!(["array-fresh@sec.example"]),
        ),
        ("string", json!("a@b.example")),
        ("number", json!(123)),
        ("null", json!(null)),
        ("empty object", json!({})),
        ("email null", json!({"email": null})),
        ("email number", json!({"email": 123})),
        ("email array", json!({"email": ["list@sec.example"]})),
        ("email object", json!({"email": {"a": 1}})),
        ("email bool", json!({"email": true})),
        ("email empty", json!({"email": ""})),
        ("email without @", json!({"email": "not-an-email"})),
        ("email without domain", json!({"email": "a@"})),
        ("email without local part", json!({"email": "@b.example"})),
        ("email with a space", json!({"email": "a b@c.example"})),
        (
            "email 10k chars",
            json!({"email": format!("{}@sec.example", "a".repeat(10_000))}),
        ),
        (
            "email with CRLF header",
            json!({"email": "crlf@sec.example\r\nBcc: x@y.example"}),
        ),
        ("email with NUL", json!({"email": "nul\u{0}@sec.example"})),
    ] {
        v.push(case(
            format!("register: {name}"),
            json_req("POST", "/auth/register", &[], body.to_string().as_bytes()),
            &[422],
        ));
    }
    for email in [f.owner_email.clone(), f.owner_email.to_uppercase()] {
        v.push(case(
            format!("register known e-mail {email}"),
            json_req(
                "POST",
                "/auth/register",
                &[],
                json!({ "email": email }).to_string().as_bytes(),
            ),
            &[409],
        ));
    }
    let big = format!("{{\"email\":\"{}@sec.example\"}}", "a".repeat(70 * 1024));
    v.push(case(
        "register 70 KiB body",
        json_req("POST", "/auth/register", &[], big.as_bytes()),
        &[413],
    ));
    v.push(case(
        "GET /auth/register",
        req("GET", "/auth/register", &[], b""),
        &[405],
    ));
    // Keys: missing, malformed, unknown, revoked, in the wrong place.
    let upper = f.owner_key.to_uppercase();
    let junk = format!("{} junk", f.owner_key);
    let longer = format!("{}0", f.owner_key);
    let bearer_junk = "Bearer sk-stellar-nothex".to_string();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:", f.owner_key)
        )
    );
    let unknown = stellar_common::keys::generate().plaintext;
    let key_rows: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no key", vec![]),
        ("empty X-API-Key", vec![("X-API-Key", String::new())]),
        (
            "malformed key",
            vec![("X-API-Key", "sk-stellar-xyz".into())],
        ),
        ("key one char longer", vec![("X-API-Key", longer)]),
        ("upper-case key", vec![("X-API-Key", upper)]),
        ("key with junk after it", vec![("X-API-Key", junk)]),
        (
            "unknown well-formed key",
            vec![("X-API-Key", unknown.clone())],
        ),
        ("revoked key", vec![("X-API-Key", f.revoked_key.clone())]),
        ("empty Bearer", vec![("Authorization", "Bearer ".into())]),
        ("malformed Bearer", vec![("Authorization", bearer_junk)]),
        ("Basic credentials", vec![("Authorization", basic)]),
        (
            "key as a cookie",
            vec![("Cookie", format!("api_key={}", f.owner_key))],
        ),
    ];
    for (name, headers) in &key_rows {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        v.push(case(
            format!("GET /auth/api-keys, {name}"),
            req("GET", "/auth/api-keys", &h, b""),
            &[401],
        ));
    }
    let key_in_query = format!("/auth/usage?api_key={}", f.owner_key);
    for (method, target) in [
        ("GET", "/auth/usage"),
        ("GET", key_in_query.as_str()),
        ("GET", "/auth/usage/history"),
        ("POST", "/auth/api-keys"),
        ("POST", "/billing/cancel"),
        ("GET", "/billing/portal"),
    ] {
        v.push(case(
            format!("{method} {target} without a key"),
            req(method, target, &[], b""),
            &[401],
        ));
    }
    let revoke_other = format!("/auth/api-keys/{}", f.other_key_id);
    v.push(case(
        "DELETE another account's key, unknown key",
        req(
            "DELETE",
            &revoke_other,
            &[("X-API-Key", unknown.as_str())],
            b"",
        ),
        &[401],
    ));
    // Creating keys with bad bodies.
    for (name, body, want) in [
        ("malformed", &b"{\"name\":"[..], &[400][..]),
        ("name number", b"{\"name\":5}", &[422]),
        ("name array", b"{\"name\":[\"a\"]}", &[422]),
        ("name object", b"{\"name\":{\"a\":1}}", &[422]),
        ("empty array", b"[]", &[422]),
        ("array with a name", b"[\"from-array\"]", &[422]),
        ("string body", b"\"name\"", &[422]),
    ] {
        let want: &'static [u16] = if want == [400] { &[400] } else { &[422] };
        v.push(case(
            format!("create key: {name}"),
            json_req("POST", "/auth/api-keys", &owner, body),
            want,
        ));
    }
    for (name, body) in [
        ("name 101 chars", json!({"name": "n".repeat(101)})),
        ("name with BEL", json!({"name": "bell\u{7}"})),
        ("name with newline", json!({"name": "two\nlines"})),
    ] {
        v.push(case(
            format!("create key: {name}"),
            json_req(
                "POST",
                "/auth/api-keys",
                &owner,
                body.to_string().as_bytes(),
            ),
            &[422],
        ));
    }
    let big = format!("{{\"name\":\"{}\"}}", "n".repeat(70 * 1024));
    v.push(case(
        "create key: 70 KiB body",
        json_req("POST", "/auth/api-keys", &owner, big.as_bytes()),
        &[413],
    ));
    // Path ids.
    let long = "a".repeat(4000);
    for (name, id) in [
        ("not a UUID", "not-a-uuid".to_string()),
        ("nil UUID", Uuid::nil().to_string()),
        ("unknown UUID", Uuid::new_v4().to_string()),
        ("another account's key", f.other_key_id.to_string()),
        ("4000 chars", long),
        ("encoded dots", "%2e%2e".to_string()),
        ("UUID with junk", format!("{}x", f.other_key_id)),
    ] {
        v.push(case(
            format!("revoke key: {name}"),
            req("DELETE", &format!("/auth/api-keys/{id}"), &owner, b""),
            &[404],
        ));
        v.push(case(
            format!("rotate key: {name}"),
            req("POST", &format!("/auth/api-keys/{id}/rotate"), &owner, b""),
            &[404],
        ));
    }
    v.push(case(
        "revoke the last active key",
        req(
            "DELETE",
            &format!("/auth/api-keys/{}", f.solo_key_id),
            &[("X-API-Key", f.solo_key.as_str())],
            b"",
        ),
        &[409],
    ));
    v.push(case(
        "cancel without a subscription",
        req("POST", "/billing/cancel", &owner, b""),
        &[409],
    ));
    v.push(case(
        "portal without a subscription",
        req("GET", "/billing/portal", &owner, b""),
        &[404],
    ));
    // Checkout.
    for (name, body, want) in [
        ("malformed", &b"{\"tier\":"[..], &[400][..]),
        ("empty object", b"{}", &[422]),
        ("no e-mail", b"{\"tier\":\"pro\"}", &[422]),
        ("no tier", b"{\"email\":\"co@sec.example\"}", &[422]),
        (
            "unknown tier",
            b"{\"tier\":\"enterprise\",\"email\":\"co@sec.example\"}",
            &[422],
        ),
        (
            "free tier",
            b"{\"tier\":\"free\",\"email\":\"co@sec.example\"}",
            &[422],
        ),
        (
            "tier number",
            b"{\"tier\":5,\"email\":\"co@sec.example\"}",
            &[422],
        ),
        (
            "bad e-mail",
            b"{\"tier\":\"pro\",\"email\":\"nope\"}",
            &[422],
        ),
        (
            "array form",
            b"[\"pro\",\"array-checkout@sec.example\"]",
            &[422],
        ),
        (
            "e-mail with CRLF",
            b"{\"tier\":\"pro\",\"email\":\"x@sec.example\\r\\nBcc: y@z.example\"}",
            &[422],
        ),
    ] {
        let want: &'static [u16] = if want == [400] { &[400] } else { &[422] };
        v.push(case(
            format!("stripe checkout: {name}"),
            json_req("POST", "/billing/stripe/checkout", &[], body),
            want,
        ));
    }
    v.push(case(
        "checkout with an unknown provider",
        json_req(
            "POST",
            "/billing/paypal/checkout",
            &[],
            b"{\"tier\":\"pro\",\"email\":\"pp@sec.example\"}",
        ),
        &[404],
    ));
    for target in [
        "/billing/stripe/checkout",
        "/billing/stripe/checkout?tier=pro",
        "/billing/stripe/checkout?email=q@sec.example",
        "/billing/stripe/checkout?tier=gold&email=q@sec.example",
        "/billing/stripe/checkout?tier=pro&email=bad",
        "/billing/lemonsqueezy/checkout?tier=free&email=q@sec.example",
        "/billing/toss/checkout?tier=pro&email=%00",
    ] {
        v.push(case(
            format!("GET {target}"),
            req("GET", target, &[], b""),
            &[422],
        ));
    }
    for (name, body, want) in [
        ("malformed", &b"{"[..], &[400][..]),
        ("empty object", b"{}", &[422]),
        (
            "wrong types",
            b"{\"customerKey\":1,\"authKey\":2,\"tier\":3,\"email\":4}",
            &[422],
        ),
    ] {
        let want: &'static [u16] = if want == [400] { &[400] } else { &[422] };
        v.push(case(
            format!("toss confirm: {name}"),
            json_req("POST", "/billing/toss/confirm", &[], body),
            want,
        ));
    }
    // Webhooks: every forged or broken delivery is 400 and writes nothing.
    let now = Utc::now().timestamp();
    let sub = json!({"id": "evt_sec_1", "object": "event", "type": "customer.subscription.updated", "created": now,
        "data": {"object": {"id": "sub_sec", "object": "subscription", "customer": "cus_sec", "status": "active",
        "cancel_at_period_end": false, "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": STRIPE_PRICE_TEAM}, "current_period_end": now + 86_400}]},
        "metadata": {"user_id": f.owner_id.to_string()}}}})
    .to_string();
    let sub_b = sub.as_bytes();
    let good = stripe_signature(STRIPE_WHSEC, now, &sub);
    let v1 = good.split_once(",v1=").unwrap().1.to_string();
    let stripe_rows: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("no signature", sub_b.to_vec(), None),
        ("garbage signature", sub_b.to_vec(), Some("garbage".into())),
        (
            "wrong secret",
            sub_b.to_vec(),
            Some(stripe_signature("whsec_wrong", now, &sub)),
        ),
        (
            "stale timestamp",
            sub_b.to_vec(),
            Some(stripe_signature(STRIPE_WHSEC, now - 3600, &sub)),
        ),
        (
            "timestamp an hour ahead",
            sub_b.to_vec(),
            Some(stripe_signature(STRIPE_WHSEC, now + 3600, &sub)),
        ),
        ("v0 only", sub_b.to_vec(), Some(format!("t={now},v0={v1}"))),
        ("v1 without t", sub_b.to_vec(), Some(format!("v1={v1}"))),
        (
            "signature of another timestamp",
            sub_b.to_vec(),
            Some(format!("t={},v1={v1}", now - 1)),
        ),
        (
            "tampered body",
            sub.replace("\"active\"", "\"trialing\"").into_bytes(),
            Some(good.clone()),
        ),
        ("empty v1", sub_b.to_vec(), Some(format!("t={now},v1="))),
        (
            "signed malformed JSON",
            b"{\"id\":".to_vec(),
            Some(stripe_signature(STRIPE_WHSEC, now, "{\"id\":")),
        ),
    ];
    for (name, body, sig) in stripe_rows {
        let h: Vec<(&str, &str)> = sig
            .iter()
            .map(|s| ("Stripe-Signature", s.as_str()))
            .collect();
        v.push(case(
            format!("stripe webhook: {name}"),
            json_req("POST", "/webhook/stripe", &h, &body),
            &[400],
        ));
    }
    let huge = format!("{{\"pad\":\"{}\"}}", "p".repeat(1_100_000));
    v.push(case(
        "stripe webhook: 1.1 MB body",
        json_req(
            "POST",
            "/webhook/stripe",
            &[(
                "Stripe-Signature",
                &stripe_signature(STRIPE_WHSEC, now, &huge),
            )],
            huge.as_bytes(),
        ),
        &[413],
    ));
    let lemon = json!({"meta": {"event_name": "subscription_created", "webhook_id": Uuid::new_v4().to_string(),
        "custom_data": {"user_id": f.owner_id.to_string()}},
        "data": {"type": "subscriptions", "id": "9001", "attributes": {"status": "active", "variant_id": 222, "customer_id": 7,
        "renews_at": "2099-01-01T00:00:00.000000Z", "ends_at": null, "user_email": f.owner_email}}})
    .to_string();
    let lemon_good = lemon_signature(LEMON_SECRET, &lemon);
    let lemon_rows: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("no signature", lemon.clone().into_bytes(), None),
        (
            "wrong secret",
            lemon.clone().into_bytes(),
            Some(lemon_signature("nope", &lemon)),
        ),
        (
            "signature of another body",
            lemon.clone().into_bytes(),
            Some(lemon_signature(LEMON_SECRET, "{}")),
        ),
        (
            "truncated signature",
            lemon.clone().into_bytes(),
            Some(lemon_good[..32].to_string()),
        ),
        (
            "non-hex signature",
            lemon.clone().into_bytes(),
            Some("zz".repeat(32)),
        ),
        (
            "tampered body",
            lemon.replace("222", "111").into_bytes(),
            Some(lemon_good.clone()),
        ),
        (
            "signed malformed JSON",
            b"{\"meta\":".to_vec(),
            Some(lemon_signature(LEMON_SECRET, "{\"meta\":")),
        ),
    ];
    for (name, body, sig) in lemon_rows {
        let mut h: Vec<(&str, &str)> = vec![("X-Event-Name", "subscription_created")];
        h.extend(sig.iter().map(|s| ("X-Signature", s.as_str())));
        v.push(case(
            format!("lemon webhook: {name}"),
            json_req("POST", "/webhook/lemonsqueezy", &h, &body),
            &[400],
        ));
    }
    for (name, body) in [
        ("malformed JSON", b"{not json".to_vec()),
        (
            "unknown payment",
            json!({"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2026-01-01T00:00:00.000000",
                "data": {"paymentKey": "pk_forged_sec", "orderId": "order_forged_sec", "status": "DONE"}})
            .to_string()
            .into_bytes(),
        ),
    ] {
        v.push(case(
            format!("toss webhook: {name}"),
            json_req("POST", "/webhook/toss", &[], &body),
            &[400],
        ));
    }
    v.push(case(
        "webhook for an unknown provider",
        json_req("POST", "/webhook/paypal", &[], b"{}"),
        &[404],
    ));
    v.push(case(
        "GET a webhook",
        req("GET", "/webhook/stripe", &[], b""),
        &[405],
    ));
    // Paths and methods nobody serves, and static-file traversal.
    for (method, target, want) in [
        ("GET", "/auth/nope", &[404][..]),
        ("PUT", "/auth/usage", &[405]),
        ("DELETE", "/auth/register", &[405]),
        ("GET", "/static/%2e%2e/%2e%2e/Cargo.toml", &[404]),
        ("GET", "/static/..%2f..%2fCargo.toml", &[404]),
        ("GET", "/static/.env", &[404]),
    ] {
        let want: &'static [u16] = if want == [404] { &[404] } else { &[405] };
        v.push(case(
            format!("{method} {target}"),
            req(method, target, &owner, b""),
            want,
        ));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_refuses_bad_input_and_changes_nothing() {
    let Some(s) = billing_stack(Backend::Sqlite, false, &[]).await else {
        return;
    };
    let owner_email = "owner@sec.example".to_string();
    let (owner_id, owner_key) = s.register(&owner_email).await;
    accounts::set_tier(&s.adb.db, owner_id, "pro").await;
    let (other_id, _) = s.register("other@sec.example").await;
    let other_key_id: Uuid = stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar(
        "SELECT id FROM api_keys WHERE user_id = $1").bind(other_id).fetch_one(p).await)
    .unwrap();
    let (solo_id, solo_key) = s.register("solo@sec.example").await;
    let solo_key_id: Uuid = stellar_common::with_db!(&s.adb.db, p => sqlx::query_scalar(
        "SELECT id FROM api_keys WHERE user_id = $1").bind(solo_id).fetch_one(p).await)
    .unwrap();
    let (revoked_id, revoked_key) = accounts::add_key(&s.adb.db, owner_id).await;
    accounts::revoke_key(&s.adb.db, revoked_id).await;
    let f = BillingFixture {
        owner_key,
        owner_email,
        other_key_id,
        solo_key,
        solo_key_id,
        revoked_key,
        owner_id,
    };
    let cases = billing_cases(&f);
    assert!(cases.len() >= 80, "{} billing cases", cases.len());
    let addr = s.billing().url.trim_start_matches("http://").to_string();
    run_cases("billing", &addr, cases, || billing_state(&s)).await;
}

// ---------------------------------------------------------------------------------------------
// The gateway, with a capture server as both upstreams.

/// An upstream that records every byte it receives (from every connection, as it arrives) and
/// answers each complete request `200 {"ok":true}` (unlike the harness's [`Capture`], which
/// answers once per connection after it has gone quiet).
#[derive(Clone, Default)]
struct Recording {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Recording {
    fn len(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }
    fn since(&self, from: usize) -> Vec<u8> {
        self.bytes.lock().unwrap()[from..].to_vec()
    }
}

async fn start_recording() -> (String, Recording) {
    let cap = Recording::default();
    let log = cap.clone();
    let addr = serve_raw(move |mut s| {
        let log = log.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                while let Some(len) = complete_request(&buf) {
                    buf.drain(..len);
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut chunk).await {
                    Ok(n) if n > 0 => {
                        log.bytes.lock().unwrap().extend_from_slice(&chunk[..n]);
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    _ => return,
                }
            }
        }
    })
    .await;
    (addr, cap)
}

/// The length of the complete request at the front of `buf`, if there is one.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if head.contains("\r\ntransfer-encoding:") {
        // The last chunk, then the (possibly empty) trailer section.
        let body = &buf[end..];
        let last = if body.starts_with(b"0\r\n") {
            0
        } else {
            find(body, b"\r\n0\r\n")? + 2
        };
        let rest = &body[last + 3..];
        let trailer_end = if rest.starts_with(b"\r\n") {
            2
        } else {
            find(rest, b"\r\n\r\n")? + 4
        };
        return Some(end + last + 3 + trailer_end);
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= end + len).then_some(end + len)
}

/// The raw request `head` (its lines, without the final CRLF) and `body`, on the wire as given.
fn raw(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{head}\r\n\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

fn gateway_cases(key: &str, revoked: &str) -> Vec<Case> {
    let mut v = Vec::new();
    let k = [("X-API-Key", key)];
    let store_body = b"{\"content\":\"x\"}";
    // Request targets: anything another server could read differently is refused.
    for target in [
        "/api/v1/store#",
        "/api/v1/store#x",
        "/api/v1/store?a=1#x",
        "/api/v1/store;x",
        "/api/v1/store;",
        "/api/v1/st%6Fre",
        "/api/v1/%73tore",
        "/api/v1/store%2F",
        "/api/v1/store%2f.",
        "/api/v1/./store",
        "/api/v1/x/../store",
        "/api/v1//store",
        "//api/v1/store",
        "/api/v1/store/.",
        "/api/v1/store/..",
        "/api/%2E%2E/api/v1/store",
        "/api/v1/store%00",
        "/api/v1/store%",
        "/api/v1/store%zz",
        "/api/v1/store\\",
        "/api/v1\\store",
        "/api/v1/store%5C",
        "http://test.local/api/v1/store",
        "HTTP://test.local/api/v1/store",
        "https://test.local/api/v1/store",
        "api/v1/store",
        "test.local:80",
        "/auth/register#",
        "/auth/%72egister",
        "/webhook/stripe/../../auth/register",
        "/billing/stripe/checkout;jsessionid=1",
    ] {
        v.push(case(
            format!("POST {target}"),
            json_req("POST", target, &k, store_body),
            &[400],
        ));
    }
    for target in [
        "/api/v1/forget/..%2f..%2fstore",
        "/api/v1/forget/%2e%2e",
        "/api/v1/forget/x;y",
        "/api/v1/forget/a/../../store",
    ] {
        v.push(case(
            format!("DELETE {target}"),
            req("DELETE", target, &k, b""),
            &[400],
        ));
    }
    v.push(case(
        "GET absolute-form stats",
        req("GET", "http://test.local/api/v1/stats", &k, b""),
        &[400],
    ));
    v.push(case("OPTIONS *", req("OPTIONS", "*", &k, b""), &[400]));
    let mut ctl = req("GET", "/api/v1/statsX", &k, b"");
    let at = find(&ctl, b"X").unwrap();
    ctl[at] = 0x01;
    v.push(case("control byte in the target", ctl.clone(), &[400]));
    ctl[at] = 0xff;
    v.push(case("raw non-ASCII byte in the target", ctl, &[400]));
    v.push(case(
        "space inside the target",
        raw(
            &format!("GET /api/v1/stats /x HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}"),
            b"",
        ),
        &[400],
    ));
    // Methods nobody serves.
    for (method, target, want) in [
        ("CONNECT", "test.local:443", &[400, 405][..]),
        ("CONNECT", "/api/v1/stats", &[400, 405]),
        ("TRACE", "/api/v1/stats", &[405]),
        ("TRACE", "/auth/usage", &[405]),
        ("TRACK", "/api/v1/stats", &[405]),
        ("get", "/api/v1/stats", &[400, 405]),
        ("FOO", "/api/v1/stats", &[405]),
        ("PROPFIND", "/auth/usage", &[405]),
        ("MOVE", "/api/v1/forget/x", &[405]),
        ("CONNECT", "/auth/register", &[400, 405]),
    ] {
        let want: &'static [u16] = if want == [405] { &[405] } else { &[400, 405] };
        v.push(case(
            format!("{method} {target}"),
            req(method, target, &k, b""),
            want,
        ));
    }
    v.push(case(
        "HTTP/2 preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        &[400, 405],
    ));
    // Framing: ambiguous or malformed messages are refused and never reach an upstream.
    for target in ["/api/v1/narrate", "/auth/register"] {
        let p = |extra: &str, body: &[u8]| {
            raw(
                &format!("POST {target} HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n{extra}"),
                body,
            )
        };
        let rows: Vec<(&str, Vec<u8>, &'static [u16])> = vec![
            ("CL then TE chunked", p("Content-Length: 5\r\nTransfer-Encoding: chunked", b"0\r\n\r\n"), &[400]),
            ("TE chunked then CL", p("Transfer-Encoding: chunked\r\nContent-Length: 5", b"0\r\n\r\n"), &[400]),
            ("empty TE with CL", p("Transfer-Encoding: \r\nContent-Length: 5", b"hello"), &[400]),
            ("TE ',' with CL", p("Transfer-Encoding: ,\r\nContent-Length: 5", b"hello"), &[400]),
            ("empty TE alone", p("Transfer-Encoding: ", b"0\r\n\r\n"), &[400]),
            ("TE chunked twice", p("Transfer-Encoding: chunked, chunked", b"0\r\n\r\n"), &[400]),
            ("TE chunked in two fields", p("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", b"0\r\n\r\n"), &[400]),
            ("TE not ending in chunked", p("Transfer-Encoding: chunked, gzip", b"0\r\n\r\n"), &[400]),
            ("two different CLs", p("Content-Length: 5\r\nContent-Length: 6", b"hello!"), &[400]),
            ("CL with a plus", p("Content-Length: +5", b"hello"), &[400]),
            ("negative CL", p("Content-Length: -1", b""), &[400]),
            ("hex CL", p("Content-Length: 0x5", b"hello"), &[400]),
            ("CL with an inner space", p("Content-Length: 1 0", b"helloworld"), &[400]),
            ("CL beyond u64", p("Content-Length: 99999999999999999999999", b""), &[400, 413]),
            ("space before the colon (CL)", p("Content-Length : 5", b"hello"), &[400]),
            ("space before the colon (TE)", p("Transfer-Encoding : chunked", b"0\r\n\r\n"), &[400]),
            ("bare LF in a chunk extension", p("Transfer-Encoding: chunked", b"5;a=b\nc\r\nhello\r\n0\r\n\r\n"), &[400]),
            ("bare CR in a chunk extension", p("Transfer-Encoding: chunked", b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"), &[400]),
            ("bare LF in a trailer", p("Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\nX-T: a\nb: c\r\n\r\n"), &[400]),
            ("bare LF ending the last chunk", p("Transfer-Encoding: chunked", b"5\r\nhello\r\n0\n\r\n"), &[400]),
            ("chunk size not hex", p("Transfer-Encoding: chunked", b"zz\r\nhello\r\n0\r\n\r\n"), &[400]),
            ("chunk size overflows", p("Transfer-Encoding: chunked", b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), &[400, 413]),
            ("chunk size with a sign", p("Transfer-Encoding: chunked", b"+5\r\nhello\r\n0\r\n\r\n"), &[400]),
            ("chunk data longer than its size", p("Transfer-Encoding: chunked", b"5\r\nhelloXX\r\n0\r\n\r\n"), &[400]),
            ("NUL in a field value", p("X-Note: a\x00b", b""), &[400]),
            ("TE chunked in HTTP/1.0", raw(&format!("POST {target} HTTP/1.0\r\nHost: t\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked"), b"0\r\n\r\n"), &[400]),
        ];
        for (name, bytes, want) in rows {
            v.push(case(format!("{name}, POST {target}"), bytes, want));
        }
    }
    // Host (RFC 9112 §3.2: 400 for none in HTTP/1.1, two, or an invalid one).
    for (name, head) in [
        (
            "no Host",
            format!("GET /api/v1/stats HTTP/1.1\r\nX-API-Key: {key}"),
        ),
        (
            "two Hosts",
            format!("GET /api/v1/stats HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-API-Key: {key}"),
        ),
        (
            "two equal Hosts",
            format!("GET /api/v1/stats HTTP/1.1\r\nHost: a\r\nHost: a\r\nX-API-Key: {key}"),
        ),
        (
            "Host with a space",
            format!("GET /api/v1/stats HTTP/1.1\r\nHost: a b\r\nX-API-Key: {key}"),
        ),
        (
            "Host with a slash",
            format!("GET /api/v1/stats HTTP/1.1\r\nHost: a/b\r\nX-API-Key: {key}"),
        ),
        (
            "no Host, billing route",
            "GET /auth/usage HTTP/1.1".to_string(),
        ),
        (
            "two Hosts, billing route",
            "GET /auth/usage HTTP/1.1\r\nHost: a\r\nHost: b".to_string(),
        ),
    ] {
        v.push(case(name, raw(&head, b""), &[400]));
    }
    // Header hygiene: lookalikes of reserved names, trailers, HTTP2-Settings. Refused, or
    // forwarded without them.
    let lower_key = key.to_ascii_lowercase();
    let hyg = |name: &str, bytes: Vec<u8>, forbidden: &[&str]| Case {
        name: name.into(),
        req: bytes,
        expect: Expect::RefusedOrClean(forbidden.iter().map(|s| s.to_ascii_lowercase()).collect()),
    };
    for field in [
        "X_Stellar_User",
        "x_stellar_user",
        "X-Stellar_User",
        "X_STELLAR_USER",
    ] {
        v.push(hyg(
            &format!("{field} header"),
            req(
                "GET",
                "/api/v1/stats",
                &[("X-API-Key", key), (field, "victim-user")],
                b"",
            ),
            &["victim-user"],
        ));
    }
    v.push(hyg(
        "X_Stellar_Agent header",
        req(
            "GET",
            "/api/v1/stats",
            &[("X-API-Key", key), ("X_Stellar_Agent", "victimagent")],
            b"",
        ),
        &["victimagent"],
    ));
    v.push(hyg(
        "X_API_Key header next to the real one",
        req(
            "GET",
            "/api/v1/stats",
            &[("X-API-Key", key), ("X_API_Key", key)],
            b"",
        ),
        &[&lower_key],
    ));
    v.push(hyg(
        "client's own X-Stellar-User",
        req(
            "GET",
            "/api/v1/stats",
            &[("X-API-Key", key), ("X-Stellar-User", "victim-user")],
            b"",
        ),
        &["victim-user"],
    ));
    v.push(hyg(
        "HTTP2-Settings named by Connection",
        req(
            "GET",
            "/api/v1/stats",
            &[
                ("X-API-Key", key),
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("Upgrade", "h2c"),
                ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
            ],
            b"",
        ),
        &["http2-settings", "aamaaabkaaqaoaaaaaiaaaaa"],
    ));
    for (target, trailer, forbidden) in [
        (
            "/api/v1/narrate",
            "X-Stellar-User: victim-user".to_string(),
            "victim-user".to_string(),
        ),
        (
            "/api/v1/narrate",
            format!("X-API-Key: {key}"),
            lower_key.clone(),
        ),
        (
            "/api/v1/narrate",
            format!("Authorization: Bearer {key}"),
            lower_key.clone(),
        ),
        (
            "/api/v1/narrate",
            "X-Stellar-Agent: victimagent".to_string(),
            "victimagent".to_string(),
        ),
        (
            "/api/v1/narrate",
            "X_Stellar_User: victim-user".to_string(),
            "victim-user".to_string(),
        ),
        (
            "/auth/register",
            "X-Stellar-User: victim-user".to_string(),
            "victim-user".to_string(),
        ),
    ] {
        let body = format!("2\r\n{{}}\r\n0\r\n{trailer}\r\n\r\n");
        v.push(hyg(
            &format!("trailer '{}' on {target}", trailer.split(':').next().unwrap()),
            raw(
                &format!("POST {target} HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close"),
                body.as_bytes(),
            ),
            &[&forbidden],
        ));
    }
    // Keys.
    let unknown = stellar_common::keys::generate().plaintext;
    let longer = format!("{key}0");
    let upper = key.to_uppercase();
    let junk = format!("{key} junk");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{key}:")
        )
    );
    let bearer = "Bearer sk-stellar-nothex".to_string();
    let key_rows: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no key", vec![]),
        ("empty X-API-Key", vec![("X-API-Key", "")]),
        ("malformed key", vec![("X-API-Key", "sk-stellar-xyz")]),
        ("key one char longer", vec![("X-API-Key", &longer)]),
        ("upper-case key", vec![("X-API-Key", &upper)]),
        ("key with junk after it", vec![("X-API-Key", &junk)]),
        ("unknown well-formed key", vec![("X-API-Key", &unknown)]),
        ("revoked key", vec![("X-API-Key", revoked)]),
        ("malformed Bearer", vec![("Authorization", &bearer)]),
        ("Basic credentials", vec![("Authorization", &basic)]),
    ];
    for (name, headers) in &key_rows {
        v.push(case(
            format!("GET /api/v1/stats, {name}"),
            req("GET", "/api/v1/stats", headers, b""),
            &[401],
        ));
    }
    v.push(case(
        "store without a key",
        json_req("POST", "/api/v1/store", &[], store_body),
        &[401],
    ));
    v.push(case(
        "events without a key",
        req("GET", "/api/v1/events", &[], b""),
        &[401],
    ));
    v.push(case(
        "key in the query string only",
        req("GET", &format!("/api/v1/stats?api_key={key}"), &[], b""),
        &[401],
    ));
    // Agent names.
    let long_agent = "a".repeat(65);
    for agent in ["a b", long_agent.as_str(), "../x", "agent/1", "ä"] {
        v.push(case(
            format!("X-Stellar-Agent {agent:.12}"),
            json_req(
                "POST",
                "/api/v1/store",
                &[("X-API-Key", key), ("X-Stellar-Agent", agent)],
                store_body,
            ),
            &[400],
        ));
    }
    // Sizes.
    for (target, len) in [
        ("/api/v1/store", 2_000_000),
        ("/api/v1/narrate", 1_048_577),
        ("/auth/register", 2_000_000),
        ("/webhook/stripe", 5_000_000),
    ] {
        v.push(case(
            format!("Content-Length {len} to {target}"),
            raw(
                &format!("POST {target} HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {len}"),
                b"{\"content\":\"",
            ),
            &[413],
        ));
    }
    let big_field = "a".repeat(70 * 1024);
    v.push(case(
        "70 KiB header",
        req(
            "GET",
            "/api/v1/stats",
            &[("X-API-Key", key), ("X-Big", &big_field)],
            b"",
        ),
        &[431],
    ));
    v.push(case(
        "70 KiB target",
        req("GET", &format!("/api/v1/recall?q={big_field}"), &k, b""),
        &[414, 431],
    ));
    let mut many = format!("GET /api/v1/stats HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}");
    for i in 0..200 {
        many.push_str(&format!("\r\nX-F{i}: v"));
    }
    v.push(case("200 header fields", raw(&many, b""), &[431]));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_refuses_bad_input_and_forwards_nothing() {
    let Some(s) = Stack::builder(Backend::Sqlite, "sec-gateway")
        .tiers(ROOMY_TIERS)
        .start()
        .await
    else {
        return;
    };
    let adb = &s.adb;
    let (up, cap) = start_recording().await;
    let acct = accounts::create_account(&adb.db, "free").await;
    let gone = accounts::create_account(&adb.db, "free").await;
    accounts::revoke_key(&adb.db, gone.key_id).await;
    let gw = s
        .start_gateway(
            &up,
            &up,
            &[
                // Refusals count against the client IP's bucket: out of the way here.
                ("STELLAR_GATEWAY_IP_REQUESTS_PER_MINUTE", "1000000".into()),
                ("STELLAR_GATEWAY_IP_BURST", "1000000".into()),
                // No reconciliation requests to the capture upstream during the run.
                ("STELLAR_GATEWAY_RECONCILE_INTERVAL_SECS", "0".into()),
            ],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = gw.addr.clone();
    // The set-up works: a plain request reaches the capture upstream.
    let before = cap.len();
    let a = exchange(
        &addr,
        req("GET", "/api/v1/stats", &[("X-API-Key", &acct.key)], b""),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "control request");
    assert!(
        cap.len() > before,
        "the control request reached the upstream"
    );

    let cases = gateway_cases(&acct.key, &gone.key);
    let total = cases.len();
    assert!(total >= 120, "{total} gateway cases");
    let (cap, adb, acct, addr) = (&cap, adb, &acct, &addr);
    run_and_report("gateway", cases, |c| async move {
        let from = cap.len();
        let used = accounts::memories_used(&adb.db, acct.user_id).await;
        let answer = exchange(addr, c.req).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = cap.since(from);
        let seen_lower = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        let mut problems = Vec::new();
        match (&answer, &c.expect) {
            (Err(e), _) => problems.push(e.clone()),
            (Ok(a), Expect::RefusedOrClean(forbidden)) if (200..300).contains(&a.status) => {
                for f in forbidden {
                    if seen_lower.contains(f.as_str()) {
                        problems.push(format!("forwarded with '{f}' reaching the upstream"));
                    }
                }
            }
            (Ok(a), Expect::RefusedOrClean(_)) => {
                if let Err(e) = judge(a, &[400, 401, 403, 405, 431]) {
                    problems.push(e);
                }
                if !seen.is_empty() {
                    problems.push(format!(
                        "refused, yet the upstream received {:.300}",
                        seen_lower
                    ));
                }
            }
            (Ok(a), Expect::Refused(want)) => {
                if let Err(e) = judge(a, want) {
                    problems.push(e);
                }
                if !seen.is_empty() {
                    problems.push(format!(
                        "the upstream received {} bytes: {:.300}",
                        seen.len(),
                        String::from_utf8_lossy(&seen).escape_debug()
                    ));
                }
            }
        }
        let used_after = accounts::memories_used(&adb.db, acct.user_id).await;
        if used_after != used {
            problems.push(format!("quota counter {used} -> {used_after}"));
        }
        problems
    })
    .await;
}
