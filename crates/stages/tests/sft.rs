//! SFT on the one training loop: the loss guard skips a bad step instead of ending the run, and
//! the ledger counts the FLOPs of every module trained, multi-token prediction included.

use stages::sft::{sft, SftConfig};
use std::path::{Path, PathBuf};

mod common;
use common::{temp, tiny_run_with};

/// Conversations in the chat-messages format, enough to hold some out.
fn conversations(dir: &Path) -> PathBuf {
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

fn config(dir: &Path, overrides: &[String]) -> SftConfig {
    let text = format!(
        "[train]\nbatch_size = 2\nseq_len = 48\nlr = 1e-3\nsteps = 6\nwarmup_steps = 1\neval_every = 3\n\
         checkpoint_every = 3\nseed = 1\n\n[sft]\nval_fraction = 0.2\nformat_check = 0\n\n\
         [[sft.sources]]\nname = \"sums\"\npath = {:?}\n",
        conversations(dir)
    );
    SftConfig::parse(&text, "sft test config", overrides).unwrap()
}

/// A tiny pretrained run, without the SFT checkpoint `tiny_run` also makes.
fn pretrained(dir: &Path, more: &str) -> PathBuf {
    let run = tiny_run_with(dir, more);
    std::fs::remove_dir_all(run.join("sft")).unwrap();
    run
}

fn records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("sft/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_bad_sft_step_is_skipped_by_the_loss_guard_not_fatal() {
    let dir = temp("sft-guard");
    let run = pretrained(&dir, "");
    let cfg = config(&dir, &["train.inject_nan_steps=[2]".into()]);
    let mut log = Vec::new();
    let s = sft(&cfg, &run, false, |l| log.push(l.to_string())).unwrap();
    let log = log.join("\n");
    assert!(
        log.contains("sft step 2 | loss guard: loss is NaN; update skipped (1 in a row)"),
        "{log}"
    );
    assert_eq!(s.steps, 6);
    assert!(s.final_loss.is_finite() && s.val_loss.is_finite(), "{s:?}");
    let rs = records(&run);
    assert!(rs
        .iter()
        .any(|r| r["step"] == 2 && r["skipped"].is_string()));
    // The skipped step did not update: five steps have a loss line.
    assert_eq!(rs.iter().filter(|r| r["loss"].is_number()).count(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sft_ledger_counts_the_multi_token_prediction_modules() {
    let dir = temp("sft-mtp-flops");
    let run = pretrained(&dir, "\n[model.mtp]\ndepth = 1\nweight = 0.3\n");
    let cfg = config(&dir, &[]);
    sft(&cfg, &run, false, |_| {}).unwrap();
    let model = train::Config::load(&run.join("config.toml"), &[])
        .unwrap()
        .model;
    assert!(model.mtp.is_some());
    let ledger = ledger::Ledger::read(&run).unwrap().unwrap();
    let stage = ledger.stage("sft").expect("an sft line in the ledger");
    let seq = cfg.train.seq_len;
    // Six steps of one micro-batch of two rows (batch_tokens is 0).
    assert_eq!(stage.tokens, 6 * 2 * seq as u64);
    let with_mtp = model::arch::flops_per_token(&model, seq) * stage.tokens as f64;
    let trunk_only = model::Arch::from_model(&model, seq)
        .train_flops_per_token(model::AttnConvention::Palm)
        * stage.tokens as f64;
    assert!(with_mtp > 1.05 * trunk_only, "{with_mtp} vs {trunk_only}");
    assert!(
        (stage.model_flops - with_mtp).abs() <= 1e-9 * with_mtp,
        "ledger {} vs the model's count with its MTP modules {with_mtp} (trunk only: {trunk_only})",
        stage.model_flops
    );
    let _ = std::fs::remove_dir_all(&dir);
}
