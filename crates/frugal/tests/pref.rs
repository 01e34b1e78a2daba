//! Preference tuning end to end on a tiny run: DPO learns a consistent preference (its held-out
//! implicit-reward accuracy rises from 0 to well above chance), writes the pref stage that
//! `frugal eval` finds, resumes bit-exactly after a lost checkpoint, and refuses a run without
//! an SFT model.

use frugal::pref::dpo::{train, DpoConfig};
use std::path::Path;

mod common;
use common::{temp, tiny_run};

/// Pairs where the preferred reply always agrees and the other always refuses.
fn pairs(dir: &Path) -> std::path::PathBuf {
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

fn config(dir: &Path, steps: usize) -> DpoConfig {
    let path = dir.join("dpo.toml");
    std::fs::write(
        &path,
        format!(
            "[train]\nbatch_size = 4\nseq_len = 48\nlr = 3e-3\nweight_decay = 0.0\nsteps = {steps}\nwarmup_steps = 1\n\
             eval_every = 4\ncheckpoint_every = 2\nkeep_checkpoints = 5\nseed = 3\n\n[dpo]\nbeta = 0.5\nval_pairs = 10\n\
             max_reply_tokens = 16\nsources = [{:?}]\n",
            pairs(dir)
        ),
    )
    .unwrap();
    DpoConfig::load(&path, &[]).unwrap()
}

fn weights(run: &Path, step: usize) -> Vec<u8> {
    std::fs::read(run.join(format!("pref/checkpoints/step-{step}/model.safetensors"))).unwrap()
}

#[test]
fn dpo_learns_a_consistent_preference_and_resumes_exactly() {
    let dir = temp("dpo");
    let run = tiny_run(&dir);
    let cfg = config(&dir, 8);
    let s = train(&cfg, &run, false, |_| {}).unwrap();
    assert_eq!(
        s.before.accuracy, 0.0,
        "the policy starts as the reference: no margins"
    );
    assert!(s.after.accuracy >= 0.9, "{s:?}");
    assert!(s.after.margin > 0.0);
    assert_eq!(s.after.pairs, 10);
    assert!(run.join("pref/report.json").is_file());
    let stages: Vec<&str> = frugal::eval::stages(&run)
        .unwrap()
        .iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(stages, ["base", "sft", "pref"]);
    let ledger = frugal::cost::Ledger::read(&run).unwrap().unwrap();
    assert!(ledger.stage("preference").is_some_and(|s| s.tokens > 0));

    // A crash that lost the last two checkpoints: resuming redoes those steps exactly.
    let want = weights(&run, 8);
    for step in [6, 8] {
        std::fs::remove_dir_all(run.join(format!("pref/checkpoints/step-{step}"))).unwrap();
    }
    train(&cfg, &run, true, |_| {}).unwrap();
    assert!(weights(&run, 8) == want, "resumed weights differ");
    // Starting over on top of existing checkpoints is refused.
    let e = train(&cfg, &run, false, |_| {}).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dpo_needs_an_sft_model() {
    let dir = temp("dpo-nosft");
    let run = tiny_run(&dir);
    std::fs::remove_dir_all(run.join("sft")).unwrap();
    let e = train(&config(&dir, 2), &run, false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no SFT checkpoint") && e.contains("frugal sft"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
