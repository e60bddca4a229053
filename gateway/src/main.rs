//! `stellar-gateway [--config FILE]`: load the configuration and run the proxy.

use clap::Parser;
use std::path::PathBuf;
use stellar_common::config::{exit_on_error, Config};

// glibc malloc was a fifth of the gateway's CPU under load (per-request buffers freed on other
// threads, arena locks); mimalloc's thread-local free lists make that a few percent.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stellar-gateway",
    about = "Stellar Gate: the API-key gateway in front of the memory engine"
)]
struct Cli {
    /// Configuration file (else STELLAR_CONFIG, else the built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the configuration (defaults, file, environment) and exit: 0 if valid, 64 if not.
    #[arg(long)]
    check_config: bool,
}

fn main() {
    let cli = Cli::parse();
    stellar_common::telemetry::init_tracing("gateway");
    stellar_common::telemetry::exit_with_parent();
    let config = exit_on_error(Config::load(cli.config.as_deref()));
    let mut gateway = exit_on_error(config.section::<stellar_gateway::GatewayConfig>("gateway"));
    if gateway.public_url.trim().is_empty() {
        gateway.public_url = config
            .raw("billing.public_url")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
    }
    let common = exit_on_error(config.common());
    if cli.check_config {
        println!("configuration OK");
        return;
    }
    if let Err(e) = stellar_gateway::run(gateway, common) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
