"""Peers of frugal's tokenizer: Hugging Face `tokenizers` (training) and `tiktoken` (encoding).

Used by bench/tokenizer_vs_peers.sh for speed ratios and by the bpe crate's agreement test.
Documents are built exactly as frugal builds them: every file's lines (keeping their newline)
regrouped into chunks of at least --chunk-bytes.

  train-hf   --input PATH... --vocab-size N --threads T      prints train_seconds
  encode-tiktoken --tokenizer tokenizer.json --input PATH... --threads T   prints encode_mb_per_s
  agree      --tokenizer tokenizer.json --texts texts.json   prints {"hf": [...], "tiktoken": [...]}
"""

import argparse
import base64
import json
import os
import statistics
import sys
import time


def list_files(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                out += [os.path.join(root, f) for f in files if not f.startswith(".")]
        else:
            out.append(p)
    return sorted(out)


def chunk_documents(paths, chunk_bytes):
    docs = []
    for f in list_files(paths):
        # newline="" keeps \r\n as is; split on \n only, as frugal does.
        text = open(f, encoding="utf-8", newline="").read()
        parts = text.split("\n")
        lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        buf, size = [], 0
        for line in lines:
            buf.append(line)
            size += len(line.encode("utf-8"))
            if size >= chunk_bytes:
                docs.append("".join(buf))
                buf, size = [], 0
        if buf:
            docs.append("".join(buf))
    return docs


def load_frugal_json(path):
    doc = json.load(open(path, encoding="utf-8"))
    pattern = None
    for pre in doc["pre_tokenizer"].get("pretokenizers", [doc["pre_tokenizer"]]):
        if pre["type"] == "Split":
            pattern = pre["pattern"]["Regex"]
    specials = {t["content"]: t["id"] for t in doc["added_tokens"]}
    return doc, pattern, specials


def tiktoken_encoding(tokenizer_json):
    import tiktoken

    doc, pattern, specials = load_frugal_json(tokenizer_json)
    rank_file = tokenizer_json + ".tiktoken"
    # frugal writes the rank file next to tokenizer.json when asked (--tiktoken); rebuild from
    # the HF vocab otherwise, through GPT-2's byte-to-character map.
    if os.path.exists(rank_file):
        ranks = {}
        for line in open(rank_file):
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    else:
        byte_map = bytes_to_unicode()
        inverse = {c: b for b, c in byte_map.items()}
        ranks = {bytes(inverse[c] for c in s): i for s, i in doc["model"]["vocab"].items()}
    return tiktoken.Encoding(name="frugal", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def cmd_train_hf(args):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    sys.path.insert(0, os.path.dirname(__file__))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(args.pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        min_frequency=2,
        special_tokens=args.specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    files = list_files(args.input)
    t = time.perf_counter()
    tok.train(files, trainer)
    print(f"hf tokenizers {__import__('tokenizers').__version__}: vocab {tok.get_vocab_size()}")
    print(f"train_seconds: {time.perf_counter() - t:.3f}")


def cmd_encode_tiktoken(args):
    import tiktoken

    enc = tiktoken_encoding(args.tokenizer)
    docs = chunk_documents(args.input, args.chunk_bytes)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    rates, ntok = [], 0
    for _ in range(args.reps):
        t = time.perf_counter()
        ids = enc.encode_ordinary_batch(docs, num_threads=args.threads)
        rates.append(nbytes / 1e6 / (time.perf_counter() - t))
        ntok = sum(map(len, ids))
    print(f"tiktoken {tiktoken.__version__}: documents {len(docs)} | {nbytes / 1e6:.1f} MB | {ntok} tokens")
    print(f"encode_mb_per_s: {statistics.median(rates):.2f}")


def cmd_agree(args):
    from tokenizers import Tokenizer

    texts = json.load(open(args.texts, encoding="utf-8"))
    hf = Tokenizer.from_file(args.tokenizer)
    enc = tiktoken_encoding(args.tokenizer)
    out = {
        "hf": [hf.encode(t, add_special_tokens=False).ids for t in texts],
        "tiktoken": [enc.encode_ordinary(t) for t in texts],
    }
    json.dump(out, sys.stdout)


def main():
    from_env = int(os.environ.get("THREADS", "0")) or None
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train-hf")
    t.add_argument("--input", nargs="+", required=True)
    t.add_argument("--vocab-size", type=int, default=8192)
    t.add_argument("--pattern", required=True)
    t.add_argument("--specials", nargs="*", default=[])
    t.add_argument("--threads", type=int, default=from_env or 2)
    e = sub.add_parser("encode-tiktoken")
    e.add_argument("--tokenizer", required=True)
    e.add_argument("--input", nargs="+", required=True)
    e.add_argument("--threads", type=int, default=from_env or 2)
    e.add_argument("--chunk-bytes", type=int, default=65536)
    e.add_argument("--reps", type=int, default=3)
    a = sub.add_parser("agree")
    a.add_argument("--tokenizer", required=True)
    a.add_argument("--texts", required=True)
    args = p.parse_args()
    if getattr(args, "threads", None):
        # Both peers use rayon-style pools sized from the environment; set before import.
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
    {"train-hf": cmd_train_hf, "encode-tiktoken": cmd_encode_tiktoken, "agree": cmd_agree}[args.cmd](args)


if __name__ == "__main__":
    main()
