//! An engine upstream at `https://`: the gateway's HTTP/1 core and its connection pool speak
//! plain TCP, so for a TLS upstream the gateway starts this bridge on a loopback port, points
//! the engine pool at it, and the bridge carries each pooled connection over its own TLS
//! connection to the real upstream (rustls, certificates verified against the web PKI roots
//! plus `gateway.engine_ca_file` if set, SNI = the URL's host). One pooled connection is one TLS
//! connection, so keep-alive holds end to end and the hot path to a plain upstream is untouched.
//! The `Host` the upstream sees is the URL's authority (see [`EngineTarget`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Where the engine is, from `gateway.engine_upstream`: `host:port` (plain TCP, the client's
/// `Host` passed on), or `http://host[:port]` / `https://host[:port]` (the upstream then sees
/// `Host: host[:port]`, as an existing deployment behind its own name expects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineTarget {
    /// `host:port` to connect to.
    pub connect: String,
    /// The server name for SNI and certificate checks (TLS only).
    pub tls_name: Option<String>,
    /// The `Host` to send, when the upstream was given as a URL.
    pub host: Option<String>,
}

impl EngineTarget {
    pub fn parse(raw: &str) -> Result<EngineTarget, String> {
        let raw = raw.trim();
        if !raw.contains("://") {
            return Ok(EngineTarget {
                connect: raw.to_string(),
                tls_name: None,
                host: None,
            });
        }
        let u = url::Url::parse(raw).map_err(|e| format!("{raw:?}: {e}"))?;
        let tls = match u.scheme() {
            "https" => true,
            "http" => false,
            s => return Err(format!("{raw:?}: scheme {s} (use http:// or https://)")),
        };
        if u.path() != "/" || u.query().is_some() || !u.username().is_empty() {
            return Err(format!(
                "{raw:?}: only scheme://host[:port] (the API lives at /api/v1)"
            ));
        }
        let host = u
            .host_str()
            .ok_or_else(|| format!("{raw:?}: no host"))?
            .to_string();
        let port = u
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(EngineTarget {
            connect: format!("{host}:{port}"),
            tls_name: tls.then_some(bare),
            host: Some(authority),
        })
    }
}

/// The TLS client configuration: web PKI roots, plus the PEM certificates in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow::anyhow!("gateway.engine_ca_file {}: {e}", path.display()))?
        {
            let cert = cert
                .map_err(|e| anyhow::anyhow!("gateway.engine_ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("gateway.engine_ca_file {}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            anyhow::bail!(
                "gateway.engine_ca_file {}: no certificate in it",
                path.display()
            );
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Start the bridge to `connect` (`host:port`) with server name `name`; returns the loopback
/// address the engine pool should use. Runs until the process ends.
pub async fn start(
    connect: String,
    name: String,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
) -> anyhow::Result<SocketAddr> {
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| anyhow::anyhow!("gateway.engine_upstream: bad server name {name:?}: {e}"))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let connector = TlsConnector::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((plain, _)) = listener.accept().await else {
                continue;
            };
            let (connector, server_name, connect) =
                (connector.clone(), server_name.clone(), connect.clone());
            tokio::spawn(async move {
                if let Err(e) =
                    carry(plain, &connect, server_name, &connector, connect_timeout).await
                {
                    tracing::warn!(upstream = %connect, error = %e, "TLS connection to the engine failed");
                }
            });
        }
    });
    tracing::info!(%addr, upstream = %name, "TLS bridge to the engine");
    Ok(addr)
}

/// One pooled connection, carried over one TLS connection until either side closes.
async fn carry(
    mut plain: TcpStream,
    connect: &str,
    name: ServerName<'static>,
    connector: &TlsConnector,
    timeout: Duration,
) -> anyhow::Result<()> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(connect))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
    plain.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut plain, &mut tls).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let plain = EngineTarget::parse("127.0.0.1:9000").unwrap();
        assert_eq!(
            (plain.connect.as_str(), plain.tls_name, plain.host),
            ("127.0.0.1:9000", None, None)
        );
        let t = EngineTarget::parse("https://memory.example.com").unwrap();
        assert_eq!(t.connect, "memory.example.com:443");
        assert_eq!(t.tls_name.as_deref(), Some("memory.example.com"));
        assert_eq!(t.host.as_deref(), Some("memory.example.com"));
        let t = EngineTarget::parse("http://localhost:8000/").unwrap();
        assert_eq!(
            (t.connect.as_str(), t.tls_name, t.host.as_deref()),
            ("localhost:8000", None, Some("localhost:8000"))
        );
        let t = EngineTarget::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (t.connect.as_str(), t.tls_name.as_deref()),
            ("[::1]:8443", Some("::1"))
        );
        for bad in [
            "ftp://x",
            "https://x/api",
            "https://u:p@x",
            "https://x/?a=1",
        ] {
            assert!(EngineTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let p = std::env::temp_dir().join(format!("empty-ca-{}.pem", std::process::id()));
        std::fs::write(&p, "not a certificate").unwrap();
        assert!(client_config(Some(&p)).is_err());
        assert!(client_config(None).is_ok());
        let _ = std::fs::remove_file(p);
    }
}
