//! The `stellar-engine` binary: parse flags, load configuration, bind, run.

use clap::Parser;
use stellar_common::config::{exit_on_error, Config};
use stellar_engine::{EngineConfig, Settings};

/// Stellar memory engine: the Stellar Memory REST API v1 (store, recall, forget, zones, events).
///
/// Configuration comes from config/stellar.toml's [engine] section, the file given with --config
/// (or STELLAR_CONFIG), and environment variables such as STELLAR_ENGINE_ADDR,
/// STELLAR_ENGINE_METRICS_ADDR, STELLAR_ENGINE_DB_URL and STELLAR_DATA_DIR.
#[derive(Parser, Debug)]
#[command(name = "stellar-engine", version, about, long_about)]
struct Cli {
    /// A TOML file layered over the built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Validate the configuration (defaults, file, environment) and exit: 0 if valid, 64 if not.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = exit_on_error(Config::load(cli.config.as_deref()));
    let common = exit_on_error(config.common());
    let section: EngineConfig = exit_on_error(config.section("engine"));
    let settings = exit_on_error(Settings::new(&section, &common.data_dir));
    if cli.check_config {
        println!("configuration OK");
        return Ok(());
    }
    stellar_common::telemetry::init_tracing("engine");
    stellar_common::telemetry::exit_with_parent();

    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let api = bind(section.addr).await?;
    let metrics = bind(section.metrics_addr).await?;
    stellar_engine::run(
        settings,
        api,
        metrics,
        stellar_common::telemetry::shutdown_signal(),
    )
    .await
}
