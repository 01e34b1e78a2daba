#!/usr/bin/env bash
# Writes crates/cli/tests/fixtures/run-v1: a tiny run directory as a given frugal binary leaves
# it after being killed mid-pretraining and mid-SFT, for the test that today's code still
# resumes yesterday's runs (crates/cli/tests/resume_fixture.rs).
#
#   scripts/make-resume-fixture.sh /path/to/frugal OUT_DIR
#
# The fixture in the repository was made by the binary of commit 148b67d. It holds:
#   data/       the prepared corpus's shards and tokenizer (paths in configs are relative)
#   sft.jsonl   conversations for SFT
#   run/        pretraining killed after its step-3 checkpoint, with run/sft killed after its
#               step-2 checkpoint (the later checkpoints deleted, as a kill before them leaves it)
#   expected.json  what the same binary reports for the uninterrupted runs
set -euo pipefail
bin=$(realpath "$1")
out=$2
rm -rf "$out"
mkdir -p "$out/prepared"
cd "$out"
python3 - <<'PY'
import json
s = ["the cat sat on the mat. ", "a dog ran in the park. ",
     "birds sing in the morning. ", "we read books at night. "]
doc = lambda i: "".join(s[(i * 7 + k * 3) % 4] for k in range(30))
for split, r in [("train", range(0, 40)), ("val", range(40, 44))]:
    with open(f"prepared/{split}.jsonl", "w") as f:
        for i in r:
            f.write(json.dumps({"id": f"d{i}", "source": "s", "text": doc(i)}) + "\n")
convs = [
    {"messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi"}]},
    {"instruction": "Add", "input": "2 and 3", "output": "5"},
    {"prompt": "the cat", "completion": "sat on the mat."},
    {"conversations": [{"from": "human", "value": "a dog"}, {"from": "gpt", "value": "ran in the park."}]},
]
with open("sft.jsonl", "w") as f:
    for _ in range(6):
        for c in convs:
            f.write(json.dumps(c) + "\n")
PY
zstd -q --rm prepared/train.jsonl prepared/val.jsonl
"$bin" tokenizer train --prepared prepared --vocab-size 300 --out data/tokenizer.json >/dev/null
"$bin" data tokenize --prepared prepared --tokenizer data/tokenizer.json >/dev/null
mv prepared/shards data/shards
rm -rf prepared
vocab=$(python3 -c "import json; d = json.load(open('data/tokenizer.json')); print(len(d['model']['vocab']) + len(d['added_tokens']))")
cat > pretrain.toml <<TOML
[model]
vocab_size = $vocab
context_len = 64
d_model = 32
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_hidden = 64
rope_theta = 10000.0
norm_eps = 1e-5
init_std = 0.02
attention = "gqa"
mlp = "swiglu"

[train]
batch_size = 2
seq_len = 16
lr = 1e-3
steps = 6
warmup_steps = 2
eval_every = 3
checkpoint_every = 3
sample_every = 0
eval_tokens = 256
seed = 0

[data]
shards = "data/shards"
tokenizer = "data/tokenizer.json"
TOML
cat > sft.toml <<'TOML'
[train]
batch_size = 2
seq_len = 64
lr = 1e-3
steps = 4
warmup_steps = 1
eval_every = 2
checkpoint_every = 2

[sft]
val_fraction = 0.2
format_check = 0

[[sft.sources]]
name = "mixed"
path = "sft.jsonl"
TOML

# The uninterrupted runs, for the figures a resumed one must reproduce.
"$bin" pretrain --config pretrain.toml --run full >/dev/null
"$bin" sft --config sft.toml --run full >/dev/null
python3 - <<'PY'
import json
pre = json.load(open("full/report.json")) if False else None
rows = [json.loads(l) for l in open("full/metrics.jsonl")]
sft = json.load(open("full/sft/report.json"))
last = lambda key: [r[key] for r in rows if key in r][-1]
json.dump({
    "pretrain": {"steps": 6, "final_loss": last("loss"), "val_loss": last("val_loss"), "val_bpb": last("val_bpb")},
    "sft": {"steps": sft["steps"], "final_loss": sft["final_loss"], "val_loss": sft["val_loss"]},
}, open("expected.json", "w"), indent=2)
PY
rm -rf full

# The same runs, killed: pretraining after its step-3 checkpoint, SFT after its step-2 one.
"$bin" pretrain --config pretrain.toml --run run >/dev/null
"$bin" sft --config sft.toml --run run >/dev/null
rm -rf run/sft/checkpoints/step-4 run/sft/report.json
rm -rf run/checkpoints/step-6
