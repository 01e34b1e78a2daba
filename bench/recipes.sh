#!/usr/bin/env bash
# Pretraining recipes at equal wall time on this machine: each recipe (a set of --set overrides
# of configs/cpu-speedrun.toml) is timed for a few steps, given the steps that fill BUDGET_S
# seconds of training (its cosine schedule over them), trained, and validated at its end on the
# speedrun's validation bytes (the whole validation split). Prints one row per recipe: step
# time, steps, tokens, final validation bits per byte. This is how the speedrun's optimizer and
# batch were chosen (docs/speedrun.md).
#
# Usage: bench/recipes.sh [OUT_DIR]      (runs/recipes by default; finished recipes are reused)
# Env:   BUDGET_S (300), STEPS (a fixed step count instead, for recipes whose step time is the
#        same: an ablation at equal steps is free of the timing's noise), RECIPES (a file of "name|override override …" lines; the built-in list
#        below by default). Needs the prepared corpus of `frugal speedrun` and a release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-runs/recipes}
BUDGET_S=${BUDGET_S:-300}
BIN=target/release/frugal
CONFIG=configs/cpu-speedrun.toml
[ -x "$BIN" ] || cargo build --release -p frugal-cli
[ -f data/prepared/pretrain/shards/manifest.json ] || {
    echo "no tokenized corpus in data/prepared/pretrain: run frugal speedrun first" >&2
    exit 2
}
default_recipes() {
    cat <<'EOF'
adamw-b8|train.optimizer=adamw
muon-b8|train.optimizer=muon
adamw-b4|train.optimizer=adamw train.batch_size=4 train.lr=1.4e-3
muon-b4|train.optimizer=muon train.batch_size=4
EOF
}
recipes=$(if [ -n "${RECIPES:-}" ]; then cat "$RECIPES"; else default_recipes; fi)
mkdir -p "$OUT"
rows=()
while IFS='|' read -r name overrides; do
    [ -z "$name" ] && continue
    sets=()
    for o in $overrides; do sets+=(--set "$o"); done
    run="$OUT/$name"
    if [ ! -f "$run/recipe.done" ]; then
        step_ms=$("$BIN" bench train --config "$CONFIG" "${sets[@]}" --steps 6 2>/dev/null |
            awk '/^step_ms_median:/ {print $2}')
        steps=${STEPS:-$(python3 -c 'import sys; print(max(20, int(float(sys.argv[1]) * 1e3 / float(sys.argv[2]))))' \
            "$BUDGET_S" "$step_ms")}
        echo "== $name: ${step_ms} ms a step -> $steps steps ($overrides)" >&2
        rm -rf "$run"
        "$BIN" pretrain --config "$CONFIG" --run "$run" "${sets[@]}" --set "train.steps=$steps" \
            --set "train.warmup_steps=$((steps / 16))" --set train.eval_every=0 \
            --set train.sample_every=0 --set "train.checkpoint_every=$steps" >"$OUT/$name.log" 2>&1
        echo "$step_ms $steps" >"$run/recipe.done"
    fi
    read -r step_ms steps <"$run/recipe.done"
    rows+=("$(python3 - "$run" "$name" "$step_ms" "$steps" "$overrides" <<'EOF'
import json, sys
run, name, step_ms, steps, overrides = sys.argv[1:]
val = [r for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "val_bpb" in r][-1]
ms = [r["ms"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "ms" in r]
print(f"| {name} | `{overrides}` | {float(step_ms):.0f} ms | {steps} | {sum(ms) / 1e3:.0f} s | {val['val_bpb']:.4f} |")
EOF
)")
done <<<"$recipes"
echo "| recipe | overrides | step (timed) | steps | training seconds | val bpb |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
