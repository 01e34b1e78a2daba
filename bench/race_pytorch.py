"""The PyTorch side of the time-to-quality race (bench/race.sh).

The speedrun's pretraining recipe as it was before frugal tuned it for time (d256 x 6 layers,
AdamW, warmup then cosine to a tenth of the peak, batch 8 x 256, weight decay 0.1 on matrices,
gradient clipping at 1.0), written in eager PyTorch with bench/llama_ref.py's model, trained on
frugal's own token shards and validated on the same bytes as frugal's training log.

Subcommands:

* ``probe``: times training steps on real batches in float32 and under CPU autocast to
  bfloat16 and prints which is faster (the race uses the faster).
* ``train``: trains for a wall-clock budget of *training* seconds (or of steps, ``--steps``) (the clock stops while it
  validates, which favours PyTorch). The cosine schedule spans the budget: the learning rate is
  a function of the elapsed fraction of it, not of a step count, so the run decays fully
  whatever its step rate. Writes one JSON line per validation: training seconds, wall seconds,
  step, tokens, validation loss and bits per byte.
* ``check``: loads a frugal checkpoint (its tensors carry these Hugging Face names) and prints
  its validation bits per byte as computed here; bench/race.sh compares it with the figure in
  frugal's training log, which proves that both sides read the same windows and count the same
  bytes.

Shards: the 64-byte header of crates/data/src/shards.rs, then little-endian u16 or u32 tokens.
Validation windows: crates/data/src/loader.rs's validation_windows (seq_len + 1 tokens at
multiples of seq_len, spread evenly over the split). Bytes: each target's token bytes from the
byte-level tokenizer.json, 0 for special tokens, as crates/train/src/validation.rs counts them.
"""

import argparse
import json
import math
import os
import sys
import time
import tomllib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import Llama, make_optimizer  # noqa: E402

HEADER_BYTES = 64
# The speedrun's model when the race was set (before frugal tuned its recipe for time).
BASELINE_MODEL = {"d_model": 256, "n_layers": 6, "n_heads": 4, "n_kv_heads": 4, "ffn_hidden": 768,
                  "logit_softcap": 0.0, "zero_init_outputs": False}
MODEL_DEFAULTS = {"rope_theta": 10000.0, "norm_eps": 1e-5, "init_std": 0.02}
TRAIN_DEFAULTS = {"beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
                  "grad_clip": 1.0, "min_lr_frac": 0.1, "warmup_steps": 50, "seed": 0}


def load_config(path):
    with open(path, "rb") as f:
        c = tomllib.load(f)
    m = {**MODEL_DEFAULTS, **c["model"]}
    m.setdefault("n_kv_heads", m["n_heads"])
    t = {**TRAIN_DEFAULTS, **c["train"]}
    return m, t, c["data"]


def read_split(shards, infos):
    """The split's shards concatenated, as int64."""
    parts = []
    for info in infos:
        path = os.path.join(shards, info["file"])
        raw = np.fromfile(path, dtype=np.uint8)
        if bytes(raw[:8]) != b"FRGLTOK\0":
            raise SystemExit(f"{path}: not a frugal token shard (bad magic)")
        width = int(raw[12:16].view("<u4")[0])
        dtype = {2: "<u2", 4: "<u4"}[width]
        toks = raw[HEADER_BYTES:].view(dtype)
        if len(toks) != info["tokens"]:
            raise SystemExit(f"{path}: {len(toks)} tokens, the manifest says {info['tokens']}")
        parts.append(toks.astype(np.int64))
    return np.concatenate(parts)


