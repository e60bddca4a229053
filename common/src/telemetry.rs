//! Tracing set-up shared by every binary: `RUST_LOG` filters (default `info`), and
//! `STELLAR_LOG_FORMAT=json` switches to one JSON object per line for production.

/// Install the global subscriber once; later calls are ignored (tests start several services).
pub fn init_tracing(service: &str) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn,sqlx=warn,hyper=warn")
    });
    let json = std::env::var("STELLAR_LOG_FORMAT")
        .map(|v| v.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let result = if json {
        fmt()
            .with_env_filter(filter)
            .json()
            .with_current_span(true)
            .try_init()
    } else {
        fmt().with_env_filter(filter).with_target(false).try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "tracing initialised");
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT): the signal every service drains on.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
