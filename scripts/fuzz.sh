#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time: `bash scripts/fuzz.sh [SECONDS]`
# (default 30 per target). scripts/test.sh calls it with the default as a smoke run; longer
# runs for docs/RELIABILITY.md use e.g. `bash scripts/fuzz.sh 1800`.
#
# Needs cargo-fuzz (installed from crates.io when missing) and libFuzzer's instrumentation:
# with a nightly toolchain (as on our machines) the targets run under AddressSanitizer;
# without one they are built on stable with coverage instrumentation only (`-s none`;
# RUSTC_BOOTSTRAP lets cargo-fuzz pass its `-Z` flags), which still finds panics, aborts
# and oversized allocations.
#
# Seeds come from the test fixtures (fuzz/seeds.py; the checkpoint seeds need the debug
# `switchyard` binary, which is built if missing). Saved crash inputs of fixed bugs live in
# fuzz/regressions/<target>/ and are run first on every call. A crash, panic, timeout, or
# allocation over -malloc_limit_mb fails the script; the input is left in
# fuzz/artifacts/<target>/ — make it a regression test, fix, and copy it to fuzz/regressions.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
targets=(run_config checkpoint hf_import tokenizer)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
  sanitizer=(--sanitizer address)
else
  echo "fuzz: no nightly toolchain; building on stable without AddressSanitizer" >&2
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
  sanitizer=(--sanitizer none)
fi
[ -x target/debug/switchyard ] || cargo build -p switchyard-cli
python3 fuzz/seeds.py --switchyard target/debug/switchyard

echo "== cargo fuzz build"
(cd fuzz && "${fuzz[@]}" build "${sanitizer[@]}")
log_dir=fuzz/logs
mkdir -p "$log_dir"
for t in "${targets[@]}"; do
  mkdir -p "fuzz/regressions/$t"
  echo "== fuzz $t (${secs}s)"
  # -malloc_limit_mb: the loaders are told 1 GiB is available (fuzz/src/lib.rs), so a larger
  # single allocation means a size check is missing. -timeout: one input, seconds.
  if ! (cd fuzz && "${fuzz[@]}" run "${sanitizer[@]}" "$t" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$secs" -malloc_limit_mb=2048 -rss_limit_mb=4096 -timeout=30 \
        -max_len=1048576 -print_final_stats=1) >"$log_dir/$t.log" 2>&1; then
    tail -n 60 "$log_dir/$t.log"
    echo "fuzz: target $t failed; see $log_dir/$t.log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log_dir/$t.log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log_dir/$t.log" | tail -n1 | grep -o '[0-9]*' || echo '?')
  echo "fuzz $t: ${runs} executions in ${secs}s, coverage ${cov} edges, no crash"
done
