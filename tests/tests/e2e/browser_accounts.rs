//! Accounts that belong to people (issue 14) in a real browser: Debian's Chromium, headless,
//! driven by `tests/browser/accounts.mjs` (playwright-core) against the real engine, billing and
//! gateway, with billing's mail going to the SMTP catcher of `stellar_tests::smtp`.
//!
//! Billing runs with `immediate_key` off, so sign-up, sign-in and invitations all go through a
//! mailed link. The flow reads each link from a small mailbox this test serves on loopback
//! (`GET /mail?to=<address>` → `{"mails":[{"subject","links"}]}`, in the order they arrived).
//!
//! Needs `/usr/bin/chromium` and Node.js, as `browser.rs` does (`npm ci` in `tests/browser` when
//! its node_modules are missing). Screenshots land in `tests/browser/artifacts/accounts/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::browser::{ensure_node_modules, tail, CHROMIUM};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use stellar_tests::harness::browser_stack;
use stellar_tests::smtp::SmtpCatcher;
use stellar_tests::spawn::repo_root;

/// The product's tier table (`config/tiers.toml`), except that the free tier has room for three
/// keys and three people: the owner creates a second key, invites a member who creates a third.
fn tiers_toml() -> String {
    let path = repo_root().join("config").join("tiers.toml");
    let mut tiers: toml::Table = std::fs::read_to_string(&path)
        .expect("read config/tiers.toml")
        .parse()
        .expect("parse config/tiers.toml");
    let first = tiers.keys().next().cloned().expect("a first tier");
    let free = tiers
        .get_mut(&first)
        .and_then(toml::Value::as_table_mut)
        .expect("the first tier is a table");
    free.insert("max_api_keys".into(), 3.into());
    free.insert("max_members".into(), 3.into());
    toml::to_string(&tiers).expect("tiers as TOML")
}

/// The mailbox the flow polls: every caught mail to `to`, oldest first.
async fn mailbox(catcher: Arc<SmtpCatcher>) -> String {
    async fn mail(
        State(c): State<Arc<SmtpCatcher>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Json<Value> {
        let to = q.get("to").cloned().unwrap_or_default();
        let mails: Vec<Value> = c
            .messages_to(&to)
            .iter()
            .map(|m| {
                let m = m.mail();
                json!({"subject": m.header("subject"), "links": m.links()})
            })
            .collect();
        Json(json!({ "mails": mails }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind mailbox");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().route("/mail", get(mail)).with_state(catcher);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn people_sign_up_sign_in_and_invite_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `apt-get install -y chromium` (the browser tests never download one)"
    );
    let dir = repo_root().join("tests").join("browser");
    ensure_node_modules(&dir).await;

    let catcher = Arc::new(SmtpCatcher::start().await);
    let mail_url = mailbox(catcher.clone()).await;

    // The harness's stack with this test's tiers, and billing with no payment provider (as
    // before any is set up) mailing its links.
    let s = browser_stack(
        &tiers_toml(),
        false,
        &[
            ("STELLAR_AUTH_IMMEDIATE_KEY", "false".into()),
            ("STELLAR_MAIL_SMTP_URL", catcher.url()),
            ("STELLAR_MAIL_POLL_INTERVAL_SECS", "0.1".into()),
        ],
    )
    .await;
    // Billing's public URL: the gateway.
    let public = s.gw().url("");
    let (engine, billing, gateway) = (&s.engine().svc, &s.billing().svc, &s.gw().svc);

    let artifacts = std::env::var("STELLAR_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("artifacts").join("accounts"));
    let _ = std::fs::remove_dir_all(&artifacts);

    let run = tokio::process::Command::new("node")
        .arg(dir.join("accounts.mjs"))
        .current_dir(&dir)
        .env("STELLAR_BASE_URL", &public)
        .env("STELLAR_MAIL_URL", &mail_url)
        .env("STELLAR_ARTIFACTS_DIR", &artifacts)
        .env("STELLAR_CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "accounts.mjs did not finish within 240 s\n--- billing log ---\n{}",
                tail(&billing.log(), 60)
            )
        })
        .expect("node must be installed (apt-get install -y nodejs npm)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "accounts.mjs failed ({}); screenshots in {}; {} mail(s) caught\n--- billing log (tail) ---\n{}\n--- gateway log (tail) ---\n{}\n--- engine log (tail) ---\n{}",
        out.status,
        artifacts.display(),
        catcher.messages().len(),
        tail(&billing.log(), 60),
        tail(&gateway.log(), 30),
        tail(&engine.log(), 10),
    );
}
