//! Helpers shared by the binary's end-to-end tests.
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn frugal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .output()
        .expect("the frugal binary runs")
}

/// `frugal ARGS` with test faults injected (see `train::faults`).
pub fn frugal_with_faults(faults: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .env(train::faults::VAR, faults)
        .output()
        .expect("the frugal binary runs")
}

/// (stdout, stderr).
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// stdout followed by stderr.
pub fn out(o: &Output) -> String {
    let (a, b) = text(o);
    a + &b
}

/// `frugal tokenizer train` (vocabulary `vocab`) on a prepared directory, then `frugal data
/// tokenize` into `<prepared>/shards`; returns the tokenize command's stdout.
pub fn tokenize_prepared(prepared: &Path, tokenizer: &Path, vocab: usize) -> String {
    let (p, t) = (prepared.to_str().unwrap(), tokenizer.to_str().unwrap());
    let o = frugal(&[
        "tokenizer",
        "train",
        "--prepared",
        p,
        "--vocab-size",
        &vocab.to_string(),
        "--out",
        t,
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = frugal(&["data", "tokenize", "--prepared", p, "--tokenizer", t]);
    assert!(o.status.success(), "{}", out(&o));
    text(&o).0
}

/// A tokenized corpus and a config for it, in a fresh directory.
pub fn fixture(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("frugal-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let prepared = dir.join("prepared");
    std::fs::create_dir_all(&prepared).unwrap();
    let sentences = [
        "the cat sat on the mat. ",
        "a dog ran in the park. ",
        "birds sing in the morning. ",
        "we read books at night. ",
    ];
    let doc = |i: usize| {
        (0..30)
            .map(|k| sentences[(i * 7 + k * 3) % 4])
            .collect::<String>()
    };
    for (split, range) in [("train", 0..60), ("val", 60..64)] {
        let mut w =
            data::jsonl::JsonlWriter::create(&prepared.join(format!("{split}.jsonl.zst"))).unwrap();
        for i in range {
            w.write(&data::Doc {
                id: format!("d{i}"),
                source: "s".into(),
                text: doc(i),
            })
            .unwrap();
        }
        w.finish().unwrap();
    }
    let tok = dir.join("tokenizer.json");
    tokenize_prepared(&prepared, &tok, 300);
    let vocab = bpe::Tokenizer::load(&tok).unwrap().vocab_size();
    let tiny = include_str!("../../../../configs/tiny.toml")
        .replace("vocab_size = 128", &format!("vocab_size = {vocab}"));
    let cfg = format!(
        "{tiny}\n[data]\nshards = {:?}\ntokenizer = {:?}\n",
        prepared.join("shards"),
        tok
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, cfg).unwrap();
    (dir, path)
}

/// A tiny run pretrained for 30 steps at context `context`, in a fresh fixture directory.
pub fn pretrained(name: &str, context: usize) -> PathBuf {
    let (dir, cfg) = fixture(name);
    let run = dir.join("run");
    let o = frugal(&[
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--set",
        &format!("model.context_len={context}"),
        "--set",
        "train.steps=30",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    run
}

/// One of each conversation shape the importers read.
const CONVERSATIONS: &str = r#"{"messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi"}]}
{"instruction": "Add", "input": "2 and 3", "output": "5"}
{"question": "What is 6 times 7?", "answer": "6*7 = <<6*7=42>>42\n#### 42"}
{"prompt": "the cat", "completion": "sat on the mat."}
{"conversations": [{"from": "human", "value": "a dog"}, {"from": "gpt", "value": "ran in the park."}]}
"#;

/// An SFT config for a tiny run: 8 steps over the conversations at `data`.
pub fn sft_config(dir: &Path, data: &Path) -> PathBuf {
    let cfg = format!(
        r#"[train]
batch_size = 2
seq_len = 64
lr = 1e-3
steps = 8
warmup_steps = 2
eval_every = 4
checkpoint_every = 4

[sft]
val_fraction = 0.2
format_check = 4
reply_tokens = 16

[[sft.sources]]
name = "mixed"
path = {data:?}
"#
    );
    let path = dir.join("sft.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Writes the conversations `copies` times over (so there is something to hold out).
pub fn conversations(dir: &Path, copies: usize) -> PathBuf {
    let path = dir.join("convs.jsonl");
    std::fs::write(&path, CONVERSATIONS.repeat(copies)).unwrap();
    path
}

/// Sentence `i` of pseudo-random prose: varied enough to pass the Gopher repetition rules.
pub fn prose(i: usize) -> String {
    const STEMS: [&str; 6] = ["mill", "river", "bread", "stone", "apple", "field"];
    let mut x = 0x9E3779B97F4A7C15u64 ^ (i as u64).wrapping_mul(0xBF58476D1CE4E5B9);
    let mut s: Vec<String> = Vec::new();
    for _ in 0..14 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = (x % 300) as usize;
        s.push(format!("{}{}", STEMS[w % 6], w / 6));
    }
    format!("The {}. ", s.join(" "))
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
