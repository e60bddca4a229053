//! Accounts that belong to people (issue 14), end to end on SQLite and PostgreSQL: the real
//! `stellar-billing` binary with `auth.immediate_key = false` mails its links to a real SMTP
//! server on a free port (the catcher in `stellar_tests::smtp`); the tests read those mails,
//! take the token from the link's fragment and open it as the link page does
//! (`POST /auth/link`), then carry the session cookie and the CSRF token by hand (no cookie
//! store), so the cookie's attributes and the CSRF check are visible.
//!
//! The contract is docs/billing-api.md, "People: verified sign-up, sign-in, sessions, members,
//! audit": verified sign-up, no account enumeration, sign-in by link (expired, used, garbage
//! links), recovery after losing every key, the squatting attempt, sessions and their revoke,
//! invitations with roles and seats, the audit log and its paging, mail surviving an SMTP
//! outage, the abuse limits and case-insensitive addresses.

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use stellar_common::with_db;
use stellar_tests::both_dbs;
use stellar_tests::harness::{billing_stack, Backend, Stack};
use stellar_tests::smtp::{Mail, SmtpCatcher};
use stellar_tests::spawn::{repo_root, TempDir};

/// What `billing.public_url` is in these tests (a loopback host: no `Secure` on the cookie).
const PUBLIC_URL: &str = "http://127.0.0.1:8080";
const PRODUCT: &str = "People Test";
/// The one answer of `/auth/register` and `/auth/sign-in`, byte for byte.
const CHECK_MAIL: &str = r#"{"detail":"Check your e-mail to continue"}"#;
const COOKIE: &str = "stellar_session";
const SESSION_TTL_SECS: &str = "7200";
/// Every request says who it is, so the session list can show it.
const UA: &str = "stellar-people-test/1";
const NOT_VALID: &str = "This link is not valid";
const EXPIRED: &str = "This link has expired: ask for a new one";
const USED: &str = "This link has already been used";
const CSRF: &str = "Missing or wrong CSRF token";
const TOO_MANY: &str = "Too many requests: try again later";

/* ---------- the stack: billing + SMTP catcher ---------- */

struct Env {
    s: Stack,
    c: SmtpCatcher,
    /// Holds the tiers file, when the test has its own.
    _tiers: Option<TempDir>,
}

/// Billing's environment: verified sign-up, mail to `smtp` polled fast with short retries,
/// abuse limits high enough not to matter (the abuse test lowers them), then `extra` (wins).
fn people_env(smtp: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = [
        ("STELLAR_AUTH_IMMEDIATE_KEY", "false"),
        ("STELLAR_AUTH_SESSION_TTL_SECS", SESSION_TTL_SECS),
        ("STELLAR_AUTH_MAILS_PER_ADDRESS_PER_HOUR", "1000"),
        ("STELLAR_AUTH_MAIL_REQUESTS_PER_IP_PER_HOUR", "1000"),
        ("STELLAR_BILLING_PUBLIC_URL", PUBLIC_URL),
        ("STELLAR_MAIL_FROM", "People Test <mail@people.test>"),
        ("STELLAR_MAIL_PRODUCT_NAME", PRODUCT),
        ("STELLAR_MAIL_POLL_INTERVAL_SECS", "0.1"),
        ("STELLAR_MAIL_SEND_TIMEOUT_SECS", "2.0"),
        ("STELLAR_MAIL_RETRY_BASE_SECS", "0.2"),
        ("STELLAR_MAIL_RETRY_MAX_SECS", "0.5"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    env.push(("STELLAR_MAIL_SMTP_URL", smtp.to_string()));
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k, v.clone()));
    }
    env
}

