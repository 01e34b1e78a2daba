"""Independent PyTorch scoring for frugal's evaluation (`frugal eval`).

Shares no code with frugal; the model is bench/llama_ref.py's (Hugging Face Llama names).

* ``golden``: makes a tiny model (configs/tiny.toml, init std 0.3 so the distributions are
  sharp enough for greedy matches), writes its weights to ``tiny_eval.safetensors`` and the
  log-likelihoods of hand-made requests to ``tiny_eval_golden.json``; frugal's test
  ``log_likelihoods_match_pytorch_golden`` must reproduce them.
* ``check``: reads the requests frugal scored (``frugal eval --dump DIR``), loads the same
  checkpoint from the run directory, scores every request alone with a full forward pass in
  PyTorch as lm-evaluation-harness does (sorted by length, padded batches, log-softmax in
  float64), and compares the log-likelihoods, the accuracies recomputed here from its own
  numbers, and the time each took. Exits 1 when a log-likelihood differs by more than the
  tolerance.
"""

import argparse
import glob
import json
import os
import shlex
import sys
import time
import tomllib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import Llama  # noqa: E402


def model_config(path):
    with open(path, "rb") as f:
        m = tomllib.load(f)["model"]
    m.setdefault("rope_theta", 10000.0)
    m.setdefault("norm_eps", 1e-5)
    m.setdefault("init_std", 0.02)
    return m


def score(model, tokens, cont_start):
    """Sum of log p(token) over tokens[cont_start:], and whether each was the argmax."""
    x = torch.tensor(tokens[:-1], dtype=torch.int64)[None]
    with torch.inference_mode():
        logp = torch.log_softmax(model(x)[0].double(), dim=-1)  # (T, V)
    pos = torch.arange(cont_start - 1, len(tokens) - 1)
    tgt = torch.tensor(tokens[cont_start:], dtype=torch.int64)
    lp = float(logp[pos, tgt].sum())
    greedy = bool((logp[pos].argmax(-1) == tgt).all())
    return lp, greedy


def score_batched(model, requests, batch):
    """lm-evaluation-harness's way: requests sorted by length (longest first), batched with
    right padding (causal attention never sees it), one forward pass per batch. Returns
    (log-likelihood, greedy) per request, in the given order."""
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i]["tokens"]))
    out = [None] * len(requests)
    for b in range(0, len(order), batch):
        idx = order[b:b + batch]
        T = len(requests[idx[0]]["tokens"]) - 1
        x = torch.zeros(len(idx), T, dtype=torch.int64)
        for row, i in enumerate(idx):
            t = requests[i]["tokens"][:-1]
            x[row, :len(t)] = torch.tensor(t)
        with torch.inference_mode():
            logp = torch.log_softmax(model(x).double(), dim=-1)  # (B, T, V)
        for row, i in enumerate(idx):
            toks, c = requests[i]["tokens"], requests[i]["cont_start"]
            pos = torch.arange(c - 1, len(toks) - 1)
            tgt = torch.tensor(toks[c:], dtype=torch.int64)
            lp = logp[row, pos, tgt]
            out[i] = (float(lp.sum()), bool((logp[row, pos].argmax(-1) == tgt).all()))
    return out


