#!/usr/bin/env bash
# Inference of the `ref` preset (configs/ref.toml) in frugal (`frugal bench infer`) and in eager
# PyTorch with a KV cache (bench/llama_ref.py infer), alternating within each round: prefill and
# decode tokens/s at batch 1 and 8, medians over rounds, and frugal's ratio to PyTorch.
#
# Usage: bench/infer_vs_pytorch.sh
# Env:   THREADS (default 2), ROUNDS (default 3), PROMPT (default 128), DECODE (default 64).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
PROMPT="${PROMPT:-128}"
DECODE="${DECODE:-64}"
PY=.venv/bin/python

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "== creating .venv and installing torch (a large download, several GB)"
    python3 -m venv .venv
    .venv/bin/pip install torch numpy safetensors
fi
echo "== cargo build --release -p frugal-cli"
cargo build --release -p frugal-cli
FRUGAL=target/release/frugal
KEYS="prefill_tok_s_b1 decode_tok_s_b1 prefill_tok_s_b8 decode_tok_s_b8"

log=$(mktemp)
res=$(mktemp)
trap 'rm -f "$log" "$res"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
    echo "== round $r/$ROUNDS: frugal"
    "$FRUGAL" bench infer --preset ref --threads "$THREADS" --prompt-len "$PROMPT" --decode "$DECODE" | tee "$log"
    for k in $KEYS; do echo "frugal $k $(grep "^$k:" "$log" | awk '{print $2}')" >>"$res"; done
    echo "== round $r/$ROUNDS: pytorch"
    "$PY" bench/llama_ref.py infer --config configs/ref.toml --threads "$THREADS" --prompt-len "$PROMPT" --decode "$DECODE" | tee "$log"
    for k in $KEYS; do echo "pytorch $k $(grep "^$k:" "$log" | awk '{print $2}')" >>"$res"; done
done

"$PY" - "$res" <<'PYEOF'
import collections, statistics, sys
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    who, key, v = line.split()
    vals[(who, key)].append(float(v))
print()
print(f"{'tokens/s (median)':<20} {'frugal':>10} {'pytorch':>10} {'ratio':>7}")
for key in ["prefill_tok_s_b1", "decode_tok_s_b1", "prefill_tok_s_b8", "decode_tok_s_b8"]:
    f, p = statistics.median(vals[("frugal", key)]), statistics.median(vals[("pytorch", key)])
    print(f"{key:<20} {f:>10.0f} {p:>10.0f} {f / p:>6.2f}x")
PYEOF