/// The repository's tier table with the free tier's `max_members` and `max_api_keys` changed.
fn tiers_with_free(members: i64, keys: i64) -> (TempDir, String) {
    let src = std::fs::read_to_string(repo_root().join("config/tiers.toml")).expect("tiers.toml");
    let mut table: toml::Table = src.parse().expect("tiers.toml parses");
    let free = table
        .get_mut("free")
        .and_then(|t| t.as_table_mut())
        .expect("[free]");
    free.insert("max_members".into(), members.into());
    free.insert("max_api_keys".into(), keys.into());
    let dir = TempDir::new("people-tiers");
    let path = dir.path().join("tiers.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    (dir, path.display().to_string())
}

impl Env {
    async fn start(backend: Backend, extra: &[(&'static str, &str)]) -> Option<Env> {
        let extra: Vec<_> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Self::start_with(backend, extra, None).await
    }

    /// With a tier table whose free tier has room for 3 people and 10 keys.
    async fn start_team(backend: Backend) -> Option<Env> {
        let (dir, path) = tiers_with_free(3, 10);
        Self::start_with(backend, vec![("STELLAR_TIERS_FILE", path)], Some(dir)).await
    }

    async fn start_with(
        backend: Backend,
        extra: Vec<(&'static str, String)>,
        tiers: Option<TempDir>,
    ) -> Option<Env> {
        let c = SmtpCatcher::start().await;
        let env = people_env(&c.url(), &extra);
        let s = billing_stack(backend, false, &env).await?;
        Some(Env {
            s,
            c,
            _tiers: tiers,
        })
    }
}

/* ---------- HTTP ---------- */

/// Who a request is from.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Key(&'a str),
    /// The session cookie, and its CSRF token on a method other than GET/HEAD.
    Session(&'a Session),
    /// The session cookie without any CSRF header.
    CookieOnly(&'a Session),
    /// The session cookie with this CSRF header.
    CookieCsrf(&'a Session, &'a str),
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    text: String,
    body: Value,
}

impl Resp {
    /// Assert the status (the answer in the message); returns the body.
    #[track_caller]
    fn want(&self, status: u16, what: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "{what}: got {} {}",
            self.status, self.text
        );
        &self.body
    }

    /// 403 naming the caller's role: `Your role (member) cannot …`.
    #[track_caller]
    fn want_role_refusal(&self, role: &str, what: &str) {
        self.want(403, what);
        let detail = self.body["detail"].as_str().unwrap_or("");
        assert!(
            detail.starts_with(&format!("Your role ({role}) cannot")),
            "{what}: {}",
            self.text
        );
    }

    /// Assert status and `detail` exactly.
    #[track_caller]
    fn want_detail(&self, status: u16, detail: &str, what: &str) {
        assert_eq!(
            (self.status, self.body["detail"].as_str()),
            (status, Some(detail)),
            "{what}: got {} {}",
            self.status,
            self.text
        );
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Set-Cookie` for the session cookie, if any.
    fn session_cookie(&self) -> Option<SetCookie> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(SetCookie::parse)
            .find(|c| c.name == COOKIE)
    }
}

#[derive(Debug)]
struct SetCookie {
    raw: String,
    name: String,
    value: String,
    /// (lower-cased attribute name, value).
    attrs: Vec<(String, Option<String>)>,
}

impl SetCookie {
    fn parse(raw: &str) -> SetCookie {
        let mut parts = raw.split(';').map(str::trim);
        let (name, value) = parts
            .next()
            .unwrap_or("")
            .split_once('=')
            .unwrap_or(("", ""));
        let attrs = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (p.to_ascii_lowercase(), None),
            })
            .collect();
        SetCookie {
            raw: raw.to_string(),
            name: name.to_string(),
            value: value.to_string(),
            attrs,
        }
    }

    fn attr(&self, name: &str) -> Option<Option<&str>> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// Max-Age=0, or an Expires in the past: the browser drops the cookie.
    fn clears(&self) -> bool {
        let max_age_zero = self.attr("max-age").flatten().is_some_and(|v| v == "0");
        let expired = self
            .attr("expires")
            .flatten()
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .is_some_and(|t| t < chrono::Utc::now());
        max_age_zero || expired
    }
}

/// A signed-in person: the cookie's value and what `POST /auth/link` said.
#[derive(Debug, Clone)]
struct Session {
    token: String,
    csrf: String,
    email: String,
    account_id: String,
    role: String,
    /// The whole answer of `POST /auth/link`.
    link: Value,
}

impl Env {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>, who: As<'_>) -> Resp {
        let safe = method == Method::GET || method == Method::HEAD;
        let mut r = self
            .s
            .http
            .request(method, format!("{}{path}", self.s.billing().url))
            .header("user-agent", UA);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let (session, csrf) = match who {
            As::Nobody => (None, None),
            As::Key(k) => {
                r = r.header("x-api-key", k);
                (None, None)
            }
            As::Session(s) => (Some(s), (!safe).then_some(s.csrf.as_str())),
            As::CookieOnly(s) => (Some(s), None),
            As::CookieCsrf(s, t) => (Some(s), Some(t)),
        };
        if let Some(s) = session {
            r = r.header("cookie", format!("{COOKIE}={}", s.token));
        }
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        let resp = r.send().await.expect("billing answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    async fn get(&self, path: &str, who: As<'_>) -> Resp {
        self.call(Method::GET, path, None, who).await
    }

    async fn post(&self, path: &str, body: Value, who: As<'_>) -> Resp {
        self.call(Method::POST, path, Some(&body), who).await
    }

    async fn patch(&self, path: &str, body: Value, who: As<'_>) -> Resp {
        self.call(Method::PATCH, path, Some(&body), who).await
    }

    async fn delete(&self, path: &str, who: As<'_>) -> Resp {
        self.call(Method::DELETE, path, None, who).await
    }

    /// `POST /auth/register` or `/auth/sign-in` for `email` (as typed).
    async fn ask(&self, path: &str, email: &str) -> Resp {
        self.post(path, json!({ "email": email }), As::Nobody).await
    }

    async fn open(&self, token: &str) -> Resp {
        self.post("/auth/link", json!({ "token": token }), As::Nobody)
            .await
    }

    /// Open `token`, expecting 200 with `purpose` and a session cookie.
    async fn open_ok(&self, token: &str, purpose: &str) -> Session {
        let r = self.open(token).await;
        let v = r.want(200, "POST /auth/link").clone();
        assert_eq!(v["purpose"], purpose, "{v}");
        let cookie = r
            .session_cookie()
            .unwrap_or_else(|| panic!("no {COOKIE} cookie set: {:?}", r.headers));
        assert!(!cookie.value.is_empty(), "{}", cookie.raw);
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("no {k} in {v}"))
                .to_string()
        };
        Session {
            token: cookie.value,
            csrf: field("csrf_token"),
            email: field("email"),
            account_id: field("account_id"),
            role: field("role"),
            link: v,
        }
    }

    /// `GET /auth/session` with `s`: 200 and its answer.
    async fn whoami(&self, s: &Session) -> Value {
        self.get("/auth/session", As::Session(s))
            .await
            .want(200, "GET /auth/session")
            .clone()
    }

    /// `GET /auth/session` with `s` is 401 (the session has ended).
    async fn assert_ended(&self, s: &Session, what: &str) {
        let r = self.get("/auth/session", As::Session(s)).await;
        r.want(401, what);
        assert!(r.body["detail"].is_string(), "{}", r.text);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"stellar\""),
            "{what}"
        );
    }

    /// The address the key belongs to (`GET /auth/usage` with it is 200), or the status.
    async fn key_works(&self, key: &str) -> Result<String, u16> {
        let r = self.get("/auth/usage", As::Key(key)).await;
        match r.status {
            200 => Ok(r.body["email"].as_str().unwrap_or_default().to_string()),
            s => Err(s),
        }
    }

    /* ---------- mail ---------- */

    /// The `n`-th mail (from 1) to `to`, waiting up to 20 s for it.
    async fn mail(&self, to: &str, n: usize) -> Mail {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.c.messages_to(to);
            if got.len() >= n {
                return got[n - 1].mail();
            }
            assert!(
                Instant::now() < deadline,
                "mail #{n} to {to} not received ({} so far)\nbilling log:\n{}",
                got.len(),
                self.s.billing().log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn mails(&self, to: &str) -> usize {
        self.c.messages_to(to).len()
    }

    /// Wait until the outbox has nothing left to send: every mail the requests so far caused
    /// has then reached the catcher.
    async fn settle(&self) {
        self.s
            .until(Duration::from_secs(20), "outbox drained", || async {
                self.count("SELECT COUNT(*) FROM outbox WHERE status = $1", "pending")
                    .await
                    == 0
            })
            .await;
    }

    /// Ask `path` for `email` (as typed), expect the one 202 answer without a cookie, and return
    /// the token of the next mail to `to` after checking its kind.
    async fn link_for(&self, path: &str, email: &str, to: &str, kind: Kind) -> String {
        let n = self.mails(to);
        let r = self.ask(path, email).await;
        assert_eq!((r.status, r.text.as_str()), (202, CHECK_MAIL), "{path}");
        assert!(r.session_cookie().is_none(), "{path} signs nobody in");
        let m = self.mail(to, n + 1).await;
        assert_eq!(kind_of(&m), kind, "{m:?}");
        token_of(&m)
    }

    /// Register `email`, open the verification link: the owner's session and first key.
    async fn sign_up(&self, email: &str) -> (Session, String) {
        let token = self
            .link_for("/auth/register", email, email, Kind::Verification)
            .await;
        let s = self.open_ok(&token, "verification").await;
        let key = s.link["api_key"]
            .as_str()
            .unwrap_or_else(|| panic!("the first key: {}", s.link))
            .to_string();
        (s, key)
    }

    /// Sign in by link.
    async fn sign_in(&self, email: &str) -> Session {
        let token = self
            .link_for("/auth/sign-in", email, email, Kind::SignIn)
            .await;
        let s = self.open_ok(&token, "sign_in").await;
        assert!(s.link.get("api_key").is_none(), "{}", s.link);
        s
    }

    /* ---------- the account DB ---------- */

    async fn count(&self, sql: &str, arg: &str) -> i64 {
        with_db!(&self.s.adb.db, p => sqlx::query_scalar::<_, i64>(sql).bind(arg).fetch_one(p).await)
            .unwrap()
    }

    async fn count_all(&self, sql: &str) -> i64 {
        with_db!(&self.s.adb.db, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await).unwrap()
    }

    /// Keys (active or not) of the account whose owner is `email`.
    async fn keys_of(&self, email: &str) -> i64 {
        self.count(
            "SELECT COUNT(*) FROM api_keys k JOIN users u ON u.id = k.user_id WHERE u.email = $1",
            email,
        )
        .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Verification,
    SignIn,
    Invitation,
}

fn kind_of(m: &Mail) -> Kind {
    let subject = m.header("Subject").unwrap_or_default();
    if subject == format!("Confirm your e-mail address for {PRODUCT}") {
        Kind::Verification
    } else if subject == format!("Your {PRODUCT} sign-in link") {
        Kind::SignIn
    } else if subject.ends_with(&format!(" invited you to {PRODUCT}")) {
        Kind::Invitation
    } else {
        panic!("unexpected mail: {subject}")
    }
}

/// The token of the mail's one link, `{public_url}/auth/link#token=<token>`, checked to be in
/// both parts.
fn token_of(m: &Mail) -> String {
    let links = m.links();
    assert_eq!(links.len(), 1, "one link in the text part: {links:?}");
    let (page, token) = links[0]
        .split_once("#token=")
        .unwrap_or_else(|| panic!("the token travels in the fragment: {}", links[0]));
    assert_eq!(page, format!("{PUBLIC_URL}/auth/link"), "{}", links[0]);
    assert!(
        !token.is_empty() && !token.contains(['&', '#', '?']),
        "{token}"
    );
    let html = m.html().expect("an HTML part");
    assert!(
        html.contains(&format!("href=\"{}\"", links[0])),
        "the HTML part links the same: {html}"
    );
    token.to_string()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The only key of a list (`GET /auth/api-keys`) that is active.
fn active_ids(keys: &Value) -> Vec<String> {
    keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["is_active"] == true)
        .map(|k| str_of(&k["id"]))
        .collect()
}

/* ---------- 1. verified sign-up ---------- */

async fn verified_sign_up(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let alice = "alice@example.com";
    let r = e.ask("/auth/register", alice).await;
    assert_eq!((r.status, r.text.as_str()), (202, CHECK_MAIL));
    assert!(r.session_cookie().is_none());
    assert_eq!(
        e.count("SELECT COUNT(*) FROM users WHERE email = $1", alice)
            .await,
        1
    );
    assert_eq!(
        e.keys_of(alice).await,
        0,
        "an unverified account has no key"
    );

    // One verification mail, its link in both parts.
    let m = e.mail(alice, 1).await;
    assert_eq!(kind_of(&m), Kind::Verification);
    let token = token_of(&m);
    assert!(m.text().unwrap().contains(PRODUCT));

    // The link page: fetching it (as a mail scanner would) consumes nothing.
    let page = e.get("/auth/link", As::Nobody).await;
    page.want(200, "GET /auth/link");
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    assert!(page
        .header("cache-control")
        .unwrap_or("")
        .contains("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    // Opening it: the account's first key, shown once, and a session.
    let r = e.open(&token).await;
    let v = r.want(200, "verification link").clone();
    assert_eq!(
        (
            v["purpose"].as_str(),
            v["email"].as_str(),
            v["role"].as_str()
        ),
        (Some("verification"), Some(alice), Some("owner")),
        "{v}"
    );
    for k in ["account_id", "csrf_token"] {
        assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {v}");
    }
    assert!(v.get("next").is_some(), "{v}");
    let key = v["api_key"].as_str().expect("the first key").to_string();
    assert!(stellar_common::keys::is_well_formed(&key), "{key}");
    assert_eq!(e.key_works(&key).await, Ok(alice.to_string()));
    assert_eq!(e.keys_of(alice).await, 1);

    let cookie = r.session_cookie().expect("session cookie");
    assert!(cookie.value.len() >= 20, "{}", cookie.raw);
    assert_eq!(cookie.attr("httponly"), Some(None), "{}", cookie.raw);
    assert_eq!(
        cookie
            .attr("samesite")
            .flatten()
            .map(str::to_ascii_lowercase),
        Some("lax".into()),
        "{}",
        cookie.raw
    );
    assert_eq!(cookie.attr("path"), Some(Some("/")), "{}", cookie.raw);
    assert_eq!(
        cookie.attr("max-age"),
        Some(Some(SESSION_TTL_SECS)),
        "{}",
        cookie.raw
    );
    assert_eq!(cookie.attr("secure"), None, "loopback: {}", cookie.raw);

    // The same link again: used, nothing new.
    let again = e.open(&token).await;
    again.want_detail(410, USED, "the verification link a second time");
    assert!(again.session_cookie().is_none());
    assert!(again.body.get("api_key").is_none());
    assert_eq!(e.keys_of(alice).await, 1);

    // The session.
    let s = Session {
        token: cookie.value,
        csrf: v["csrf_token"].as_str().unwrap().to_string(),
        email: alice.into(),
        account_id: v["account_id"].as_str().unwrap().to_string(),
        role: "owner".into(),
        link: v.clone(),
    };
    let who = e.whoami(&s).await;
    assert_eq!(
        (
            who["email"].as_str(),
            who["role"].as_str(),
            who["tier"].as_str()
        ),
        (Some(alice), Some("owner"), Some("free")),
        "{who}"
    );
    assert_eq!(who["account_id"], v["account_id"]);
    assert_eq!(who["csrf_token"], v["csrf_token"], "{who}");
    assert!(who["session_id"].is_string(), "{who}");
    let accounts = who["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1, "{who}");
    assert_eq!(
        (
            &accounts[0]["account_id"],
            accounts[0]["owner_email"].as_str(),
            accounts[0]["role"].as_str()
        ),
        (&v["account_id"], Some(alice), Some("owner"))
    );

    // The cookie works where a key does; a key in the request decides alone.
    let usage = e.get("/auth/usage", As::Session(&s)).await;
    assert_eq!(usage.want(200, "usage by cookie")["email"], alice);
    let wrong_key =
        e.s.http
            .get(format!("{}/auth/usage", e.s.billing().url))
            .header("cookie", format!("{COOKIE}={}", s.token))
            .header("x-api-key", "sk-stellar-not-a-real-key");
    assert_eq!(wrong_key.send().await.unwrap().status().as_u16(), 401);
    e.assert_ended(
        &Session {
            token: "nonsense".into(),
            ..s.clone()
        },
        "an unknown cookie",
    )
    .await;
    assert_eq!(e.get("/auth/session", As::Nobody).await.status, 401);

    // Nothing else was mailed.
    e.settle().await;
    assert_eq!(e.mails(alice), 1);
}

/* ---------- 2. no enumeration ---------- */

async fn no_enumeration(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let (known, new, stranger) = ("bob@example.com", "carol@example.com", "dave@example.com");
    let (_, bob_key) = e.sign_up(known).await;

    let a = e.ask("/auth/register", new).await;
    let b = e.ask("/auth/register", known).await;
    assert_eq!((a.status, a.text.as_str()), (202, CHECK_MAIL));
    assert_eq!(
        (b.status, b.text.as_str()),
        (a.status, a.text.as_str()),
        "new and known addresses get the same answer"
    );
    assert_eq!(
        a.header("content-type"),
        b.header("content-type"),
        "{:?} / {:?}",
        a.headers,
        b.headers
    );

    // The known address gets a sign-in link (no key); the new one a verification link.
    let m = e.mail(known, 2).await;
    assert_eq!(
        kind_of(&m),
        Kind::SignIn,
        "a known address is not verified again"
    );
    let s = e.open_ok(&token_of(&m), "sign_in").await;
    assert!(s.link.get("api_key").is_none(), "{}", s.link);
    assert_eq!((s.email.as_str(), s.role.as_str()), (known, "owner"));
    assert_eq!(e.keys_of(known).await, 1, "no new key");
    assert_eq!(e.key_works(&bob_key).await, Ok(known.to_string()));
    assert_eq!(kind_of(&e.mail(new, 1).await), Kind::Verification);

    // Sign-in: an unknown address gets the same answer, and no mail, and no account.
    let unknown = e.ask("/auth/sign-in", stranger).await;
    let existing = e.ask("/auth/sign-in", known).await;
    assert_eq!((unknown.status, unknown.text.as_str()), (202, CHECK_MAIL));
    assert_eq!((existing.status, existing.text.as_str()), (202, CHECK_MAIL));
    assert_eq!(
        e.count("SELECT COUNT(*) FROM outbox WHERE recipient = $1", stranger)
            .await,
        0,
        "nothing queued for an unknown address"
    );
    assert_eq!(kind_of(&e.mail(known, 3).await), Kind::SignIn);
    e.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.mails(stranger), 0, "no mail to an unknown address");
    assert_eq!(
        e.count("SELECT COUNT(*) FROM users WHERE email = $1", stranger)
            .await,
        0,
        "sign-in creates no account"
    );

    // An unverified owner who asks to sign in gets a verification link again.
    let t = e
        .link_for("/auth/sign-in", new, new, Kind::Verification)
        .await;
    let carol = e.open_ok(&t, "verification").await;
    assert!(carol.link["api_key"].is_string(), "{}", carol.link);

    // Invalid addresses: 422 on both, nothing mailed.
    for bad in ["not-an-email", "", "a@b"] {
        for path in ["/auth/register", "/auth/sign-in"] {
            let r = e.ask(path, bad).await;
            r.want(422, &format!("{path} {bad:?}"));
            assert!(r.body["detail"].is_string(), "{}", r.text);
        }
    }
    e.settle().await;
    assert_eq!(
        e.c.messages().len(),
        5,
        "bob 3, carol 2: {:#?}",
        e.c.messages()
    );
}

/* ---------- 3. sign-in by link ---------- */

async fn sign_in_by_link(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let erin = "erin@example.com";
    let (first, _key) = e.sign_up(erin).await;
    let s = e.sign_in(erin).await;
    assert_eq!(
        (s.email.as_str(), s.role.as_str(), s.account_id.as_str()),
        (erin, "owner", first.account_id.as_str())
    );
    let who = e.whoami(&s).await;
    assert_eq!(who["email"], erin);
    assert_ne!(s.token, first.token, "a new session");
    let sessions = || e.count_all("SELECT COUNT(*) FROM sessions");
    assert_eq!(sessions().await, 2);

    // An expired link: 410, and it stays so; no session, the token unused.
    let token = e.link_for("/auth/sign-in", erin, erin, Kind::SignIn).await;
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    let n = with_db!(&e.s.adb.db, p => sqlx::query(
        "UPDATE auth_tokens SET expires_at = $1 WHERE email = $2 AND used_at IS NULL")
        .bind(past).bind(erin).execute(p).await.map(|r| r.rows_affected()))
    .unwrap();
    assert_eq!(n, 1, "the one open link, made to have expired");
    for _ in 0..2 {
        let r = e.open(&token).await;
        r.want_detail(410, EXPIRED, "an expired link");
        assert!(r.session_cookie().is_none());
    }
    assert_eq!(
        e.count(
            "SELECT COUNT(*) FROM auth_tokens WHERE email = $1 AND used_at IS NOT NULL",
            erin
        )
        .await,
        2,
        "only the two opened links are used"
    );

    // Garbage: 400, nothing changes.
    let unknown_but_well_formed = "A".repeat(43);
    for garbage in [
        "garbage",
        "",
        unknown_but_well_formed.as_str(),
        &format!("{token}x"),
    ] {
        let r = e.open(garbage).await;
        r.want_detail(400, NOT_VALID, &format!("token {garbage:?}"));
        assert!(r.session_cookie().is_none());
    }
    // Not a token at all: the shape is wrong.
    for body in [json!({}), json!({ "token": 5 }), json!(["x"])] {
        let r = e.post("/auth/link", body.clone(), As::Nobody).await;
        r.want(422, &format!("POST /auth/link {body}"));
    }
    assert_eq!(sessions().await, 2, "no session from a bad link");

    // A fresh link still works.
    let again = e.sign_in(erin).await;
    assert_eq!(again.account_id, first.account_id);
    assert_eq!(sessions().await, 3);
}

/* ---------- 4. lost-all-keys recovery ---------- */

async fn lost_keys(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let lee = "lee@example.com";
    let (first, key) = e.sign_up(lee).await;
    let list = e.get("/auth/api-keys", As::Key(&key)).await;
    let ids = active_ids(list.want(200, "keys"));
    assert_eq!(ids.len(), 1);

    // Rotated away and the replacement forgotten: no key in hand works.
    e.post(
        &format!("/auth/api-keys/{}/rotate", ids[0]),
        json!({}),
        As::Key(&key),
    )
    .await
    .want(201, "rotate");
    assert_eq!(e.key_works(&key).await, Err(401));

    let s = e.sign_in(lee).await;
    let list = e.get("/auth/api-keys", As::Session(&s)).await;
    let forgotten = active_ids(list.want(200, "keys by cookie"));
    assert_eq!(forgotten.len(), 1, "{}", list.text);
    let rotate = format!("/auth/api-keys/{}/rotate", forgotten[0]);

    // Rotation by cookie needs the CSRF token.
    e.post(&rotate, json!({}), As::CookieOnly(&s))
        .await
        .want_detail(403, CSRF, "rotate without CSRF");
    e.post(&rotate, json!({}), As::CookieCsrf(&s, &first.csrf))
        .await
        .want_detail(403, CSRF, "rotate with another session's CSRF token");
    let list = e.get("/auth/api-keys", As::Session(&s)).await;
    assert_eq!(active_ids(&list.body), forgotten, "nothing rotated");

    let r = e.post(&rotate, json!({}), As::Session(&s)).await;
    let v = r.want(201, "rotate by cookie + CSRF");
    assert_eq!(str_of(&v["replaces"]), forgotten[0]);
    let rotated = v["api_key"].as_str().expect("the new key").to_string();
    assert_eq!(e.key_works(&rotated).await, Ok(lee.to_string()));

    // Every key revoked (as DELETE would): the signed-in person creates one.
    let mut active = active_ids(&e.get("/auth/api-keys", As::Session(&s)).await.body);
    assert_eq!(active.len(), 1);
    stellar_tests::accounts::revoke_key(&e.s.adb.db, active.remove(0).parse().unwrap()).await;
    e.s.until(Duration::from_secs(5), "revoked key refused", || async {
        e.key_works(&rotated).await == Err(401)
    })
    .await;
    let none = e.get("/auth/api-keys", As::Session(&s)).await;
    assert!(active_ids(none.want(200, "keys")).is_empty());

    let body = json!({ "name": "Recovered" });
    for (who, what) in [
        (As::CookieOnly(&s), "without CSRF"),
        (As::CookieCsrf(&s, "wrong"), "with a wrong CSRF token"),
        (As::CookieCsrf(&s, ""), "with an empty CSRF token"),
        (
            As::CookieCsrf(&s, &first.csrf),
            "with another session's CSRF",
        ),
    ] {
        e.post("/auth/api-keys", body.clone(), who)
            .await
            .want_detail(403, CSRF, &format!("create a key {what}"));
    }
    let still = e.get("/auth/api-keys", As::Session(&s)).await;
    assert!(
        active_ids(&still.body).is_empty(),
        "no key created: {}",
        still.text
    );

    let r = e.post("/auth/api-keys", body, As::Session(&s)).await;
    let v = r.want(201, "create a key by cookie + CSRF");
    assert_eq!(v["name"], "Recovered");
    let new_key = v["api_key"].as_str().expect("shown once").to_string();
    assert_eq!(e.key_works(&new_key).await, Ok(lee.to_string()));
    let list = e.get("/auth/api-keys", As::Key(&new_key)).await;
    assert_eq!(active_ids(&list.body), [str_of(&v["id"])]);
}

/* ---------- 5. squatting ---------- */

async fn squatting(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let victim = "victor@example.com";

    // The attacker registers the victim's address, twice, and asks to sign in as them.
    let mut answers = Vec::new();
    for path in ["/auth/register", "/auth/register", "/auth/sign-in"] {
        answers.push(e.ask(path, victim).await);
    }
    for r in &answers {
        assert_eq!(
            (r.status, r.text.as_str()),
            (202, CHECK_MAIL),
            "no key, nothing"
        );
        assert!(r.session_cookie().is_none());
    }
    assert_eq!(e.keys_of(victim).await, 0, "no key exists yet");

    // Every mail went to the victim, each a verification link.
    let first = e.mail(victim, 1).await;
    let last = e.mail(victim, 3).await;
    assert_eq!(kind_of(&first), Kind::Verification);
    assert_eq!(kind_of(&last), Kind::Verification);
    let owner = e.open_ok(&token_of(&last), "verification").await;
    let key = owner.link["api_key"]
        .as_str()
        .expect("the victim's key")
        .to_string();
    assert_eq!(e.key_works(&key).await, Ok(victim.to_string()));
    assert_eq!(owner.role, "owner");

    // An older verification link (each is single use on its own) signs the victim in, but
    // never hands out a second first key.
    let r = e.open(&token_of(&first)).await;
    r.want(200, "the first of the victim's verification links");
    assert_eq!(r.body["email"], victim);
    assert!(
        r.body.get("api_key").is_none(),
        "an older link gave another key: {}",
        r.text
    );
    assert_eq!(e.keys_of(victim).await, 1);

    // Later attempts: still nothing for the attacker; the victim gets sign-in links.
    let before = e.mails(victim);
    for path in ["/auth/register", "/auth/sign-in"] {
        let r = e.ask(path, victim).await;
        assert_eq!((r.status, r.text.as_str()), (202, CHECK_MAIL));
        assert!(r.session_cookie().is_none());
    }
    e.settle().await;
    assert_eq!(e.mails(victim), before + 2);
    for m in &e.c.messages_to(victim)[before..] {
        assert_eq!(kind_of(&m.mail()), Kind::SignIn);
    }
    assert_eq!(e.key_works(&key).await, Ok(victim.to_string()));
    assert_eq!(e.keys_of(victim).await, 1);

    // The victim signs in.
    let s = e.sign_in(victim).await;
    assert_eq!(
        (s.account_id.as_str(), s.role.as_str()),
        (owner.account_id.as_str(), "owner")
    );
}

/* ---------- 6. sessions ---------- */

async fn sessions(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let sam = "sam@example.com";
    let (a, key) = e.sign_up(sam).await;
    let b = e.sign_in(sam).await;
    let a_id = str_of(&e.whoami(&a).await["session_id"]);
    let b_id = str_of(&e.whoami(&b).await["session_id"]);
    assert_ne!(a_id, b_id);

    let list = e.get("/auth/sessions", As::Session(&b)).await;
    let all = list.want(200, "sessions")["sessions"]
        .as_array()
        .expect("sessions")
        .clone();
    assert_eq!(all.len(), 2, "{}", list.text);
    let ids: HashSet<String> = all.iter().map(|s| str_of(&s["id"])).collect();
    assert_eq!(ids, HashSet::from([a_id.clone(), b_id.clone()]));
    let current: Vec<String> = all
        .iter()
        .filter(|s| s["current"] == true)
        .map(|s| str_of(&s["id"]))
        .collect();
    assert_eq!(current, std::slice::from_ref(&b_id), "{}", list.text);
    for s in &all {
        assert_eq!(s["user_agent"], UA, "{s}");
        assert!(
            s["ip"].as_str().is_some_and(|ip| ip.contains("127.0.0.1")),
            "{s}"
        );
        for k in ["created_at", "last_seen_at", "expires_at"] {
            assert!(s[k].is_string(), "{k}: {s}");
        }
    }
    // With a key: the same person's sessions, none of them "current".
    let by_key = e.get("/auth/sessions", As::Key(&key)).await;
    let by_key = by_key.want(200, "sessions by key")["sessions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(by_key.len(), 2);
    assert!(by_key.iter().all(|s| s["current"] != true), "{by_key:?}");

    // Someone else's session, or none: 404, nothing revoked.
    let (other, _) = e.sign_up("tom@example.com").await;
    let other_id = str_of(&e.whoami(&other).await["session_id"]);
    e.delete(&format!("/auth/sessions/{other_id}"), As::Session(&b))
        .await
        .want(404, "another person's session");
    e.whoami(&other).await;
    e.delete(
        &format!("/auth/sessions/{}", uuid::Uuid::new_v4()),
        As::Session(&b),
    )
    .await
    .want(404, "no such session");

    // Revoke the other session: CSRF first, then it ends at once.
    let path = format!("/auth/sessions/{a_id}");
    e.delete(&path, As::CookieOnly(&b))
        .await
        .want_detail(403, CSRF, "revoke without CSRF");
    e.delete(&path, As::CookieCsrf(&b, &a.csrf))
        .await
        .want_detail(403, CSRF, "revoke with the other session's CSRF token");
    e.whoami(&a).await;
    let r = e.delete(&path, As::Session(&b)).await;
    let v = r.want(200, "revoke a session");
    assert_eq!(
        (str_of(&v["id"]), &v["revoked"]),
        (a_id.clone(), &json!(true))
    );
    e.assert_ended(&a, "a revoked session").await;
    assert_eq!(
        e.get("/auth/usage", As::Session(&a)).await.status,
        401,
        "a revoked session is refused everywhere"
    );
    let list = e.get("/auth/sessions", As::Session(&b)).await;
    let left = list.body["sessions"].as_array().expect("sessions").clone();
    assert_eq!(left.len(), 1, "{}", list.text);
    assert_eq!(str_of(&left[0]["id"]), b_id);

    // Sign-out: CSRF first; then the session ends and the cookie is cleared.
    e.post("/auth/sign-out", json!({}), As::CookieOnly(&b))
        .await
        .want_detail(403, CSRF, "sign-out without CSRF");
    e.whoami(&b).await;
    let r = e.post("/auth/sign-out", json!({}), As::Session(&b)).await;
    assert_eq!(r.want(200, "sign-out"), &json!({ "signed_out": true }));
    let cleared = r.session_cookie().expect("the answer clears the cookie");
    assert!(cleared.clears(), "{}", cleared.raw);
    assert_eq!(cleared.attr("path"), Some(Some("/")), "{}", cleared.raw);
    e.assert_ended(&b, "after sign-out").await;
    assert_eq!(
        e.post("/auth/sign-out", json!({}), As::Session(&b))
            .await
            .status,
        401
    );
    // The key is untouched, and the other account's session too.
    assert_eq!(e.key_works(&key).await, Ok(sam.to_string()));
    e.whoami(&other).await;
    let by_key = e.get("/auth/sessions", As::Key(&key)).await;
    assert_eq!(by_key.body["sessions"].as_array().map(Vec::len), Some(0));
}

/* ---------- 7. invitations and roles ---------- */

/// The member rows of `GET /auth/members`, by address.
fn member_id(members: &Value, email: &str) -> String {
    members["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["email"] == email)
        .map(|m| str_of(&m["id"]))
        .unwrap_or_else(|| panic!("{email} not a member: {members}"))
}

impl Env {
    /// `POST /auth/members` as `who`.
    async fn ask_invite(&self, who: As<'_>, email: &str, role: &str) -> Resp {
        self.post(
            "/auth/members",
            json!({ "email": email, "role": role }),
            who,
        )
        .await
    }

    /// Invite `email` as `role`; 202 and the invitation's id.
    async fn invite(&self, who: As<'_>, email: &str, role: &str) -> String {
        let r = self.ask_invite(who, email, role).await;
        let v = r.want(202, &format!("invite {email} as {role}"));
        assert_eq!(
            (v["email"].as_str(), v["role"].as_str()),
            (Some(email), Some(role))
        );
        assert!(v["expires_at"].is_string(), "{v}");
        str_of(&v["invitation_id"])
    }

    /// The invitation mail to `email` (the latest) opened: the new member's session.
    async fn accept(&self, email: &str, inviter: &str) -> Session {
        let n = self.mails(email).max(1);
        let m = self.mail(email, n).await;
        assert_eq!(kind_of(&m), Kind::Invitation);
        assert_eq!(
            m.header("Subject").unwrap(),
            format!("{inviter} invited you to {PRODUCT}")
        );
        self.open_ok(&token_of(&m), "invitation").await
    }
}

async fn invitations_and_roles(backend: Backend) {
    let Some(e) = Env::start_team(backend).await else {
        return;
    };
    let (olive, adam, mia) = ("olive@example.com", "adam@example.com", "mia@example.com");
    let (owner, owner_key) = e.sign_up(olive).await;
    let o = As::Session(&owner);
    let acct = owner.account_id.clone();

    // The owner's first key acts as the owner: it invites an admin.
    e.invite(As::Key(&owner_key), adam, "admin").await;
    let members = e.get("/auth/members", o).await;
    let v = members.want(200, "members").clone();
    assert_eq!(v["max_members"], 3, "{v}");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1), "{v}");
    let inv = v["invitations"].as_array().expect("invitations");
    assert_eq!(inv.len(), 1, "{v}");
    assert_eq!(
        (inv[0]["email"].as_str(), inv[0]["role"].as_str()),
        (Some(adam), Some("admin"))
    );
    let owner_mid = member_id(&v, olive);
    assert!(
        inv[0]["invited_by"] == olive || str_of(&inv[0]["invited_by"]) == owner_mid,
        "invited_by names the owner: {v}"
    );

    let ad = e.accept(adam, olive).await;
    assert_eq!(
        (ad.email.as_str(), ad.role.as_str(), ad.account_id.as_str()),
        (adam, "admin", acct.as_str())
    );
    assert!(ad.link.get("api_key").is_none(), "{}", ad.link);
    let who = e.whoami(&ad).await;
    let accounts = who["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1, "{who}");
    assert_eq!(accounts[0]["owner_email"], olive);
    assert_eq!(accounts[0]["role"], "admin");
    let a = As::Session(&ad);

    // An admin invites members, not admins.
    let r = e.ask_invite(a, "al@example.com", "admin").await;
    r.want_role_refusal("admin", "an admin invites an admin");
    e.invite(a, mia, "member").await;
    let v = e.get("/auth/members", o).await.body;
    let pending = v["invitations"].as_array().expect("invitations");
    assert_eq!(pending.len(), 1, "{v}");
    let adam_mid = member_id(&v, adam);
    assert!(
        pending[0]["invited_by"] == adam || str_of(&pending[0]["invited_by"]) == adam_mid,
        "invited_by names the admin: {v}"
    );

    // Seats: owner + admin + a pending invitation = 3 = max_members.
    let r = e.ask_invite(o, "extra@example.com", "member").await;
    r.want(403, "a fourth person");
    assert!(r.body["detail"].is_string());
    assert_eq!(
        e.count(
            "SELECT COUNT(*) FROM outbox WHERE recipient = $1",
            "extra@example.com"
        )
        .await,
        0
    );

    let mm = e.accept(mia, adam).await;
    assert_eq!(
        (mm.role.as_str(), mm.account_id.as_str()),
        ("member", acct.as_str())
    );
    let m = As::Session(&mm);
    let v = e.get("/auth/members", m).await;
    let v = v.want(200, "a member sees the members").clone();
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["invitations"].as_array().map(Vec::len), Some(0), "{v}");
    let mia_mid = member_id(&v, mia);

    // A member: no invitations, no others' keys; their own keys yes.
    let r = e.ask_invite(m, "x@example.com", "member").await;
    r.want_role_refusal("member", "a member invites");
    let owner_key_id = active_ids(&e.get("/auth/api-keys", o).await.body)[0].clone();
    for (method, path) in [
        (Method::DELETE, format!("/auth/api-keys/{owner_key_id}")),
        (
            Method::POST,
            format!("/auth/api-keys/{owner_key_id}/rotate"),
        ),
    ] {
        let r = e.call(method.clone(), &path, None, m).await;
        r.want_role_refusal("member", &format!("a member: {method} {path}"));
    }
    assert_eq!(e.key_works(&owner_key).await, Ok(olive.to_string()));
    let mut member_keys = Vec::new();
    for name in ["mia one", "mia two"] {
        let r = e.post("/auth/api-keys", json!({ "name": name }), m).await;
        let v = r.want(201, "a member creates a key");
        member_keys.push((str_of(&v["id"]), v["api_key"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        e.key_works(&member_keys[0].1).await,
        Ok(olive.to_string()),
        "the account's key"
    );
    let r = e
        .delete(&format!("/auth/api-keys/{}", member_keys[1].0), m)
        .await;
    r.want(200, "a member revokes a key they created");
    assert_eq!(e.key_works(&member_keys[1].1).await, Err(401));
    // The member's key acts as the member.
    let r = e
        .ask_invite(As::Key(&member_keys[0].1), "y@example.com", "member")
        .await;
    r.want_role_refusal("member", "a member's key invites");
    e.delete(
        &format!("/auth/api-keys/{owner_key_id}"),
        As::Key(&member_keys[0].1),
    )
    .await
    .want(403, "a member's key revokes the owner's key");

    // Roles: only below the caller's, before and after.
    let patch = |id: &str| format!("/auth/members/{id}");
    for (who, id, role, want, what) in [
        (a, &mia_mid, "admin", 403, "admin makes a member admin"),
        (a, &owner_mid, "member", 403, "admin demotes the owner"),
        (m, &adam_mid, "member", 403, "member demotes the admin"),
        (m, &mia_mid, "admin", 403, "member promotes themselves"),
        (o, &adam_mid, "owner", 403, "owner makes another owner"),
        (o, &mia_mid, "admin", 200, "owner makes a member admin"),
        (o, &mia_mid, "member", 200, "owner makes them member again"),
        (
            a,
            &mia_mid,
            "member",
            200,
            "admin sets a member's role to member",
        ),
    ] {
        let r = e.patch(&patch(id), json!({ "role": role }), who).await;
        r.want(want, what);
        if want == 200 {
            assert_eq!(
                (r.body["role"].as_str(), r.body["email"].as_str()),
                (Some(role), Some(mia)),
                "{what}"
            );
        }
    }
    let v = e.get("/auth/members", o).await.body;
    let roles: Vec<(String, String)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (str_of(&m["email"]), str_of(&m["role"])))
        .collect();
    assert!(roles.contains(&(olive.into(), "owner".into())), "{v}");
    assert!(roles.contains(&(adam.into(), "admin".into())), "{v}");
    assert!(roles.contains(&(mia.into(), "member".into())), "{v}");

    // The owner cannot be removed, by anyone; an admin cannot remove an admin (itself aside).
    for (who, what) in [
        (a, "admin removes the owner"),
        (m, "member removes the owner"),
        (o, "the owner removes itself"),
    ] {
        e.delete(&patch(&owner_mid), who).await.want(403, what);
    }
    e.delete(&patch(&adam_mid), m)
        .await
        .want(403, "member removes the admin");
    e.whoami(&owner).await;

    // The admin removes the member: sessions end at once, the keys they made are refused.
    let r = e.delete(&patch(&mia_mid), a).await;
    let v = r.want(200, "admin removes the member");
    assert_eq!(
        (str_of(&v["id"]), &v["removed"]),
        (mia_mid.clone(), &json!(true))
    );
    e.assert_ended(&mm, "a removed member's session").await;
    assert_eq!(
        e.key_works(&member_keys[0].1).await,
        Err(401),
        "a removed member's key"
    );
    assert_eq!(e.key_works(&owner_key).await, Ok(olive.to_string()));
    let v = e.get("/auth/members", o).await.body;
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2), "{v}");
    // Someone no longer on any account gets no sign-in mail.
    let before = e.mails(mia);
    let r = e.ask("/auth/sign-in", mia).await;
    assert_eq!((r.status, r.text.as_str()), (202, CHECK_MAIL));
    e.settle().await;
    assert_eq!(e.mails(mia), before, "a removed member is nobody's member");

    // 409 for a member; an invitation cancelled: its link stops working, its seat is free.
    e.ask_invite(o, adam, "member")
        .await
        .want(409, "invite a member again");
    let late = "late@example.com";
    let inv = e.invite(o, late, "member").await;
    let m_late = e.mail(late, 1).await;
    assert_eq!(kind_of(&m_late), Kind::Invitation);
    e.delete(&format!("/auth/invitations/{inv}"), As::CookieOnly(&owner))
        .await
        .want_detail(403, CSRF, "cancel without CSRF");
    let r = e.delete(&format!("/auth/invitations/{inv}"), o).await;
    let v = r.want(200, "cancel an invitation");
    assert_eq!(
        (str_of(&v["id"]), &v["cancelled"]),
        (inv.clone(), &json!(true))
    );
    let r = e.open(&token_of(&m_late)).await;
    assert!(
        [400, 410].contains(&r.status) && r.body["detail"].is_string(),
        "a cancelled invitation's link: {} {}",
        r.status,
        r.text
    );
    assert!(r.session_cookie().is_none());
    let v = e.get("/auth/members", o).await.body;
    assert_eq!(v["invitations"].as_array().map(Vec::len), Some(0), "{v}");
    assert!(
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["email"] != late),
        "{v}"
    );

    // The freed seat: a member who joins, then leaves by itself.
    let lou = "lou@example.com";
    e.invite(o, lou, "member").await;
    let ls = e.accept(lou, olive).await;
    let lou_mid = member_id(&e.get("/auth/members", o).await.body, lou);
    let r = e.delete(&patch(&lou_mid), As::Session(&ls)).await;
    r.want(200, "a member leaves");
    e.assert_ended(&ls, "a member who left").await;

    // A signed-in member signs in by link again later.
    let again = e.sign_in(adam).await;
    assert_eq!(
        (again.role.as_str(), again.account_id.as_str()),
        ("admin", acct.as_str())
    );
}

/* ---------- 8. audit ---------- */

impl Env {
    /// `GET /auth/audit?{query}` as `who`: 200 and (events, next_before).
    async fn audit(&self, who: As<'_>, query: &str) -> (Vec<Value>, Value) {
        let r = self.get(&format!("/auth/audit?{query}"), who).await;
        let v = r.want(200, &format!("audit ?{query}"));
        (
            v["events"].as_array().expect("events").clone(),
            v["next_before"].clone(),
        )
    }
}

async fn audit(backend: Backend) {
    let Some(e) = Env::start_team(backend).await else {
        return;
    };
    let (olga, mick, ann) = ("olga@example.com", "mick@example.com", "ann@example.com");
    let (first, key) = e.sign_up(olga).await;
    let (stranger, _) = e.sign_up("zed@example.com").await;
    let s = e.sign_in(olga).await;
    let o = As::Session(&s);
    e.post("/auth/api-keys", json!({ "name": "by session" }), o)
        .await
        .want(201, "key by session");
    e.post("/auth/api-keys", json!({ "name": "by key" }), As::Key(&key))
        .await
        .want(201, "key by key");
    let keys = e.get("/auth/api-keys", o).await.body;
    let prefix = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "Default")
        .map(|k| str_of(&k["key_prefix"]))
        .unwrap_or_else(|| panic!("the first key, named Default: {keys}"));
    assert!(key.starts_with(&prefix), "{prefix}");
    e.invite(o, mick, "member").await;
    let ms = e.accept(mick, olga).await;
    e.invite(o, ann, "admin").await;
    let ans = e.accept(ann, olga).await;

    // Who may read it.
    let r = e.get("/auth/audit", As::Session(&ms)).await;
    r.want_role_refusal("member", "a member reads the audit log");
    e.audit(As::Session(&ans), "").await;
    e.get("/auth/audit", As::Nobody)
        .await
        .want(401, "audit unauthenticated");

    let mick_mid = member_id(&e.get("/auth/members", o).await.body, mick);
    e.delete(&format!("/auth/members/{mick_mid}"), o)
        .await
        .want(200, "remove the member");
    let first_id = str_of(&e.whoami(&first).await["session_id"]);
    e.delete(&format!("/auth/sessions/{first_id}"), o)
        .await
        .want(200, "revoke the first session");
    e.post("/auth/sign-out", json!({}), o)
        .await
        .want(200, "sign out");

    // Everything, newest first.
    let (events, next) = e.audit(As::Key(&key), "limit=200").await;
    assert_eq!(next, Value::Null, "one page holds it all");
    let text = Value::Array(events.clone());
    let has = |action: &str, actor: &str| {
        events
            .iter()
            .any(|ev| ev["action"] == action && ev["actor"] == actor)
    };
    assert!(
        events
            .iter()
            .any(|ev| ev["action"] == "account_created" || ev["action"] == "email_verified"),
        "{text:#}"
    );
    if let Some(v) = events.iter().find(|ev| ev["action"] == "email_verified") {
        assert_eq!(v["actor"], olga, "{v}");
    }
    let key_actor = format!("key:{prefix}");
    for (action, actor) in [
        ("sign_in", olga),
        ("key_created", olga),
        ("key_created", key_actor.as_str()),
        ("member_invited", olga),
        ("member_joined", mick),
        ("member_joined", ann),
        ("member_removed", olga),
        ("session_revoked", olga),
        ("sign_out", olga),
    ] {
        assert!(has(action, actor), "no {action} by {actor} in {text:#}");
    }
    for ev in &events {
        for k in ["id", "actor", "action", "created_at"] {
            assert!(!ev[k].is_null(), "{k}: {ev}");
        }
        assert!(ev.get("target").is_some() && ev.get("ip").is_some(), "{ev}");
        assert_ne!(
            ev["actor"], "zed@example.com",
            "another account's event: {ev}"
        );
    }
    let sign_in = events.iter().find(|ev| ev["action"] == "sign_in").unwrap();
    assert!(
        sign_in["ip"]
            .as_str()
            .is_some_and(|ip| ip.contains("127.0.0.1")),
        "{sign_in}"
    );
    assert_eq!(events[0]["action"], "sign_out", "newest first: {text:#}");
    let pos = |action: &str| events.iter().position(|ev| ev["action"] == action).unwrap();
    assert!(
        pos("sign_out") < pos("session_revoked") && pos("session_revoked") < pos("member_removed")
    );
    assert!(pos("member_removed") < pos("member_joined"), "{text:#}");
    // The other account's log is its own.
    let (theirs, _) = e.audit(As::Session(&stranger), "").await;
    assert!(
        theirs
            .iter()
            .all(|ev| ev["actor"] != olga && ev["actor"] != mick),
        "{theirs:?}"
    );

    // Paging by two walks every row once, in order.
    let all_ids: Vec<String> = events.iter().map(|ev| str_of(&ev["id"])).collect();
    let (mut walked, mut query) = (Vec::new(), "limit=2".to_string());
    for _ in 0..=all_ids.len() {
        let (page, next) = e.audit(As::Key(&key), &query).await;
        assert!(page.len() <= 2, "{page:?}");
        walked.extend(page.iter().map(|ev| str_of(&ev["id"])));
        if next.is_null() {
            break;
        }
        assert!(!page.is_empty(), "a next page after an empty one");
        query = format!("limit=2&before={}", str_of(&next));
    }
    assert_eq!(walked, all_ids, "pages of two, newest first, no repeats");
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), walked.len());
    let (default_page, _) = e.audit(As::Key(&key), "").await;
    assert_eq!(default_page.len(), all_ids.len().min(50));
    for bad in ["limit=0", "limit=201", "limit=abc", "before=abc"] {
        e.get(&format!("/auth/audit?{bad}"), As::Key(&key))
            .await
            .want(422, bad);
    }
}

/* ---------- 9. SMTP down, then up ---------- */

async fn smtp_outage(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let pat = "pat@example.com";
    e.c.stop();
    let r = e.ask("/auth/register", pat).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (202, CHECK_MAIL),
        "202 while SMTP is down"
    );

    // The mail waits in the outbox, its failed attempts on record.
    e.s.until(Duration::from_secs(20), "failed attempts while down", || async {
        e.count(
            "SELECT COUNT(*) FROM outbox WHERE recipient = $1 AND status = 'pending' AND attempts >= 2 AND last_error IS NOT NULL",
            pat,
        )
        .await
            == 1
    })
    .await;
    assert_eq!(e.mails(pat), 0);

    let Env { s, c, _tiers } = e;
    let e = Env {
        s,
        c: c.stop_and_start().await,
        _tiers,
    };
    let m = e.mail(pat, 1).await;
    assert_eq!(kind_of(&m), Kind::Verification);
    let owner = e.open_ok(&token_of(&m), "verification").await;
    let key = owner.link["api_key"].as_str().expect("the key").to_string();
    assert_eq!(e.key_works(&key).await, Ok(pat.to_string()));
    e.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.mails(pat), 1, "sent once");
}

/* ---------- 10. abuse limits ---------- */

/// Assert a 429 with the contract's body and a sensible Retry-After.
#[track_caller]
fn assert_limited(r: &Resp, what: &str) {
    r.want_detail(429, TOO_MANY, what);
    let after: u64 = r
        .header("retry-after")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{what}: Retry-After in seconds: {:?}", r.headers));
    assert!((1..=3600).contains(&after), "{what}: Retry-After {after}");
}

async fn per_address_limit(backend: Backend) {
    let Some(e) = Env::start(backend, &[("STELLAR_AUTH_MAILS_PER_ADDRESS_PER_HOUR", "2")]).await
    else {
        return;
    };
    let (known, unknown) = ("kim@example.com", "nobody@example.com");
    e.sign_up(known).await; // mail 1 to kim
    e.sign_in(known).await; // mail 2
    assert_limited(
        &e.ask("/auth/sign-in", known).await,
        "3rd mail to a known address",
    );
    assert_limited(
        &e.ask("/auth/register", known).await,
        "register, 4th request",
    );
    for n in 1..=2 {
        let r = e.ask("/auth/sign-in", unknown).await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (202, CHECK_MAIL),
            "unknown #{n}"
        );
    }
    assert_limited(
        &e.ask("/auth/sign-in", unknown).await,
        "3rd request for an unknown address",
    );
    // Another address is not held up.
    e.link_for(
        "/auth/register",
        "other@example.com",
        "other@example.com",
        Kind::Verification,
    )
    .await;
    e.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.mails(known), 2, "no 3rd mail");
    assert_eq!(e.mails(unknown), 0);
}

