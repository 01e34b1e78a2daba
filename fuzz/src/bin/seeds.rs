//! Writes the starting inputs of every target under fuzz/seeds/TARGET, each made by frugal's own
//! writers so a fuzzer begins from inputs the parsers accept:
//! `cargo +nightly fuzz build seeds && fuzz/target/x86_64-unknown-linux-gnu/release/seeds`.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let tmp = std::env::temp_dir().join(format!("frugal-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("a temporary folder");
    let t = frugal_fuzz::seed_tokenizer();
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = vec![
        ("bpe_encode", "prose", b"The quick brown fox, 42 times; \xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9 \xe6\xbc\xa2\xe5\xad\x97\n\n  tabs\tand   spaces".to_vec()),
        ("bpe_encode", "one_word", "ing".repeat(300).into_bytes()),
        ("bpe_encode", "specials", b"<|bos|>hello<|user_start|>x<|assistant_end|>".to_vec()),
        ("bpe_split", "gpt2", format!("{}\nHello  world's 123 \r\n\t x", bpe::GPT2_PATTERN).into_bytes()),
        ("bpe_split", "lookahead", b"\\s+(?!\\S)|\\w+|(a|aa)+(?=b)\n   aaaa  b\n".to_vec()),
        ("bpe_hf_json", "trained", serde_json::to_vec(&t.to_hf_json().expect("json")).expect("json")),
        ("bpe_tiktoken", "trained", t.to_tiktoken().into_bytes()),
        ("chat_json", "messages", br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is 2+3?"},{"role":"assistant","content":"5"}]}"#.to_vec()),
        ("chat_json", "parts", br#"{"messages":[{"role":"user","content":"sum"},{"role":"assistant","content":[{"type":"text","text":"It is "},{"type":"python","text":"2+3"},{"type":"python_output","text":"5"}]}]}"#.to_vec()),
        ("chat_json", "pair", br#"{"prompt":"hi","response":"hello"}"#.to_vec()),
        ("html", "page", b"<html><head><title>t</title><script>x()</script></head><body><p>A &amp; B &#x41; &lt;tag&gt; &nosuch</p><ul><li>one</li></ul><pre>  kept\n</pre></body></html>".to_vec()),
        ("calculator", "expr", b"(2 + 3) * 4 / 5 - -1.5".to_vec()),
        ("calculator", "power", b"2 ** 10 % 7".to_vec()),
        ("openai_request", "chat", br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0.7,"top_p":0.9,"stream":true,"stop":["\n"],"seed":1}"#.to_vec()),
        ("openai_request", "completion", br#"{"model":"m","prompt":"Once upon","max_tokens":4,"repetition_penalty":1.1,"n":1}"#.to_vec()),
    ];
    let mut warc = data::warc::record("warcinfo", "", b"software: frugal");
    warc.extend(data::warc::record(
        "response",
        "http://example.com/",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>Hello &amp; welcome</p>",
    ));
    warc.extend(data::warc::record(
        "conversion",
        "http://example.com/2",
        b"plain text",
    ));
    seeds.push(("warc", "records", warc));
    seeds.push(("shard", "docs", shard_bytes(&t, &tmp)));
    seeds.push(("safetensors", "tiny", safetensors_bytes(&tmp)));
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("the seeds folder is writable");
        std::fs::write(dir.join(name), bytes).expect("a seed is writable");
    }
    std::fs::remove_dir_all(&tmp).ok();
    println!("seeds written under {}", root.display());
}

fn shard_bytes(t: &bpe::Tokenizer, tmp: &Path) -> Vec<u8> {
    let mut w = data::shards::ShardWriter::new(tmp, "seed", t, 1 << 20).expect("a shard writer");
    w.push_doc(&t.encode("the quick brown fox"))
        .expect("ids within the vocabulary");
    w.push_doc(&t.encode("singing ringing"))
        .expect("ids within the vocabulary");
    let info = w.finish().expect("the shard is written");
    std::fs::read(tmp.join(&info[0].file)).expect("the shard is readable")
}

fn safetensors_bytes(tmp: &Path) -> Vec<u8> {
    let cfg = model::ModelConfig::preset("tiny", &[]).expect("the preset parses");
    let path = tmp.join("tiny.safetensors");
    model::save_safetensors(&model::Params::zeros(&cfg), &path).expect("the checkpoint is written");
    std::fs::read(path).expect("the checkpoint is readable")
}
