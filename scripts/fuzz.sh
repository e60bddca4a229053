#!/usr/bin/env bash
# Run every cargo-fuzz target of fuzz/ (or the ones named) for SECONDS each (default 60; 0 skips),
# one after the other; fails if any crashed. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address), so
# the build runs with RUSTC_BOOTSTRAP=1 (stable's rust-std ships the ASan runtime). If the ASan
# build fails anyway, the targets are built without a sanitizer (safe Rust needs none to find
# panics; the invariants are assertions). Builds go to fuzz/target, never the shared target/.
# Each target grows its own corpus in fuzz/target/corpus/<target> (kept between runs, not
# committed) from the committed seeds in fuzz/corpus/<target>. A crash leaves its input in
# fuzz/artifacts/<target>/; the script prints how to replay it. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-60}
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi
if [ "$seconds" -eq 0 ]; then
  # (libFuzzer would read -max_total_time=0 as "no limit".)
  echo "==> fuzzing skipped (0 seconds per target)"
  exit 0
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(h1_request h1_chunked route webhook_stripe webhook_lemon webhook_toss)
fi

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

target_dir="$root/fuzz/target"
started=$(date +%s)
sanitizer=address
echo "==> building fuzz targets (sanitizer: $sanitizer)"
if ! out=$(cd fuzz && cargo fuzz build --debug-assertions --sanitizer "$sanitizer" --target-dir "$target_dir" 2>&1); then
  echo "$out" | tail -20
  sanitizer=none
  echo "==> the ASan build failed; building without a sanitizer"
  (cd fuzz && cargo fuzz build --debug-assertions --sanitizer "$sanitizer" --target-dir "$target_dir")
fi
echo "    built in $(($(date +%s) - started)) s"

mkdir -p "$target_dir/logs"
failed=()
for t in "${targets[@]}"; do
  corpus="$target_dir/corpus/$t"
  log="$target_dir/logs/$t.log"
  mkdir -p "$corpus" "fuzz/corpus/$t"
  echo "==> fuzz $t for ${seconds} s (log: fuzz/target/logs/$t.log)"
  t0=$(date +%s)
  # The first corpus directory is where libFuzzer writes new inputs; the committed seeds stay
  # as they are.
  if (cd fuzz && cargo fuzz run --debug-assertions --sanitizer "$sanitizer" --target-dir "$target_dir" \
      "$t" "$corpus" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1) >"$log" 2>&1; then
    runs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
    echo "    ok: ${runs} runs, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) inputs, $(($(date +%s) - t0)) s"
  else
    failed+=("$t")
    echo "    CRASH in $t:"
    grep -E -A2 "panicked at" "$log" | head -12 | sed 's/^/      /'
    artifact=$(grep -Eo "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //')
    if [ -n "$artifact" ]; then
      echo "    input: $artifact"
      echo "    replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --debug-assertions --sanitizer $sanitizer $t $artifact)"
    else
      tail -20 "$log" | sed 's/^/      /'
    fi
  fi
done

echo "==> fuzzing done in $(($(date +%s) - started)) s"
if ((${#failed[@]})); then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
