//! SFT on the one training loop: the ledger counts the FLOPs of every module trained,
//! multi-token prediction included (the loss guard's test is `sft_guard.rs`).

use stages::sft::sft;

mod common;
#[path = "common/sft.rs"]
mod sft_common;
use common::temp;
use sft_common::{pretrained, sft_config};

#[test]
fn the_sft_ledger_counts_the_multi_token_prediction_modules() {
    let dir = temp("sft-mtp-flops");
    let run = pretrained(&dir, "\n[model.mtp]\ndepth = 1\nweight = 0.3\n");
    let cfg = sft_config(&dir, &[]);
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
