#!/usr/bin/env bash
# /health under hostile prompts: a tiny model with a real vocabulary is served, a client sends
# one-piece words ("ing" repeated) as completion and chat prompts, of the largest size the
# server accepts and of its 1 MiB body limit, while another client polls /health every 10 ms;
# prints each hostile request's status and time, and the slowest /health answer.
#
# Usage: bench/serve_hostile.sh TOKENIZER_JSON PREPARED_DIR [FRUGAL_BINARY]
#   TOKENIZER_JSON: a trained tokenizer.json (e.g. `frugal tokenizer train` on real text);
#   PREPARED_DIR: train/val .jsonl.zst from `frugal data prepare`;
#   FRUGAL_BINARY: default target/release/frugal (pass an older build for a before/after).
# Env: SIZES (prompt sizes in bytes, e.g. "65536 262144"; default: the largest the server
#   encodes, 64 KiB, 256 KiB and just under 1 MiB).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOK=$(realpath "$1"); PREP=$(realpath "$2"); FRUGAL=$(realpath "${3:-target/release/frugal}")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
source bench/tiny_run.sh
tiny_run "$FRUGAL" "$TOK" "$PREP" "$work"
"$FRUGAL" serve --run "$work/run" --stage base --no-auth --port 0 > "$work/serve.log" 2>&1 &
for _ in $(seq 100); do grep -qo 'http://[0-9.:]*' "$work/serve.log" && break; sleep 0.2; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1)
python3 - "$url" "${SIZES:-}" <<'PY'
import json, re, sys, threading, time, urllib.request, urllib.error
url, sizes = sys.argv[1], sys.argv[2]
def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        r = urllib.request.urlopen(req, timeout=900)
        status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    return status, time.perf_counter() - t, text
worst, done = [0.0], threading.Event()
def poll():
    while not done.is_set():
        t = time.perf_counter()
        urllib.request.urlopen(url + "/health", timeout=600).read()
        worst[0] = max(worst[0], time.perf_counter() - t)
        time.sleep(0.01)
model = json.load(urllib.request.urlopen(url + "/v1/models"))["data"][0]["id"]
if sizes:
    sizes = [int(n) for n in sizes.split()]
else:
    # The largest prompt the server encodes: the byte bound its refusal of a bigger one names.
    _, _, text = post("/v1/completions", {"model": model, "prompt": "ing" * 300000, "max_tokens": 1})
    found = re.search(r"limit of (\d+) bytes", text)
    assert found, text
    bound = int(found.group(1))
    print(f"largest prompt the server encodes: {bound} bytes")
    sizes = [bound, 64 << 10, 256 << 10, (1 << 20) - 200]
th = threading.Thread(target=poll); th.start()
for n in sizes:
    word = ("ing" * (n // 3 + 1))[:n]
    s1, t1, _ = post("/v1/completions", {"model": model, "prompt": word, "max_tokens": 1})
    s2, t2, _ = post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": word}], "max_tokens": 1})
    print(f"{n:8d} bytes: completion {s1} in {t1*1e3:8.1f} ms, chat {s2} in {t2*1e3:8.1f} ms")
done.set(); th.join()
print(f"slowest /health while they ran: {worst[0]*1e3:.1f} ms")
PY
