//! The contract test (issue 16): the live stack — engine, billing with the fake providers, the
//! gateway in front — checked against the OpenAPI document it serves at `/openapi.json` through
//! the gateway. Every operation in the document is called (successes, validation errors, the
//! gateway's refusals: no key, a read-only key, a key's own rate, the memory quota, a body too
//! large), and every answer must have a documented status, a documented media type, a body valid
//! against the documented schema and the documented required headers
//! (`stellar_tests::openapi_check`). An operation added to the document without a call here
//! fails the test, as does a documented success never seen.

use serde_json::{json, Value};
use stellar_tests::fakes::stripe_signature;
use stellar_tests::harness::STRIPE_WHSEC;
use stellar_tests::harness::*;
use stellar_tests::openapi_check::{Answer, Contract};

/// Free accounts hold 6 memories here, so the quota refusal is reached within the test.
const TIERS: &str = "[free]\nmax_memories = 6\nmax_agents = 3\nrequests_per_minute = 100000\nburst = 100000\nmax_api_keys = 10\nprice_usd = 0\nprice_krw = 0\n\n[pro]\nmax_memories = 200000\nmax_agents = 5\nrequests_per_minute = 200000\nburst = 200000\nmax_api_keys = 10\nprice_usd = 29\nprice_krw = 39000\n";

/// Documented successes this test does not reach, each with the reason.
const SUCCESSES_NOT_REACHED: &[(&str, &str)] = &[
    (
        "get /auth/session 200",
        "needs a session: a signed-in browser (browser_accounts)",
    ),
    (
        "post /auth/session/account 200",
        "needs a session (browser_accounts)",
    ),
    (
        "post /auth/sign-out 200",
        "needs a session (browser_accounts)",
    ),
    (
        "get /auth/sessions 200",
        "needs a session (browser_accounts)",
    ),
    (
        "delete /auth/sessions/{id} 200",
        "needs a session (browser_accounts)",
    ),
    (
        "post /auth/link 200",
        "needs a mailed token (billing::people)",
    ),
    (
        "post /auth/members 201",
        "invitations are sent by a signed-in person (billing::people)",
    ),
    (
        "patch /auth/members/{id} 200",
        "needs a second person (billing::people)",
    ),
    (
        "delete /auth/members/{id} 200",
        "needs a second person (billing::people)",
    ),
    (
        "delete /auth/invitations/{id} 200",
        "needs an invitation (billing::people)",
    ),
    (
        "post /auth/webhooks/deliveries/{id}/resend 200",
        "needs a failed delivery (billing::webhooks)",
    ),
    (
        "post /auth/webhooks/deliveries/{id}/resend 202",
        "needs a failed delivery (billing::webhooks)",
    ),
    (
        "get /billing/portal 200",
        "needs a paid subscription (billing::stripe)",
    ),
    (
        "post /billing/cancel 200",
        "needs a paid subscription (billing::stripe)",
    ),
    (
        "post /billing/toss/confirm 200",
        "needs a card authorised at Toss (billing::toss)",
    ),
    (
        "post /auth/register 202",
        "the verified sign-up mode, auth.immediate_key = false (billing::people)",
    ),
    (
        "post /billing/{provider}/checkout 202",
        "the verified sign-up mode (billing::people)",
    ),
    (
        "post /auth/members 202",
        "invitations are sent by a signed-in person (billing::people)",
    ),
];

struct Run<'a> {
    gw: &'a Gateway,
    c: Contract,
    problems: Vec<String>,
}