def byte_lengths(tokenizer_json, vocab_size):
    """Bytes of each token id: GPT-2's byte-level alphabet mapped back; special tokens 0."""
    alphabet = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + \
        list(range(0xAE, 0xFF + 1))
    codes, n = alphabet[:], 0
    for b in range(256):
        if b not in alphabet:
            alphabet.append(b)
            codes.append(256 + n)
            n += 1
    to_byte = {chr(c): b for b, c in zip(alphabet, codes)}
    tok = json.load(open(tokenizer_json))
    lengths = np.zeros(vocab_size, dtype=np.int64)
    for piece, i in tok["model"]["vocab"].items():
        lengths[i] = len(bytes(to_byte[ch] for ch in piece))
    for added in tok.get("added_tokens", []):
        if added.get("special"):
            lengths[added["id"]] = 0
    return lengths


def validation_windows(val, seq_len, max_tokens):
    held = (len(val) - 1) // seq_len
    n = min(max_tokens // seq_len, held)
    starts = [i * held // n * seq_len for i in range(n)]
    return torch.from_numpy(np.stack([val[s:s + seq_len + 1] for s in starts]))


@torch.no_grad()
def validate(model, windows, lengths, batch, bf16):
    model.eval()
    nats, count, nbytes = 0.0, 0, 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(w[:, :-1])
        y = w[:, 1:]
        nats += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                reduction="sum").item()
        count += y.numel()
        nbytes += int(lengths[y.numpy()].sum())
    model.train()
    return nats / count, nats / math.log(2) / nbytes


class Batches:
    """Uniformly random (seq_len + 1)-token windows of the training stream, seeded (nanoGPT's
    get_batch)."""

    def __init__(self, train, batch, seq_len, seed):
        self.train, self.b, self.t = torch.from_numpy(train), batch, seq_len
        self.gen = torch.Generator().manual_seed(seed)

    def next(self):
        starts = torch.randint(0, len(self.train) - self.t - 1, (self.b,), generator=self.gen)
        w = torch.stack([self.train[s:s + self.t + 1] for s in starts.tolist()])
        return w[:, :-1], w[:, 1:]


def setup(args):
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    m, t, data = load_config(args.config)
    if getattr(args, "lr", None):
        t["lr"] = args.lr
    shards = data["shards"]
    manifest = json.load(open(os.path.join(shards, "manifest.json")))
    if manifest["vocab_size"] != m["vocab_size"]:
        raise SystemExit(f"{shards}: vocabulary {manifest['vocab_size']}, the config's is "
                         f"{m['vocab_size']}")
    val = read_split(shards, manifest["val"])
    lengths = byte_lengths(data["tokenizer"], m["vocab_size"])
    windows = validation_windows(val, t["seq_len"], t.get("eval_tokens", 1 << 16))
    return m, t, lambda: read_split(shards, manifest["train"]), windows, lengths


def step(model, opt, x, y, bf16, clip):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


def cmd_probe(args):
    m, t, read_train, _, _ = setup(args)
    m = {**m, **BASELINE_MODEL}
    train = read_train()
    rates = {}
    for name, bf16 in (("f32", False), ("bf16", True)):
        torch.manual_seed(t["seed"])
        model = Llama(m)
        model.init_weights()
        opt = make_optimizer(model, t)
        batches = Batches(train, t["batch_size"], t["seq_len"], t["seed"])
        times = []
        for i in range(args.steps + 3):
            x, y = batches.next()
            t0 = time.perf_counter()
            step(model, opt, x, y, bf16, t["grad_clip"])
            if i >= 3:
                times.append(time.perf_counter() - t0)
        rates[name] = t["batch_size"] * t["seq_len"] / float(np.median(times))
        print(f"{name}_tokens_per_s: {rates[name]:.1f}", flush=True)
    print(f"faster: {max(rates, key=rates.get)}")


def lr_at(t, frac, step_no):
    """Linear warmup over warmup_steps, then cosine over the elapsed fraction of the budget."""
    peak = t["lr"]
    if step_no < t["warmup_steps"]:
        return peak * (step_no + 1) / t["warmup_steps"]
    floor = peak * t["min_lr_frac"]
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(frac, 1.0)))


