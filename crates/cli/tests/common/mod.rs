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
            frugal::data::jsonl::JsonlWriter::create(&prepared.join(format!("{split}.jsonl.zst")))
                .unwrap();
        for i in range {
            w.write(&frugal::data::Doc {
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
