#!/usr/bin/env bash
# lm-evaluation-harness scores `frugal serve` through its `local-completions` model (token-id
# prompts, echo, logprobs: its log-likelihood request) on a small multiple-choice task of its
# own YAML (bench/lm_eval_items.jsonl; lm-eval's hub tasks are unreachable here), and its
# per-item log-likelihoods are checked against transformers' on the run's HF export.
# Usage: bench/lm_eval_serve.sh [RUN]  (default runs/speedrun). Installs lm-eval[api] into .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN=${1:-runs/speedrun}
py=.venv/bin/python
$py -c 'import torch, transformers' || { echo "needs torch and transformers in .venv" >&2; exit 1; }
$py -c 'import lm_eval, tenacity' 2>/dev/null || .venv/bin/pip install -q "lm-eval[api]"
cargo build --release -q -p frugal-cli
frugal=target/release/frugal
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
$frugal export --run "$RUN" --format hf --out "$work/hf" | head -1
port=$((20000 + RANDOM % 20000))
$frugal serve --run "$RUN" --no-auth --port "$port" --model-name mine >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -sf "localhost:$port/health" >/dev/null 2>&1 && break
    sleep 0.2
done
cat >"$work/frugal_mc.yaml" <<YAML
task: frugal_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: $PWD/bench/lm_eval_items.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: query
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
YAML
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 .venv/bin/lm_eval --model local-completions \
    --model_args "model=mine,base_url=http://127.0.0.1:$port/v1/completions,tokenizer=$work/hf,tokenizer_backend=huggingface,num_concurrent=1,max_retries=1" \
    --tasks frugal_mc --include_path "$work" --output_path "$work/out" --log_samples 2>&1 | grep -E '^\|'
$py bench/lm_eval_check.py "$work/hf" "$(ls "$work"/out/*/samples_frugal_mc_*.jsonl)"