async fn per_ip_limit(backend: Backend) {
    let Some(e) = Env::start(
        backend,
        &[("STELLAR_AUTH_MAIL_REQUESTS_PER_IP_PER_HOUR", "4")],
    )
    .await
    else {
        return;
    };
    let known = "kay@example.com";
    e.sign_up(known).await; // request 1
    for (n, email) in ["u1@example.com", "u2@example.com", "u3@example.com"]
        .iter()
        .enumerate()
    {
        let path = if n == 2 {
            "/auth/register"
        } else {
            "/auth/sign-in"
        };
        let r = e.ask(path, email).await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (202, CHECK_MAIL),
            "request {}",
            n + 2
        );
    }
    assert_limited(
        &e.ask("/auth/sign-in", known).await,
        "5th request, a known address",
    );
    assert_limited(
        &e.ask("/auth/sign-in", "u4@example.com").await,
        "6th, an unknown address",
    );
    assert_limited(
        &e.ask("/auth/register", "u5@example.com").await,
        "register beyond the limit",
    );
    e.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.mails(known), 1, "only the verification mail");
    assert_eq!(e.mails("u3@example.com"), 1, "the 4th request was served");
    assert_eq!(e.mails("u4@example.com") + e.mails("u5@example.com"), 0);
    assert_eq!(
        e.count(
            "SELECT COUNT(*) FROM users WHERE email = $1",
            "u5@example.com"
        )
        .await,
        0,
        "a refused sign-up creates nothing"
    );
}

