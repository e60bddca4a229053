#!/usr/bin/env bash
# Run the benchmarks (release build) and print Markdown reports for BENCHMARKS.md.
#   scripts/bench.sh engine            engine throughput/latency at 1k, 10k, 100k memories
#   scripts/bench.sh gateway           direct vs gateway vs nginx vs a byte-copying relay, RSS with 100k cached keys
#                                      (--rounds N repeats the fixed-rate runs and adds medians)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh build bench
cargo build --release --bins --quiet
exec target/release/stellar-bench "$@"
