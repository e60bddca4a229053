//! The mails billing sends, as plain functions: a [`Template`] (what the outbox stores, as JSON)
//! rendered with the product name into a subject, a plain-text body and an HTML body.
//!
//! Each template carries the one link the mail exists for; the flows that enqueue mails build
//! the links (and own their tokens and expiry), the templates only word them.

use serde::{Deserialize, Serialize};

/// A mail to send, with its data. Serialised into `outbox.payload`; its name goes to
/// `outbox.template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Template {
    /// Confirm the address an account was created with.
    Verification { link: String },
    /// A single-use sign-in link.
    SignIn { link: String },
    /// An invitation to join someone's account.
    Invitation {
        link: String,
        /// Who invited (their e-mail address).
        invited_by: String,
        /// The role offered: owner, admin or member.
        role: String,
    },
    /// An alert's condition started to hold (`alerts`); the link opens the dashboard.
    Alert {
        link: String,
        alert: crate::alerts::Alert,
    },
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Template {
    /// The name stored in `outbox.template`.
    pub fn name(&self) -> &'static str {
        match self {
            Template::Verification { .. } => "verification",
            Template::SignIn { .. } => "sign_in",
            Template::Invitation { .. } => "invitation",
            Template::Alert { .. } => "alert",
        }
    }

    /// The link the mail carries.
    pub fn link(&self) -> &str {
        match self {
            Template::Verification { link }
            | Template::SignIn { link }
            | Template::Invitation { link, .. }
            | Template::Alert { link, .. } => link,
        }
    }

    /// Subject, plain text and HTML, naming the product as `product`.
    pub fn render(&self, product: &str) -> Rendered {
        let link = self.link();
        match self {
            Template::Verification { .. } => page(
                format!("Confirm your e-mail address for {product}"),
                product,
                &[format!(
                    "Open this link to confirm your e-mail address and finish creating your {product} account:"
                )],
                "Confirm my address",
                link,
                "If you did not sign up, ignore this mail: no account is created without this link.",
            ),
            Template::SignIn { .. } => page(
                format!("Your {product} sign-in link"),
                product,
                &[format!("Open this link to sign in to {product}:")],
                "Sign in",
                link,
                "The link works once and expires soon. If you did not ask to sign in, ignore this mail: nobody can sign in without it.",
            ),
            Template::Invitation {
                invited_by, role, ..
            } => page(
                format!("{invited_by} invited you to {product}"),
                product,
                &[format!(
                    "{invited_by} invited you to join their {product} account as {}.",
                    with_article(role)
                ),
                "Open this link to accept the invitation:".to_string()],
                "Accept the invitation",
                link,
                "The invitation works once. If you did not expect it, ignore this mail.",
            ),
            Template::Alert { alert, .. } => {
                let (subject, lines) = alert_words(alert, product);
                page(
                    subject,
                    product,
                    &lines,
                    "Open the dashboard",
                    link,
                    "You get this mail once each time the alert's condition starts to hold. Thresholds: Alerts in the dashboard (or PUT /auth/alerts).",
                )
            }
        }
    }
}

/// The subject and lines of an alert mail.
fn alert_words(alert: &crate::alerts::Alert, product: &str) -> (String, Vec<String>) {
    use crate::alerts::Alert;
    match alert {
        Alert::MemoryQuota {
            threshold_percent,
            memories_used,
            memories_limit,
        } => (
            format!("{product}: {threshold_percent} % of your memory quota used"),
            vec![
                format!("Your {product} account holds {memories_used} of the {memories_limit} memories its plan allows: it reached {threshold_percent} % of its quota."),
                "When the quota is full, storing new memories is refused: delete memories you no longer need, or upgrade your plan.".into(),
            ],
        ),
        Alert::RateLimited {
            minutes,
            refused_requests,
        } => (
            format!("{product}: requests refused by the rate limit"),
            vec![
                format!("Requests made with your account's keys were refused by the rate limit (HTTP 429) in each of the last {minutes} minutes ({refused_requests} refused)."),
                "Spread the load over time, give busy keys their own rate, or upgrade your plan for a higher limit.".into(),
            ],
        ),
        Alert::KeyExpiring {
            key_prefix,
            name,
            expires_at,
            ..
        } => (
            format!("{product}: API key {key_prefix}… expires soon"),
            vec![
                format!(
                    "Your API key {}{key_prefix}… expires at {}.",
                    name.as_deref().map(|n| format!("\"{n}\" ")).unwrap_or_default(),
                    expires_at.format("%Y-%m-%d %H:%M UTC")
                ),
                "Rotate it or create a new key before then: requests with an expired key are refused.".into(),
            ],
        ),
        Alert::PaymentFailed { tier, .. } => (
            format!("{product}: a payment failed"),
            vec![
                format!("The last payment for your {tier} plan failed and the subscription is past due."),
                "Update your payment method to keep the plan; after the grace period the account moves to the free plan.".into(),
            ],
        ),
    }
}

/// "an admin", "a member", "an owner".
fn with_article(role: &str) -> String {
    let article = match role.chars().next() {
        Some(c) if "aeiouAEIOU".contains(c) => "an",
        _ => "a",
    };
    format!("{article} {role}")
}

