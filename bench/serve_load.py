"""Load generator for `frugal serve`: N concurrent clients, each sending streaming chat requests
back to back for a fixed time, over loopback, from its own process.

Prints one JSON object: requests, errors (with the first few), generated tokens, aggregate
tokens/s, time to first token (p50/p99), per-request decode rate, and — with --pid — the
server's resident memory sampled every half second.

    python bench/serve_load.py --url http://127.0.0.1:8000 --clients 64 --seconds 60 --key KEY
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.parse
import urllib.request

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain why the sky is blue in two sentences.",
    "What is 17 + 25?",
    "Give me three tips for learning to cook.",
    "Who wrote Pride and Prejudice?",
    "Describe a cat to someone who has never seen one.",
    "How do plants make food?",
]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


async def post_stream(host, port, path, body, key):
    """POSTs `body` and yields the stream's `data:` payloads (bytes) as they arrive. A plain
    HTTP/1.1 client over asyncio streams: on a small machine the client shares the cores with
    the server, and an HTTP library's per-event overhead would be measured as the server's."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{auth}Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status = int((await reader.readline()).split()[1])
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        if status != 200:
            rest = await reader.read()
            raise RuntimeError(f"HTTP {status}: {rest[:300]!r}")
        if not chunked:
            raise RuntimeError("the stream is not chunked")
        buf = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                return
            buf += (await reader.readexactly(size + 2))[:-2]
            while True:
                cut = buf.find(b"\n\n")
                if cut < 0:
                    break
                event, buf = buf[:cut], buf[cut + 2:]
                if event.startswith(b"data: "):
                    yield event[6:]
    finally:
        writer.close()


async def one_request(args, model, i, stats):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if args.ignore_eos:
        body["ignore_eos"] = True
    t0 = time.perf_counter()
    first = None
    usage = None
    done = False
    # As little work per event as correctness allows (the server writes compact JSON with
    # sorted keys): only the usage chunk and errors are parsed.
    async for data in post_stream(args.host, args.port, "/v1/chat/completions", json.dumps(body).encode(), args.key):
        if data == b"[DONE]":
            done = True
            break
        if data.startswith(b'{"error"'):
            raise RuntimeError(f"error event: {json.loads(data)['error']['message']}")
        if b'"usage":{' in data:
            usage = json.loads(data)["usage"]
        elif first is None and b'"content":"' in data and b'"content":""' not in data:
            first = time.perf_counter()
    t1 = time.perf_counter()
    if not done:
        raise RuntimeError("the stream ended without [DONE]")
    if usage is None:
        raise RuntimeError("no usage chunk")
    tokens = usage["completion_tokens"]
    stats["requests"] += 1
    stats["tokens"] += tokens
    if first is not None:
        stats["ttft"].append(first - t0)
        if tokens > 1 and t1 > first:
            stats["decode_rates"].append((tokens - 1) / (t1 - first))


async def client_loop(args, model, k, deadline, stats):
    i = k
    while time.perf_counter() < deadline:
        try:
            await one_request(args, model, i, stats)
        except Exception as e:  # every failure counts; the run goes on
            stats["errors"] += 1
            if len(stats["first_errors"]) < 5:
                stats["first_errors"].append(f"{type(e).__name__}: {e}")
        i += args.clients


async def sample_memory(pid, stop, samples):
    while not stop.is_set():
        try:
            samples.append((time.perf_counter(), rss_kib(pid)))
        except OSError:
            break
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", default="")
    p.add_argument("--model", default=None, help="default: the one GET /v1/models lists")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--ignore-eos", action="store_true",
                   help="every reply is max_tokens long (vLLM's extension): measures decoding, not the model's habits")
    p.add_argument("--pid", type=int, default=None, help="the server's pid, to sample its memory")
    args = p.parse_args()

    url = urllib.parse.urlsplit(args.url)
    args.host, args.port = url.hostname, url.port or 80
    req = urllib.request.Request(args.url + "/v1/models")
    if args.key:
        req.add_header("Authorization", f"Bearer {args.key}")
    with urllib.request.urlopen(req) as r:
        model = args.model or json.load(r)["data"][0]["id"]

    stats = {"requests": 0, "errors": 0, "tokens": 0, "ttft": [], "decode_rates": [], "first_errors": []}
    stop = asyncio.Event()
    mem = []
    mem_task = asyncio.create_task(sample_memory(args.pid, stop, mem)) if args.pid else None
    t0 = time.perf_counter()
    deadline = t0 + args.seconds
    await asyncio.gather(*(client_loop(args, model, k, deadline, stats) for k in range(args.clients)))
    wall = time.perf_counter() - t0
    stop.set()
    if mem_task:
        await mem_task

    out = {
        "clients": args.clients,
        "seconds": round(wall, 2),
        "requests": stats["requests"],
        "errors": stats["errors"],
        "first_errors": stats["first_errors"],
        "tokens": stats["tokens"],
        "tokens_per_s": round(stats["tokens"] / wall, 1),
        "ttft_p50_ms": round(1000 * percentile(stats["ttft"], 50), 1) if stats["ttft"] else None,
        "ttft_p99_ms": round(1000 * percentile(stats["ttft"], 99), 1) if stats["ttft"] else None,
        "decode_tokens_per_s_per_request_median": round(statistics.median(stats["decode_rates"]), 1)
        if stats["decode_rates"]
        else None,
    }
    if mem:
        # Memory after the first tenth of the run (allocators warmed up) against the peak.
        warm = [kib for t, kib in mem if t - t0 >= 0.1 * args.seconds] or [mem[-1][1]]
        out["rss_mib_start"] = round(mem[0][1] / 1024, 1)
        out["rss_mib_warm"] = round(warm[0] / 1024, 1)
        out["rss_mib_peak"] = round(max(kib for _, kib in mem) / 1024, 1)
        out["rss_mib_end"] = round(mem[-1][1] / 1024, 1)
    print(json.dumps(out))
    return 0 if stats["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
