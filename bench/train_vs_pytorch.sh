#!/usr/bin/env bash
# Train the `ref` preset (configs/ref.toml) in frugal and in eager PyTorch (bench/llama_ref.py),
# alternating the two within each round so that both see the same machine conditions, and
# print tokens/s for each run, the medians over rounds, their ratio and the peak RSS.
#
# Usage: bench/train_vs_pytorch.sh
# Env:   THREADS (default 2), STEPS (default 20, timed steps after 3 warm-up steps per run),
#        ROUNDS (default 2), FRUGAL_FEATURES (optional cargo features for frugal-cli),
#        PRECISION (f32 by default; bf16: frugal's train.precision = "bf16" against PyTorch's
#        CPU autocast to bfloat16), BASELINE (optional path to another frugal binary, e.g. a
#        release build of an older commit, measured in the same rounds: a before/after ratio).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

THREADS="${THREADS:-2}"
STEPS="${STEPS:-20}"
ROUNDS="${ROUNDS:-2}"
PRECISION="${PRECISION:-f32}"
py_precision=()
[[ "$PRECISION" == bf16 ]] && py_precision=(--bf16)
PY=.venv/bin/python

# --- PyTorch environment --------------------------------------------------------------------
if ! "$PY" -c 'import torch, safetensors' 2>/dev/null; then
    echo "== creating .venv and installing torch, numpy, safetensors (a large download, several GB)"
    python3 -m venv .venv
    .venv/bin/pip install torch numpy safetensors
fi

# --- frugal ------------------------------------------------------------------------------------
cargo_args=(build --release -p frugal-cli)
if [[ -n "${FRUGAL_FEATURES:-}" ]]; then
    cargo_args+=(--features "$FRUGAL_FEATURES")
fi
echo "== cargo ${cargo_args[*]}"
cargo "${cargo_args[@]}"
FRUGAL=target/release/frugal

# field NAME FILE: the value after "NAME:" on the last such line of FILE
field() { grep "^$1:" "$2" | tail -n 1 | awk '{print $2}'; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
f_tps=(); f_rss=(); p_tps=(); p_rss=(); b_tps=()
for ((r = 1; r <= ROUNDS; r++)); do
    if [[ -n "${BASELINE:-}" ]]; then
        echo "== round $r/$ROUNDS: baseline $BASELINE"
        "$BASELINE" bench train --preset ref --threads "$THREADS" --steps "$STEPS" \
            --set "train.precision=$PRECISION" | tee "$log"
        b_tps+=("$(field tokens_per_s "$log")")
        echo "-- baseline round $r: tokens_per_s ${b_tps[-1]}"
    fi
    echo "== round $r/$ROUNDS: frugal (threads $THREADS, steps $STEPS)"
    "$FRUGAL" bench train --preset ref --threads "$THREADS" --steps "$STEPS" \
        --set "train.precision=$PRECISION" | tee "$log"
    f_tps+=("$(field tokens_per_s "$log")"); f_rss+=("$(field peak_rss_mb "$log")")
    echo "-- frugal round $r: tokens_per_s ${f_tps[-1]}  peak_rss_mb ${f_rss[-1]}"

    echo "== round $r/$ROUNDS: pytorch (threads $THREADS, steps $STEPS)"
    "$PY" bench/llama_ref.py bench --config configs/ref.toml --threads "$THREADS" --steps "$STEPS" \
        "${py_precision[@]}" | tee "$log"
    p_tps+=("$(field tokens_per_s "$log")"); p_rss+=("$(field peak_rss_mb "$log")")
    echo "-- pytorch round $r: tokens_per_s ${p_tps[-1]}  peak_rss_mb ${p_rss[-1]}"
done

# --- summary -----------------------------------------------------------------------------------
"$PY" - "${f_tps[*]}" "${p_tps[*]}" "${f_rss[*]}" "${p_rss[*]}" "${b_tps[*]}" <<'EOF'
import statistics, sys
f_tps, p_tps, f_rss, p_rss, b_tps = ([float(x) for x in a.split()] for a in sys.argv[1:6])
print()
print(f"{'round':>6} {'frugal tok/s':>14} {'pytorch tok/s':>14}")
for i, (f, p) in enumerate(zip(f_tps, p_tps), 1):
    print(f"{i:>6} {f:>14.1f} {p:>14.1f}")
fm, pm = statistics.median(f_tps), statistics.median(p_tps)
print(f"{'median':>6} {fm:>14.1f} {pm:>14.1f}")
print(f"ratio_tokens_per_s: {fm / pm:.3f}")
print(f"peak_rss_mb: frugal {max(f_rss):.1f} pytorch {max(p_rss):.1f}")
if b_tps:
    bm = statistics.median(b_tps)
    print(f"baseline median tokens_per_s: {bm:.1f} (ratio to pytorch {bm / pm:.3f})")
    print(f"ratio_to_baseline: {fm / bm:.3f}")
EOF