def cmd_golden(args):
    m = model_config(args.config)
    m["init_std"] = 0.3
    torch.manual_seed(7)
    torch.set_num_threads(1)
    model = Llama(m)
    model.init_weights(perturb_norms=True)
    model.eval()
    from safetensors.torch import save_file
    tensors = {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(args.out_dir, "tiny_eval.safetensors"))

    V, T = m["vocab_size"], m["context_len"]
    g = torch.Generator().manual_seed(1)

    def rnd(n):
        return torch.randint(0, V, (n,), generator=g).tolist()

    shared = [1] + rnd(10)
    groups = [
        # Four choices sharing a context (HellaSwag), continuations of 1 to 4 tokens.
        [dict(tokens=shared + rnd(k), cont_start=len(shared)) for k in (1, 2, 3, 4)],
        # Contexts differing before a shared continuation (WinoGrande).
        [dict(tokens=[1] + rnd(5) + [c] + [9, 8, 7], cont_start=7) for c in (40, 41)],
        # A single choice (LAMBADA), and one that fills the context.
        [dict(tokens=[1] + rnd(15), cont_start=14)],
        [dict(tokens=[1] + rnd(T - 1), cont_start=T - 6)],
    ]
    # Greedy continuations of a prompt, so that some requests are greedy matches.
    with torch.inference_mode():
        seq = [1] + rnd(6)
        for _ in range(3):
            seq.append(int(model(torch.tensor(seq)[None])[0, -1].argmax()))
    groups.append([dict(tokens=seq, cont_start=7), dict(tokens=seq[:7] + rnd(3), cont_start=7)])
    for grp in groups:
        for r in grp:
            r["logprob"], r["greedy"] = score(model, r["tokens"], r["cont_start"])
    out = {
        "command": shlex.join([".venv/bin/python", "bench/eval_ref.py", "golden", "--config",
                               args.config, "--out-dir", args.out_dir]),
        "torch_version": torch.__version__,
        "groups": groups,
    }
    with open(os.path.join(args.out_dir, "tiny_eval_golden.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    n = sum(len(grp) for grp in groups)
    print(f"wrote {n} requests, {sum(r['greedy'] for grp in groups for r in grp)} greedy matches")


def latest_checkpoint(stage_dir):
    steps = glob.glob(os.path.join(stage_dir, "checkpoints", "step-*", "model.safetensors"))
    if not steps:
        sys.exit(f"no checkpoint under {stage_dir}/checkpoints")
    return max(steps, key=lambda p: int(p.split("step-")[-1].split(os.sep)[0]))


def accuracies(rows):
    """acc, acc_norm and greedy accuracy from per-choice rows of one task."""
    items = {}
    for r in rows:
        items.setdefault(r["item"], []).append(r)
    acc = acc_norm = greedy = 0
    for choices in items.values():
        choices.sort(key=lambda r: r["choice"])
        gold = choices[0]["gold"]
        lp = [c["lp"] for c in choices]
        norm = [c["lp"] / max(c["chars"], 1) for c in choices]
        acc += max(range(len(lp)), key=lambda j: (lp[j], -j)) == gold
        acc_norm += max(range(len(norm)), key=lambda j: (norm[j], -j)) == gold
        greedy += choices[gold]["g"]
    n = max(len(items), 1)
    return len(items), acc / n, acc_norm / n, greedy / n


def frugal_seconds(run, stage, task):
    """The time frugal took for the task, from RUN/eval/<stage>.json."""
    with open(os.path.join(run, "eval", f"{stage}.json")) as f:
        return next(t["seconds"] for t in json.load(f)["tasks"] if t["task"] == task)


def cmd_check(args):
    torch.set_num_threads(args.threads)
    m = model_config(os.path.join(args.run, "config.toml"))
    from safetensors.torch import load_file
    worst, failed = 0.0, False
    print(f"| stage | task | requests | max abs diff of log-likelihood | acc frugal / pytorch | "
          f"acc_norm frugal / pytorch | frugal s | pytorch s | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    models = {}
    for path in sorted(glob.glob(os.path.join(args.dump, "*.jsonl"))):
        stage, task = os.path.basename(path)[:-6].split("-", 1)
        if stage not in models:
            model = Llama(m)
            sub = {"base": "", "sft": "sft", "pref": "pref"}[stage]
            model.load_state_dict(load_file(latest_checkpoint(os.path.join(args.run, sub))))
            model.eval()
            models[stage] = model
        model = models[stage]
        rows = [json.loads(line) for line in open(path)]
        diff = 0.0
        ours, theirs = [], []
        t0 = time.perf_counter()
        scored = score_batched(model, rows, args.batch)
        seconds = time.perf_counter() - t0
        fed = sum(len(r["tokens"]) - 1 for r in rows)
        for r, (lp, g) in zip(rows, scored):
            diff = max(diff, abs(lp - r["logprob"]))
            base = dict(item=r["item"], choice=r["choice"], gold=r["gold"], chars=r["chars"])
            ours.append(dict(base, lp=r["logprob"], g=r["greedy"]))
            theirs.append(dict(base, lp=lp, g=g))
        _, a1, n1, g1 = accuracies(ours)
        _, a2, n2, g2 = accuracies(theirs)
        if task == "lambada":
            a1, a2, n1, n2 = g1, g2, float("nan"), float("nan")
        f = frugal_seconds(args.run, stage, task)
        print(f"| {stage} | {task} | {len(rows)} | {diff:.2e} | {a1:.4f} / {a2:.4f} | "
              f"{n1:.4f} / {n2:.4f} | {f:.2f} | {seconds:.2f} | {seconds / f:.2f}x |")
        worst = max(worst, diff)
        failed |= diff > args.tol
    print(f"\nlargest difference {worst:.2e} (tolerance {args.tol:g})")
    if failed:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write tiny_eval.safetensors and tiny_eval_golden.json")
    g.add_argument("--config", default="configs/tiny.toml")
    g.add_argument("--out-dir", default="crates/eval/tests/golden")
    c = sub.add_parser("check", help="rescore the requests of `frugal eval --dump` in PyTorch")
    c.add_argument("--run", required=True)
    c.add_argument("--dump", required=True)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--tol", type=float, default=1e-3)
    c.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    {"golden": cmd_golden, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    main()
