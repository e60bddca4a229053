#!/usr/bin/env bash
# Run the whole test suite: formatting, lints, unit tests, end-to-end tests against the real
# binaries (SQLite and PostgreSQL), Redis-backed tests and the real-browser tests.
# Installs what is missing first. With CI=true, tests that need PostgreSQL (127.0.0.1:5432) or
# Redis (127.0.0.1:6379) fail instead of skipping when those are unreachable. A short run of every
# fuzz target (FUZZ_SECONDS each, default 60; 0 skips it) comes before the tests, so that the test
# runner's summary is the last thing printed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh build browser test

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> build binaries"
cargo build --workspace --bins --locked
echo "==> clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> fuzz (FUZZ_SECONDS=${FUZZ_SECONDS:-60} s per target; fuzz/README.md)"
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
