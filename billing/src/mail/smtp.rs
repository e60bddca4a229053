//! How a built message leaves: over SMTP (lettre, tokio + rustls), or — the embedded default,
//! with no SMTP URL configured — into the log and an `.eml` file under `{data_dir}/mail/`.

use lettre::message::Message;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Tokio1Executor};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtp://`: plain text (local relays, test catchers).
    None,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `smtp://…?tls=required`: STARTTLS, and no mail if the server does not offer it.
    Required,
    /// `smtps://`: TLS from the first byte (port 465).
    Wrapper,
}

/// A checked `mail.smtp_url`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    raw: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpUrl({})", self.redacted())
    }
}

impl SmtpUrl {
    /// Parse and check a connection URL, with the same meaning lettre gives it: `smtp://` (port
    /// 25, or 587 with `tls=`), `smtp://…?tls=required|opportunistic` (STARTTLS), `smtps://`
    /// (port 465), credentials as `user:password@` (percent-encoded), and an optional path that
    /// names this host in EHLO. Errors never repeat the password.
    pub fn parse(raw: &str) -> Result<SmtpUrl, String> {
        let raw = raw.trim();
        let url = url::Url::parse(raw).map_err(|e| {
            format!("not a URL ({e}); expected smtp://[user:password@]host[:port][?tls=required|opportunistic] or smtps://[user:password@]host[:port]")
        })?;
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(format!(
                "scheme `{}` is not supported: use smtp:// or smtps://",
                url.scheme()
            ));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => return Err("the URL names no host".into()),
        };
        let mut tls_param = None;
        for (k, v) in url.query_pairs() {
            match &*k {
                "tls" if tls_param.is_none() => tls_param = Some(v.into_owned()),
                "tls" => return Err("`tls` is given twice".into()),
                other => {
                    return Err(format!(
                        "unknown query parameter `{other}` (only `tls` is understood)"
                    ))
                }
            }
        }
        let tls = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None) => TlsMode::None,
            ("smtp", Some("required")) => TlsMode::Required,
            ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
            ("smtp", Some(other)) => {
                return Err(format!(
                    "tls={other} is not understood: use tls=required (STARTTLS) or tls=opportunistic, or smtps:// for TLS from the start"
                ))
            }
            ("smtps", None) => TlsMode::Wrapper,
            ("smtps", Some(_)) => {
                return Err("smtps:// is always TLS: drop the `tls` parameter".into())
            }
            (scheme, _) => {
                return Err(format!(
                    "scheme `{scheme}` is not supported: use smtp:// or smtps://"
                ))
            }
        };
        let port = url.port().unwrap_or(match tls {
            TlsMode::None => 25,
            TlsMode::Opportunistic | TlsMode::Required => 587,
            TlsMode::Wrapper => 465,
        });
        let user = (!url.username().is_empty()).then(|| url.username().to_string());
        match (&user, url.password()) {
            (Some(_), None) => {
                return Err("a user is given without a password (smtp://user:password@host)".into())
            }
            (None, Some(_)) => return Err("a password is given without a user".into()),
            _ => {}
        }
        for part in [url.username(), url.password().unwrap_or("")] {
            percent_decode(part).ok_or("the credentials are not valid percent-encoded UTF-8")?;
        }
        if url.fragment().is_some() {
            return Err("a URL fragment (#…) is not understood".into());
        }
        // lettre reads the same URL; building here catches what only it would refuse.
        AsyncSmtpTransport::<Tokio1Executor>::from_url(raw).map_err(|e| e.to_string())?;
        Ok(SmtpUrl {
            raw: raw.to_string(),
            host,
            port,
            tls,
            user,
        })
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        stellar_common::db::redact_url(&self.raw)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where mail goes.
#[derive(Clone)]
pub enum Transport {
    Smtp {
        inner: AsyncSmtpTransport<Tokio1Executor>,
        timeout: Duration,
    },
    /// The embedded default: log and `.eml` files in `dir`.
    Embedded { dir: PathBuf },
}

