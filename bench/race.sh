#!/usr/bin/env bash
# The time-to-quality race: the speedrun's pretraining against the same model and the speedrun's
# original recipe (d256 x 6, AdamW, cosine, batch 8 x 256) in eager PyTorch, on the same token
# shards, validated on the same bytes, on this machine.
#
# 1. checks that both sides score the same bytes: PyTorch loads the speedrun's last pretraining
#    checkpoint and must reproduce the validation bits per byte in its training log (1e-3);
# 2. times PyTorch's step in float32 and under CPU autocast to bfloat16 and keeps the faster;
# 3. tunes PyTorch's peak learning rate over LRS on TUNE_STEPS-step runs (step budgets, so the
#    choice does not depend on what else the machine is doing);
# 4. trains PyTorch for WALL_S seconds of training at the best rate (cosine over the wall time);
# 5. writes the report of the speedrun's run with both curves (`frugal report --race`) and
#    copies the plot to docs/race.svg.
#
# Usage: bench/race.sh [SPEEDRUN_DIR]     (runs/speedrun by default: a finished `frugal speedrun`)
# Env:   WALL_S (1800), LRS ("1e-3 2e-3 4e-3"), TUNE_STEPS (1000), EVAL_EVERY_S (180),
#        THREADS (2), OUT (runs/race). Finished parts in OUT are reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN=${1:-runs/speedrun}
WALL_S=${WALL_S:-1800}
LRS=${LRS:-1e-3 2e-3 4e-3}
TUNE_STEPS=${TUNE_STEPS:-1000}
EVAL_EVERY_S=${EVAL_EVERY_S:-180}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/race}
PY=.venv/bin/python
BIN=target/release/frugal
CONFIG=configs/cpu-speedrun.toml

if ! "$PY" -c 'import torch, safetensors, numpy' 2>/dev/null; then
    echo "== creating .venv and installing torch, numpy, safetensors (a large download)"
    python3 -m venv .venv
    .venv/bin/pip install torch numpy safetensors
fi
[ -x "$BIN" ] || cargo build --release -p frugal-cli
last_ckpt=$(ls -d "$RUN"/checkpoints/step-* 2>/dev/null | sort -t- -k2 -n | tail -n 1 || true)
if [ -z "$last_ckpt" ] || [ ! -f "$RUN/metrics.jsonl" ]; then
    echo "no finished pretraining in $RUN: run \`frugal speedrun --run $RUN\` first" >&2
    exit 2
fi
mkdir -p "$OUT"
py() { "$PY" bench/race_pytorch.py "$@" --config "$CONFIG" --threads "$THREADS"; }

echo "== 1. the same bytes: PyTorch scores $last_ckpt"
logged=$(python3 -c '
import json, sys
vals = [r["val_bpb"] for r in map(json.loads, open(sys.argv[1])) if "val_bpb" in r]
print(vals[-1])' "$RUN/metrics.jsonl")
ours=$(py check --checkpoint "$last_ckpt" | awk '/^val_bpb:/ {print $2}')
echo "frugal's log: $logged   PyTorch on the same checkpoint: $ours"
python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(a - b) > 1e-3)' "$logged" "$ours" ||
    { echo "the two sides disagree on the validation bytes" >&2; exit 1; }

echo "== 2. PyTorch's faster precision"
py probe | tee "$OUT/probe.txt"
precision=()
grep -q "^faster: bf16" "$OUT/probe.txt" && precision=(--bf16)

echo "== 3. PyTorch's learning rate over $LRS ($TUNE_STEPS steps each)"
best_lr="" best_bpb=""
for lr in $LRS; do
    curve="$OUT/tune-lr$lr.jsonl"
    if [ ! -s "$curve" ]; then
        py train "${precision[@]}" --lr "$lr" --steps "$TUNE_STEPS" --eval-every-s 0 \
            --out "$curve" >"$OUT/tune-lr$lr.log" 2>&1 || echo "lr $lr failed: $OUT/tune-lr$lr.log"
    fi
    bpb=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["val_bpb"])' "$curve" 2>/dev/null || echo inf)
    echo "lr $lr: val bpb $bpb"
    if [ -z "$best_bpb" ] || python3 -c 'import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))' "$bpb" "$best_bpb"; then
        best_lr=$lr best_bpb=$bpb
    fi
done
echo "best: lr $best_lr"

echo "== 4. PyTorch for $WALL_S s of training at lr $best_lr"
if [ ! -s "$OUT/pytorch.done" ]; then
    py train "${precision[@]}" --lr "$best_lr" --wall-s "$WALL_S" --eval-every-s "$EVAL_EVERY_S" \
        --out "$OUT/pytorch.jsonl" | tee "$OUT/pytorch.log" | grep "val bpb"
    echo "lr $best_lr ${precision[*]:-f32}" >"$OUT/pytorch.done"
fi

echo "== 5. the report"
"$BIN" report --run "$RUN" --race "$OUT/pytorch.jsonl" | sed -n '/^## Time to quality/,/^## Cost/p'
cp "$RUN/race.svg" docs/race.svg
echo "wrote docs/race.svg"
