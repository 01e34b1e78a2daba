#!/usr/bin/env bash
# An architecture against the dense speedrun model, on the default corpus, in one run.
#
# Usage: bench/ablation.sh CONFIG [STEPS] [OUT_DIR]
#   CONFIG   configs/cpu-moe.toml (mixture of experts at equal FLOPs per token),
#            configs/cpu-mtp.toml (one multi-token prediction module, then speculative decoding
#            with it), configs/cpu-mla.toml (latent attention), or any variant of
#            configs/cpu-speedrun.toml
#   STEPS    400 by default; OUT_DIR runs/ablation-STEPS by default
#
# Pretrains configs/cpu-speedrun.toml ("dense") and CONFIG for STEPS steps on the same token
# stream, then prints validation loss, FLOPs, wall time, and the variant's own figures side by
# side. Both see the same tokens: with equal FLOPs per token (the MoE config) that is equal
# training FLOPs, and the table shows the ledger's counts either way. Needs the prepared corpus
# of `frugal speedrun` (data/prepared/pretrain) and a release build. Runs already finished in
# OUT_DIR are reused (the baseline is shared by every variant); a killed run resumes.
#
# Wall time: the two runs are sequential, and this shared machine's speed drifts between them
# (the GEMM peak each run measures at its start is printed), so the step cost is also measured
# with `frugal bench train`, baseline and variant alternately, ROUNDS times (random tokens: a
# mixture of experts is balanced there, as after warm-up).
#
# Expert balance (MoE): max/mean tokens per expert, worst layer. One step's 2,048 tokens come
# from a few documents whose tokens route alike, so per-step load is noisy whatever the biases
# do; the table gives it per step, over 25-step windows (51k tokens), and over the validation
# tokens (65k tokens of a few held-out documents).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 1 ] || { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 2; }
VARIANT=$1
STEPS=${2:-400}
OUT=${3:-runs/ablation-$STEPS}
ROUNDS=${ROUNDS:-3}
NAME=$(basename "$VARIANT" .toml)
[ -f "$VARIANT" ] || { echo "no such config: $VARIANT" >&2; exit 2; }
BIN=target/release/frugal
[ -x "$BIN" ] || cargo build --release -p frugal-cli
for name in dense "$NAME"; do
    cfg=configs/cpu-speedrun.toml
    [ "$name" = dense ] || cfg=$VARIANT
    run="$OUT/$name"
    resume=()
    [ -d "$run/checkpoints" ] && resume=(--resume)
    echo "== $name: $cfg, $STEPS steps -> $run"
    "$BIN" pretrain --config "$cfg" --run "$run" "${resume[@]}" \
        --set "train.steps=$STEPS" --set "train.checkpoint_every=100" \
        --set "train.eval_every=$((STEPS / 4))" --set "train.sample_every=0" \
        2>&1 | grep -v "^step [0-9]* | loss" || true
done
rm -f "$OUT/bench-$NAME.txt.tmp"
for round in $(seq "$ROUNDS"); do
    for name in dense "$NAME"; do
        cfg=configs/cpu-speedrun.toml
        [ "$name" = dense ] || cfg=$VARIANT
        ms=$("$BIN" bench train --config "$cfg" --steps 10 2>&1 | awk '/^step_ms_median/ {print $2}')
        echo "bench train round $round $name: $ms ms/step"
        echo "$name $ms" >> "$OUT/bench-$NAME.txt.tmp"
    done
done
mv "$OUT/bench-$NAME.txt.tmp" "$OUT/bench-$NAME.txt"
# A variant with multi-token prediction also decodes speculatively with its module.
rm -f "$OUT/speculative-$NAME.txt"
if grep -q '^\[model.mtp\]' "$VARIANT"; then
    "$BIN" bench speculative --run "$OUT/$NAME" | tee "$OUT/speculative-$NAME.txt"
fi
python3 - "$OUT" "$STEPS" "$NAME" <<'PY'
import json, os, statistics, sys, tomllib
out, steps, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def kv_bytes(run):
    """KV-cache bytes per token (all layers, f32): keys and values, or latent + RoPE key."""
    m = tomllib.load(open(f"{run}/config.toml", "rb"))["model"]
    if m.get("attention") == "mla":
        per_layer = m["mla"]["kv_rank"] + m["mla"]["rope_dim"]
    else:
        per_layer = 2 * m["n_kv_heads"] * m["d_model"] // m["n_heads"]
    return m["n_layers"] * per_layer * 4

