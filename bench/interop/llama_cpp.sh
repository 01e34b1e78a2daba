#!/usr/bin/env bash
# frugal against llama.cpp on the same GGUF, at batch 1 and the same thread count:
#  1. Greedy decoding: 5 prompts through `frugal chat` (temperature 0, without its calculator,
#     which llama.cpp has not) and through llama-server's /completion fed the same prompt ids;
#     the replies must be the same tokens.
#  2. Speed, llama-bench's conventions: prefill of 512 tokens (pp512) and 128 decoded tokens
#     (tg128) of configs/infer-ctx1024.toml's shape (the speedrun model's, with a 1,024-token
#     context), llama-bench against `frugal bench infer`, ratios of the medians of ROUNDS
#     rounds printed (default 5).
# Usage: bench/interop/llama_cpp.sh [RUN]  (default runs/speedrun: a run with a chat stage)
# Builds llama.cpp from the llama-cpp-python sdist first (bench/interop/build_llama_cpp.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RUN=${1:-runs/speedrun}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-5}
TYPE=${TYPE:-f32}
bench/interop/build_llama_cpp.sh
cargo build --release -q -p frugal-cli
bin=target/llama.cpp/build/bin
frugal="target/release/frugal --threads $THREADS"
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

echo "== llama.cpp: $(cat target/llama.cpp/VERSION)"
echo "== greedy tokens, $RUN as GGUF ($TYPE)"
$frugal export --run "$RUN" --format gguf --dtype "$TYPE" --out "$work/gguf"
port=$((20000 + RANDOM % 20000))
"$bin/llama-server" -m "$work/gguf/model-$TYPE.gguf" -t "$THREADS" --port "$port" -np 1 \
    >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -sf "localhost:$port/health" >/dev/null 2>&1 && break
    sleep 0.2
done
prompts=(
    "What is 48 divided by 2?"
    "Tell me a story about a dog."
    "Hi! How are you today?"
    "Name three colors."
    "Fellow citizens, what is the state of the Union?"
)
agree=0
for p in "${prompts[@]}"; do
    ids=$($frugal chat --run "$RUN" -p "$p" --temperature 0 --max-tokens 48 --print-ids --no-tools | sed -n 's/^ids: //p')
    if .venv/bin/python - "$port" "$ids" "$p" <<'PY'
import json, sys, urllib.request
port, ids, text = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
body = {"prompt": ids["prompt"], "n_predict": len(ids["reply"]) or 1, "temperature": 0.0, "top_k": 1,
        "repeat_penalty": 1.0, "return_tokens": True, "cache_prompt": False}
