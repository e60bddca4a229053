#!/usr/bin/env bash
# Install what the build and the tests need when it is missing (Debian/Ubuntu, as root or with
# sudo). Usage: scripts/ensure-deps.sh build [browser] [bench]
#   build   — a C toolchain and cmake (pingora's zlib-ng and zstd build C code)
#   browser — Debian's Chromium for the browser tests, and the test driver (playwright-core, npm)
#   test    — promtool (validates the gateway's /metrics) and redis-server (tests start their own)
#   bench   — nginx and wrk for the gateway benchmark
set -euo pipefail
cd "$(dirname "$0")/.."

want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
for what in "$@"; do
  case "$what" in
    build) need cc build-essential; need cmake cmake; need pkg-config pkg-config ;;
    browser) need chromium chromium; need node nodejs; need npm npm ;;
    test) need promtool prometheus; need redis-server redis-server ;;
    bench) need nginx nginx-light; need wrk wrk ;;
    *) echo "unknown dependency group: $what" >&2; exit 2 ;;
  esac
done

if ((${#want[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing: ${want[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first" >&2
  exit 1
fi

for what in "$@"; do
  if [ "$what" = browser ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "==> installing the browser test driver (playwright-core, no browser download)"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
done
