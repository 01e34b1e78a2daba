#!/usr/bin/env bash
# A scaling sweep on this machine: short pretraining runs of three model sizes, each at two
# lengths, then the Chinchilla-form law L(N, D) = E + A/N^α + B/D^β fitted to their final
# validation losses by `frugal report --with-run`.
#
# Usage: bench/sweep.sh [OUT_DIR]
#   OUT_DIR   runs/sweep by default; finished runs in it are reused, a killed one resumes.
#   SIZES     "128x4 192x5 256x6" by default (d_model x layers; heads of 64, FFN 3·d: the
#             family `frugal plan` weighs)
#   LAW_OUT   where to save the fitted law (configs/scaling-cpu.toml by default)
#   STEPS     "150 400" by default (steps of 8 x 256 tokens)
#
# Every run uses configs/cpu-speedrun.toml otherwise (same tokenizer, corpus, batch, optimizer,
# precision, cosine schedule over its own steps) and is validated once at its end on the same
# validation windows as the speedrun (262,144 tokens over the whole validation split), so the
# losses are comparable across sizes. Needs the prepared corpus of `frugal speedrun`
# (data/prepared/pretrain) and a release build. Prints a markdown table, then the fitted law.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-runs/sweep}
SIZES=${SIZES:-128x4 192x5 256x6}
STEPS=${STEPS:-150 400}
LAW_OUT=${LAW_OUT:-configs/scaling-cpu.toml}
BIN=target/release/frugal
[ -x "$BIN" ] || cargo build --release -p frugal-cli
[ -f data/prepared/pretrain/shards/manifest.json ] || {
    echo "no tokenized corpus in data/prepared/pretrain: run frugal speedrun first" >&2
    exit 2
}
runs=()
for size in $SIZES; do
    d=${size%x*} layers=${size#*x}
    for steps in $STEPS; do
        name="d${d}-l${layers}-s${steps}"
        run="$OUT/$name"
        runs+=("$run")
        [ -f "$run/sweep.done" ] && continue
        resume=()
        [ -f "$run/config.toml" ] && resume=(--resume)
        echo "== d_model $d, $layers layers, $steps steps -> $run" >&2
        mkdir -p "$OUT"
        "$BIN" pretrain --config configs/cpu-speedrun.toml --run "$run" "${resume[@]}" \
            --set "model.d_model=$d" --set "model.n_layers=$layers" \
            --set "model.n_heads=$((d / 64))" --set "model.n_kv_heads=$((d / 64))" \
            --set "model.ffn_hidden=$((3 * d))" --set "train.steps=$steps" \
            --set "train.warmup_steps=$((steps / 20))" --set "train.eval_every=0" \
            --set "train.sample_every=0" --set "train.checkpoint_every=$steps" \
            >"$OUT/$name.log" 2>&1
        grep -v "^step [0-9]* | loss" "$OUT/$name.log" >&2 || true
        touch "$run/sweep.done"
    done
done
echo "| run | params | tokens | tokens/param | wall | val loss | val bpb |"
echo "|---|---|---|---|---|---|---|"
for run in "${runs[@]}"; do
    python3 - "$run" "$OUT/$(basename "$run").log" <<'EOF'
import json, re, sys
run, log = sys.argv[1], sys.argv[2]
params = float(re.search(r"model ([0-9.]+)M params", open(log).read()).group(1)) * 1e6
val = [r for r in map(json.loads, open(f"{run}/metrics.jsonl")) if "val_loss" in r][-1]
pre = next(s for s in json.load(open(f"{run}/ledger.json"))["stages"] if s["stage"] == "pretrain")
tokens = pre["tokens"]
print(f"| {run.split('/')[-1]} | {params / 1e6:.2f}M | {tokens / 1e6:.2f}M | {tokens / params:.3f} | "
      f"{pre['wall_s']:.0f} s | {val['val_loss']:.4f} | {val['val_bpb']:.4f} |")
EOF
done
largest=${runs[-1]}
others=()
for run in "${runs[@]}"; do
    [ "$run" = "$largest" ] || others+=(--with-run "$run")
done
"$BIN" report --run "$largest" "${others[@]}" --law-out "$LAW_OUT" >/dev/null
echo
sed -n '/^## Projection/,/^| x1 /p' "$largest/report.md"
