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

/// Set by `stellar up` on each service it starts: the launcher's process id.
pub const PARENT_PID_ENV: &str = "STELLAR_PARENT_PID";

/// Stop together with the launcher. When `STELLAR_PARENT_PID` is set (by `stellar up`), ask
/// the kernel to send this process SIGTERM, the signal every service drains on, when its parent
/// dies, however it dies: a launcher killed with SIGKILL cannot stop its services itself, and
/// they used to keep running and holding their ports. Without the variable (systemd, Fly, a
/// shell) nothing changes. Call at the start of `main`, after `init_tracing`.
///
/// The kernel sends the signal when the *thread* that started this process exits, so the
/// launcher starts its services from its main thread.
pub fn exit_with_parent() {
    let Some(parent) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(error = %e, "cannot arrange to stop with the launcher");
        return;
    }
    // A launcher that died before the call above sends nothing: this process has already
    // been handed to another parent.
    if nix::unistd::getppid().as_raw() != parent {
        tracing::error!(launcher_pid = parent, "the launcher is gone; exiting");
        std::process::exit(1);
    }
}
