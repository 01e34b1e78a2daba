#!/usr/bin/env bash
# frugal's tokenizer against the field's, in one run on the same text and thread count:
#   training (vocab 8192, GPT-4 pre-split) vs Hugging Face `tokenizers` BpeTrainer,
#   batch encoding vs `tiktoken` on frugal's own vocabulary (exported as a rank file).
# Prints the ratios last. Creates .venv with tokenizers + tiktoken when missing.
#
# Env: THREADS (default 2), VOCAB (default 8192), INPUTS (default: the pretraining text fetched
# by scripts/fetch-data.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

THREADS="${THREADS:-2}"
VOCAB="${VOCAB:-8192}"
if [[ -z "${INPUTS:-}" ]]; then
    # The plain-text part of the default pretraining corpus (configs/data-pretrain.toml).
    # Raw files that are not UTF-8 (a Latin-1 Gutenberg book) are left out: both trainers
    # refuse them, and `frugal data prepare` is where they get repaired.
    INPUTS=$(find data/raw/gutenberg data/raw/sotu data/raw/shakespeare -name '*.txt' 2>/dev/null | sort |
        python3 -c 'import sys
for p in sys.stdin.read().split():
    try: open(p, encoding="utf-8").read(); print(p)
    except UnicodeDecodeError: pass' | tr '\n' ' ')
    [[ -n "$INPUTS" ]] || { echo "no corpus under data/raw: run scripts/fetch-data.sh first (or set INPUTS)" >&2; exit 1; }
fi
PY=.venv/bin/python
if ! "$PY" -c 'import tokenizers, tiktoken' 2>/dev/null; then
    echo "== installing tokenizers and tiktoken into .venv"
    [[ -x "$PY" ]] || python3 -m venv .venv
    .venv/bin/pip install -q tokenizers tiktoken
fi
cargo build --release -q -p frugal-cli
FRUGAL=target/release/frugal
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
field() { grep "^$1:" | tail -n 1 | awk '{print $2}'; }

echo "== corpus: $(echo $INPUTS | wc -w) files, $(cat $(find $INPUTS -type f -not -name '.*') | wc -c | awk '{printf "%.1f MB", $1/1e6}')"
echo "== training, vocab $VOCAB, $THREADS threads"
f_out=$("$FRUGAL" --threads "$THREADS" tokenizer train --input $INPUTS --vocab-size "$VOCAB" \
        --out "$work/tokenizer.json" --tiktoken "$work/tokenizer.json.tiktoken")
echo "$f_out"
f_train=$(echo "$f_out" | field train_seconds)
pattern=$("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['pre_tokenizer']['pretokenizers'][0]['pattern']['Regex'])" "$work/tokenizer.json")
specials=$("$PY" -c "import json,sys; print(' '.join(t['content'] for t in json.load(open(sys.argv[1]))['added_tokens']))" "$work/tokenizer.json")
h_out=$("$PY" bench/tokenizer_peers.py train-hf --input $INPUTS --vocab-size "$VOCAB" --pattern "$pattern" --specials $specials --threads "$THREADS")
echo "$h_out"
h_train=$(echo "$h_out" | field train_seconds)

echo "== batch encoding with frugal's vocabulary, $THREADS threads"
fe_out=$("$FRUGAL" --threads "$THREADS" bench tokenizer --tokenizer "$work/tokenizer.json" --input $INPUTS)
echo "$fe_out"
t_out=$("$PY" bench/tokenizer_peers.py encode-tiktoken --tokenizer "$work/tokenizer.json" --input $INPUTS --threads "$THREADS")
echo "$t_out"
f_enc=$(echo "$fe_out" | field encode_mb_per_s)
t_enc=$(echo "$t_out" | field encode_mb_per_s)

python3 - "$f_train" "$h_train" "$f_enc" "$t_enc" <<'PY'
import sys
ft, ht, fe, te = map(float, sys.argv[1:])
print()
print(f"train_seconds: frugal {ft:.2f} hf_tokenizers {ht:.2f}")
print(f"encode_mb_per_s: frugal {fe:.1f} tiktoken {te:.1f}")
print(f"ratio_train_speed: {ht / ft:.2f}")
print(f"ratio_encode_speed: {fe / te:.2f}")
PY
