//! Helpers shared by the binary's end-to-end tests.
#![allow(dead_code)] // each test binary uses a subset

use std::path::Path;
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