def cmd_train(args):
    m, t, read_train, windows, lengths = setup(args)
    # The baseline is the recipe before frugal tuned it: d256 x 6 and none of the speedrun's
    # later model changes, whatever configs/cpu-speedrun.toml now says.
    m = {**m, **BASELINE_MODEL}
    train = read_train()
    torch.manual_seed(t["seed"])
    model = Llama(m)
    model.init_weights()
    opt = make_optimizer(model, t)
    batches = Batches(train, t["batch_size"], t["seq_len"], t["seed"])
    tokens_per_step = t["batch_size"] * t["seq_len"]
    out = open(args.out, "w")
    start, train_s, step_no, next_eval = time.perf_counter(), 0.0, 0, args.eval_every_s

    def record(loss):
        v_loss, v_bpb = validate(model, windows, lengths, t["batch_size"], args.bf16)
        rec = {"train_s": train_s, "wall_s": time.perf_counter() - start, "step": step_no,
               "tokens": step_no * tokens_per_step, "lr": opt.param_groups[0]["lr"],
               "train_loss": loss, "val_loss": v_loss, "val_bpb": v_bpb}
        out.write(json.dumps(rec) + "\n")
        out.flush()
        print(f"step {step_no} | {train_s:.0f} s | val loss {v_loss:.4f} | val bpb {v_bpb:.4f}",
              flush=True)

    print(f"pytorch {torch.__version__} | {'bf16 autocast' if args.bf16 else 'f32'} | lr "
          f"{t['lr']:g} | {f'{args.steps} steps' if args.steps else f'{args.wall_s:.0f} s'} of "
          f"training | {len(windows)} validation windows",
          flush=True)
    loss = float("nan")
    def progress():  # the elapsed fraction of the budget: of its steps, or of its seconds
        return step_no / args.steps if args.steps else train_s / args.wall_s

    while progress() < 1.0:
        x, y = batches.next()
        t0 = time.perf_counter()
        lr = lr_at(t, progress(), step_no)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = step(model, opt, x, y, args.bf16, t["grad_clip"])
        train_s += time.perf_counter() - t0
        step_no += 1
        if not math.isfinite(loss):
            raise SystemExit(f"loss {loss} at step {step_no}: lr {t['lr']:g} diverged")
        if step_no % 50 == 0:
            print(f"step {step_no} | loss {loss:.4f} | lr {lr:.2e} | {train_s:.0f} s", flush=True)
        if args.eval_every_s and train_s >= next_eval and progress() < 1.0:
            record(loss)
            next_eval += args.eval_every_s
    record(loss)


def cmd_check(args):
    m, t, _, windows, lengths = setup(args)
    from safetensors.torch import load_file
    model = Llama(m)
    state = load_file(os.path.join(args.checkpoint, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{args.checkpoint}: missing {missing}, unexpected {unexpected}")
    v_loss, v_bpb = validate(model, windows, lengths, t["batch_size"], False)
    print(f"windows: {len(windows)}")
    print(f"val_loss: {v_loss:.6f}")
    print(f"val_bpb: {v_bpb:.6f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("probe", "train", "check"):
        p = sub.add_parser(name)
        p.add_argument("--config", default="configs/cpu-speedrun.toml")
        p.add_argument("--threads", type=int, default=2)
        if name == "probe":
            p.add_argument("--steps", type=int, default=10)
        if name == "train":
            p.add_argument("--lr", type=float)
            p.add_argument("--wall-s", type=float, default=1800.0)
            p.add_argument("--steps", type=int, default=0,
                           help="a budget of steps instead of seconds (for tuning the learning "
                                "rate on a busy machine: the result does not depend on its speed)")
            p.add_argument("--eval-every-s", type=float, default=180.0)
            p.add_argument("--bf16", action="store_true")
            p.add_argument("--out", required=True)
        if name == "check":
            p.add_argument("--checkpoint", required=True)
    args = ap.parse_args()
    {"probe": cmd_probe, "train": cmd_train, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    main()
