//! Transparent proxying end to end: routing, header hygiene (spoofed identity never reaches
//! the engine; tenant isolation on the real engine), byte-identical bodies both ways, query
//! strings and unknown paths, SSE streamed, 413/502/504 as JSON, `/metrics` (checked with
//! promtool when installed), graceful shutdown finishing an in-flight request, the gateway's
//! own HTTP/1.1 wire behaviour, and the deadline of a request head.

use futures::StreamExt;
use std::time::{Duration, Instant};
use stellar_tests::accounts;
use stellar_tests::both_dbs;
use stellar_tests::harness::*;

async fn hygiene_and_bytes(backend: Backend) {
    let Some((s, _echo)) = echo_gateway(
        backend,
        "gw-proxy",
        ROOMY_TIERS,
        &[(
            "STELLAR_GATEWAY_UPSTREAM_API_KEY",
            "sk-stellar-ffffffffffffffffffffffffffffffff".into(),
        )],
    )
    .await
    else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Spoofed identity headers, the client's key: none reach the engine.
    let body: Vec<u8> = pattern(300_000);
    let r = c
        .post(gw.url("/api/v1/some/unknown/path?b=2&a=1&a=%20x"))
        .header("X-API-Key", &acct.key)
        .header("X-Stellar-User", "someone-else")
        .header("X-Stellar-Admin", "1")
        .header("X-Stellar-Agent", "bot-1")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Request-Id", "client-chosen-id")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = echoed(&r);
    assert_eq!(r.headers()["x-request-id"], "client-chosen-id");
    let back = r.bytes().await.unwrap();
    assert!(
        back.as_ref() == body.as_slice(),
        "request body arrives and comes back byte-identical"
    );
    let h = &seen["headers"];
    assert_eq!(
        seen["path"], "/api/v1/some/unknown/path",
        "unknown paths pass through"
    );
    assert_eq!(
        seen["query"], "b=2&a=1&a=%20x",
        "query string passes through unchanged"
    );
    assert_eq!(h["x-stellar-user"], acct.user_id.to_string());
    assert_eq!(h["x-stellar-agent"], "bot-1");
    assert!(h.get("x-stellar-admin").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-request-id"], "client-chosen-id");
    assert_eq!(
        h["x-api-key"], "sk-stellar-ffffffffffffffffffffffffffffffff",
        "the configured upstream key, not the client's"
    );
    assert!(h.get("authorization").is_none());

    // Bearer keys are stripped too; a silly request id is replaced.
    let r = c
        .get(gw.url("/api/v1/echo"))
        .header("Authorization", format!("Bearer {}", acct.key))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let h = echoed(&r)["headers"].clone();
    assert!(h.get("authorization").is_none());
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 36);

    // Big response bodies stream back byte-identical.
    let r = c
        .get(gw.url("/api/v1/bytes?n=5000000"))
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().as_ref() == pattern(5_000_000).as_slice());

    // Everything else goes to billing with the client's key intact (billing authenticates
    // itself) but still without spoofable identity headers.
    let r = c
        .get(gw.url("/auth/usage?x=1"))
        .header("X-API-Key", &acct.key)
        .header("X-Stellar-User", "evil")
        .send()
        .await
        .unwrap();
    let seen = echoed(&r);
    assert_eq!(seen["path"], "/auth/usage");
    assert_eq!(seen["headers"]["x-api-key"], acct.key);
    assert!(seen["headers"].get("x-stellar-user").is_none());

    // 413 before anything is sent upstream.
    let r = c
        .post(gw.url("/api/v1/store"))
        .header("X-API-Key", &acct.key)
        .body(vec![b'x'; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
}

async fn engine_behaviour(backend: Backend) {
    let Some(mut s) = stack(backend, "gw-engine", ROOMY_TIERS, &[]).await else {
        return;
    };
    // (Fields, not accessors: the engine is killed below while the gateway is in use.)
    let (adb, gw, engine) = (&s.adb, s.gw.as_ref().unwrap(), s.engine.as_mut().unwrap());
    let c = client();
    let alice = accounts::create_account(&adb.db, "free").await;
    let bob = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Health through the gateway, no key.
    let r = c.get(gw.url("/api/v1/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["healthy"],
        true
    );

    // SSE: subscribe through the gateway, then store; the event arrives while the stream is open.
    let sse = c
        .get(gw.url("/api/v1/events"))
        .header("X-API-Key", &alice.key)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = sse.bytes_stream();

    // Alice stores; Bob, spoofing Alice's id, cannot see it.
    let r = c
        .post(gw.url("/api/v1/store"))
        .header("X-API-Key", &alice.key)
        .json(&serde_json::json!({"content": "alice secret plan"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an SSE event arrives before the stream ends");
    let chunk = String::from_utf8_lossy(&first.unwrap().unwrap()).to_string();
    assert!(chunk.contains("on_store"), "{chunk}");
    drop(stream);

    let r = c
        .get(gw.url("/api/v1/recall?q=secret+plan"))
        .header("X-API-Key", &bob.key)
        .header("X-Stellar-User", alice.user_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Vec<serde_json::Value>>().await.unwrap().len(),
        0,
        "spoofed X-Stellar-User is ignored"
    );
    let r = c
        .get(gw.url("/api/v1/recall?q=secret+plan&limit=1"))
        .header("X-API-Key", &alice.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Vec<serde_json::Value>>().await.unwrap().len(), 1);

    // Byte-identical against the engine directly (a read without side effects).
    let direct = c
        .get(format!(
            "http://{}/api/v1/memories?limit=7&offset=0",
            engine.addr
        ))
        .header("X-Stellar-User", alice.user_id.to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let via = c
        .get(gw.url("/api/v1/memories?limit=7&offset=0"))
        .header("X-API-Key", &alice.key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(direct, via);
    // The engine's own errors pass through unchanged.
    let r = c
        .get(gw.url("/api/v1/recall"))
        .header("X-API-Key", &alice.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Metrics: valid exposition format.
    let text = metrics_text(gw).await;
    assert!(
        text.contains("gateway_requests_total{route=\"store\",status=\"200\",tier=\"free\"}"),
        "{text}"
    );
    assert!(text.contains("gateway_upstream_duration_seconds_bucket"));
    assert!(
        !text.contains(&alice.key) && !text.contains(&alice.user_id.to_string()),
        "no keys or account ids in labels"
    );
    promtool_check(&text);
    assert!(
        !gw.svc.log().contains(&alice.key),
        "the key never appears in the log"
    );

    // Engine stopped → 502 JSON.
    engine.svc.kill9();
    let r = c
        .get(gw.url("/api/v1/stats"))
        .header("X-API-Key", &alice.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    // A store that fails upstream releases its reservation.
    let r = c
        .post(gw.url("/api/v1/store"))
        .header("X-API-Key", &alice.key)
        .json(&serde_json::json!({"content": "lost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(accounts::memories_used(&adb.db, alice.user_id).await, 1);
}

fn promtool_check(text: &str) {
    // scripts/test.sh installs promtool, so in CI this check always runs.
    let Ok(path) = which("promtool") else {
        assert!(
            std::env::var("CI").is_err(),
            "promtool must be installed in CI (scripts/ensure-deps.sh test)"
        );
        eprintln!("SKIPPED promtool check: promtool is not installed");
        return;
    };
    use std::io::Write;
    let mut child = std::process::Command::new(path)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(bin))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// 504 on an upstream that is too slow; graceful shutdown lets an in-flight request finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_and_graceful_shutdown() {
    let Some((mut s, _echo)) = echo_gateway(
        Backend::Sqlite,
        "gw-shutdown",
        ROOMY_TIERS,
        &[
            ("STELLAR_GATEWAY_READ_TIMEOUT_SECS", "1".into()),
            ("STELLAR_GATEWAY_GRACE_PERIOD_SECS", "3".into()),
        ],
    )
    .await
    else {
        return;
    };
    // Taken out of the stack: it is stopped on a blocking thread below.
    let mut gw = s.gw.take().unwrap();
    let adb = &s.adb;
    let c = client();
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c
        .get(gw.url("/api/v1/slow?sleep_ms=2500"))
        .header("X-API-Key", &acct.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].is_string());

    // In flight: a 700 ms request; SIGTERM arrives 200 ms into it.
    let (c2, url, key) = (
        c.clone(),
        gw.url("/api/v1/slow?sleep_ms=700"),
        acct.key.clone(),
    );
    let inflight = tokio::spawn(async move {
        c2.get(url)
            .header("X-API-Key", key)
            .body("payload")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let pid = gw.svc.pid().unwrap();
    stellar_tests::spawn::signal(pid, "TERM");
    assert_eq!(
        inflight.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    let exited_ok = tokio::task::spawn_blocking(move || {
        gw.svc.stop();
        gw
    })
    .await
    .unwrap();
    drop(exited_ok);
    assert!(t.elapsed() < Duration::from_secs(15));
}

both_dbs!(
    header_hygiene_and_byte_identical_bodies,
    super::hygiene_and_bytes
);
both_dbs!(engine_tenancy_sse_metrics_502, super::engine_behaviour);

/// An upstream that answers each request on a connection and then, 50 ms later, closes the
/// idle connection (as a server with a short keep-alive timeout does). Counts connections.
async fn start_closing_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = conns.clone();
    let addr = serve_raw(move |mut s| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // One request (head, then a Content-Length body if any).
            loop {
                let Ok(n) = s.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
                )
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // dropped: the idle keep-alive connection is closed
        }
    })
    .await;
    (addr, conns)
}

/// What the gateway does on the wire itself: a malformed request gets a JSON 400;
/// `Expect: 100-continue` is answered by the gateway and not forwarded; hop-by-hop fields
/// (and those the client's `Connection` names) stay on the client's hop; and a pooled upstream
/// connection that the upstream closed while idle is never used for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wire_edges_and_stale_upstream_connections() {
    let echo = start_echo().await;
    let (closing, conns) = start_closing_upstream().await;
    let Some(s) = gateway_to(
        Backend::Sqlite,
        "gw-wire",
        ROOMY_TIERS,
        &closing,
        &echo,
        &[],
    )
    .await
    else {
        return;
    };
    let (adb, gw) = (&s.adb, s.gw());
    let acct = accounts::create_account(&adb.db, "free").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = gw.url("").trim_start_matches("http://").to_string();

    // Malformed request line: our JSON 400, not an empty one.
    let out = raw_exchange(&addr, b"GARBAGE\x01 / HTTP/1.1\r\nHost: x\r\n\r\n", "}").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("application/json"), "{out}");
    assert!(out.contains("\"detail\""), "{out}");

    // Expect: 100-continue on a billing route (the echo upstream): the gateway invites the
    // body itself, the upstream never sees Expect, and hop-by-hop fields are dropped.
    let req =
        "POST /auth/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\
               Connection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
               TE: trailers\r\nX-End-To-End: kept\r\n\r\n";
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an interim answer before the body is sent")
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    s.write_all(b"hello").await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&out).ends_with("hello") && Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("hello"),
        "body forwarded after the 100: {text}"
    );
    let echo_line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-echo-request:"))
        .expect("echo header");
    let seen: serde_json::Value =
        serde_json::from_str(echo_line.split_once(':').unwrap().1.trim()).unwrap();
    let h = &seen["headers"];
    assert!(h.get("expect").is_none(), "{h}");
    assert!(h.get("x-hop-secret").is_none(), "{h}");
    assert!(h.get("keep-alive").is_none(), "{h}");
    assert!(h.get("te").is_none(), "{h}");
    assert_eq!(h["x-end-to-end"], "kept");

    // Upstream closes idle connections after 50 ms: every later request, with or without a
    // body, still gets the upstream's answer (never a 502 from a dead pooled connection).
    let c = client();
    for i in 0..6 {
        let req = if i % 2 == 0 {
            c.get(gw.url("/api/v1/stats"))
        } else {
            c.post(gw.url("/api/v1/recall")).body("{\"query\":\"x\"}")
        };
        let r = req.header("X-API-Key", &acct.key).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        conns.load(std::sync::atomic::Ordering::SeqCst) >= 6,
        "each request needed a new upstream connection"
    );
}

/// An upstream scripted byte by byte: it records every request exactly as received (head and
/// body; a chunked body up to its last chunk and trailer) and answers by path:
/// `/chunked` with a chunked body (an extension and a trailer included), `/close` with a body
/// delimited by closing the connection, anything else with `ok` and a Content-Length.
async fn start_scripted_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = serve_raw(move |mut s| {
        let log = log.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // One complete request at the front of `buf`?
                let complete = {
                    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    text.find("\r\n\r\n").and_then(|end| {
                        let head = &text[..end];
                        if head.contains("transfer-encoding: chunked") {
                            text[end + 4..]
                                .find("0\r\n\r\n")
                                .map(|i| end + 4 + i + 5)
                                .or_else(|| {
                                    text[end + 4..].find("\r\n0\r\n").and_then(|i| {
                                        text[end + 4 + i + 5..]
                                            .find("\r\n\r\n")
                                            .map(|j| end + 4 + i + 5 + j + 4)
                                    })
                                })
                        } else {
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            (buf.len() >= end + 4 + len).then_some(end + 4 + len)
                        }
                    })
                };
                let Some(len) = complete else {
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                    continue;
                };
                let request: Vec<u8> = buf.drain(..len).collect();
                let path = String::from_utf8_lossy(&request)
                    .split(' ')
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(request);
                let answer: &[u8] = match path.as_str() {
                    "/chunked" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                    "/close" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close",
                    _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                };
                if s.write_all(answer).await.is_err() || path == "/close" {
                    return;
                }
            }
        }
    })
    .await;
    (addr, seen)
}

const CHUNKED_BODY: &str = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";

/// HTTP/1.1 framing end to end on the gateway's own proxy core: pipelined requests, chunked
/// answers passed through byte for byte (extensions and trailers included) and chunked requests
/// re-framed by the gateway, de-chunked for an HTTP/1.0 client, close-delimited answers, request smuggling shapes and oversized heads
/// refused, and a refused request's body discarded so its connection keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http1_framing_end_to_end() {
    use tokio::io::AsyncWriteExt;
    let (up, seen) = start_scripted_upstream().await;
    let Some(s) = gateway_to(Backend::Sqlite, "gw-h1", ROOMY_TIERS, &up, &up, &[]).await else {
        return;
    };
    let gw = s.gw();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = gw.url("").trim_start_matches("http://").to_string();
    let count = |s: &str, pat: &str| s.matches(pat).count();

    // Two pipelined requests in one write: two answers, in order, chunked framing unchanged.
    let out = raw_exchange(
        &addr,
        b"GET /chunked HTTP/1.1\r\nHost: x\r\nX-Request-Id: first\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\nX-Request-Id: second\r\n\r\n",
        "",
    )
    .await;
    assert_eq!(count(&out, "HTTP/1.1 200 OK\r\n"), 2, "{out}");
    assert_eq!(count(&out, CHUNKED_BODY), 2, "{out}");
    let (first, second) = (out.find("first").unwrap(), out.find("second").unwrap());
    assert!(first < second, "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );

    // An HTTP/1.0 client cannot read chunked framing: it gets the data, delimited by close.
    let out = raw_exchange(&addr, b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n", "").await;
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{out}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert_eq!(body, "hello world");

    // A close-delimited answer reaches the client whole, and its connection closes after it.
    let out = raw_exchange(&addr, b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n", "").await;
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert_eq!(body, "until-close");

    // A chunked upload, written in pieces: the upstream receives the same data re-framed by the
    // gateway, in the pieces it arrived in, without the extension and the (unlisted) trailer.
    seen.lock().unwrap().clear();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"lo\r\n6;ext=1\r\n world\r\n0\r\nX-Tra")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"iler: t\r\n\r\n").await.unwrap();
    let out = read_until(&mut s, "ok").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let got = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("upstream got the upload");
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(
        got.ends_with("\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n6\r\n world\r\n0\r\n\r\n"),
        "{got}"
    );
    assert!(
        got.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{got}"
    );

    // Smuggling shapes and a malformed chunked body: 400 and closed; the upstream sees nothing.
    seen.lock().unwrap().clear();
    for req in [
        &b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST /x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let out = raw_exchange(&addr, req, "").await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(out.contains("\"detail\""), "{out}");
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing forwarded");
    let out = raw_exchange(
        &addr,
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // A head over the limit: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let out = raw_exchange(&addr, big.as_bytes(), "").await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");

    // A large head within the limit, then (once the connection has gone idle, which lets go of
    // the buffers it grew) a small request on the same connection: both served.
    let large = format!(
        "GET /large HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(48 * 1024)
    );
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(large.as_bytes()).await.unwrap();
    let out = read_until(&mut s, "ok").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let out = read_until(&mut s, "ok").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // A refused request with a small body (no key), then another request on the same
    // connection: the body was read and discarded, and the connection still serves.
    let out = raw_exchange(
        &addr,
        b"POST /api/v1/store HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
        "ok",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert_eq!(count(&out, "HTTP/1.1 200 OK\r\n"), 1, "{out}");
    assert!(out.ends_with("ok"), "{out}");
}

/// The request head's deadline (`head_timeout_secs`, 1 s here) is one deadline for the whole
/// head, not per read, and runs only while a head is arriving: a head trickling in a byte every
/// 200 ms is cut off (closed, nothing written) after about 1 s although bytes keep coming; a
/// slow head finished within the deadline is served; and on a keep-alive connection an idle
/// wait longer than the deadline before the next head costs nothing (that next head, slow too,
/// gets a deadline of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_head_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(s) = stack(
        Backend::Sqlite,
        "gw-head-deadline",
        ROOMY_TIERS,
        &[("STELLAR_GATEWAY_HEAD_TIMEOUT_SECS", "1".into())],
    )
    .await
    else {
        return;
    };
    let gw = s.gw();
    let addr = gw.url("").trim_start_matches("http://").to_string();
    const HEALTH: &[u8] = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n";

    // (a) A head that never ends: one more header byte every 200 ms.
    let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = s.into_split();
    let start = Instant::now();
    wr.write_all(b"GET /api/v1/health HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let trickler = tokio::spawn(async move {
        // When each header byte after the request line was written, until a write fails
        // (or 10 s pass). Half a period out of step with the deadline, so that no byte
        // arrives just as it passes.
        let mut written = Vec::new();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..50 {
            if wr.write_all(b"a").await.is_err() {
                break;
            }
            written.push(Instant::now());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        written
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(6), rd.read(&mut buf)).await {
            Ok(Ok(0)) => break "end of stream".to_string(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break format!("{:?}", e.kind()),
            Err(_) => panic!("still open after {:?}", start.elapsed()),
        }
    };
    let closed_after = start.elapsed();
    assert!(
        got.is_empty(),
        "closed without an answer: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        end == "end of stream" || end == "ConnectionReset",
        "closed ({end})"
    );
    assert!(
        closed_after >= Duration::from_millis(950) && closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}, not about 1 s"
    );
    let written = tokio::time::timeout(Duration::from_millis(1500), trickler)
        .await
        .expect("writes fail soon after the close: the connection is gone, not half-closed")
        .unwrap();
    let before_close = written
        .iter()
        .filter(|t| **t < start + closed_after)
        .count();
    assert!(
        before_close >= 4,
        "header bytes kept arriving until the close ({before_close} before it)"
    );

    // (b) A slow head (6 bytes every 100 ms, ~0.6 s in all) finished within the deadline.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    write_slowly(&mut s, HEALTH).await;
    let out = read_until(&mut s, "}").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\"healthy\":true"), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );

    // (c) Idle on the same connection for 1.5 s, longer than the head deadline (and well
    // within the keep-alive), then another slow head: served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    write_slowly(&mut s, HEALTH).await;
    let out = read_until(&mut s, "}").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\"healthy\":true"), "{out}");
}