/// The one layout: a greeting, the lines, the link (as a button and spelled out, so it survives
/// clients that strip links), then a footnote.
fn page(
    subject: String,
    product: &str,
    lines: &[String],
    button: &str,
    link: &str,
    footnote: &str,
) -> Rendered {
    let mut text = String::from("Hello,\n\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(link);
    text.push_str("\n\n");
    text.push_str(footnote);
    text.push_str(&format!("\n\n-- \n{product}\n"));

    let (p, l) = (escape(product), escape(link));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;line-height:1.5;color:#1a1a2e;max-width:560px;margin:0 auto;padding:24px\">\n\
         <p>Hello,</p>\n",
        escape(&subject)
    );
    for line in lines {
        html.push_str(&format!("<p>{}</p>\n", escape(line)));
    }
    html.push_str(&format!(
        "<p><a href=\"{l}\" style=\"display:inline-block;padding:10px 18px;background:#4f46e5;color:#ffffff;text-decoration:none;border-radius:6px\">{}</a></p>\n\
         <p style=\"font-size:13px;color:#555\">Or paste this address into your browser:<br><a href=\"{l}\">{l}</a></p>\n\
         <p style=\"font-size:13px;color:#555\">{}</p>\n\
         <p style=\"font-size:13px;color:#555\">{p}</p>\n</body></html>\n",
        escape(button),
        escape(footnote)
    ));
    Rendered {
        subject,
        text,
        html,
    }
}

/// Escape text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "https://stellar.example/auth/verify?token=abc&x=1";

    #[test]
    fn every_template_names_the_product_and_carries_the_link() {
        for t in [
            Template::Verification { link: LINK.into() },
            Template::SignIn { link: LINK.into() },
            Template::Invitation {
                link: LINK.into(),
                invited_by: "owner@example.com".into(),
                role: "admin".into(),
            },
        ] {
            let r = t.render("Stellar Gate");
            assert!(r.subject.contains("Stellar Gate"), "{}", r.subject);
            assert!(r.text.contains("Stellar Gate"));
            assert!(r.html.contains("Stellar Gate"));
            // The plain text has the link on its own line, unescaped.
            assert!(r.text.lines().any(|l| l == LINK), "{}", r.text);
            // In HTML the `&` is escaped, in the href and in the spelled-out address.
            assert_eq!(
                r.html
                    .matches("https://stellar.example/auth/verify?token=abc&amp;x=1")
                    .count(),
                3,
                "{}",
                r.html
            );
            assert!(!r.html.contains("token=abc&x"), "{}", r.html);
            assert_eq!(t.link(), LINK);
        }
    }

    #[test]
    fn subjects_and_wording() {
        let r = Template::SignIn { link: LINK.into() }.render("Acme Memory");
        assert_eq!(r.subject, "Your Acme Memory sign-in link");
        assert!(r
            .text
            .starts_with("Hello,\n\nOpen this link to sign in to Acme Memory:\n\n"));
        let r = Template::Verification { link: LINK.into() }.render("P");
        assert_eq!(r.subject, "Confirm your e-mail address for P");
        let r = Template::Invitation {
            link: LINK.into(),
            invited_by: "o@example.com".into(),
            role: "admin".into(),
        }
        .render("P");
        assert_eq!(r.subject, "o@example.com invited you to P");
        assert!(r.text.contains("as an admin."), "{}", r.text);
        let r = Template::Invitation {
            link: LINK.into(),
            invited_by: "o@example.com".into(),
            role: "member".into(),
        }
        .render("P");
        assert!(r.text.contains("as a member."), "{}", r.text);
    }

    #[test]
    fn html_escapes_what_it_is_given() {
        let r = Template::Invitation {
            link: "https://x.example/i?t=1\"><script>".into(),
            invited_by: "<b>evil</b>@example.com".into(),
            role: "member".into(),
        }
        .render("A & B");
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(!r.html.contains("<b>evil"), "{}", r.html);
        assert!(r.html.contains("A &amp; B"));
        assert!(r.html.contains("&lt;b&gt;evil&lt;/b&gt;@example.com"));
    }

    #[test]
    fn alert_mails_say_what_happened() {
        use crate::alerts::Alert;
        let t = Template::Alert {
            link: "http://127.0.0.1:8080/dashboard".into(),
            alert: Alert::MemoryQuota {
                threshold_percent: 80,
                memories_used: 4100,
                memories_limit: 5000,
            },
        };
        let r = t.render("Stellar Gate");
        assert_eq!(r.subject, "Stellar Gate: 80 % of your memory quota used");
        assert!(r.text.contains("4100 of the 5000 memories"), "{}", r.text);
        assert!(r
            .text
            .lines()
            .any(|l| l == "http://127.0.0.1:8080/dashboard"));
        assert_eq!(t.name(), "alert");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Template>(&json).unwrap(), t);
        let k = Template::Alert {
            link: "l".into(),
            alert: Alert::KeyExpiring {
                key_id: uuid::Uuid::nil(),
                key_prefix: "sk-stellar-ab12".into(),
                name: Some("<ci>".into()),
                expires_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                within_days: 7,
            },
        }
        .render("P");
        assert!(
            k.text
                .contains("\"<ci>\" sk-stellar-ab12… expires at 2023-11-14 22:13 UTC"),
            "{}",
            k.text
        );
        assert!(!k.html.contains("<ci>"), "escaped");
        for a in [
            Alert::RateLimited {
                minutes: 5,
                refused_requests: 12,
            },
            Alert::PaymentFailed {
                tier: "pro".into(),
                past_due_since: None,
            },
        ] {
            let r = Template::Alert {
                link: "l".into(),
                alert: a,
            }
            .render("P");
            assert!(r.subject.starts_with("P: "), "{}", r.subject);
        }
    }

    #[test]
    fn payload_round_trips_as_tagged_json() {
        let t = Template::Invitation {
            link: LINK.into(),
            invited_by: "o@example.com".into(),
            role: "admin".into(),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"template\":\"invitation\""), "{json}");
        assert_eq!(serde_json::from_str::<Template>(&json).unwrap(), t);
        assert_eq!(t.name(), "invitation");
        assert_eq!(Template::SignIn { link: "l".into() }.name(), "sign_in");
    }
}
