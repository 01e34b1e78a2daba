"""Independent PyTorch reference for frugal's Llama-style model.

This file shares no code with frugal. It plays two roles:

* ``golden``: builds the tiny test model (configs/tiny.toml) from a fixed seed, writes its
  initial weights plus the token batch to ``tiny_init.safetensors`` under the Hugging Face
  Llama tensor names, trains a few AdamW steps on that batch and writes the per-step losses
  and a slice of the logits before and after training to ``tiny_golden.json``. frugal's
  golden tests load the same weights and must reproduce these numbers. With a ``[model.moe]``
  table (configs/tiny-moe.toml) the MLPs after ``dense_layers`` are DeepSeekMoE layers, trained
  with auxiliary-loss-free balancing; files are then named after the config (tiny-moe_*).
  ``attention = "mla"`` (configs/tiny-mla.toml) gives DeepSeek's multi-head latent attention.
* ``infer``: prefill and KV-cache decoding of the reference preset in eager PyTorch
  (inference mode, preallocated per-layer key/value caches as in Hugging Face's static cache),
  the peer of ``frugal bench infer`` in bench/infer_vs_pytorch.sh.
* ``bench``: trains the reference preset (configs/ref.toml) on random tokens in eager
  PyTorch on the CPU and prints the median step time, tokens/s and peak RSS, the speed peer
  that bench/train_vs_pytorch.sh compares frugal against.

Model: token embedding, n_layers x [RMSNorm -> causal GQA attention with RoPE (rotate-half
convention) -> residual, RMSNorm -> SwiGLU MLP -> residual], final RMSNorm, untied lm_head.
No biases; everything in float32.
"""

import argparse
import json
import os
import resource
import shlex
import statistics
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):  # x: (..., d), f32
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_cos_sin(T, hd, theta):
    """cos, sin: (T, hd). angle[t, j] = t * theta^(-2j/hd), duplicated as cat([angle, angle]).
    Computed in float64 and rounded once to float32."""
    inv_freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (hd/2,)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (T, hd/2)
    emb = torch.cat([angle, angle], dim=-1)  # (T, hd)
    return emb.cos().float(), emb.sin().float()


def rotate_half(x):  # x: (..., hd)
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, m):
        super().__init__()
        d, self.nh, self.nkv = m["d_model"], m["n_heads"], m["n_kv_heads"]
        self.hd = d // self.nh
        self.q_proj = nn.Linear(d, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, d, bias=False)

    def forward(self, x, cos, sin):  # x: (B, T, d); cos, sin: (T, hd)
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.nkv != self.nh:  # query head h reads kv head h // (nh / nkv)
            g = self.nh // self.nkv
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)  # (B, nh, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))  # (B, T, d)


class LatentAttention(nn.Module):
    """DeepSeek-V2/V3's multi-head latent attention without a query latent (as V2-Lite), in the
    expanded form, under DeepSeek's HF names. Each head's query and key are [position-free part
    (hd - r) | RoPE part (r)] (rotate-half convention over the r channels); the keys' RoPE part
    is one projection shared by every head; values have hd channels."""

    def __init__(self, m):
        super().__init__()
        d, self.nh = m["d_model"], m["n_heads"]
        self.hd = d // self.nh
        self.rank, self.r = m["mla"]["kv_rank"], m["mla"]["rope_dim"]
        self.nope = self.hd - self.r
        self.q_proj = nn.Linear(d, self.nh * self.hd, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, self.rank + self.r, bias=False)
        self.kv_a_layernorm = RMSNorm(self.rank, m["norm_eps"])
        self.kv_b_proj = nn.Linear(self.rank, self.nh * (self.nope + self.hd), bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, d, bias=False)

    def forward(self, x, cos, sin):  # x: (B, T, d); cos, sin: (T, r)
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        q_nope, q_pe = q.split([self.nope, self.r], dim=-1)
        c, k_pe = self.kv_a_proj_with_mqa(x).split([self.rank, self.r], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(c)).view(B, T, self.nh, self.nope + self.hd)
        k_nope, v = kv.transpose(1, 2).split([self.nope, self.hd], dim=-1)
        k_pe = k_pe.view(B, 1, T, self.r)
        q_pe = q_pe * cos + rotate_half(q_pe) * sin
        k_pe = k_pe * cos + rotate_half(k_pe) * sin
        q = torch.cat([q_nope, q_pe], dim=-1)
        k = torch.cat([k_nope, k_pe.expand(B, self.nh, T, self.r)], dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class MLP(nn.Module):
    def __init__(self, m, hidden=None):
        super().__init__()
        d, f = m["d_model"], hidden or m["ffn_hidden"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, h):  # h: (B, T, d) -> (B, T, d)
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Router(nn.Module):
    """DeepSeek-V3's gate: sigmoid affinities; the top-k by affinity + a balancing bias (a
    buffer: no gradient, moved by the balancing rule, not by the optimizer)."""

    def __init__(self, d, n_experts):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, d))
        self.register_buffer("e_score_correction_bias", torch.zeros(n_experts))


