//! The analytic FLOP count against the kernels' own count over one training step of the
//! reference preset, of full fine-tuning and of LoRA. Its own test binary: the kernels' counter
//! is process-wide, and no other test may run kernels beside it.

use model::Llama;
use model::{Arch, AttnConvention};

#[test]
fn analytic_flops_match_the_kernels_count_on_the_reference_preset() {
    let cfg = train::Config::preset("ref", &[]).unwrap();
    let (b, t) = (cfg.train.batch_size, cfg.train.seq_len);
    let mut model = Llama::init(cfg.model.clone(), 0);
    let mut ws = model.workspace(b, t);
    let v = cfg.model.vocab_size as u32;
    let x: Vec<u32> = (0..b * t).map(|i| (i as u32 * 7919) % v).collect();
    let y: Vec<u32> = (0..b * t).map(|i| (i as u32 * 104_729 + 1) % v).collect();
    // The kernels' count of one step, and its check against an analytic count.
    let mut step = |model: &Llama| {
        let mut grads = vec![0f32; model.trainable_len()];
        let before = tensor::flops::total();
        model.forward_backward(&x, &y, &mut grads, 1.0 / (b * t) as f32, &mut ws);
        (tensor::flops::total() - before) as f64
    };
    let check = |what: &str, counted: f64, analytic: f64| {
        let rel = (counted - analytic).abs() / analytic;
        println!("{what}: counted {counted:.4e} analytic {analytic:.4e} rel {rel:.2e}");
        assert!(
            rel < 0.02,
            "{what}: counted {counted:.4e} vs analytic {analytic:.4e}: {:.2}% apart",
            100.0 * rel
        );
    };

    let counted = step(&model);
    let arch = Arch::from_model(&cfg.model, t);
    let analytic = arch.train_flops_per_token(AttnConvention::Causal) * (b * t) as f64;
    check("full", counted, analytic);
    // PaLM's convention counts every key of the window: more than the kernels do.
    let palm = arch.train_flops_per_token(AttnConvention::Palm) * (b * t) as f64;
    assert!(
        palm > counted * 1.02,
        "the causal discount should be visible at T = {t}"
    );

    // With LoRA adapters on every projection the frozen weights get no gradient: the ledger
    // bills 2 FLOPs less per frozen matmul weight and 6 per adapter float, and so must the
    // kernels count.
    let lora = train::lora::LoraConfig::default();
    let adapters = train::lora::Adapters::new(&lora, &model, std::path::Path::new("base")).unwrap();
    adapters.attach(&mut model);
    let counted_lora = step(&model);
    let billed_less = model::arch::flops_per_token(&cfg.model, t) - model.train_flops_per_token(t);
    check(
        "LoRA",
        counted_lora,
        analytic - billed_less * (b * t) as f64,
    );
    assert!(
        counted_lora < 0.8 * counted,
        "{counted_lora:.4e} vs {counted:.4e}"
    );
}