impl Transport {
    /// An SMTP transport for `url`; `timeout` bounds each SMTP command and, four times over,
    /// the whole send.
    pub fn smtp(url: &SmtpUrl, timeout: Duration) -> Result<Transport, String> {
        let inner = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url.raw)
            .map_err(|e| e.to_string())?
            .timeout(Some(timeout))
            .build();
        Ok(Transport::Smtp { inner, timeout })
    }

    pub fn embedded(dir: impl Into<PathBuf>) -> Transport {
        Transport::Embedded { dir: dir.into() }
    }

    /// Hand `message` over. `Ok` means the SMTP server accepted it (or the file is written).
    /// `name` names the `.eml` file in embedded mode.
    pub async fn send(&self, message: &Message, name: &str) -> Result<Delivered, String> {
        match self {
            Transport::Smtp { inner, timeout } => {
                match tokio::time::timeout(*timeout * 4, inner.send(message.clone())).await {
                    Ok(Ok(_)) => Ok(Delivered::Smtp),
                    Ok(Err(e)) => Err(describe(&e)),
                    Err(_) => Err(format!("the send took longer than {:?}", *timeout * 4)),
                }
            }
            Transport::Embedded { dir } => write_eml(dir, name, &message.formatted())
                .await
                .map(Delivered::File)
                .map_err(|e| format!("writing {}: {e}", dir.join(name).display())),
        }
    }
}

/// Where a delivered mail went.
#[derive(Debug)]
pub enum Delivered {
    Smtp,
    File(PathBuf),
}

/// An SMTP error with its kind, e.g. "permanent: 550 …" or "connection: …".
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let kind = if e.is_permanent() {
        "permanent error"
    } else if e.is_transient() {
        "transient error"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_tls() {
        "TLS error"
    } else {
        "error"
    };
    let mut s = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(&format!(": {cause}"));
        src = cause.source();
    }
    s
}

/// Write atomically (temporary file, then rename), so a reader never sees half a mail.
async fn write_eml(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls, u.user.as_deref()),
            ("127.0.0.1", 2525, TlsMode::None, None)
        );
        assert_eq!(SmtpUrl::parse("smtp://mail.example.com").unwrap().port, 25);
        let u = SmtpUrl::parse("smtp://me%40x.com:p%40ss@smtp.example.com?tls=required").unwrap();
        assert_eq!(
            (u.port, u.tls, u.user.as_deref()),
            (587, TlsMode::Required, Some("me%40x.com"))
        );
        assert_eq!(
            u.redacted(),
            "smtp://me%40x.com:***@smtp.example.com?tls=required"
        );
        assert!(!format!("{u:?}").contains("p%40ss"));
        let u = SmtpUrl::parse("smtp://smtp.example.com:2587?tls=opportunistic").unwrap();
        assert_eq!((u.port, u.tls), (2587, TlsMode::Opportunistic));
        let u = SmtpUrl::parse("smtps://u:p@smtp.example.com").unwrap();
        assert_eq!((u.port, u.tls), (465, TlsMode::Wrapper));
        let u = SmtpUrl::parse("smtp://[::1]:25/client.example.com").unwrap();
        assert_eq!(u.host, "::1");
    }

    #[test]
    fn url_errors_say_what_is_wrong_and_hide_the_password() {
        for (raw, want) in [
            ("localhost:25", "scheme"),
            ("not a url", "not a URL"),
            ("http://mail.example.com", "scheme `http`"),
            ("smtp://", "no host"),
            ("smtp://h?tls=yes", "tls=yes"),
            ("smtp://h?tls=required&tls=required", "twice"),
            ("smtp://h?starttls=1", "unknown query parameter `starttls`"),
            ("smtps://h?tls=required", "always TLS"),
            ("smtp://user@h", "without a password"),
            ("smtp://:secret@h", "without a user"),
            ("smtp://u:%ff%fe@h", "percent-encoded"),
        ] {
            let e = SmtpUrl::parse(raw).unwrap_err();
            assert!(e.contains(want), "{raw}: {e}");
            assert!(!e.contains("secret"), "{raw}: {e}");
        }
    }

    #[tokio::test]
    async fn embedded_transport_writes_the_message() {
        let dir = std::env::temp_dir().join(format!("stellar-mail-{}", uuid::Uuid::new_v4()));
        let t = Transport::embedded(&dir);
        let m = Message::builder()
            .from("a@example.com".parse().unwrap())
            .to("b@example.com".parse().unwrap())
            .subject("hi")
            .body("text".to_string())
            .unwrap();
        let Delivered::File(path) = t.send(&m, "1.eml").await.unwrap() else {
            panic!("embedded writes a file")
        };
        assert_eq!(path, dir.join("1.eml"));
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(body.contains("Subject: hi"), "{body}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp left");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