/// The request body's deadline (`body_timeout_secs`, 1 s here) is one deadline for the whole
/// body, not per read: a store whose body trickles in a byte every 200 ms gets 408 after about
/// 1 s although bytes keep coming, and the connection closes; nothing reaches the engine's
/// store and the quota slot reserved for it is released. A slow body finished within the
/// deadline is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_body_deadline() {
    use tokio::io::AsyncWriteExt;
    let Some(s) = stack(
        Backend::Sqlite,
        "gw-body-deadline",
        ROOMY_TIERS,
        &[("STELLAR_GATEWAY_BODY_TIMEOUT_SECS", "1".into())],
    )
    .await
    else {
        return;
    };
    let (adb, engine, gw) = (&s.adb, s.engine(), s.gw());
    let acct = accounts::create_account(&adb.db, "free").await;
    let addr = gw.url("").trim_start_matches("http://").to_string();
    let body = br#"{"content":"a memory sent slowly"}"#;
    let head = format!(
        "POST /api/v1/store HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        acct.key,
        body.len()
    );

    // (a) The head and 2 bytes of the body, then one more byte every 200 ms (~7 s in all).
    let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    wr.write_all(&body[..2]).await.unwrap();
    let start = Instant::now();
    let rest = body[2..].to_vec();
    let trickler = tokio::spawn(async move {
        let mut sent = 0;
        for b in rest {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let out = read_until(&mut rd, "").await;
    let closed_after = start.elapsed();
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
    assert!(out.contains("Request body not received in time"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(
        closed_after >= Duration::from_millis(950) && closed_after < Duration::from_secs(3),
        "answered and closed after {closed_after:?}, not about 1 s"
    );
    trickler.abort();
    assert_eq!(
        engine.total_memories(acct.user_id).await,
        0,
        "nothing stored"
    );
    assert_eq!(
        accounts::memories_used(&adb.db, acct.user_id).await,
        0,
        "the reserved quota slot is released"
    );

    // (b) The whole request 6 bytes every 100 ms: the body takes ~0.6 s, within the deadline.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    write_slowly(&mut s, &request).await;
    let out = read_until(&mut s, "}").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(engine.total_memories(acct.user_id).await, 1);
    assert_eq!(accounts::memories_used(&adb.db, acct.user_id).await, 1);
}

/// Write `bytes` 6 at a time, 100 ms apart.
async fn write_slowly(s: &mut tokio::net::TcpStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    for piece in bytes.chunks(6) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