async fn abuse_limits(backend: Backend) {
    per_address_limit(backend).await;
    per_ip_limit(backend).await;
}

/* ---------- 11. addresses are case-insensitive ---------- */

async fn case_insensitive(backend: Backend) {
    let Some(e) = Env::start(backend, &[]).await else {
        return;
    };
    let alice = "alice@example.com";
    let token = e
        .link_for(
            "/auth/register",
            "  Alice@Example.COM ",
            alice,
            Kind::Verification,
        )
        .await;
    assert_eq!(
        e.c.messages_to(alice)[0].rcpt_to,
        [alice],
        "mailed to the canonical address"
    );
    let owner = e.open_ok(&token, "verification").await;
    assert_eq!(owner.email, alice);

    for spelling in [
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        " aLiCe@example.com",
    ] {
        let t = e
            .link_for("/auth/sign-in", spelling, alice, Kind::SignIn)
            .await;
        let s = e.open_ok(&t, "sign_in").await;
        assert_eq!(
            (s.email.as_str(), s.account_id.as_str()),
            (alice, owner.account_id.as_str()),
            "{spelling}"
        );
    }
    // Registering another spelling is the known address: a sign-in link, no second account.
    e.link_for("/auth/register", "ALICE@example.com", alice, Kind::SignIn)
        .await;
    assert_eq!(
        e.count("SELECT COUNT(*) FROM users WHERE lower(email) = $1", alice)
            .await,
        1
    );
}

