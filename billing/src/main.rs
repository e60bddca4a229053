//! `stellar-billing`: parse flags and configuration, then run the library.

use clap::Parser;
use std::path::PathBuf;
use stellar_common::config::{exit_on_error, Config};

/// The Stellar Gate billing sidecar: accounts and keys, checkout (Lemon Squeezy, Stripe,
/// TossPayments), verified webhooks, recurring Toss charges, landing and dashboard files.
///
/// Every setting is in config/stellar.toml ([billing], [mail], [lemon], [stripe], [toss]) and can
/// be set from the environment (STELLAR_BILLING_ADDR, STELLAR_MAIL_SMTP_URL, STRIPE_SECRET_KEY, …).
#[derive(Parser)]
#[command(name = "stellar-billing", version)]
struct Cli {
    /// Configuration file layered over the defaults (also STELLAR_CONFIG).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration (defaults, file, environment) and exit: 0 if valid, 64 if not.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    stellar_common::telemetry::init_tracing("stellar-billing");
    stellar_common::telemetry::exit_with_parent();
    let config = exit_on_error(Config::load(cli.config.as_deref()));
    let settings = exit_on_error(stellar_billing::settings::Settings::from_config(&config));
    if cli.check_config {
        println!("configuration OK");
        return;
    }
    let listener = match tokio::net::TcpListener::bind(settings.billing.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on billing.addr {}: {e}",
                settings.billing.addr
            );
            std::process::exit(69);
        }
    };
    if let Err(e) = stellar_billing::run(
        settings,
        listener,
        stellar_common::telemetry::shutdown_signal(),
    )
    .await
    {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