def complete(body):
    req = urllib.request.Request(f"http://localhost:{port}/completion", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
theirs = complete(body)["tokens"]
ours = ids["reply"]
n = len(ours)
same = theirs[:n] == ours
print(f"{'same' if same else 'DIFFERENT'}: {n} tokens for {text!r}")
if not same:
    k = next(i for i in range(n) if i >= len(theirs) or theirs[i] != ours[i])
    # How close llama.cpp's own top two were where the two engines parted.
    probe = dict(body, prompt=ids["prompt"] + ours[:k], n_predict=1, n_probs=2)
    r = complete(probe)
    probs = r.get("completion_probabilities") or [{}]
    top = probs[0].get("top_logprobs") or []
    if len(top) >= 2:
        gap = top[0]["logprob"] - top[1]["logprob"]
        print(f"  parted at token {k}: llama.cpp's top two there are {gap:.4f} nats apart "
              f"({[t['id'] for t in top]}); frugal chose {ours[k]}")
    else:
        print(f"  parted at token {k}: llama.cpp gave no probabilities there ({sorted(r)})")
    print(f"  frugal:    {ours}\n  llama.cpp: {theirs}")
sys.exit(0 if same else 1)
PY
    then agree=$((agree + 1)); fi
done
echo "greedy_agree: $agree/${#prompts[@]}"
# llama.cpp's own tokenizer (the pre-tokenizer tokenizer.ggml.pre names) on text meant to split
# differently under other patterns: contractions, digit runs, spaces, newlines, other scripts.
texts=(
    "I'm sure they'll say it's 12345 or 3.14159, won't they?"
    $'Line one\n\n\n  indented\tline   with  spaces\r\nend'
    "Ünïcödé café naïve, 漢字かな, Ελληνικά, русский 😀 DON'T SHOUT!!!"
    "def f(x):  return x**2 + 1_000_000  # comment"
)
same_ids=0
for t in "${texts[@]}"; do
    ours=$($frugal tokenizer encode --tokenizer "$RUN/tokenizer.json" --text "$t")
    if .venv/bin/python - "$port" "$ours" "$t" <<'PY'
import json, sys, urllib.request
port, ours, text = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
body = {"content": text, "add_special": False, "parse_special": False}
req = urllib.request.Request(f"http://localhost:{port}/tokenize", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
theirs = json.load(urllib.request.urlopen(req))["tokens"]
print(f"{'same' if theirs == ours else 'DIFFERENT'} ids: {len(ours)} tokens for {text!r}")
if theirs != ours:
    print(f"  frugal:    {ours}\n  llama.cpp: {theirs}")
sys.exit(0 if theirs == ours else 1)
PY
    then same_ids=$((same_ids + 1)); fi
done
echo "tokenizer_agree: $same_ids/${#texts[@]}"
kill $server; wait $server 2>/dev/null || true

echo "== speed at batch 1, $THREADS threads, configs/infer-ctx1024.toml in $TYPE"
$frugal import init --config configs/infer-ctx1024.toml --tokenizer "$RUN/tokenizer.json" --run "$work/init"
# An imported model's own chat format goes with its tokenizer.
[ -f "$RUN/chat_template.json" ] && cp "$RUN/chat_template.json" "$work/init/"
$frugal export --run "$work/init" --format gguf --dtype "$TYPE" --out "$work/init-gguf"
# Shared machines are noisy (the model's 22 MB of weights live in an L3 that neighbours share):
# ROUNDS rounds, each llama-bench then frugal back to back, and the median of each.
for round in $(seq "$ROUNDS"); do
    "$bin/llama-bench" -m "$work/init-gguf/model-$TYPE.gguf" -p 512 -n 128 -t "$THREADS" -r 3 -o json \
        2>/dev/null >"$work/llama-$round.json"
    # As llama-bench measures them: pp512 a 512-token prompt alone, tg128 128 tokens decoded
    # from an (almost) empty cache.
    $frugal bench infer --config configs/infer-ctx1024.toml --prompt-len 512 --decode 1 --batch 1 \
        --reps 3 >"$work/frugal-pp-$round.txt"
    $frugal bench infer --config configs/infer-ctx1024.toml --prompt-len 1 --decode 128 --batch 1 \
        --reps 3 >"$work/frugal-tg-$round.txt"
done
head -2 "$work/frugal-pp-1.txt"
.venv/bin/python - "$work" "$ROUNDS" <<'PY'
import json, re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
llama = {"pp": [], "tg": []}
ours = {"pp": [], "tg": []}
for r in range(1, rounds + 1):
    for run in json.load(open(f"{work}/llama-{r}.json")):
        llama["pp" if run["n_prompt"] else "tg"].append(run["avg_ts"])
    pp, tg = open(f"{work}/frugal-pp-{r}.txt").read(), open(f"{work}/frugal-tg-{r}.txt").read()
    ours["pp"].append(float(re.search(r"prefill_tok_s_b1: ([\d.]+)", pp)[1]))
    ours["tg"].append(float(re.search(r"decode_tok_s_b1: ([\d.]+)", tg)[1]))
for k, name in [("pp", "pp512 prefill"), ("tg", "tg128 decode")]:
    a, b = statistics.median(ours[k]), statistics.median(llama[k])
    ratios = " ".join(f"{x / y:.2f}" for x, y in zip(ours[k], llama[k]))
    print(f"{name}: frugal {a:.1f} tok/s | llama.cpp {b:.1f} tok/s | {a / b:.2f}x "
          f"(medians of {rounds} rounds; per round {ratios})")
PY
