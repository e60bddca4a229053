//! The landing page and the dashboard in a real browser: Debian's Chromium, headless, driven by
//! `tests/browser/flow.mjs` (playwright-core, no browser download) against the real engine,
//! billing and gateway binaries, with fake payment providers on loopback.
//!
//! Needs `/usr/bin/chromium` (`apt-get install -y chromium`) and Node.js; the npm dependencies of
//! `tests/browser` are installed here with `npm ci` when missing. Nothing is skipped: a missing
//! prerequisite fails the test with the command that fixes it. Screenshots of every page and
//! state land in `tests/browser/artifacts/` (STELLAR_ARTIFACTS_DIR overrides).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query};
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use stellar_tests::harness::browser_stack;
use stellar_tests::spawn::repo_root;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// The tier table of this test: the product's numbers, except that the free tier allows two keys
/// (the flow creates and revokes a second one) and 120 requests/minute (the flow reloads the
/// dashboard while it waits for the write-behind usage counters). The page must show exactly
/// these numbers, which also proves it reads them from the server.
const TIERS: &str = r#"
[free]
max_memories = 5000
max_agents = 1
requests_per_minute = 120
max_api_keys = 2
price_usd = 0
price_krw = 0

[pro]
max_memories = 50000
max_agents = 5
requests_per_minute = 300
max_api_keys = 5
price_usd = 29
price_krw = 39000

[team]
max_memories = 500000
max_agents = 20
requests_per_minute = 1000
max_api_keys = 20
price_usd = 99
price_krw = 129000
"#;

/* ---------- fake payment providers ----------
 * Each speaks just enough of the provider's wire format for a checkout to start, and serves a
 * page at the URL it hands out, so the browser visibly "reaches the provider". */

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;margin:3rem\"><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

/// The fakes' API routes answer only with the credentials billing was given. (The providers'
/// wire formats are checked in depth by the billing tests' fakes, `stellar_tests::fakes`; those
/// hand out the real providers' https URLs and serve no pages or SDK, which a browser needs.)
fn require_auth(api: Router, want: String) -> Router {
    api.route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let want = want.clone();
            async move {
                let got = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if got == Some(want.as_str()) {
                    next.run(req).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"error": "bad credentials"})),
                    )
                        .into_response()
                }
            }
        },
    ))
}

const LEMON_API_KEY: &str = "ls_test_key";
const STRIPE_SECRET_KEY: &str = "sk_test_browser";
const TOSS_SECRET_KEY: &str = "test_sk_browser";

