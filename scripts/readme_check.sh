#!/usr/bin/env bash
# Runs every command of README.md's ```sh blocks, in order, as a new user would, and fails on
# the first one that fails: README's commands must run as written against files in the repo
# (configs/, examples/, crates/interop/tests/fixtures/) or made by a command shown before.
#
#   bash scripts/readme_check.sh             # builds the debug binary first (cargo build)
#   SWITCHYARD_BIN=path/to/switchyard bash scripts/readme_check.sh
#
# It runs in a scratch directory (configs/, examples/, crates/ and scripts/ linked from the
# checkout, /tmp/ paths moved into it), so it never touches runs/ of the checkout, and on
# tiny settings so that it takes well under a minute: `switchyard` is a shell function that
# adds flags to the real binary's arguments:
#   train      --steps N → --steps max(2, N/50) (4 when not given), small data and batches
#   demo       4 steps on a small corpus (its model and every file it writes are the real ones)
#   eval       --max-windows 2;   analyze: --windows 2 unless given
#   cargo run --release -- <cmd>  → switchyard <cmd> (the debug binary; no release build)
# Skipped, with a line saying so: `bash scripts/test.sh` (this script is part of it) and
# `.venv-ref/bin/python …` when .venv-ref (torch + transformers) is not installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${SWITCHYARD_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --quiet --bin switchyard)
    SWITCHYARD_BIN="$ROOT/target/debug/switchyard"
fi
WORK="$(mktemp -d -t switchyard-readme-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
for d in configs examples crates scripts; do ln -s "$ROOT/$d" "$WORK/$d"; done
[[ -d "$ROOT/.venv-ref" ]] && ln -s "$ROOT/.venv-ref" "$WORK/.venv-ref"
mkdir -p "$WORK/tmp"

# README's ```sh blocks, /tmp/ moved into the scratch directory.
SCRIPT="$WORK/readme.sh"
awk '/^```sh$/ {on = 1; next} /^```/ {on = 0} on' "$ROOT/README.md" |
    sed "s#/tmp/#$WORK/tmp/#g" >"$SCRIPT"

cat >"$WORK/prelude.sh" <<'EOF'
set -euo pipefail
RAN=0
SKIPPED=0
note() { printf '\n$ %s\n' "$*" >&2; }
switchyard() {
    local cmd="$1"
    shift
    local args=("$@") extra=()
    case "$cmd" in
    train)
        local i steps_given=0 print=0 resume=0
        for ((i = 0; i < ${#args[@]}; i++)); do
            case "${args[i]}" in
            --steps)
                local n="${args[i + 1]}"
                args[i + 1]=$((n / 50 > 2 ? n / 50 : 2))
                steps_given=1
                ;;
            --print-config) print=1 ;;
            --resume) resume=1 ;;
            esac
        done
        if ((resume == 1)); then
            # the checkpoint's config.json already holds its (small) data settings
            extra+=(--set log.progress=false)
        elif ((print == 0)); then
            ((steps_given == 1)) || extra+=(--steps 4)
            extra+=(--set optim.warmup_steps=1 --set data.docs_per_domain=4
                --set data.doc_bytes=512 --set data.seq_len=32 --set data.max_valid_windows=2
                --set train.batch_size=2 --set log.progress=false)
        fi
        ;;
    demo)
        extra+=(--set train.steps=4 --set optim.warmup_steps=1 --set data.docs_per_domain=4
            --set data.valid_fraction=0.25 --set data.max_valid_windows=1)
        ;;
    eval) extra+=(--max-windows 2) ;;
    analyze)
        [[ " ${args[*]} " == *" --windows "* || " ${args[*]} " == *" --replay "* ]] ||
            extra+=(--windows 2)
        ;;
    esac
    note "switchyard $cmd ${args[*]}${extra:+   [+ ${extra[*]}]}"
    RAN=$((RAN + 1))
    "$SWITCHYARD_BIN" "$cmd" "${args[@]}" "${extra[@]}" >"$WORK/last.out" 2>"$WORK/last.err" || {
        local rc=$?
        cat "$WORK/last.out" "$WORK/last.err" >&2
        echo "readme_check: FAILED (exit $rc): switchyard $cmd ${args[*]}" >&2
        exit 1
    }
    tail -n 3 "$WORK/last.out" >&2
}
cargo() {
    if [[ "$1 $2 $3" == "run --release --" ]]; then
        shift 3
        switchyard "$@"
    else
        note "cargo $*   [skipped: not a README user command]"
        SKIPPED=$((SKIPPED + 1))
    fi
}
bash() {
    note "bash $*   [skipped: the test suite runs this script]"
    SKIPPED=$((SKIPPED + 1))
}
venv_python() {
    if [[ -x .venv-ref/bin/python ]]; then
        note ".venv-ref/bin/python $*"
        RAN=$((RAN + 1))
        .venv-ref/bin/python "$@"
    else
        note ".venv-ref/bin/python $*   [skipped: no .venv-ref]"
        SKIPPED=$((SKIPPED + 1))
    fi
}
EOF

# The reference environment's commands go through venv_python (installing it is skipped
# too: it downloads about 5 GB).
sed -i -e 's#^\.venv-ref/bin/python #venv_python #' \
    -e 's#^python3 -m venv \.venv-ref.*#note "python3 -m venv .venv-ref ...   [skipped: downloads]"; SKIPPED=$((SKIPPED + 1))#' \
    "$SCRIPT"

cd "$WORK"
START=$SECONDS
export SWITCHYARD_BIN WORK RUST_LOG="${RUST_LOG:-warn}"
/usr/bin/env bash -c "source prelude.sh; source readme.sh; echo \"readme_check: OK, \$RAN commands ran, \$SKIPPED skipped\" >&2"
echo "readme_check: done in $((SECONDS - START))s" >&2
