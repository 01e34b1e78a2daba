#!/usr/bin/env bash
# Client errors and checks without keys, probed from outside: a tiny model is served with keys and
# then with --no-auth, and each probe prints the status it got (docs/hardening.md). Run it on an
# older binary too for a before/after.
#
# Usage: bench/hardening_probe.sh TOKENIZER_JSON PREPARED_DIR [FRUGAL_BINARY]
#   as bench/serve_hostile.sh takes them; FRUGAL_BINARY defaults to target/release/frugal.
# Expected from today's binary: 400, 400, 200, then 403, 415, 403.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOK=$(realpath "$1"); PREP=$(realpath "$2"); FRUGAL=$(realpath "${3:-target/release/frugal}")
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
source bench/tiny_run.sh
tiny_run "$FRUGAL" "$TOK" "$PREP" "$work"
start() { "$FRUGAL" serve --run "$work/run" --stage base --port 0 "$@" > "$work/serve.log" 2>&1 &
  for _ in $(seq 100); do grep -qo 'http://[0-9.:]*' "$work/serve.log" && break; sleep 0.2; done
  grep -o "http://[0-9.:]*" "$work/serve.log" | head -1; }
echo "sk-probe-0123456789abcdef" > "$work/keys"
url=$(start --api-key-file "$work/keys"); [ -n "$url" ] || cat "$work/serve.log"
python3 - "$url" auth <<'PY'
import json, sys, urllib.request, urllib.error
url = sys.argv[1]
def post(body, headers):
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(), headers)
    try: r = urllib.request.urlopen(req, timeout=60); return r.status
    except urllib.error.HTTPError as e: return e.code
h = {"Content-Type": "application/json", "Authorization": "Bearer sk-probe-0123456789abcdef"}
m = json.load(urllib.request.urlopen(urllib.request.Request(url + "/v1/models", headers=h)))["data"][0]["id"]
print("top_p 1e-300:", post({"model": m, "prompt": "hi", "max_tokens": 1, "top_p": 1e-300}, h))
print("repetition_penalty 1e-300:", post({"model": m, "prompt": "hi", "max_tokens": 1, "repetition_penalty": 1e-300}, h))
print("lowercase bearer:", post({"model": m, "prompt": "hi", "max_tokens": 1}, {"Content-Type": "application/json", "Authorization": "bearer sk-probe-0123456789abcdef"}))
PY
kill %1 2>/dev/null; wait 2>/dev/null
url=$(start --no-auth)
python3 - "$url" <<'PY'
import http.client, sys, json
import urllib.request
m = json.load(urllib.request.urlopen(sys.argv[1] + "/v1/models"))["data"][0]["id"]
u = sys.argv[1].split("//")[1]; host, port = u.split(":")
def req(headers, body=json.dumps({"model": m, "prompt": "hi", "max_tokens": 1}).encode()):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.putrequest("POST", "/v1/completions", skip_host=True)
    for k, v in headers.items(): c.putheader(k, v)
    c.putheader("Content-Length", str(len(body))); c.endheaders(); c.send(body)
    return c.getresponse().status
print("no-auth, Host: rebind.example:", req({"Host": "rebind.example", "Content-Type": "application/json"}))
print("no-auth, Content-Type text/plain:", req({"Host": f"127.0.0.1:{port}", "Content-Type": "text/plain"}))
print("no-auth, Origin https://evil.example:", req({"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Origin": "https://evil.example"}))
PY
