//! The analytic FLOP count against the kernels' own count over one training step of the
//! reference preset. Its own test binary: the kernels' counter is process-wide, and no other
//! test may run kernels beside it.

use model::Llama;
use model::{Arch, AttnConvention};

#[test]
fn analytic_flops_match_the_kernels_count_on_the_reference_preset() {
    let cfg = train::Config::preset("ref", &[]).unwrap();
    let (b, t) = (cfg.train.batch_size, cfg.train.seq_len);
    let model = Llama::init(cfg.model.clone(), 0);
    let mut ws = model.workspace(b, t);
    let mut grads = vec![0f32; model.params.len()];
    let v = cfg.model.vocab_size as u32;
    let x: Vec<u32> = (0..b * t).map(|i| (i as u32 * 7919) % v).collect();
    let y: Vec<u32> = (0..b * t).map(|i| (i as u32 * 104_729 + 1) % v).collect();

    let before = tensor::flops::total();
    model.forward_backward(&x, &y, &mut grads, 1.0 / (b * t) as f32, &mut ws);
    let counted = (tensor::flops::total() - before) as f64;

    let arch = Arch::from_model(&cfg.model, t);
    let analytic = arch.train_flops_per_token(AttnConvention::Causal) * (b * t) as f64;
    let rel = (counted - analytic).abs() / analytic;
    println!("counted {counted:.4e} analytic {analytic:.4e} rel {rel:.2e}");
    assert!(
        rel < 0.02,
        "counted {counted:.4e} vs analytic {analytic:.4e}: {:.2}% apart",
        100.0 * rel
    );
    // PaLM's convention counts every key of the window: more than the kernels do.
    let palm = arch.train_flops_per_token(AttnConvention::Palm) * (b * t) as f64;
    assert!(
        palm > counted * 1.02,
        "the causal discount should be visible at T = {t}"
    );
}
