//! bf16 matrix products in training (train.precision = "bf16"). A test binary of its own:
//! the precision is process-wide while a run holds it, and other tests' products must stay f32.

use model::Llama;
use std::sync::Mutex;
use tensor::ops::attention::{attention_backward, attention_forward, AttnShape};
use train::optim::Optimizer;
use train::Config;

/// Held by each test while it compares bf16 with f32: the bf16 region is process-wide, so a
/// test's f32 reference must not run while another test holds the region.
static PRECISION: Mutex<()> = Mutex::new(());

/// tiny widened until its projections reach the size that `sgemm` sends to bf16 (256 rows of
/// width 128), trained on one batch: (loss per step, FLOPs counted).
fn train(precision: &str, steps: usize) -> base::Result<(Vec<f64>, u64)> {
    let set: Vec<String> = [
        "model.d_model=128",
        "model.ffn_hidden=256",
        "train.batch_size=8",
        "train.seq_len=32",
        &format!("train.precision={precision}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cfg = Config::preset("tiny", &set).unwrap();
    let (b, t, v) = (
        cfg.train.batch_size,
        cfg.train.seq_len,
        cfg.model.vocab_size,
    );
    let mut rng = tensor::Rng::new(1);
    let seq: Vec<u32> = (0..b * (t + 1))
        .map(|_| rng.below(v as u64) as u32)
        .collect();
    let x: Vec<u32> = seq.chunks(t + 1).flat_map(|s| s[..t].to_vec()).collect();
    let y: Vec<u32> = seq.chunks(t + 1).flat_map(|s| s[1..].to_vec()).collect();
    let mut model = Llama::init(cfg.model.clone(), 0);
    let mut opt = Optimizer::new(&cfg.train, &model.params);
    let (mut ws, mut grads) = (model.workspace(b, t), vec![0f32; model.params.len()]);
    let _precision = train::precision(&cfg.train)?;
    let flops0 = tensor::flops::total();
    let losses = (0..steps)
        .map(|_| {
            grads.fill(0.0);
            let (sum, n) =
                model.forward_backward(&x, &y, &mut grads, 1.0 / (b * t) as f32, &mut ws);
            opt.update(&mut model.params.data, &grads, 1.0);
            sum / n as f64
        })
        .collect();
    Ok((losses, tensor::flops::total() - flops0))
}

/// bf16 products train as f32 ones do, to bf16's precision: every step's loss within 1% of
/// the f32 run's as both fit the batch, yet not equal (the bf16 path ran), and the same FLOPs
/// counted. Without AVX-512 BF16 the config is refused, naming the field.
#[test]
fn bf16_products_train_like_f32() {
    let _only = PRECISION.lock().unwrap_or_else(|e| e.into_inner());
    auto_precision_is_bf16_where_the_cpu_has_it_and_f32_elsewhere();
    if !tensor::bf16::available() {
        let err = train("bf16", 1).unwrap_err().to_string();
        assert!(err.contains("train.precision"), "{err}");
        return;
    }
    let (f32_losses, f32_flops) = train("f32", 30).unwrap();
    let (bf16_losses, bf16_flops) = train("bf16", 30).unwrap();
    assert_eq!(f32_flops, bf16_flops);
    assert!(
        f32_losses.last().unwrap() < &(f32_losses[0] * 0.5),
        "the batch was not fitted: {f32_losses:?}"
    );
    let mut differs = false;
    for (i, (a, b)) in f32_losses.iter().zip(&bf16_losses).enumerate() {
        assert!(
            (a - b).abs() <= 1e-2 * a,
            "step {i}: f32 {a} vs bf16 {b}\nf32 {f32_losses:?}\nbf16 {bf16_losses:?}"
        );
        differs |= a != b;
    }
    assert!(
        differs,
        "bf16 training gave f32's losses exactly: no bf16 product ran"
    );
}

/// "auto" runs bf16 products where the CPU has them and f32 where it does not, never refusing:
/// its losses equal those of the precision it chose, bit for bit. (Called from the test above:
/// the precision and the FLOP counter are process-wide, so the two may not run at once.)
fn auto_precision_is_bf16_where_the_cpu_has_it_and_f32_elsewhere() {
    let chosen = if tensor::bf16::available() {
        "bf16"
    } else {
        "f32"
    };
    assert_eq!(
        train::config::Precision::Auto.describe(),
        format!("{chosen} (auto)")
    );
    let (auto, _) = train("auto", 5).unwrap();
    let (named, _) = train(chosen, 5).unwrap();
    assert_eq!(auto, named);
}

/// Attention's blocks in bf16 (64 queries by up to 150 keys of width 64: past the size that
/// goes to bf16) stay within bf16's rounding of the f32 result, forward and backward, yet differ
/// from it (the bf16 path ran).
#[test]
fn bf16_attention_matches_f32_to_bf16_precision() {
    let _only = PRECISION.lock().unwrap_or_else(|e| e.into_inner());
    if !tensor::bf16::available() {
        assert!(tensor::matmul::bf16_products().is_err());
        return;
    }
    let s = AttnShape {
        batch: 2,
        seq_len: 150,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
    };
    let rows = s.batch * s.seq_len;
    let qkv = tensor::check::projection(rows * s.stride(), 1);
    let dout = tensor::check::projection(rows * s.out_stride(), 2);
    let run = || {
        let (mut out, mut lse) = (
            vec![0.0; rows * s.out_stride()],
            vec![0.0; s.batch * s.n_heads * s.seq_len],
        );
        attention_forward(&mut out, &mut lse, &qkv, s);
        let mut dqkv = vec![0.0; qkv.len()];
        attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, s);
        (out, dqkv)
    };
    let (out32, d32) = run();
    let (out16, d16) = {
        let _bf16 = tensor::matmul::bf16_products().unwrap();
        run()
    };
    for (name, a, b) in [("out", &out32, &out16), ("dqkv", &d32, &d16)] {
        let rms = |v: &mut dyn Iterator<Item = f32>| {
            let (sum, n) = v.fold((0f64, 0usize), |(s, n), x| (s + (x * x) as f64, n + 1));
            (sum / n as f64).sqrt()
        };
        let (scale, err) = (
            rms(&mut a.iter().copied()),
            rms(&mut a.iter().zip(b.iter()).map(|(x, y)| x - y)),
        );
        // bf16 keeps 8 bits of mantissa: operands rounded to 2^-9 relative, errors adding
        // in quadrature over the products' sums and the two chained products of backward.
        assert!(
            err <= 1e-2 * scale,
            "{name}: rms(f32 - bf16) = {err}, rms(f32) = {scale}"
        );
        assert!(
            err > 0.0,
            "{name}: bf16 gave f32's values exactly: no bf16 product ran"
        );
    }
}
