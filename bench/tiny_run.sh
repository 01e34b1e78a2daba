# Sourced by the serving benches: `tiny_run FRUGAL TOKENIZER_JSON PREPARED_DIR WORK` pretrains a
# tiny model (2 steps) on PREPARED_DIR with a real vocabulary, into WORK/run.
tiny_run() {
    local frugal=$1 tok=$2 prep=$3 work=$4 vocab
    vocab=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d['model']['vocab']) + len(d.get('added_tokens', [])))" "$tok")
    "$frugal" data tokenize --prepared "$prep" --tokenizer "$tok" --out "$work/shards" > /dev/null
    cat > "$work/config.toml" <<TOML
[model]
vocab_size = $vocab
context_len = 512
d_model = 32
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_hidden = 64
[train]
batch_size = 2
seq_len = 64
lr = 1e-3
steps = 2
eval_every = 0
checkpoint_every = 2
sample_every = 0
[data]
shards = "$work/shards"
tokenizer = "$tok"
TOML
    "$frugal" pretrain --config "$work/config.toml" --run "$work/run" > /dev/null
}
