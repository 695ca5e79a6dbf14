#!/usr/bin/env bash
# kill -9 loop: trains a tiny run with a checkpoint every step and keep_last = 2, kills it with
# SIGKILL at a random moment N times (resuming with `--resume` after each kill), lets the last
# attempt finish, then compares the result with an uninterrupted run of the same config.
#
#   scripts/kill_loop.sh [N=30]          # the binary: $SWITCHYARD, else target/debug/switchyard
#
# Environment: SWITCHYARD (binary), STEPS (default 800), SEED (random kill times, default 1),
# MAX_SLEEP_MS (spread of the kill times after startup; default: from the uninterrupted run's
# time, so N kills fit before the run could finish), KEEP=1 keeps the work directory.
#
# Checks, and prints as one summary line:
#   kills      how many attempts were killed (attempts that finished before their kill are
#              counted apart, as `finished`)
#   orphans    leftovers in the run directory at the end: tmp-*/old-* entries, step-*
#              directories without state.json, and complete step-* beyond keep_last
#   incomplete step-* directories without state.json seen right after a kill (each must be
#              gone once the next attempt has started)
#   identical  model.safetensors, optimizer.safetensors, state.json and config.json of the
#              final checkpoint byte-identical to the uninterrupted run's, and metrics.jsonl
#              identical apart from tokens_per_s (wall-clock throughput)
# Exits 0 only when all N kills happened, orphans = 0 and identical = yes.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-30}
BIN=${SWITCHYARD:-target/debug/switchyard}
STEPS=${STEPS:-800}
SEED=${SEED:-1}
KEEP_LAST=2
if [ ! -x "$BIN" ]; then
  echo "no binary at $BIN: run \`cargo build -p switchyard-cli\` or set SWITCHYARD" >&2
  exit 2
fi
BIN=$(realpath "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-kill-loop.XXXXXX")
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$WORK"' EXIT; fi
cd "$WORK"
cat > run.toml <<EOF
seed = 3
run_dir = "run"

[model]
d_model = 16
n_layers = 1
n_heads = 2
max_seq_len = 32

[model.ffn.sparse]
experts = { count = 4, kind = "swiglu", hidden = 16 }
router = { type = "noisy_top_k", k = 2 }

[data]
docs_per_domain = 4
doc_bytes = 256
seq_len = 16
valid_fraction = 0.25
max_valid_windows = 2

[optim]
warmup_steps = 2

[train]
steps = $STEPS
batch_size = 4
eval_every = 50
checkpoint_every = 1
keep_last = $KEEP_LAST

[log]
progress = false
EOF
export RUST_LOG=error

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# The uninterrupted run, written under the same run_dir name (config.json holds it), then
# moved aside; it and a two-step run time the kills.
t0=$(now_ms)
"$BIN" train --config run.toml --steps 2 --run-dir one >/dev/null
t1=$(now_ms)
"$BIN" train --config run.toml >/dev/null
t2=$(now_ms)
mv run ref
startup_ms=$((t1 - t0))
# kills land between startup and about 1.3 × the mean time N attempts may take without
# finishing the run, so most kills interrupt training, saving or pruning
span_ms=$(((t2 - t1 - startup_ms) * 4 / (3 * N)))
[ "$span_ms" -lt 50 ] && span_ms=50
MAX_SLEEP_MS=${MAX_SLEEP_MS:-$span_ms}
MIN_SLEEP_MS=$((startup_ms * 3 / 4))

RANDOM=$SEED
kills=0 finished=0 attempts=0 incomplete=0 uncleaned=0
has_checkpoint() { [ -f run/latest ] || compgen -G 'run/step-*' >/dev/null; }
incomplete_steps() {
  local n=0 d
  for d in run/step-*; do
    [ -d "$d" ] && [ ! -f "$d/state.json" ] && n=$((n + 1))
  done
  echo "$n"
}
while [ "$kills" -lt "$N" ]; do
  attempts=$((attempts + 1))
  if has_checkpoint; then
    args=(train --resume --run-dir run)
  else
    # killed before the first checkpoint: start over (the directory holds metrics.jsonl)
    args=(train --config run.toml --force)
  fi
  "$BIN" "${args[@]}" >/dev/null 2>attempt.err &
  pid=$!
  ms=$((MIN_SLEEP_MS + RANDOM % MAX_SLEEP_MS))
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  kill -9 "$pid" 2>/dev/null || true
  rc=0
  wait "$pid" 2>/dev/null || rc=$?
  case $rc in
    137)
      kills=$((kills + 1))
      seen=$(incomplete_steps)
      incomplete=$((incomplete + seen))
      ;;
    0)
      finished=$((finished + 1))
      if [ -f "run/step-$(printf '%08d' "$STEPS")/state.json" ]; then
        echo "the run finished after $kills kills; raise STEPS or lower MAX_SLEEP_MS" >&2
        break
      fi
      ;;
    *)
      echo "attempt $attempts failed with exit code $rc:" >&2
      cat attempt.err >&2
      exit 1
      ;;
  esac
done

# The last attempt runs to the end.
if has_checkpoint; then
  "$BIN" train --resume --run-dir run >/dev/null
else
  "$BIN" train --config run.toml --force >/dev/null
fi
uncleaned=$(incomplete_steps)

orphans=0
for e in run/*; do
  name=$(basename "$e")
  case "$name" in
    tmp-* | old-* | latest.tmp-*) orphans=$((orphans + 1)) ;;
  esac
done
orphans=$((orphans + uncleaned))
# a replaced run directory is moved to a hidden sibling before it is deleted
for e in .run.replaced-*; do [ -e "$e" ] && orphans=$((orphans + 1)); done
complete=0
for d in run/step-*; do [ -f "$d/state.json" ] && complete=$((complete + 1)); done
[ "$complete" -gt "$KEEP_LAST" ] && orphans=$((orphans + complete - KEEP_LAST))

last=step-$(printf '%08d' "$STEPS")
identical=yes
for f in model.safetensors optimizer.safetensors state.json config.json; do
  if ! cmp -s "ref/$last/$f" "run/$last/$f"; then
    identical=no
    echo "differs: $last/$f" >&2
    case $f in *.json) diff <(tr ',' '\n' <"ref/$last/$f") <(tr ',' '\n' <"run/$last/$f") | head -20 >&2 ;; esac
  fi
done
strip() { sed -E 's/"tokens_per_s":[^,}]*,?//' "$1"; }
if ! diff -q <(strip ref/metrics.jsonl) <(strip run/metrics.jsonl) >/dev/null; then
  identical=no
  echo "differs: metrics.jsonl (tokens_per_s aside)" >&2
fi

ok=yes
[ "$kills" -ge "$N" ] && [ "$orphans" -eq 0 ] && [ "$identical" = yes ] || ok=no
echo "kill_loop: kills=$kills finished=$finished attempts=$attempts steps=$STEPS kill_after_ms=$MIN_SLEEP_MS+0..$MAX_SLEEP_MS keep_last=$KEEP_LAST orphans=$orphans incomplete_seen_after_kills=$incomplete identical=$identical ok=$ok"
[ "$ok" = yes ]