class MoE(nn.Module):
    """DeepSeekMoE: shared experts (one MLP of n_shared * expert_hidden) plus the top-k of the
    routed experts, gates = route_scale * s / sum(s of the chosen). Written per expert with a
    boolean mask, the plain way, sharing nothing with frugal's dispatch."""

    def __init__(self, m):
        super().__init__()
        e = m["moe"]
        self.k, self.scale = e["top_k"], e.get("route_scale", 1.0)
        self.gate = Router(m["d_model"], e["routed_experts"])
        self.experts = nn.ModuleList(MLP(m, e["expert_hidden"]) for _ in range(e["routed_experts"]))
        shared = e.get("shared_experts", 1) * e["expert_hidden"]
        self.shared_experts = MLP(m, shared) if shared else None
        self.load = torch.zeros(e["routed_experts"], dtype=torch.int64)

    def forward(self, h):  # h: (B, T, d) -> (B, T, d)
        x = h.reshape(-1, h.shape[-1])  # (N, d)
        s = torch.sigmoid(x @ self.gate.weight.t())  # (N, E)
        chosen = torch.topk(s.detach() + self.gate.e_score_correction_bias, self.k, dim=-1).indices
        g = s.gather(1, chosen)  # (N, k)
        g = self.scale * g / g.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            hit = chosen == i  # (N, k)
            rows = hit.any(-1)
            self.load[i] += int(rows.sum())
            if rows.any():
                w = (g * hit).sum(-1)[rows, None]  # (n_i, 1)
                out = out.index_add(0, rows.nonzero()[:, 0], w * expert(x[rows]))
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out.view_as(h)

    @torch.no_grad()
    def balance(self, gamma):
        """After a step: bias += gamma * sign(mean load - load); the count restarts."""
        load = self.load.double()
        self.gate.e_score_correction_bias += gamma * torch.sign(load.mean() - load).float()
        self.load.zero_()


