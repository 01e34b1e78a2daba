#!/usr/bin/env bash
# Scoring agreement and speed of `frugal eval` against an independent PyTorch implementation
# (bench/eval_ref.py check): the same checkpoint, the same token requests; every request's
# log-likelihood must agree to 1e-3, and the accuracies are recomputed from PyTorch's numbers.
#
# Usage: bench/eval_vs_pytorch.sh [RUN]     (default runs/speedrun: run `frugal speedrun` first)
# Env:   LIMIT (items per task, default 300), THREADS (default 2), STAGE (default base).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN="${1:-runs/speedrun}"
LIMIT="${LIMIT:-300}"
THREADS="${THREADS:-2}"
STAGE="${STAGE:-base}"
PY=.venv/bin/python

if [ ! -f "$RUN/config.toml" ]; then
    echo "no run directory at $RUN: run 'frugal speedrun' first, or pass one" >&2
    exit 2
fi
if ! "$PY" -c 'import torch, safetensors' 2>/dev/null; then
    echo "== creating .venv and installing torch (a large download, several GB)"
    python3 -m venv .venv
    .venv/bin/pip install torch numpy safetensors
fi
echo "== cargo build --release -p frugal-cli"
cargo build --release -p frugal-cli

# A scratch run that links the checkpoints, so the run's own RUN/eval results stay as they are.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/run/checkpoints" "$work/run/sft/checkpoints"
cp "$RUN/config.toml" "$RUN/tokenizer.json" "$work/run/"
for sub in "" sft; do
    last=$(ls -d "$RUN/$sub/checkpoints"/step-* 2>/dev/null | sort -t- -k2 -n | tail -1 || true)
    [ -n "$last" ] && ln -s "$(realpath "$last")" "$work/run/$sub/checkpoints/"
done

TASKS="hellaswag:$LIMIT,arc_easy:$LIMIT,piqa:$LIMIT,winogrande:$LIMIT,lambada:$LIMIT,mmlu:$LIMIT"
echo "== frugal eval --stage $STAGE --tasks $TASKS --threads $THREADS"
target/release/frugal eval --run "$work/run" --stage "$STAGE" --tasks "$TASKS" \
    --threads "$THREADS" --dump "$work/dump" | grep "^$STAGE |"
echo "== PyTorch: every request again, as lm-evaluation-harness scores them"
"$PY" bench/eval_ref.py check --run "$work/run" --dump "$work/dump" --threads "$THREADS"
