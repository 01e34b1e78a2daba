"""lm-evaluation-harness's per-item log-likelihoods, got through `frugal serve`, against
transformers' on the same model's HF export and the same token ids (the context and the
continuation encoded apart, as lm-eval's API models do). Usage: lm_eval_check.py HF_DIR SAMPLES"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

hf, samples = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(hf)
model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
worst, n, agree = 0.0, 0, 0
for line in open(samples):
    s = json.loads(line)
    for args, resp in zip(s["arguments"].values(), s["resps"]):
        ctx, cont = args["arg_0"], args["arg_1"]
        ll, greedy = float(resp[0][0]), resp[0][1] == "True"
        c = tok(ctx, add_special_tokens=False)["input_ids"]
        k = tok(cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([c + k])).logits[0].double(), -1)
        rows = [lp[len(c) - 1 + j] for j in range(len(k))]
        want = sum(r[t].item() for r, t in zip(rows, k))
        worst = max(worst, abs(want - ll))
        agree += all(r.argmax().item() == t for r, t in zip(rows, k)) == greedy
        n += 1
print(f"{n} (context, continuation) pairs: largest |lm-eval through frugal serve - transformers| "
      f"= {worst:.2e}; is_greedy agrees on {agree}/{n}")
sys.exit(0 if worst < 1e-4 and agree == n else 1)
