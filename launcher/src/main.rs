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
        /// Front an existing Stellar Memory server (http://host[:port] or https://host[:port])
        /// instead of starting our engine.
        #[arg(long)]
        engine_url: Option<String>,
        /// X-API-Key the fronted server wants (its single-key mode).
        #[arg(long, env = "STELLAR_ENGINE_API_KEY", requires = "engine_url")]
        engine_api_key: Option<String>,
        /// Extra CA certificates (PEM) to trust for an https:// server.
        #[arg(long, requires = "engine_url")]
        engine_ca_file: Option<PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up {
            config,
            engine_url,
            engine_api_key,
            engine_ca_file,
        } => {
            let front = engine_url.map(|engine_url| stellar_launcher::Front {
                engine_url,
                engine_api_key,
                engine_ca_file,
            });
            run(stellar_launcher::up(config.as_deref(), front).await)
        }
    }
}

fn run(r: anyhow::Result<i32>) -> ! {
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
