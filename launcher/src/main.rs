//! `stellar` — the launcher. See the library docs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "stellar",
    version,
    about = "Stellar Gate: paid, multi-tenant access to a Stellar Memory engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start engine, billing and gateway with the embedded defaults (SQLite under ./data),
    /// print the URLs and a fresh free-tier API key, and stop everything on Ctrl-C / SIGTERM.
    Up {
        /// A TOML file overriding config/stellar.toml (environment variables override both).
        #[arg(long, env = "STELLAR_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up { config } => match stellar_launcher::up(config.as_deref()).await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        },
    }
}
