#!/usr/bin/env bash
# Run everything on the embedded defaults: engine, billing and gateway, SQLite under ./data.
# Installs what the build needs, builds the release binaries, then `stellar up` (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh build
cargo build --release --bins --quiet
exec target/release/stellar up "$@"
