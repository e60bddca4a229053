//! E-mail from billing, end to end, on SQLite and PostgreSQL: mails are enqueued through the
//! library (`stellar_billing::mail::enqueue`, in a transaction on the same account DB, as the
//! account flows will do it) and the real `stellar-billing` binary's worker sends them to a real
//! SMTP server on a free port (the catcher in `stellar_tests::smtp`).
//!
//! - delivery: both parts, the headers, the envelope; a rolled-back transaction sends nothing;
//! - the SMTP server down, then up (and billing killed in between): the mail arrives later, its
//!   attempts recorded, nothing lost, nothing duplicated;
//! - a recipient the server refuses: retried with growing waits, the error kept, then failed;
//! - the embedded default (no SMTP URL): logged and written under {data_dir}/mail/;
//! - three workers on one outbox (the binary and two in this process): each mail sent once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use stellar_billing::mail::{self, outbox, MailConfig, Template};
use stellar_common::{with_db, Db};
use stellar_tests::both_dbs;
use stellar_tests::harness::{billing_stack, Backend, Stack};
use stellar_tests::smtp::{Mail, SmtpCatcher};
use uuid::Uuid;

const FROM: &str = "Stellar Test <mail@stellar.test>";

fn mail_env(smtp_url: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = vec![
        ("STELLAR_MAIL_SMTP_URL", smtp_url.to_string()),
        ("STELLAR_MAIL_FROM", FROM.into()),
        ("STELLAR_MAIL_REPLY_TO", "help@stellar.test".into()),
        ("STELLAR_MAIL_PRODUCT_NAME", "Stellar Test".into()),
        ("STELLAR_MAIL_POLL_INTERVAL_SECS", "0.1".into()),
        ("STELLAR_MAIL_SEND_TIMEOUT_SECS", "2.0".into()),
        ("STELLAR_MAIL_RETRY_BASE_SECS", "0.2".into()),
        ("STELLAR_MAIL_RETRY_MAX_SECS", "0.8".into()),
    ];
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k, v.to_string()));
    }
    env
}