class Block(nn.Module):
    def __init__(self, m, moe=False):
        super().__init__()
        self.input_layernorm = RMSNorm(m["d_model"], m["norm_eps"])
        self.self_attn = LatentAttention(m) if m.get("attention") == "mla" else Attention(m)
        self.post_attention_layernorm = RMSNorm(m["d_model"], m["norm_eps"])
        self.mlp = MoE(m) if moe else MLP(m)

    def forward(self, x, cos, sin):  # x: (B, T, d)
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class SharedHead(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.norm = RMSNorm(m["d_model"], m["norm_eps"])


class MTPModule(Block):
    """DeepSeek-V3's multi-token prediction module, stored as layer n_layers + k - 1 like a
    decoder layer plus enorm, hnorm, eh_proj and shared_head.norm (embedding and head are the
    model's): h_k = block(eh_proj([enorm(embed(t[i+k])) | hnorm(h_{k-1}[i])]))."""

    def __init__(self, m, moe):
        super().__init__(m, moe)
        d = m["d_model"]
        self.enorm = RMSNorm(d, m["norm_eps"])
        self.hnorm = RMSNorm(d, m["norm_eps"])
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.shared_head = SharedHead(m)


class Body(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.embed_tokens = nn.Embedding(m["vocab_size"], m["d_model"])
        n, depth = m["n_layers"], m.get("mtp", {}).get("depth", 0)
        dense = m["moe"].get("dense_layers", 0) if m.get("mlp") == "moe" else n + depth
        self.layers = nn.ModuleList(
            [Block(m, moe=i >= dense) for i in range(n)]
            + [MTPModule(m, moe=i >= dense) for i in range(n, n + depth)])
        self.norm = RMSNorm(m["d_model"], m["norm_eps"])


class Llama(nn.Module):
    """State-dict keys are exactly the Hugging Face Llama names (model.layers.0.self_attn...)."""

    def __init__(self, m):
        super().__init__()
        self.cfg = m
        self.model = Body(m)
        self.lm_head = nn.Linear(m["d_model"], m["vocab_size"], bias=False)
        self._rope = {}

    def init_weights(self, perturb_norms=False):
        """2-D weights ~ N(0, init_std) in HF order, layer by layer; norm weights = 1, then
        optionally (after all 2-D weights, in HF order) multiplied by (1 + 0.1 * randn)."""
        std = self.cfg["init_std"]
        with torch.no_grad():
            for p in self.parameters():  # registration order == HF listing order
                if p.ndim >= 2:
                    p.normal_(0.0, std)
                else:
                    p.fill_(1.0)
            if perturb_norms:
                for p in self.parameters():
                    if p.ndim == 1:
                        p.mul_(1.0 + 0.1 * torch.randn(p.shape))

    def soft_cap(self, logits):
        """c·tanh(logits / c) for model.logit_softcap c > 0 (frugal's ModelConfig)."""
        c = self.cfg.get("logit_softcap", 0.0)
        return c * torch.tanh(logits / c) if c > 0 else logits

    def forward(self, idx, targets=None):
        """idx: (B, T) int64 -> logits (B, T, V); with targets (B, T) and MTP modules, also
        ([sum of module k's cross-entropies over its valid targets] per k, [their counts])."""
        T = idx.shape[1]
        if T not in self._rope:
            hd = self.cfg["d_model"] // self.cfg["n_heads"]
            if self.cfg.get("attention") == "mla":  # RoPE covers the last rope_dim channels
                hd = self.cfg["mla"]["rope_dim"]
            self._rope[T] = rope_cos_sin(T, hd, self.cfg["rope_theta"])
        cos, sin = self._rope[T]
        x = self.model.embed_tokens(idx)  # (B, T, d)
        n = self.cfg["n_layers"]
        for layer in self.model.layers[:n]:
            x = layer(x, cos, sin)
        logits = self.soft_cap(self.lm_head(self.model.norm(x)))
        if targets is None:
            return logits
        sums, counts, h = [], [], x
        for k, mod in enumerate(self.model.layers[n:], start=1):
            ahead = torch.zeros_like(idx)  # t[i+k], 0 past the window
            ahead[:, :T - k] = idx[:, k:]
            want = torch.full_like(targets, -100)  # t[i+k+1] = targets[i+k]
            want[:, :T - k] = targets[:, k:]
            e = self.model.embed_tokens(ahead)
            h = mod(mod.eh_proj(torch.cat([mod.enorm(e), mod.hnorm(h)], dim=-1)), cos, sin)
            lk = self.soft_cap(self.lm_head(mod.shared_head.norm(h)))
            sums.append(F.cross_entropy(lk.reshape(-1, lk.shape[-1]), want.reshape(-1),
                                        ignore_index=-100, reduction="sum"))
            counts.append(int((want != -100).sum()))
        return logits, (sums, counts)


def make_optimizer(model, t, **kw):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"], **kw)


def loss_fn(logits, targets):  # logits: (B, T, V); targets: (B, T) -> mean CE over B*T
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def load_config(path):
    with open(path, "rb") as f:
        c = tomllib.load(f)
    return c["model"], c["train"]


def cmd_golden(args):
    m, t = load_config(args.config)
    torch.manual_seed(t["seed"])
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = Llama(m)
    model.init_weights(perturb_norms=True)
    tokens = torch.randint(0, m["vocab_size"], (t["batch_size"], t["seq_len"] + 1))  # (B, T+1)
    os.makedirs(args.out_dir, exist_ok=True)
    from safetensors.torch import save_file
    tensors = {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()}
    tensors["tokens"] = tokens.to(torch.int64).contiguous()
    name = os.path.splitext(os.path.basename(args.config))[0]  # tiny, tiny-moe
    save_file(tensors, os.path.join(args.out_dir, f"{name}_init.safetensors"))
    moe = [mod for mod in model.modules() if isinstance(mod, MoE)]
    gamma = m.get("moe", {}).get("bias_update", 1e-3)

    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
    opt = make_optimizer(model, t, foreach=False)
    losses, mtp_losses, logits_init = [], [], None
    mtp = m.get("mtp")
    for _ in range(args.steps):
        opt.zero_grad(set_to_none=True)
        if mtp:
            # DeepSeek-V3: L = L_main + lambda/D * sum_k L_k, each L_k over the window's T tokens.
            logits, (sums, counts) = model(inputs, targets)
            n_tok = targets.numel()
            extra = mtp.get("weight", 0.3) / mtp["depth"] * sum(sums) / n_tok
            mtp_losses.append(sum(s.item() / c for s, c in zip(sums, counts)) / len(sums))
        else:
            logits, extra = model(inputs), 0.0
        if logits_init is None:
            logits_init = logits[0, :4, :8].detach().double().flatten().tolist()
        loss = loss_fn(logits, targets)
        losses.append(float(loss.item()))
        (loss + extra).backward()
        opt.step()
        for layer in moe:
            layer.balance(gamma)
    with torch.no_grad():
        logits_final = model(inputs)[0, :4, :8].double().flatten().tolist()
    if logits_init is None:  # --steps 0
        logits_init = logits_final
    out = {
        "command": shlex.join([".venv/bin/python", "bench/llama_ref.py", "golden", "--config",
                               args.config, "--out-dir", args.out_dir, "--steps", str(args.steps)]),
        "torch_version": torch.__version__,
        "config": args.config,
        "losses": losses,
        "logits_init": logits_init,
        "logits_final": logits_final,
    }
    if mtp:
        out["mtp_losses"] = mtp_losses
    if moe:
        out["bias_final"] = [x for layer in moe for x in layer.gate.e_score_correction_bias.tolist()]
    with open(os.path.join(args.out_dir, f"{name}_golden.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("losses:", " ".join(f"{x:.6f}" for x in losses))


def cmd_bench(args):
    m, t = load_config(args.config)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(t["seed"])
    model = Llama(m)
    model.init_weights()
    opt = make_optimizer(model, t)
    B, T, V = t["batch_size"], t["seq_len"], m["vocab_size"]
    warmup, times = 3, []
    for step in range(args.steps + warmup):
        tokens = torch.randint(0, V, (B, T + 1))  # (B, T+1)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        # --bf16: CPU autocast (oneDNN's bf16 kernels for the matrix products, f32 weights).
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = loss_fn(model(tokens[:, :-1]), tokens[:, 1:])
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if step >= warmup:
            times.append(dt)
        tag = " (warm-up)" if step < warmup else ""
        print(f"step {step} | loss {loss.item():.4f} | {dt * 1e3:.1f} ms{tag}", flush=True)
    med = statistics.median(times)
    print(f"step_ms_median: {med * 1e3:.1f}")
    print(f"tokens_per_s: {B * T / med:.1f}")
    print(f"peak_rss_mb: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


def cached_forward(model, idx, caches, pos):
    """Logits after the last of the new tokens idx (B, n) at positions pos..pos+n, appending
    their keys and values to caches: per layer (k, v), each (B, nkv, ctx, hd)."""
    m = model.cfg
    B, n = idx.shape
    nh, nkv = m["n_heads"], m["n_kv_heads"]
    hd = m["d_model"] // nh
    if "ctx" not in model._rope:
        model._rope["ctx"] = rope_cos_sin(m["context_len"], hd, m["rope_theta"])
    cos, sin = (c[pos:pos + n] for c in model._rope["ctx"])
    x = model.model.embed_tokens(idx)  # (B, n, d)
    for layer, (kc, vc) in zip(model.model.layers, caches):
        a = layer.self_attn
        h = layer.input_layernorm(x)
        q = a.q_proj(h).view(B, n, nh, hd).transpose(1, 2)
        k = a.k_proj(h).view(B, n, nkv, hd).transpose(1, 2)
        v = a.v_proj(h).view(B, n, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        kc[:, :, pos:pos + n], vc[:, :, pos:pos + n] = k, v
        keys, values = kc[:, :, :pos + n], vc[:, :, :pos + n]
        if nkv != nh:
            g = nh // nkv
            keys, values = keys.repeat_interleave(g, dim=1), values.repeat_interleave(g, dim=1)
        # Prefill (empty cache): causal over the prompt. Decode (n = 1): every cached key.
        y = F.scaled_dot_product_attention(q, keys, values, is_causal=(pos == 0 and n > 1))
        x = x + a.o_proj(y.transpose(1, 2).reshape(B, n, nh * hd))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.soft_cap(model.lm_head(model.model.norm(x[:, -1])))  # (B, V)


def cmd_infer(args):
    m, _ = load_config(args.config)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    model = Llama(m)
    model.init_weights()
    model.eval()
    V, nkv, hd = m["vocab_size"], m["n_kv_heads"], m["d_model"] // m["n_heads"]
    P, D = args.prompt_len, args.decode
    assert P + D <= m["context_len"], "prompt + decode must fit the context"
    print(f"bench infer | pytorch {torch.__version__} | threads {args.threads} | prompt {P}, {D} decoded")
    for B in (int(b) for b in args.batch.split(",")):
        prompts = torch.randint(0, V, (B, P))
        pre, dec = [], []
        with torch.inference_mode():
            for rep in range(args.reps + 1):
                caches = [(torch.zeros(B, nkv, m["context_len"], hd),
                           torch.zeros(B, nkv, m["context_len"], hd)) for _ in range(m["n_layers"])]
                t0 = time.perf_counter()
                logits = cached_forward(model, prompts, caches, 0)
                t1 = time.perf_counter()
                for i in range(D):
                    nxt = logits.argmax(-1, keepdim=True)  # (B, 1)
                    logits = cached_forward(model, nxt, caches, P + i)
                t2 = time.perf_counter()
                if rep > 0:
                    pre.append(t1 - t0)
                    dec.append(t2 - t1)
        p, d = statistics.median(pre), statistics.median(dec)
        print(f"batch {B}: prefill {B * P / p:.0f} tok/s | decode {B * D / d:.0f} tok/s ({d * 1e3 / D:.2f} ms/step)")
        print(f"prefill_tok_s_b{B}: {B * P / p:.1f}")
        print(f"decode_tok_s_b{B}: {B * D / d:.1f}")
    print(f"peak_rss_mb: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write <config>_init.safetensors and <config>_golden.json")
    g.add_argument("--config", default="configs/tiny.toml")
    g.add_argument("--out-dir", default="crates/stages/tests/golden")
    g.add_argument("--steps", type=int, default=10)
    b = sub.add_parser("bench", help="time eager PyTorch training steps on the CPU")
    b.add_argument("--config", default="configs/ref.toml")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--bf16", action="store_true", help="matrix products under bf16 autocast")
    i = sub.add_parser("infer", help="time eager PyTorch prefill and KV-cache decoding")
    i.add_argument("--config", default="configs/ref.toml")
    i.add_argument("--threads", type=int, default=2)
    i.add_argument("--prompt-len", type=int, default=128)
    i.add_argument("--decode", type=int, default=64)
    i.add_argument("--batch", default="1,8")
    i.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    {"golden": cmd_golden, "bench": cmd_bench, "infer": cmd_infer}[args.cmd](args)


if __name__ == "__main__":
    main()