impl Run<'_> {
    /// `method path` through the gateway, checked as `template`; the answer.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        // Redirects are answers to check, not to follow.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut r = http.request(method.parse().unwrap(), self.gw.url(path));
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let a = Answer::read(r.send().await.expect("the gateway answers")).await;
        let found = self.c.check(method, template, &a);
        self.problems.extend(found);
        a
    }

    /// Same, expecting `status`.
    #[allow(clippy::too_many_arguments)]
    async fn expect(
        &mut self,
        status: u16,
        method: &str,
        template: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let a = self.call(method, template, path, key, body, &[]).await;
        assert_eq!(
            a.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_answers_match_the_served_document() {
    let s = Stack::builder(Backend::Sqlite, "contract")
        .tiers(TIERS)
        .engine(&[])
        .billing(&[])
        .gateway(&[])
        .start()
        .await
        .expect("SQLite stack");
    let gw = s.gw();
    let r = client().get(gw.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    // The browsable docs, through the gateway, from the binary: every asset local and served.
    let page = client().get(gw.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI's page");
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|v| v.ends_with(".js") || v.ends_with(".css"))
        .collect();
    assert!(!assets.is_empty(), "{html}");
    for asset in assets {
        assert!(
            asset.starts_with("/docs/") || asset.starts_with("./"),
            "local only: {asset}"
        );
        let url = gw.url(&format!(
            "/docs/{}",
            asset.trim_start_matches("/docs/").trim_start_matches("./")
        ));
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let text = r.text().await.unwrap();
        assert!(
            !text.contains("cdn.jsdelivr") && !text.contains("unpkg.com"),
            "{url} loads nothing from a CDN"
        );
    }
    let mut run = Run {
        gw,
        c: Contract::new(doc),
        problems: Vec::new(),
    };

    engine_routes(&mut run).await;
    billing_routes(&mut run).await;

    assert!(
        run.problems.is_empty(),
        "answers that differ from the document:\n{}",
        run.problems.join("\n")
    );
    let unexercised = run.c.unexercised();
    assert!(
        unexercised.is_empty(),
        "documented operations this test never called: {unexercised:?}"
    );
    let unseen: Vec<String> = run
        .c
        .unseen_statuses(|s| s.starts_with('2'))
        .into_iter()
        .filter(|op| !SUCCESSES_NOT_REACHED.iter().any(|(o, _)| o == op))
        .collect();
    assert!(
        unseen.is_empty(),
        "documented successes never seen: {unseen:?}"
    );
}

/// Every `/api/v1` operation through the gateway, with the gateway's own refusals.
async fn engine_routes(run: &mut Run<'_>) {
    let (key, _, _) = register_with_two_keys(run.gw).await;
    let key = key.as_str();
    let k = Some(key);

    // Health without a key and with one.
    run.expect(200, "GET", "/api/v1/health", "/api/v1/health", None, None)
        .await;
    run.expect(200, "GET", "/api/v1/health", "/api/v1/health", k, None)
        .await;

    // Store: success, FastAPI's 422, no key, an unknown key, a body too large.
    let stored = run
        .expect(200, "POST", "/api/v1/store", "/api/v1/store",
            k, Some(json!({"content": "the contract test stores a fact about comets", "importance": 0.7})))
        .await;
    let id = stored["id"].as_str().expect("an id").to_string();
    run.expect(200, "POST", "/api/v1/store", "/api/v1/store",
        k, Some(json!({"content": "comets have tails of dust and gas", "metadata": {"tags": ["space"]}})))
        .await;
    run.expect(
        422,
        "POST",
        "/api/v1/store",
        "/api/v1/store",
        k,
        Some(json!({"importance": 2})),
    )
    .await;
    run.expect(
        401,
        "POST",
        "/api/v1/store",
        "/api/v1/store",
        None,
        Some(json!({"content": "x"})),
    )
    .await;
    run.expect(
        401,
        "POST",
        "/api/v1/store",
        "/api/v1/store",
        Some("sk-stellar-0000000000000000000000000000000000000000000"),
        Some(json!({"content": "x"})),
    )
    .await;
    let big = "x".repeat(2 * 1024 * 1024);
    run.expect(
        413,
        "POST",
        "/api/v1/store",
        "/api/v1/store",
        k,
        Some(json!({"content": big})),
    )
    .await;

    // Reads.
    for (path, template) in [
        ("/api/v1/recall?q=comets&limit=3", "/api/v1/recall"),
        ("/api/v1/memories?limit=10", "/api/v1/memories"),
        ("/api/v1/timeline", "/api/v1/timeline"),
        ("/api/v1/stats", "/api/v1/stats"),
        ("/api/v1/introspect?topic=comets", "/api/v1/introspect"),
        (
            "/api/v1/recall/confident?query=comets",
            "/api/v1/recall/confident",
        ),
        ("/api/v1/contradictions", "/api/v1/contradictions"),
    ] {
        run.expect(200, "GET", template, path, k, None).await;
    }
    // Malformed or missing parameters: whatever the engine answers must be documented.
    for (path, template) in [
        ("/api/v1/recall", "/api/v1/recall"),
        ("/api/v1/recall?q=x&limit=zero", "/api/v1/recall"),
        ("/api/v1/memories?limit=many", "/api/v1/memories"),
        ("/api/v1/timeline?start=yesterday", "/api/v1/timeline"),
        ("/api/v1/introspect", "/api/v1/introspect"),
        ("/api/v1/recall/confident", "/api/v1/recall/confident"),
    ] {
        let a = run.call("GET", template, path, k, None, &[]).await;
        assert!((400..500).contains(&a.status), "{path}: {}", a.status);
    }
    for (path, body, bad) in [
        (
            "/api/v1/narrate",
            json!({"topic": "comets"}),
            json!({"limit": 3}),
        ),
        (
            "/api/v1/reason",
            json!({"query": "comets"}),
            json!({"max_sources": 0}),
        ),
        (
            "/api/v1/benchmark",
            json!({"queries": 5}),
            json!({"queries": 0}),
        ),
    ] {
        run.expect(200, "POST", path, path, k, Some(body)).await;
        run.expect(422, "POST", path, path, k, Some(bad)).await;
    }
    // Self-learning: optimize is the original's 400 before 50 recalls, 200 after; rollback
    // answers the tenant's current weights.
    run.expect(400, "POST", "/api/v1/optimize", "/api/v1/optimize", k, None)
        .await;
    for _ in 0..50 {
        let r = client()
            .get(run.gw.url("/api/v1/recall?q=comets"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    run.expect(200, "POST", "/api/v1/optimize", "/api/v1/optimize", k, None)
        .await;
    let path = "/api/v1/rollback-weights";
    run.call("POST", path, path, k, None, &[]).await;

    // Events: the stream's head (the body never ends).
    let r = client()
        .get(run.gw.url("/api/v1/events"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let head = Answer::head(&r);
    drop(r);
    assert_eq!(head.status, 200);
    run.problems
        .extend(run.c.check("GET", "/api/v1/events", &head));

    // Forget: success, then the same id is 404.
    let path = format!("/api/v1/forget/{id}");
    run.expect(200, "DELETE", "/api/v1/forget/{id}", &path, k, None)
        .await;
    run.expect(404, "DELETE", "/api/v1/forget/{id}", &path, k, None)
        .await;

    // A read-only key storing: 403 naming the scope.
    let ro = run
        .expect(
            201,
            "POST",
            "/auth/api-keys",
            "/auth/api-keys",
            k,
            Some(json!({"name": "ro", "read_only": true})),
        )
        .await;
    let ro = ro["api_key"].as_str().unwrap().to_string();
    let v = run
        .expect(
            403,
            "POST",
            "/api/v1/store",
            "/api/v1/store",
            Some(&ro),
            Some(json!({"content": "no"})),
        )
        .await;
    assert_eq!(v["scope"], "read_only");
    // A key with its own rate of 1 per minute: the second request is 429.
    let slow = run
        .expect(
            201,
            "POST",
            "/auth/api-keys",
            "/auth/api-keys",
            k,
            Some(json!({"name": "slow", "requests_per_minute": 1})),
        )
        .await;
    let slow = slow["api_key"].as_str().unwrap().to_string();
    run.expect(
        200,
        "GET",
        "/api/v1/stats",
        "/api/v1/stats",
        Some(&slow),
        None,
    )
    .await;
    run.expect(
        429,
        "GET",
        "/api/v1/stats",
        "/api/v1/stats",
        Some(&slow),
        None,
    )
    .await;
    // The quota: free holds 6 memories.
    let mut status = 200;
    for i in 0..10 {
        let a = run
            .call(
                "POST",
                "/api/v1/store",
                "/api/v1/store",
                k,
                Some(json!({"content": format!("filler memory {i}")})),
                &[],
            )
            .await;
        status = a.status;
        if status == 403 {
            assert_eq!(
                a.json()["type"],
                "https://stellar-gate.dev/problems#memory-limit-exceeded"
            );
            break;
        }
    }
    assert_eq!(
        status, 403,
        "the quota refuses a store past the plan's memories"
    );
}

/// Every billing operation through the gateway.
async fn billing_routes(run: &mut Run<'_>) {
    let (key, _, second_id) = register_with_two_keys(run.gw).await;
    let k = Some(key.as_str());
    let nobody = uuid::Uuid::new_v4().to_string();

    // Pages and health.
    for (path, template) in [
        ("/healthz", "/healthz"),
        ("/", "/"),
        ("/dashboard", "/dashboard"),
        ("/auth/link", "/auth/link"),
        ("/static/app.js", "/static/{path}"),
        (
            "/billing/toss/pay?tier=pro&email=pay%40contract.example",
            "/billing/toss/pay",
        ),
    ] {
        run.expect(200, "GET", template, path, None, None).await;
    }
    run.expect(
        404,
        "GET",
        "/static/{path}",
        "/static/nothing-here.js",
        None,
        None,
    )
    .await;

    // Sign-up and sign-in.
    let email = format!("{}@contract.example", uuid::Uuid::new_v4().simple());
    run.expect(
        201,
        "POST",
        "/auth/register",
        "/auth/register",
        None,
        Some(json!({"email": email})),
    )
    .await;
    run.expect(
        409,
        "POST",
        "/auth/register",
        "/auth/register",
        None,
        Some(json!({"email": email})),
    )
    .await;
    run.expect(
        422,
        "POST",
        "/auth/register",
        "/auth/register",
        None,
        Some(json!({"email": "not-an-address"})),
    )
    .await;
    run.expect(
        202,
        "POST",
        "/auth/sign-in",
        "/auth/sign-in",
        None,
        Some(json!({"email": email})),
    )
    .await;
    let a = run
        .call(
            "POST",
            "/auth/link",
            "/auth/link",
            None,
            Some(json!({"token": "no-such-token"})),
            &[],
        )
        .await;
    assert!((400..500).contains(&a.status), "{}", a.status);

    // Session routes without a session (a key is not a session where only a session will do).
    for (method, template, path, body) in [
        ("GET", "/auth/session", "/auth/session".to_string(), None),
        (
            "POST",
            "/auth/session/account",
            "/auth/session/account".to_string(),
            Some(json!({"account_id": nobody})),
        ),
        ("POST", "/auth/sign-out", "/auth/sign-out".to_string(), None),
        ("GET", "/auth/sessions", "/auth/sessions".to_string(), None),
        (
            "DELETE",
            "/auth/sessions/{id}",
            format!("/auth/sessions/{nobody}"),
            None,
        ),
    ] {
        run.call(method, template, &path, None, body, &[]).await;
    }

    // People, with the owner's key.
    run.expect(200, "GET", "/auth/members", "/auth/members", k, None)
        .await;
    run.expect(200, "GET", "/auth/audit", "/auth/audit", k, None)
        .await;
    for (method, template, path, body) in [
        (
            "POST",
            "/auth/members",
            "/auth/members".to_string(),
            Some(json!({"email": "teammate@contract.example", "role": "member"})),
        ),
        (
            "PATCH",
            "/auth/members/{id}",
            format!("/auth/members/{nobody}"),
            Some(json!({"role": "admin"})),
        ),
        (
            "DELETE",
            "/auth/members/{id}",
            format!("/auth/members/{nobody}"),
            None,
        ),
        (
            "DELETE",
            "/auth/invitations/{id}",
            format!("/auth/invitations/{nobody}"),
            None,
        ),
    ] {
        run.call(method, template, &path, k, body, &[]).await;
    }

    // Keys: list, change, rotate, revoke.
    run.expect(200, "GET", "/auth/api-keys", "/auth/api-keys", k, None)
        .await;
    run.expect(401, "GET", "/auth/api-keys", "/auth/api-keys", None, None)
        .await;
    let path = format!("/auth/api-keys/{second_id}");
    run.expect(
        200,
        "PATCH",
        "/auth/api-keys/{id}",
        &path,
        k,
        Some(json!({"name": "renamed"})),
    )
    .await;
    run.expect(
        422,
        "PATCH",
        "/auth/api-keys/{id}",
        &path,
        k,
        Some(json!({"nmae": "typo"})),
    )
    .await;
    let rotated = run
        .expect(
            201,
            "POST",
            "/auth/api-keys/{id}/rotate",
            &format!("{path}/rotate"),
            k,
            None,
        )
        .await;
    let new_id = rotated["id"]
        .as_str()
        .expect("the replacement's id")
        .to_string();
    run.expect(
        200,
        "DELETE",
        "/auth/api-keys/{id}",
        &format!("/auth/api-keys/{new_id}"),
        k,
        None,
    )
    .await;
    run.expect(
        404,
        "DELETE",
        "/auth/api-keys/{id}",
        &format!("/auth/api-keys/{nobody}"),
        k,
        None,
    )
    .await;

    // Usage.
    run.expect(200, "GET", "/auth/usage", "/auth/usage", k, None)
        .await;
    for path in [
        "/auth/usage/history",
        "/auth/usage/history?granularity=minute&group_by=route",
        "/auth/usage/history?granularity=hour&format=csv",
    ] {
        run.expect(200, "GET", "/auth/usage/history", path, k, None)
            .await;
    }
    run.expect(
        422,
        "GET",
        "/auth/usage/history",
        "/auth/usage/history?from=yesterday",
        k,
        None,
    )
    .await;

    // Customers' webhooks and alerts.
    let hook = run
        .expect(
            201,
            "POST",
            "/auth/webhooks",
            "/auth/webhooks",
            k,
            Some(json!({"url": "http://127.0.0.1:9/contract-hook", "events": ["*"]})),
        )
        .await;
    let hook_id = hook["id"].as_str().expect("an endpoint id").to_string();
    run.expect(200, "GET", "/auth/webhooks", "/auth/webhooks", k, None)
        .await;
    run.expect(
        200,
        "GET",
        "/auth/webhooks/{id}/deliveries",
        &format!("/auth/webhooks/{hook_id}/deliveries"),
        k,
        None,
    )
    .await;
    run.expect(
        200,
        "POST",
        "/auth/webhooks/{id}/rotate-secret",
        &format!("/auth/webhooks/{hook_id}/rotate-secret"),
        k,
        None,
    )
    .await;
    run.expect(
        404,
        "POST",
        "/auth/webhooks/deliveries/{id}/resend",
        &format!("/auth/webhooks/deliveries/{nobody}/resend"),
        k,
        None,
    )
    .await;
    run.expect(
        200,
        "DELETE",
        "/auth/webhooks/{id}",
        &format!("/auth/webhooks/{hook_id}"),
        k,
        None,
    )
    .await;
    run.expect(200, "GET", "/auth/alerts", "/auth/alerts", k, None)
        .await;
    run.expect(
        200,
        "PUT",
        "/auth/alerts",
        "/auth/alerts",
        k,
        Some(json!({"memory_percent": [80, 100]})),
    )
    .await;
    run.expect(
        422,
        "PUT",
        "/auth/alerts",
        "/auth/alerts",
        k,
        Some(json!({"memory_percent": [101]})),
    )
    .await;

    // Plans and checkout (the fake providers stand behind billing).
    run.expect(200, "GET", "/billing/tiers", "/billing/tiers", None, None)
        .await;
    let buyer = format!("{}@contract.example", uuid::Uuid::new_v4().simple());
    run.expect(
        200,
        "POST",
        "/billing/{provider}/checkout",
        "/billing/stripe/checkout",
        None,
        Some(json!({"tier": "pro", "email": buyer})),
    )
    .await;
    run.expect(
        200,
        "POST",
        "/billing/{provider}/checkout",
        "/billing/lemonsqueezy/checkout",
        k,
        Some(json!({"tier": "pro"})),
    )
    .await;
    run.expect(
        422,
        "POST",
        "/billing/{provider}/checkout",
        "/billing/stripe/checkout",
        k,
        Some(json!({"tier": "platinum"})),
    )
    .await;
    let a = run
        .call(
            "GET",
            "/billing/{provider}/checkout",
            "/billing/stripe/checkout?tier=pro",
            k,
            None,
            &[],
        )
        .await;
    assert_eq!(a.status, 303);
    // For an e-mail without an account: the page with the new account's key.
    let path = format!(
        "/billing/stripe/checkout?tier=pro&email={}%40contract.example",
        uuid::Uuid::new_v4().simple()
    );
    run.expect(
        200,
        "GET",
        "/billing/{provider}/checkout",
        &path,
        None,
        None,
    )
    .await;
    run.call("GET", "/billing/portal", "/billing/portal", k, None, &[])
        .await;
    run.call("POST", "/billing/cancel", "/billing/cancel", k, None, &[])
        .await;
    run.call(
        "POST",
        "/billing/toss/confirm",
        "/billing/toss/confirm",
        None,
        Some(json!({})),
        &[],
    )
    .await;
    run.expect(
        303,
        "GET",
        "/billing/toss/fail",
        "/billing/toss/fail?code=USER_CANCEL&message=no",
        None,
        None,
    )
    .await;
    run.call(
        "GET",
        "/billing/toss/success",
        "/billing/toss/success?customerKey=x&authKey=y&tier=pro",
        None,
        None,
        &[],
    )
    .await;

    // A provider's webhook: signed (an event billing does not act on) and forged.
    let body = json!({"id": "evt_contract", "type": "customer.created", "data": {"object": {}}})
        .to_string();
    let t = chrono::Utc::now().timestamp();
    let sig = stripe_signature(STRIPE_WHSEC, t, &body);
    for (sig, ok) in [(sig.as_str(), true), ("t=1,v1=00", false)] {
        let r = client()
            .post(run.gw.url("/webhook/stripe"))
            .header("Stripe-Signature", sig)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let a = Answer::read(r).await;
        assert_eq!(
            a.status < 300,
            ok,
            "{}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        let found = run.c.check("POST", "/webhook/{provider}", &a);
        run.problems.extend(found);
    }

    // Data rights: the export (one memory in it), then the account deleted.
    run.expect(
        200,
        "POST",
        "/api/v1/store",
        "/api/v1/store",
        k,
        Some(json!({"content": "exported"})),
    )
    .await;
    let a = run
        .call("GET", "/auth/export", "/auth/export", k, None, &[])
        .await;
    assert_eq!(a.status, 200);
    run.expect(
        422,
        "DELETE",
        "/auth/account",
        "/auth/account",
        k,
        Some(json!({"confirm": "someone@else.example"})),
    )
    .await;
    let usage = run
        .expect(200, "GET", "/auth/usage", "/auth/usage", k, None)
        .await;
    let mine = usage["email"].as_str().unwrap().to_string();
    run.expect(
        200,
        "DELETE",
        "/auth/account",
        "/auth/account",
        k,
        Some(json!({"confirm": mine})),
    )
    .await;
}
