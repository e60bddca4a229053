//! `stellar-gateway [--config FILE]`: load the configuration and run the proxy.

use clap::Parser;
use std::path::PathBuf;
use stellar_common::config::{exit_on_error, Config};

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
    let config = exit_on_error(Config::load(cli.config.as_deref()));
    let gateway = exit_on_error(config.section::<stellar_gateway::GatewayConfig>("gateway"));
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
