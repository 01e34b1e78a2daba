#!/usr/bin/env bash
# The live Hugging Face readers on a real run (the tests use fixtures they wrote, since
# PyTorch is too large a download for the test command): the round trip the interop issue
# asks for, on the speedrun's model.
#  1. export the base stage (f32) → transformers' logits = frugal's (bench logits, 1e-4)
#  2. import that export as a new run → its logits = transformers' too
#  3. SFT on it with LoRA (rank 8, dropout 0.05) and, for comparison, full fine-tuning, STEPS steps each:
#     trained parameters, tokens/s, peak RSS, checkpoint size
#  4. export the LoRA stage merged (--format hf) and as a PEFT adapter (--format peft):
#     transformers' logits of the merged export and peft's of base + adapter = frugal's
# Usage: bench/interop/hf_check.sh [RUN]  (default runs/speedrun). Needs torch, transformers
# and peft in .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RUN=${1:-runs/speedrun}
STEPS=${STEPS:-60}
py=.venv/bin/python
$py -c 'import torch, transformers, peft' || { echo "needs torch, transformers, peft in .venv" >&2; exit 1; }
cargo build --release -q -p frugal-cli
frugal=target/release/frugal
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
readers=bench/interop/hf_readers.py

echo "== 1. export the base stage of $RUN, read by transformers"
$frugal export --run "$RUN" --stage base --out "$work/base-hf" | head -1
$py $readers logits "$work/base-hf" "$work/base.logits" 2>/dev/null
$frugal bench logits --run "$RUN" --stage base --against "$work/base.logits" | tail -1
echo "== 2. import it as a run"
$frugal import hf "$work/base-hf" --run "$work/run"
$frugal bench logits --run "$work/run" --against "$work/base.logits" | tail -1
cp -r "$work/run" "$work/full"
echo "== 3. SFT, $STEPS steps: LoRA rank 8 against full fine-tuning"
common=(--set train.steps="$STEPS" --set train.eval_every="$STEPS" --set train.checkpoint_every="$STEPS" --set sft.format_check=0)
for how in full lora; do
    dir=$work/run; extra=(--set lora.rank=8 --set lora.alpha=16.0 --set lora.dropout=0.05 --set train.lr=1e-3)
    [ $how = full ] && { dir=$work/full; extra=(); }
    /usr/bin/time -f "peak_rss_mb %M" -o "$work/$how.time" $frugal sft --run "$dir" "${common[@]}" "${extra[@]}" >"$work/$how.log" 2>&1
    rss=$(awk '{print int($2 / 1024)}' "$work/$how.time")
    size=$(du -sm "$dir/sft/checkpoints/step-$STEPS" | cut -f1)
    echo "$how: $(grep -o 'LoRA: .*trained parameters ([^)]*)' "$work/$how.log" || echo 'all 100% of the parameters trained') | $(grep -o 'steps .*val loss [0-9.]*' "$work/$how.log") | peak RSS ${rss} MB | checkpoint ${size} MB"
done
echo "== 4. the LoRA stage exported merged and as a PEFT adapter"
$frugal export --run "$work/run" --stage sft --out "$work/sft-hf" | head -1
$frugal export --run "$work/run" --stage sft --format peft --base-model "$work/base-hf" --out "$work/sft-peft"
$py $readers logits "$work/sft-hf" "$work/merged.logits" 2>/dev/null
$frugal bench logits --run "$work/run" --stage sft --against "$work/merged.logits" | tail -1
$py $readers peft "$work/base-hf" "$work/sft-peft" "$work/peft.logits" 2>/dev/null
$frugal bench logits --run "$work/run" --stage sft --against "$work/peft.logits" | tail -1