/* ---------- 12. Secure off loopback ---------- */

async fn secure_cookie(backend: Backend) {
    let public = "https://gate.people.example";
    let Some(e) = Env::start(backend, &[("STELLAR_BILLING_PUBLIC_URL", public)]).await else {
        return;
    };
    let ann = "ann@example.com";
    e.ask("/auth/register", ann).await.want(202, "register");
    let m = e.mail(ann, 1).await;
    let link = m.links().pop().expect("a link");
    let (page, token) = link.split_once("#token=").expect("fragment");
    assert_eq!(page, format!("{public}/auth/link"));
    let r = e.open(token).await;
    r.want(200, "verification");
    let cookie = r.session_cookie().expect("cookie");
    assert_eq!(cookie.attr("secure"), Some(None), "{}", cookie.raw);
    assert_eq!(cookie.attr("httponly"), Some(None), "{}", cookie.raw);
}

/* ---------- the tests: each scenario as two, on SQLite and on PostgreSQL ---------- */

macro_rules! on_both_backends {
    ($($test:ident => $scenario:ident;)*) => {$(
        both_dbs!($test, super::$scenario, 2);
    )*};
}

on_both_backends! {
    verified_sign_up_shows_the_first_key_once_through_the_mailed_link => verified_sign_up;
    register_and_sign_in_answer_alike_for_known_and_unknown_addresses => no_enumeration;
    sign_in_by_link_refuses_expired_used_and_garbage_links => sign_in_by_link;
    a_person_who_lost_every_key_signs_in_and_makes_one => lost_keys;
    someone_registering_your_address_gets_nothing_and_you_still_sign_in => squatting;
    sessions_are_listed_revoked_and_signed_out => sessions;
    invitations_roles_and_seats_follow_the_rules => invitations_and_roles;
    the_audit_log_records_each_action_and_pages => audit;
    the_verification_mail_arrives_after_an_smtp_outage => smtp_outage;
    mail_requests_are_limited_per_address_and_per_ip => abuse_limits;
    addresses_are_trimmed_and_compared_without_case => case_insensitive;
    the_cookie_is_secure_when_the_public_url_is_not_loopback => secure_cookie;
}
