//! Helpers of the SFT tests: a pretrained tiny run, conversations and a config for them.
#![allow(dead_code)]

use crate::common::tiny_run_with;
use std::path::{Path, PathBuf};

/// Conversations in the chat-messages format, enough to hold some out.
pub fn sft_conversations(dir: &Path) -> PathBuf {
    let path = dir.join("convs.jsonl");
    let rows: String = (0..24)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("what is {i} plus one?")},
                {"role": "assistant", "content": format!("{}", i + 1)},
            ]})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&path, rows).unwrap();
    path
}

pub fn sft_config(dir: &Path, overrides: &[String]) -> stages::sft::SftConfig {
    let text = format!(
        "[train]\nbatch_size = 2\nseq_len = 48\nlr = 1e-3\nsteps = 6\nwarmup_steps = 1\neval_every = 3\n\
         checkpoint_every = 3\nseed = 1\n\n[sft]\nval_fraction = 0.2\nformat_check = 0\n\n\
         [[sft.sources]]\nname = \"sums\"\npath = {:?}\n",
        sft_conversations(dir)
    );
    stages::sft::SftConfig::parse(&text, "sft test config", overrides).unwrap()
}

/// A tiny pretrained run, without the SFT checkpoint `tiny_run` also makes.
pub fn pretrained(dir: &Path, more: &str) -> PathBuf {
    let run = tiny_run_with(dir, more);
    std::fs::remove_dir_all(run.join("sft")).unwrap();
    run
}

pub fn sft_records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("sft/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