bench = {}
for line in open(f"{out}/bench-{variant}.txt"):
    name, ms = line.split()
    bench.setdefault(name, []).append(float(ms))
rows = {}
for name in ("dense", variant):
    lines = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    train = [l for l in lines if "loss" in l]
    val = [l for l in lines if "val_loss" in l]
    ledger = json.load(open(f"{out}/{name}/ledger.json"))
    stage = [s for s in ledger["stages"] if s["stage"] == "pretrain"]
    warm = [l for l in train if l["step"] > steps * 3 // 8]
    imb = [max(l["expert_imbalance"]) for l in warm if "expert_imbalance" in l]
    windows = []  # worst layer's max/mean over each 25-step window after warm-up
    for start in range(steps * 3 // 8, steps, 25):
        win = [l["expert_load"] for l in warm if start < l["step"] <= start + 25 and "expert_load" in l]
        if win and win[0]:
            totals = [[sum(w[layer][e] for w in win) for e in range(len(win[0][layer]))]
                      for layer in range(len(win[0]))]
            windows.append(max(max(t) / (sum(t) / len(t)) for t in totals))
    rows[name] = dict(
        val_loss=val[-1]["val_loss"], val_bpb=val[-1]["val_bpb"],
        train_s=sum(l["ms"] for l in train) / 1e3,
        tok_s=statistics.median(l["tok_s"] for l in train),
        flops=sum(s["model_flops"] for s in stage),
        kernel_flops=sum(s["kernel_flops"] for s in stage),
        imb_mean=statistics.mean(imb) if imb else None, imb_max=max(imb) if imb else None,
        win_max=max(windows) if windows else None, win_last=windows[-1] if windows else None,
        val_imb=max(val[-1]["val_expert_imbalance"]) if "val_expert_imbalance" in val[-1] else None,
        bench_ms=statistics.median(bench[name]),
        mtp_loss=statistics.mean(l["mtp_loss"] for l in train[-25:]) if "mtp_loss" in train[-1] else None,
        kv_bytes=kv_bytes(f"{out}/{name}"),
    )
d, m = rows["dense"], rows[variant]
print(f"\n| {steps} steps | dense | {variant} | {variant} / dense |\n|---|---:|---:|---:|")
for key, fmt in [("val_loss", "{:.4f}"), ("val_bpb", "{:.4f}"), ("flops", "{:.3e}"), ("kernel_flops", "{:.3e}"),
                 ("train_s", "{:.0f}"), ("tok_s", "{:.0f}"),
                 ("bench_ms", "{:.0f}"), ("kv_bytes", "{:d}")]:
    print(f"| {key} | {fmt.format(d[key])} | {fmt.format(m[key])} | {m[key] / d[key]:.3f} |")
if m["imb_mean"] is not None:
    w = steps * 3 // 8
    print(f"| expert load max/mean after step {w}, per step: mean / worst | | {m['imb_mean']:.2f} / {m['imb_max']:.2f} | |")
    print(f"| the same over 25-step windows: worst / last | | {m['win_max']:.2f} / {m['win_last']:.2f} | |")
    print(f"| the same over the validation tokens at the end | | {m['val_imb']:.2f} | |")
if m["mtp_loss"] is not None:
    print(f"| MTP modules' training loss (token 2+ ahead), mean of the last 25 steps | | {m['mtp_loss']:.4f} | |")
spec = f"{out}/speculative-{variant}.txt"
if os.path.exists(spec):
    kv = dict(l.split(": ", 1) for l in open(spec).read().splitlines() if ": " in l and " | " not in l)
    print(f"| greedy decoding tok/s: plain / speculative (identical outputs, {kv['identical_outputs']}) | "
          f"| {float(kv['plain_tok_s']):.1f} / {float(kv['speculative_tok_s']):.1f} | {float(kv['speedup']):.3f} |")
    print(f"| draft acceptance | | {float(kv['acceptance']):.3f} | |")
PY
