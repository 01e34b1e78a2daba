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

/// LoRA on the SFT stage, with dropout: the base stays frozen, the checkpoints hold only the
/// adapters (a PEFT adapter directory naming the base), the loss falls, a killed run resumes to
/// the same adapters (the same dropout masks), and the stage loads everywhere as base + merged
/// adapters.
#[test]
fn lora_tunes_adapters_on_a_frozen_base_and_resumes_to_the_same_weights() {
    use train::checkpoint::{list, load_stage};
    let dir = temp("sft-lora");
    let run = pretrained(&dir, "");
    let lora = [
        "lora.rank=4".to_string(),
        "lora.alpha=8.0".into(),
        "lora.dropout=0.1".into(),
        "train.lr=1e-2".into(),
    ];
    let cfg = sft_config(&dir, &lora);
    assert_eq!(cfg.lora.as_ref().unwrap().rank, 4);
    let base = load_stage(&run, Some("base")).unwrap();
    sft(&cfg, &run, false, |_| {}).unwrap();
    let records = sft_common::sft_records(&run);
    let losses: Vec<f64> = records.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert!(
        losses.last().unwrap() < losses.first().unwrap(),
        "{losses:?}"
    );
    let ckpts = list(&run.join("sft")).unwrap();
    let (_, last) = ckpts.last().unwrap();
    assert!(
        !last.join("model.safetensors").exists(),
        "only adapters are checkpointed"
    );
    let peft: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(peft["peft_type"], "LORA");
    assert_eq!(peft["r"], 4);
    assert!((peft["lora_dropout"].as_f64().unwrap() - 0.1).abs() < 1e-6);
    let adapter_bytes = std::fs::metadata(last.join("adapter_model.safetensors"))
        .unwrap()
        .len();
    let base_bytes = 4 * base.model.params.len() as u64;
    assert!(
        adapter_bytes * 3 < base_bytes,
        "{adapter_bytes} vs {base_bytes}"
    );
    // The stage loads as the base with the adapters merged: only adapted matrices moved.
    let tuned = load_stage(&run, Some("sft")).unwrap();
    for spec in &tuned.model.params.specs {
        let (a, b) = (
            &tuned.model.params.data[spec.range()],
            &base.model.params.data[spec.range()],
        );
        // The default [lora] targets every projection.
        let adapted = train::lora::MODULES
            .iter()
            .any(|m| spec.name.ends_with(&format!("{m}.weight")));
        assert_eq!(a != b, adapted, "{}", spec.name);
    }
    // Killed after the step-3 checkpoint (the later one removed) and resumed: the same
    // adapters as the whole run.
    assert_eq!(ckpts.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 6]);
    std::fs::remove_dir_all(last).unwrap();
    sft(&cfg, &run, true, |_| {}).unwrap();
    let resumed = load_stage(&run, Some("sft")).unwrap();
    assert!(
        resumed.model.params.data == tuned.model.params.data,
        "resume changed the result"
    );
}