async fn stack(backend: Backend, env: Vec<(&'static str, String)>) -> Option<Stack> {
    billing_stack(backend, false, &env).await
}

fn sign_in(n: usize) -> Template {
    Template::SignIn {
        link: format!("http://127.0.0.1:8080/auth/link?token=t{n}&next=%2Fdashboard"),
    }
}

/// Enqueue `template` for `to` in its own committed transaction.
async fn enqueue(db: &Db, to: &str, template: &Template) -> i64 {
    with_db!(db, p => {
        let mut tx = p.begin().await.unwrap();
        let id = mail::enqueue(&mut tx, to, template).await.unwrap();
        tx.commit().await.unwrap();
        id
    })
}

/// Create a user and enqueue its verification mail in one transaction, committed or not.
async fn sign_up(db: &Db, email: &str, commit: bool) -> i64 {
    let (uid, now) = (Uuid::new_v4(), chrono::Utc::now());
    let t = Template::Verification {
        link: format!("http://127.0.0.1:8080/auth/verify?token={}", uid.simple()),
    };
    with_db!(db, p => {
        let mut tx = p.begin().await.unwrap();
        sqlx::query("INSERT INTO users (id, email, tier, created_at, updated_at) VALUES ($1, $2, 'free', $3, $3)")
            .bind(uid).bind(email).bind(now).execute(&mut *tx).await.unwrap();
        let id = mail::enqueue(&mut tx, email, &t).await.unwrap();
        if commit { tx.commit().await.unwrap() } else { tx.rollback().await.unwrap() }
        id
    })
}

async fn row(db: &Db, id: i64) -> outbox::Row {
    outbox::get(db, id).await.unwrap().expect("outbox row")
}

async fn outbox_count(db: &Db) -> i64 {
    with_db!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox").fetch_one(p).await)
        .unwrap()
}

async fn wait_row(s: &Stack, id: i64, what: &str, f: impl Fn(&outbox::Row) -> bool) -> outbox::Row {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = row(&s.adb.db, id).await;
        if f(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; row {r:?}\nbilling log:\n{}",
            s.billing().log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn delivered_with_both_parts(backend: Backend) {
    let catcher = SmtpCatcher::start().await;
    let Some(s) = stack(backend, mail_env(&catcher.url(), &[])).await else {
        return;
    };

    // The change and its mail commit together, or neither exists.
    let rolled_back = sign_up(&s.adb.db, "ghost@example.com", false).await;
    let id = sign_up(&s.adb.db, "alice@example.com", true).await;
    let _ = rolled_back; // (SQLite may hand its id out again: it was never committed)
    let ghosts: i64 = with_db!(&s.adb.db, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE recipient = 'ghost@example.com'").fetch_one(p).await)
    .unwrap();
    assert_eq!(ghosts, 0, "a rolled-back change leaves no mail");

    let got = catcher.wait_for(1, Duration::from_secs(15)).await;
    let m = &got[0];
    assert_eq!(m.mail_from, "mail@stellar.test");
    assert_eq!(m.rcpt_to, ["alice@example.com"]);
    let mail = m.mail();
    let h = |n: &str| {
        mail.header(n)
            .unwrap_or_else(|| panic!("no {n} in {mail:?}"))
    };
    assert_eq!(h("From"), "\"Stellar Test\" <mail@stellar.test>");
    assert_eq!(h("To"), "alice@example.com");
    assert_eq!(h("Reply-To"), "help@stellar.test");
    assert_eq!(h("Subject"), "Confirm your e-mail address for Stellar Test");
    assert!(
        h("Message-ID").starts_with(&format!("<outbox.{id}.")),
        "{}",
        h("Message-ID")
    );
    assert!(h("Message-ID").ends_with("@stellar.test>"));
    assert_eq!(h("Auto-Submitted"), "auto-generated");
    assert!(mail.header("Date").is_some());
    assert_eq!(h("MIME-Version"), "1.0");
    assert!(
        h("Content-Type").starts_with("multipart/alternative"),
        "{}",
        h("Content-Type")
    );
    assert_eq!(mail.parts.len(), 2, "{mail:?}");
    assert!(
        mail.parts[0].0.starts_with("text/plain"),
        "plain text first"
    );
    assert!(mail.parts[1].0.starts_with("text/html"));

    let links = mail.links();
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(
        links[0].starts_with("http://127.0.0.1:8080/auth/verify?token="),
        "{links:?}"
    );
    let text = mail.text().unwrap();
    assert!(text.contains("Stellar Test"), "{text}");
    let html = mail.html().unwrap();
    assert!(html.contains(&format!("href=\"{}\"", links[0])), "{html}");
    assert!(html.contains("Stellar Test"));

    // The row: sent once, one attempt, the link no longer stored.
    let r = wait_row(&s, id, "sent recorded", |r| r.status == "sent").await;
    assert_eq!((r.attempts, r.template.as_str()), (1, "verification"));
    assert!(r.payload.is_none(), "the link is dropped once sent: {r:?}");
    assert!(r.sent_at.is_some() && r.last_error.is_none());
    assert_eq!(r.recipient, "alice@example.com");

    // A link with characters HTML must escape arrives intact in both parts.
    let id2 = enqueue(&s.adb.db, "bob@example.com", &sign_in(7)).await;
    let got = catcher.wait_for(2, Duration::from_secs(15)).await;
    let mail = got[1].mail();
    let want = "http://127.0.0.1:8080/auth/link?token=t7&next=%2Fdashboard";
    assert_eq!(mail.links(), [want]);
    assert!(mail
        .html()
        .unwrap()
        .contains("token=t7&amp;next=%2Fdashboard"));
    assert_eq!(
        mail.header("Subject").unwrap(),
        "Your Stellar Test sign-in link"
    );
    wait_row(&s, id2, "second sent", |r| r.status == "sent").await;

    // Nothing more arrives: no duplicate, and never the rolled-back one.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(catcher.messages().len(), 2);
    assert!(catcher.messages_to("ghost@example.com").is_empty());
    assert_eq!(outbox_count(&s.adb.db).await, 2);
}

both_dbs!(
    mail_is_delivered_with_both_parts_and_headers,
    super::delivered_with_both_parts,
    2
);

async fn smtp_down_then_up(backend: Backend) {
    let port = stellar_tests::spawn::free_port();
    let Some(mut s) = stack(backend, mail_env(&format!("smtp://127.0.0.1:{port}"), &[])).await
    else {
        return;
    };
    let ids = [
        enqueue(&s.adb.db, "one@example.com", &sign_in(1)).await,
        enqueue(&s.adb.db, "two@example.com", &sign_in(2)).await,
        sign_up(&s.adb.db, "three@example.com", true).await,
    ];
    // Nobody listens: every attempt fails, is recorded and scheduled again.
    for id in ids {
        let r = wait_row(&s, id, "two failed attempts", |r| r.attempts >= 2).await;
        assert_eq!(r.status, "pending", "{r:?}");
        assert!(r.sent_at.is_none() && r.payload.is_some());
        let e = r.last_error.clone().unwrap_or_default();
        assert!(
            e.to_lowercase().contains("connect") || e.contains("refused"),
            "{e}"
        );
    }

    // Billing dies too (between two attempts, so no claim is in flight), and comes back.
    let deadline = Instant::now() + Duration::from_secs(20);
    'idle: loop {
        let soon = chrono::Utc::now() + chrono::Duration::milliseconds(300);
        let mut idle = true;
        for id in ids {
            let r = row(&s.adb.db, id).await;
            idle &= r.claim_token.is_none() && r.next_attempt_at > soon;
        }
        if idle {
            s.kill9_billing().await;
            break 'idle;
        }
        assert!(Instant::now() < deadline, "no moment between attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: Vec<i32> = {
        let mut v = Vec::new();
        for id in ids {
            v.push(row(&s.adb.db, id).await.attempts);
        }
        v
    };

    // The SMTP server comes up, then billing: everything arrives, once.
    let catcher = SmtpCatcher::start_on(port).await;
    s.restart_billing().await;
    let got = catcher.wait_for(3, Duration::from_secs(20)).await;
    for (id, to) in ids
        .iter()
        .zip(["one@example.com", "two@example.com", "three@example.com"])
    {
        assert_eq!(catcher.messages_to(to).len(), 1, "{to}: {got:?}");
        let r = wait_row(&s, *id, "sent after the outage", |r| r.status == "sent").await;
        assert!(
            r.attempts >= 3,
            "failed attempts then the successful one: {r:?}"
        );
        assert!(r.last_error.is_some(), "the outage stays on record: {r:?}");
    }
    for (id, n) in ids.iter().zip(before) {
        assert_eq!(
            row(&s.adb.db, *id).await.attempts,
            n + 1,
            "one attempt after the restart"
        );
    }

    // Down again while one more mail waits; up again on the same port: it arrives, once.
    let catcher = {
        catcher.stop();
        let id = enqueue(&s.adb.db, "four@example.com", &sign_in(4)).await;
        wait_row(&s, id, "failed while down", |r| {
            r.attempts >= 1 && r.last_error.is_some()
        })
        .await;
        let c = catcher.stop_and_start().await;
        wait_row(&s, id, "sent after the second outage", |r| {
            r.status == "sent"
        })
        .await;
        c
    };
    catcher.wait_for(4, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(catcher.messages().len(), 4, "nothing sent twice");
    assert_eq!(catcher.messages_to("four@example.com").len(), 1);
}

both_dbs!(
    mail_survives_an_smtp_outage_and_a_restart,
    super::smtp_down_then_up,
    2
);

async fn refused_recipient(backend: Backend) {
    let catcher = SmtpCatcher::start().await;
    catcher.refuse(
        "nobody@",
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown",
    );
    let env = mail_env(
        &catcher.url(),
        &[
            ("STELLAR_MAIL_RETRY_BASE_SECS", "0.3"),
            ("STELLAR_MAIL_RETRY_MAX_SECS", "10"),
            ("STELLAR_MAIL_MAX_ATTEMPTS", "4"),
        ],
    );
    let Some(s) = stack(backend, env).await else {
        return;
    };
    let bad = enqueue(&s.adb.db, "nobody@example.com", &sign_in(1)).await;
    let good = enqueue(&s.adb.db, "somebody@example.com", &sign_in(2)).await;

    // The good one is not held up by the bad one.
    wait_row(&s, good, "good one sent", |r| r.status == "sent").await;
    assert_eq!(catcher.messages_to("somebody@example.com").len(), 1);

    let r = wait_row(&s, bad, "bad one given up", |r| r.status == "failed").await;
    assert_eq!(r.attempts, 4, "{r:?}");
    let e = r.last_error.clone().unwrap();
    assert!(e.contains("550") && e.contains("permanent"), "{e}");
    assert!(
        r.sent_at.is_none() && r.payload.is_some(),
        "kept, to re-queue by hand: {r:?}"
    );
    assert!(catcher.messages_to("nobody@example.com").is_empty());

    // Four RCPTs, the waits between them doubling from 0.3 s (polling adds up to 0.1 s).
    let tries = catcher.rcpt_attempts("nobody@example.com");
    assert_eq!(tries.len(), 4, "{tries:?}");
    assert!(tries.iter().all(|t| !t.accepted));
    let gaps: Vec<f64> = tries
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    for (gap, want) in gaps.iter().zip([0.3, 0.6, 1.2]) {
        assert!(
            *gap >= want * 0.95 && *gap < want + 1.0,
            "gaps {gaps:?} should follow 0.3, 0.6, 1.2 s"
        );
    }
    let log = s.billing().log();
    assert!(log.contains("giving up"), "{log}");

    // A failed row is not touched again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(catcher.rcpt_attempts("nobody@example.com").len(), 4);
}

both_dbs!(
    a_refused_address_is_retried_with_backoff_then_failed,
    super::refused_recipient,
    2
);

async fn embedded_default(backend: Backend) {
    // No SMTP URL: the embedded default of `stellar up`.
    let env = vec![("STELLAR_MAIL_POLL_INTERVAL_SECS", "0.1".to_string())];
    let Some(s) = stack(backend, env).await else {
        return;
    };
    let link = "http://127.0.0.1:8080/auth/link?token=offline&next=%2F";
    let id = enqueue(
        &s.adb.db,
        "carol@example.com",
        &Template::SignIn { link: link.into() },
    )
    .await;
    let r = wait_row(&s, id, "marked sent", |r| r.status == "sent").await;
    assert_eq!(r.attempts, 1);

    let dir = s.dir.path().join("mail");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.ends_with(&format!("-{id:08}-sign_in.eml")), "{name}");
    let mail = Mail::parse(&std::fs::read_to_string(&files[0]).unwrap());
    assert_eq!(mail.header("To").as_deref(), Some("carol@example.com"));
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Your Stellar Gate sign-in link")
    );
    assert_eq!(mail.links(), [link]);
    assert!(mail.html().is_some());

    // One log line with the recipient, the subject and the link.
    let log = s.billing().log();
    let line = log
        .lines()
        .find(|l| l.contains("mail written"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    for want in ["carol@example.com", "Your Stellar Gate sign-in link", link] {
        assert!(line.contains(want), "{want} not in {line}");
    }
}

both_dbs!(
    without_smtp_mail_goes_to_the_log_and_data_dir,
    super::embedded_default,
    2
);

async fn several_workers(backend: Backend) {
    let catcher = SmtpCatcher::start().await;
    let env = mail_env(&catcher.url(), &[]);
    let Some(s) = stack(backend, env.clone()).await else {
        return;
    };
    // Two more workers in this process, on the same outbox, polling fast.
    let mut map: BTreeMap<String, String> =
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    map.insert("STELLAR_MAIL_POLL_INTERVAL_SECS".into(), "0.01".into());
    let config = stellar_common::Config::from_parts(None, &map).unwrap();
    let cfg = MailConfig::from_config(&config, s.dir.path()).unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(mail::run(
                s.adb.db.clone(),
                cfg.clone(),
                cfg.transport().unwrap(),
                stop_rx.clone(),
            ))
        })
        .collect();

    const N: usize = 30;
    with_db!(&s.adb.db, p => {
        let mut tx = p.begin().await.unwrap();
        for i in 0..N {
            mail::enqueue(&mut tx, &format!("user{i}@example.com"), &sign_in(i)).await.unwrap();
        }
        tx.commit().await.unwrap();
    });
    catcher.wait_for(N, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = catcher.messages();
    assert_eq!(got.len(), N, "each mail exactly once");
    for i in 0..N {
        assert_eq!(
            catcher.messages_to(&format!("user{i}@example.com")).len(),
            1
        );
    }
    let (sent, one_attempt): (i64, i64) = with_db!(&s.adb.db, p => sqlx::query_as(
        "SELECT COUNT(*), SUM(CASE WHEN attempts = 1 THEN 1 ELSE 0 END) FROM outbox WHERE status = 'sent'")
        .fetch_one(p).await).unwrap();
    assert_eq!((sent, one_attempt), (N as i64, N as i64));
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }
}

both_dbs!(
    several_workers_send_each_mail_once,
    super::several_workers,
    2
);