/// Lemon Squeezy: `POST /v1/checkouts` (JSON:API) → `data.attributes.url`.
async fn fake_lemon() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    let o = origin.clone();
    let api = Router::new()
        .route(
            "/v1/checkouts",
            post(move |Json(body): Json<Value>| {
                let o = o.clone();
                async move {
                    let variant = body["data"]["relationships"]["variant"]["data"]["id"].clone();
                    let id = uuid::Uuid::new_v4();
                    (
                        StatusCode::CREATED,
                        Json(json!({"data": {"type": "checkouts", "id": id.to_string(),
                            "attributes": {"url": format!("{o}/checkout/custom/{id}?signature=fake"),
                                           "variant_id": variant}}})),
                    )
                }
            }),
        );
    let router = require_auth(api, format!("Bearer {LEMON_API_KEY}")).route(
        "/checkout/custom/{id}",
        get(|UrlPath(id): UrlPath<String>| async move {
            page(
                "Lemon Squeezy checkout (fake)",
                &format!("<p id=checkout>Checkout {}</p>", esc(&id)),
            )
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    origin
}

/// Stripe: `POST /v1/checkout/sessions` (form) → a Checkout Session with `url`.
async fn fake_stripe() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    let o = origin.clone();
    let api = Router::new().route(
        "/v1/checkout/sessions",
        post(move |axum::Form(form): axum::Form<Vec<(String, String)>>| {
            let o = o.clone();
            async move {
                let id = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
                let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
                Json(
                    json!({"id": id, "object": "checkout.session", "mode": get("mode"),
                        "status": "open", "success_url": get("success_url"),
                        "url": format!("{o}/c/pay/{id}")}),
                )
            }
        }),
    );
    let router = require_auth(api, format!("Bearer {STRIPE_SECRET_KEY}")).route(
        "/c/pay/{id}",
        get(|UrlPath(id): UrlPath<String>| async move {
            page(
                "Stripe Checkout (fake)",
                &format!("<p id=checkout>Session {}</p>", esc(&id)),
            )
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    origin
}

/// TossPayments: the JS SDK (`/v2/standard`), its billing-auth page, and the two API calls of the
/// billing-key flow (`/v1/billing/authorizations/issue`, `/v1/billing/{billingKey}`).
async fn fake_toss() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    // SDK v2 shape: TossPayments(clientKey).payment({customerKey}).requestBillingAuth({...});
    // v1 shape too: TossPayments(clientKey).requestBillingAuth("카드", {customerKey, ...}).
    let sdk = format!(
        r#"(function () {{
  function go(clientKey, customerKey, o) {{
    if (!o || !o.successUrl || !o.failUrl) return Promise.reject({{ code: "INVALID_PARAMETERS", message: "successUrl and failUrl are required" }});
    var q = new URLSearchParams({{ clientKey: clientKey, customerKey: customerKey, successUrl: o.successUrl, failUrl: o.failUrl, customerEmail: o.customerEmail || "" }});
    location.assign("{origin}/billing-auth?" + q.toString());
    return new Promise(function () {{}});
  }}
  window.TossPayments = function (clientKey) {{
    return {{
      payment: function (p) {{ return {{ requestBillingAuth: function (o) {{ return go(clientKey, p.customerKey, o); }} }}; }},
      requestBillingAuth: function (method, o) {{ return go(clientKey, o.customerKey, o); }}
    }};
  }};
}})();"#
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TOSS_SECRET_KEY}:"));
    let api = Router::new()
        .route(
            "/v1/billing/authorizations/issue",
            post(|Json(b): Json<Value>| async move {
                Json(json!({"mId": "tvivarepublica4", "customerKey": b["customerKey"],
                    "authenticatedAt": chrono::Utc::now().to_rfc3339(), "method": "카드",
                    "billingKey": format!("bk_fake_{}", uuid::Uuid::new_v4().simple()),
                    "card": {"issuerCode": "61", "acquirerCode": "31", "number": "43301234****123*",
                             "cardType": "신용", "ownerType": "개인"}}))
            }),
        )
        .route(
            "/v1/billing/{billing_key}",
            post(|UrlPath(_bk): UrlPath<String>, Json(b): Json<Value>| async move {
                Json(json!({"mId": "tvivarepublica4", "paymentKey": format!("pk_fake_{}", uuid::Uuid::new_v4().simple()),
                    "orderId": b["orderId"], "orderName": b["orderName"], "type": "BILLING", "status": "DONE",
                    "totalAmount": b["amount"], "balanceAmount": b["amount"], "currency": "KRW", "method": "카드",
                    "approvedAt": chrono::Utc::now().to_rfc3339(), "requestedAt": chrono::Utc::now().to_rfc3339()}))
            }),
        );
    let router = require_auth(api, format!("Basic {basic}"))
        .route(
            "/v2/standard",
            get(move || {
                let sdk = sdk.clone();
                async move { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], sdk) }
            }),
        )
        .route(
            "/billing-auth",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let g = |k: &str| q.get(k).cloned().unwrap_or_default();
                let success = g("successUrl");
                let sep = if success.contains('?') { '&' } else { '?' };
                let ok = format!(
                    "{success}{sep}customerKey={}&authKey=bln_fake_{}",
                    url_encode(&g("customerKey")),
                    uuid::Uuid::new_v4().simple()
                );
                let fail = g("failUrl");
                let sep = if fail.contains('?') { '&' } else { '?' };
                let cancel = format!("{fail}{sep}code=PAY_PROCESS_CANCELED&message=cancelled");
                page(
                    "TossPayments card registration (fake)",
                    &format!(
                        "<p>Client key <code id=client-key>{}</code>, customer <code id=customer-key>{}</code></p>\
                         <p><a id=approve href=\"{}\">Register card</a> · <a id=cancel href=\"{}\">Cancel</a></p>",
                        esc(&g("clientKey")),
                        esc(&g("customerKey")),
                        esc(&ok),
                        esc(&cancel)
                    ),
                )
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    origin
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/* ---------- prerequisites ---------- */

fn browser_dir() -> PathBuf {
    repo_root().join("tests").join("browser")
}

/// playwright-core from `tests/browser/package-lock.json`; `npm ci` when it is not there yet.
pub(crate) async fn ensure_node_modules(dir: &Path) {
    let marker = dir
        .join("node_modules")
        .join("playwright-core")
        .join("package.json");
    if marker.exists() {
        return;
    }
    println!(
        "installing the browser test driver: npm ci in {}",
        dir.display()
    );
    let out = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .await
        .expect("npm must be installed (apt-get install -y nodejs npm)");
    assert!(
        out.status.success() && marker.exists(),
        "npm ci in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/* ---------- the test ---------- */

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn landing_and_dashboard_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium` \
         (the browser tests never download a browser)"
    );
    let dir = browser_dir();
    ensure_node_modules(&dir).await;

    let lemon = fake_lemon().await;
    let stripe = fake_stripe().await;
    let toss = fake_toss().await;

    // The harness's stack with this test's tiers and these fakes instead of the harness's.
    let s = browser_stack(
        TIERS,
        true,
        &[
            ("LEMON_API_KEY", LEMON_API_KEY.into()),
            ("LEMON_STORE_ID", "1".into()),
            ("LEMON_VARIANT_PRO", "101".into()),
            ("LEMON_VARIANT_TEAM", "102".into()),
            ("LEMON_WEBHOOK_SECRET", "ls_signing_secret".into()),
            ("LEMON_API_BASE", lemon.clone()),
            ("LEMON_TEST_MODE", "true".into()),
            ("STRIPE_SECRET_KEY", STRIPE_SECRET_KEY.into()),
            ("STRIPE_WEBHOOK_SECRET", "whsec_browser".into()),
            ("STRIPE_PRICE_PRO", "price_pro_test".into()),
            ("STRIPE_PRICE_TEAM", "price_team_test".into()),
            ("STRIPE_API_BASE", stripe.clone()),
            ("TOSS_SECRET_KEY", TOSS_SECRET_KEY.into()),
            ("TOSS_CLIENT_KEY", "test_ck_browser".into()),
            (
                "TOSS_ENCRYPTION_KEY",
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
            ),
            ("TOSS_API_BASE", toss.clone()),
            ("TOSS_SDK_URL", format!("{toss}/v2/standard")),
        ],
    )
    .await;
    // Billing's public URL: the gateway.
    let public = s.gw().url("");
    let (engine, billing, gateway) = (&s.engine().svc, &s.billing().svc, &s.gw().svc);

    let artifacts = std::env::var("STELLAR_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("artifacts"));
    if let Ok(entries) = std::fs::read_dir(&artifacts) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "png") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(dir.join("flow.mjs"))
        .current_dir(&dir)
        .env("STELLAR_BASE_URL", &public)
        .env("STELLAR_ARTIFACTS_DIR", &artifacts)
        .env("STELLAR_CHROMIUM", CHROMIUM)
        .env(
            "STELLAR_EXPECT_CHECKOUT_LEMONSQUEEZY",
            format!("{lemon}/checkout/custom/"),
        )
        .env(
            "STELLAR_EXPECT_CHECKOUT_STRIPE",
            format!("{stripe}/c/pay/cs_test_"),
        )
        .env(
            "STELLAR_EXPECT_CHECKOUT_TOSS",
            format!("{toss}/billing-auth?"),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let run = tokio::time::timeout(Duration::from_secs(300), cmd.output()).await;
    let out = match run {
        Ok(r) => r.expect("node must be installed (apt-get install -y nodejs npm)"),
        Err(_) => panic!(
            "the browser flow did not finish within 300 s\n--- billing log ---\n{}\n--- gateway log ---\n{}",
            billing.log(),
            gateway.log()
        ),
    };
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        panic!(
            "browser flow failed ({}); screenshots in {}\n--- billing log (tail) ---\n{}\n--- gateway log (tail) ---\n{}\n--- engine log (tail) ---\n{}",
            out.status,
            artifacts.display(),
            tail(&billing.log(), 60),
            tail(&gateway.log(), 60),
            tail(&engine.log(), 20),
        );
    }
}

/// The last `n` lines of `s`.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
