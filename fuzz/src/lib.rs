//! What each fuzz target does with its input, as plain functions: the targets in
//! `fuzz_targets/` call them under libFuzzer, and `bench/fuzz.sh` replays the committed corpus
//! through them. Every function must return normally on any input: a panic is a bug.

use std::path::PathBuf;
use std::sync::OnceLock;

/// A scratch file for parsers that read paths, one per process.
fn scratch(name: &str, data: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("frugal-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&path, data).expect("the scratch file is writable");
    path
}

/// The tokenizer the targets encode with, for the seeds generator.
pub fn seed_tokenizer() -> bpe::Tokenizer {
    tokenizer().clone()
}

/// A small vocabulary with long merges, trained once.
fn tokenizer() -> &'static bpe::Tokenizer {
    static T: OnceLock<bpe::Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let docs: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    "singing ringing thinging {i} the quick brown fox, ünïcödé 漢字 😀 {}",
                    "ing".repeat(i)
                )
            })
            .collect();
        let mut t = bpe::Trainer::new(bpe::TrainerOptions {
            vocab_size: 500,
            ..Default::default()
        })
        .expect("valid options");
        t.count(&docs);
        t.finish().expect("training succeeds")
    })
}

/// Encoding (the linear-time search on long pieces) equals merging, and decodes back.
pub fn bpe_encode(data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let t = tokenizer();
    let ids = t.encode(&text);
    assert_eq!(
        ids,
        t.encode_by_merging(&text),
        "search and merging disagree"
    );
    assert_eq!(t.decode(&ids).expect("own ids decode"), text.as_bytes());
    assert_eq!(
        t.decode(&t.encode_bytes(data)).expect("own ids decode"),
        data
    );
}

/// A user's split pattern (the first line) on text (the rest): the pieces always concatenate
/// back to the text, whatever the pattern matches and however it backtracks.
pub fn bpe_split(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, text) = text.split_once('\n').unwrap_or((&text, "a  b\n\n c1 😀"));
    if let Ok(sp) = bpe::Splitter::new(pattern) {
        let mut joined = String::new();
        sp.split(text, |p| joined.push_str(p));
        assert_eq!(joined, text, "pieces of {pattern:?} lose or repeat text");
    }
}

/// A tokenizer.json, any bytes.
pub fn bpe_hf_json(data: &[u8]) {
    if let Ok(doc) = serde_json::from_slice(data) {
        if let Ok(t) = bpe::Tokenizer::from_hf_json(&doc) {
            let ids = t.encode("hello world, ünïcödé");
            let _ = t.decode(&ids);
        }
    }
}

/// A tiktoken rank file, any bytes.
pub fn bpe_tiktoken(data: &[u8]) {
    let path = scratch("tiktoken", data);
    if let Ok(t) = bpe::Tokenizer::load_tiktoken(&path, bpe::GPT4_PATTERN, &[] as &[&str]) {
        let _ = t.encode("hello world");
    }
}

/// A token shard, any bytes: refused or read whole.
pub fn shard(data: &[u8]) {
    let path = scratch("shard", data);
    if let Ok(s) = data::shards::Shard::open(&path, None) {
        let mut out = vec![0u32; s.len().min(1 << 16)];
        s.read(0, &mut out);
    }
}

/// A safetensors checkpoint for the tiny model, any bytes.
pub fn safetensors(data: &[u8]) {
    let path = scratch("safetensors", data);
    let cfg = model::ModelConfig::preset("tiny", &[]).expect("the preset parses");
    let mut params = model::Params::zeros(&cfg);
    let _ = model::load_safetensors(&mut params, &path);
}

/// One chat JSONL line.
pub fn chat_json(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice(data) {
        let _ = data::chat::import::conversation_from_json(&v);
    }
}

/// A WARC file, any bytes.
pub fn warc(data: &[u8]) {
    let path = scratch("warc", data);
    let _ = data::warc::read_warc(&path, |_| {});
}

/// HTML, any text.
pub fn html(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = data::html::html_to_text(&text);
    let _ = data::html::decode_entities(&text);
}

/// The calculator tool's expressions.
pub fn calculator(data: &[u8]) {
    let _ = engine::calculator::evaluate(&String::from_utf8_lossy(data));
}

/// The bodies of the OpenAI-compatible endpoints.
pub fn openai_request(data: &[u8]) {
    let _ = serve::openai::chat_request(data);
    let _ = serve::openai::completion_request(data);
}

/// A Hugging Face `config.json`, any bytes: read as a frugal model or refused by field; an
/// accepted shape must be buildable (its parameter count is bounded before anything is sized).
pub fn hf_config(data: &[u8]) {
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let path = std::path::Path::new("config.json");
        if let Ok(m) = interop::hf::config::hf_model_config(&doc, path, None) {
            let _ = model::config::ModelConfig::validate(&m.cfg);
        }
    }
}

/// A chat template, any bytes: compiled, then rendered on a two-turn conversation within the
/// fuel limit (a template that loops runs out of fuel instead of hanging).
pub fn chat_template(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = data::chat::template::Template::new(source, "fuzz") else {
        return;
    };
    let msgs = serde_json::json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5", "tool_calls": [{"type": "function", "function": {"name": "calculator", "arguments": {"expression": "2+3"}}}]},
        {"role": "tool", "content": "5"},
    ]);
    let ctx = data::chat::template::TemplateContext {
        add_generation_prompt: true,
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
        tools: None,
    };
    let _ = t.render(&msgs, &ctx);
}

/// Every target by name, for replaying a corpus.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("bpe_encode", bpe_encode),
    ("bpe_split", bpe_split),
    ("bpe_hf_json", bpe_hf_json),
    ("bpe_tiktoken", bpe_tiktoken),
    ("shard", shard),
    ("safetensors", safetensors),
    ("chat_json", chat_json),
    ("warc", warc),
    ("html", html),
    ("calculator", calculator),
    ("openai_request", openai_request),
    ("hf_config", hf_config),
    ("chat_template", chat_template),
];
