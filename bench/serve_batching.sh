#!/usr/bin/env bash
# Continuous batching, measured: aggregate decode tokens/s of `frugal serve` with 1 and with 16
# concurrent streaming clients (bench/serve_load.py in a second process, at low priority so it
# takes only the CPU the server leaves), and the engine alone at batch 1 and 16 (`frugal bench
# infer`) for reference. The model has the speedrun config's shapes with random weights and a
# byte-level vocabulary; only its shapes matter to speed.
#
#     bench/serve_batching.sh [CONFIG] [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=${1:-configs/cpu-speedrun.toml}
SECONDS_EACH=${2:-30}
THREADS=${THREADS:-2}
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
cargo build --release -q -p frugal-cli
BIN=target/release/frugal

echo "== engine alone (frugal bench infer, batch 1 and 16)"
# The byte-level tokenizer's vocabulary: 256 bytes and frugal's 11 special tokens.
VOCAB=267
"$BIN" --threads "$THREADS" bench infer --config "$CONFIG" --batch 1,16 --prompt-len 32 --decode 64 --reps 5 \
    --set model.vocab_size="$VOCAB" | grep '^batch'

LOG=$(mktemp)
"$BIN" --threads "$THREADS" serve --dummy-weights "$CONFIG" --no-auth --port 0 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 100); do grep -q http:// "$LOG" && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$LOG" | head -1)
echo "== served at $URL ($SECONDS_EACH s per point, 192 tokens per reply)"
declare -A RATE
for clients in 1 16; do
    OUT=$(nice -n 19 "$PY" bench/serve_load.py --url "$URL" --clients "$clients" --seconds "$SECONDS_EACH" \
        --max-tokens 192 --ignore-eos --pid "$SERVER")
    echo "$clients clients: $OUT"
    RATE[$clients]=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["tokens_per_s"])' "$OUT")
done
"$PY" -c 'import sys; a, b = map(float, sys.argv[1:]); print(f"continuous batching: {b:.0f} tokens/s with 16 clients vs {a:.0f} with 1 = {b / a:.2f}x")' \
    "${RATE[1]}" "${RATE[16]}"
