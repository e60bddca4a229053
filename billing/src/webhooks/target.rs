//! Which URLs may be webhook endpoints: `https://` with a host and no credentials or fragment;
//! `http://` only when the host is loopback (127.0.0.0/8, `::1`, `localhost`, `*.localhost`:
//! tests and local runs, `stellar up`) or `webhooks.allow_http` is on.

use url::{Host, Url};

/// The longest URL accepted.
pub const MAX_LEN: usize = 2000;

/// Whether `url`'s host is a loopback address or name.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

/// Check an endpoint URL; the error says what is wrong (for a 422).
pub fn check(raw: &str, allow_http: bool) -> Result<Url, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_LEN {
        return Err(format!("url must be 1–{MAX_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("url is not an absolute URL: {e}"))?;
    if url.host().is_none() {
        return Err("url must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials (user:password@)".into());
    }
    if url.fragment().is_some() {
        return Err("url must not have a fragment (#…)".into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_http || is_loopback(&url) => Ok(url),
        "http" => Err("url must be https:// (http:// only on a loopback host)".into()),
        other => Err(format!("url must be https://, not {other}:")),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn https_everywhere_http_only_on_loopback_or_when_allowed() {
        for ok in [
            "https://hooks.example.com/stellar",
            "https://example.com:8443/a?b=c",
            "https://10.0.0.5/x",
            "http://127.0.0.1:9999/hook",
            "http://127.8.9.10/hook",
            "http://[::1]:8080/hook",
            "http://localhost:3000/",
            "http://app.localhost/",
            "  https://padded.example.com/  ",
        ] {
            assert!(check(ok, false).is_ok(), "{ok}: {:?}", check(ok, false));
        }
        for bad in [
            "http://hooks.example.com/stellar",
            "http://10.0.0.5/x",
            "http://localhost.example.com/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "hooks.example.com/path",
            "/relative",
            "",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https://example.com/#frag",
            "mailto:a@example.com",
        ] {
            assert!(check(bad, false).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2000));
        assert!(check(&long, false).is_err());
        // allow_http opens plain http to any host, but nothing else.
        assert!(check("http://hooks.example.com/stellar", true).is_ok());
        assert!(check("ftp://example.com/", true).is_err());
        assert!(check("https://user:pw@example.com/", true).is_err());
    }
}
