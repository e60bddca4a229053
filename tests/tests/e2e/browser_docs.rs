//! The API's browsable docs (issue 16) in a real browser: Debian's Chromium, headless, driven by
//! `tests/browser/docs.mjs` against the real engine, billing and gateway binaries — `/docs`
//! through the gateway shows every operation of `/openapi.json`, loads nothing from another host,
//! and a call made from the page with a key reaches the engine.

use crate::browser::{ensure_node_modules, tail, CHROMIUM};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use stellar_tests::harness::{browser_stack, client, ROOMY_TIERS};
use stellar_tests::spawn::repo_root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `apt-get install -y chromium` (the browser tests never download one)"
    );
    let dir = repo_root().join("tests").join("browser");
    ensure_node_modules(&dir).await;
    let s = browser_stack(ROOMY_TIERS, false, &[]).await;
    let public = s.gw().url("");
    let email = format!("docs-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered: Value = client()
        .post(format!("{public}/auth/register"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("register: JSON");
    let key = registered["api_key"].as_str().expect("a key").to_string();
    let artifacts = std::env::var("STELLAR_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("artifacts").join("docs"));
    let run = tokio::process::Command::new("node")
        .arg(dir.join("docs.mjs"))
        .current_dir(&dir)
        .env("STELLAR_BASE_URL", &public)
        .env("STELLAR_KEY", &key)
        .env("STELLAR_ARTIFACTS_DIR", &artifacts)
        .env("STELLAR_CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("docs.mjs finishes within 120 s")
        .expect("node must be installed (apt-get install -y nodejs npm)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "docs.mjs failed ({}); screenshots in {}\n--- gateway log (tail) ---\n{}",
        out.status,
        artifacts.display(),
        tail(&s.gw().svc.log(), 30),
    );
}
