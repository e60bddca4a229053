//! `stellar-bench`: see the library docs and BENCHMARKS.md.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "stellar-bench",
    about = "Benchmarks for the engine and the gateway (run with --release binaries)"
)]
struct Cli {
    /// Directory with the release binaries.
    #[arg(long, default_value = "target/release", global = true)]
    bin_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Engine store throughput and store/recall latency at several memory counts in one tenant.
    Engine {
        /// Memory counts to measure at (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
    },
    /// The same upstream (a) directly, (b) through the gateway with auth + limiter + quota,
    /// (c) through nginx as a plain proxy_pass; gateway RSS with many cached keys; the Redis
    /// limiter's cost and two gateways sharing it.
    Gateway {
        /// Seconds per load run.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Concurrent connections per load run.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Distinct keys to cache for the memory measurement (0 skips it).
        #[arg(long, default_value_t = 100_000)]
        rss_keys: usize,
        /// Skip the Redis limiter and two-gateway runs.
        #[arg(long)]
        no_redis: bool,
        /// Gateway proxy threads = nginx worker processes.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Only the memory measurement with `--rss-keys` cached keys (quick).
        #[arg(long)]
        only_rss: bool,
        /// Rounds of the fixed-rate runs; more than one adds the median p99 added per path.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// The gateway at a share of its measured peak for a long time, sampling its RSS, open file
    /// descriptors and connections to the engine; verdict flat or growing (BENCHMARKS.md).
    Soak {
        /// Seconds of load.
        #[arg(long, default_value_t = 600)]
        secs: u64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// Seconds of the wrk run that measures the peak.
        #[arg(long, default_value_t = 10)]
        peak_secs: u64,
        /// The load as a percentage of the peak.
        #[arg(long, default_value_t = 80.0)]
        load_percent: f64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Gateway proxy threads.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// The floor under any proxy: a byte-copying TCP relay (run by `gateway` as a process).
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new;
    let report = match cli.command {
        Cmd::Relay {
            listen,
            upstream,
            threads,
        } => return stellar_bench::relay::run(listen, upstream, threads),
        Cmd::Engine { sizes } => runtime()?.block_on(stellar_bench::engine::run(
            &sizes,
            &cli.bin_dir.join("stellar-engine"),
        ))?,
        Cmd::Soak {
            secs,
            interval,
            peak_secs,
            load_percent,
            connections,
            workers,
        } => runtime()?.block_on(stellar_bench::soak::run(stellar_bench::soak::SoakOpts {
            bin_dir: cli.bin_dir.clone(),
            secs,
            interval_secs: interval,
            peak_secs,
            load_percent,
            connections,
            workers,
        }))?,
        Cmd::Gateway {
            secs,
            connections,
            rss_keys,
            no_redis,
            workers,
            only_rss,
            rounds,
        } => runtime()?.block_on(stellar_bench::gateway::run(
            stellar_bench::gateway::GatewayBenchOpts {
                bin_dir: cli.bin_dir.clone(),
                duration_secs: secs,
                connections,
                rss_keys,
                redis: !no_redis,
                workers,
                only_rss,
                rounds,
            },
        ))?,
    };
    println!("{report}");
    Ok(())
}
