#!/usr/bin/env bash
# Runs the whole Switchyard test suite on a fresh machine with only the Rust toolchain:
# installs the system packages the tests need, checks formatting, lints (clippy) and the API
# docs (rustdoc) with warnings as errors, runs every test in the workspace, then README's
# commands as written (scripts/readme_check.sh) and each fuzz target for 30 s (scripts/fuzz.sh).
# `.ci/run` calls this script; README.md names it as the test command.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Headless Chromium renders the analysis report in its browser test.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "warning: missing ${need_apt[*]} and cannot apt-get install (not root); browser tests will be skipped" >&2
  fi
fi

command -v rustfmt >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
echo "== cargo test"
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
echo "== README's commands, as written (tiny settings)"
# the binary the CLI tests just ran
SWITCHYARD_BIN="$PWD/target/debug/switchyard" bash scripts/readme_check.sh
echo "== fuzz smoke run (30 s per target)"
bash scripts/fuzz.sh 30
