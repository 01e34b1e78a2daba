#!/usr/bin/env python3
"""The real Hugging Face readers on frugal's exports and checkpoints.

    peft BASE ADAPTER OUT            the same with peft's PeftModel of ADAPTER over BASE
    logits DIR OUT.safetensors       transformers loads DIR (AutoModelForCausalLM, f32) and
                                     writes its logits on PROMPTS, tokenized by DIR's own
                                     tokenizer, as ids.{i} / logits.{i} with text.{i} in the
                                     metadata: `frugal bench logits --against OUT` compares.
    template DIR CASES.json          tokenizer.apply_chat_template on each case's messages must
                                     give the case's ids (frugal's rendering), with and without
                                     the generation prompt; exits 1 naming the first mismatch.
    tokenize DIR TEXTS.json          prints the ids DIR's tokenizer gives each text, as JSON.

Needs transformers (and torch for `logits`). Run with the repository's .venv.
"""
import json
import sys

PROMPTS = [
    "It was a dark and stormy night,",
    "Fellow citizens, the state of the Union",
    "def add(a, b):\n    return a + b\n\n# 3.14159 ≈ π, naïve café 😀",
    "<|bos|>The quick brown fox",
]


def tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def logits(path, out, adapter=None):
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tok = tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    tensors, meta = {}, {}
    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids], dtype=torch.int64)
            tensors[f"ids.{i}"] = x[0].clone()
            tensors[f"logits.{i}"] = model(x).logits[0].float().contiguous()
            meta[f"text.{i}"] = text
    save_file(tensors, out, metadata=meta)
    print(f"{type(model).__name__}: {len(PROMPTS)} prompts scored into {out}")


def template(path, cases_path):
    tok = tokenizer(path)
    cases = json.load(open(cases_path))
    for n, case in enumerate(cases):
        for gen, key in [(False, "ids"), (True, "prompt_ids")]:
            if key not in case:
                continue
            msgs = case["messages"] if not gen else case["prompt_messages"]
            got = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)
            if hasattr(got, "keys"):
                got = got["input_ids"]
            if list(got) != case[key]:
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
                print(f"case {n} ({key}): apply_chat_template gives {list(got)}\n"
                      f"frugal renders {case[key]}\nrendered text: {text!r}")
                sys.exit(1)
    print(f"apply_chat_template agrees with frugal on {len(cases)} conversations")


def tokenize(path, texts_path):
    tok = tokenizer(path)
    texts = json.load(open(texts_path))
    print(json.dumps([tok(t, add_special_tokens=False)["input_ids"] for t in texts]))


if __name__ == "__main__":
    cmds = {"logits": logits, "template": template, "tokenize": tokenize,
            "peft": lambda base, adapter, out: logits(base, out, adapter)}
    if len(sys.argv) != 4 + (sys.argv[1:2] == ["peft"]) or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
