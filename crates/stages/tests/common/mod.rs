//! Helpers shared by the library's end-to-end tests.
#![allow(dead_code)]

use model::{save_safetensors, Llama};
use std::path::{Path, PathBuf};
use train::Config;

/// An empty scratch directory named for the test and the process.
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("frugal-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A run directory with a byte-level tokenizer, a 64-token context, and a checkpoint for the
/// base and the SFT stage (different weights).
pub fn tiny_run(dir: &Path) -> PathBuf {
    tiny_run_with(dir, "")
}

/// `tiny_run` with `more` TOML appended to its config (a `[model.mtp]` table, say).
pub fn tiny_run_with(dir: &Path, more: &str) -> PathBuf {
    let tok = bpe::Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    tok.save(&run.join("tokenizer.json")).unwrap();
    let cfg = include_str!("../../../../configs/tiny.toml")
        .replace(
            "vocab_size = 128",
            &format!("vocab_size = {}", tok.vocab_size()),
        )
        .replace("context_len = 32", "context_len = 64")
        .replace("init_std = 0.02", "init_std = 0.2")
        + more;
    std::fs::write(run.join("config.toml"), &cfg).unwrap();
    let model_cfg = Config::parse(&cfg, "tiny", &[]).unwrap().model;
    for (sub, seed) in [("", 1), ("sft", 2)] {
        let ckpt = run.join(sub).join("checkpoints/step-5");
        std::fs::create_dir_all(&ckpt).unwrap();
        let m = Llama::init(model_cfg.clone(), seed);
        save_safetensors(&m.params, &ckpt.join("model.safetensors")).unwrap();
    }
    run
}

/// Preference pairs where the preferred reply always agrees and the other always refuses: 60
/// of them in `dir/pairs.jsonl`.
pub fn preference_pairs(dir: &Path) -> PathBuf {
    let f = dir.join("pairs.jsonl");
    let rows: String = (0..60)
        .map(|i| {
            serde_json::json!({
                "prompt": format!("Question {i}?"),
                "chosen": "Yes, gladly.",
                "rejected": "No way.",
                "annotator": "tester"
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&f, rows).unwrap();
    f
}
