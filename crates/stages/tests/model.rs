//! End-to-end checks of the model on configs/tiny.toml: golden values from an independent
//! PyTorch implementation, and a finite-difference gradient check of the whole model.

use model::{load_safetensors, Llama, Params};
use safetensors::SafeTensors;
use std::path::Path;
use tensor::check::{numeric_grad, relative_error};
use train::optim::Optimizer;
use train::Config;

fn golden_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"))
}

/// tokens (B, T+1) from the golden file → (inputs, targets), each (B·T).
fn golden_batch(path: &Path, t: usize) -> (Vec<u32>, Vec<u32>) {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tok = file.tensor("tokens").unwrap();
    let ids: Vec<u32> = tok
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let (mut x, mut y) = (vec![], vec![]);
    for row in ids.chunks_exact(t + 1) {
        x.extend_from_slice(&row[..t]);
        y.extend_from_slice(&row[1..]);
    }
    (x, y)
}

fn floats(v: &serde_json::Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("golden file lacks {key}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Golden values: regenerate with the `command` stored in tests/golden/tiny_golden.json
/// (.venv/bin/python bench/llama_ref.py golden --config configs/tiny.toml --out-dir
/// crates/stages/tests/golden --steps 10).
#[test]
fn matches_pytorch_golden_losses_and_logits() {
    matches_golden("tiny");
}

/// The same for DeepSeekMoE (configs/tiny-moe.toml): routing, shared and routed experts, and
/// the balancing biases' moves after each step, against bench/llama_ref.py's MoE written per
/// expert with masks (regenerate with the `command` in tests/golden/tiny-moe_golden.json).
/// Multi-token prediction (configs/tiny-mtp.toml, two modules): the main losses and logits as
/// above while the modules' loss trains the trunk too, and the modules' own losses.
#[test]
fn mtp_matches_pytorch_golden_losses() {
    let (_, mtp) = matches_golden("tiny-mtp");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("tiny-mtp_golden.json")).unwrap(),
    )
    .unwrap();
    let want = floats(&golden, "mtp_losses");
    assert_eq!(mtp.len(), want.len());
    for (i, (g, w)) in mtp.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs(),
            "MTP loss at step {i}: frugal {g} vs PyTorch {w}\nall: {mtp:?}"
        );
    }
}

/// Multi-head latent attention (configs/tiny-mla.toml) in the expanded form: the latent, its
/// norm, the shared RoPE key and kv_b_proj's per-head keys and values (regenerate with the
/// `command` in tests/golden/tiny-mla_golden.json).
#[test]
fn mla_matches_pytorch_golden_losses_and_logits() {
    matches_golden("tiny-mla");
}

#[test]
fn moe_matches_pytorch_golden_losses_logits_and_biases() {
    let (model, _) = matches_golden("tiny-moe");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("tiny-moe_golden.json")).unwrap(),
    )
    .unwrap();
    let bias = model
        .params
        .get("model.layers.1.mlp.gate.e_score_correction_bias")
        .unwrap();
    let want = floats(&golden, "bias_final");
    assert!(want.iter().any(|&b| b != 0.0), "the biases moved");
    for (g, w) in bias.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-6, "biases {bias:?} vs {want:?}");
    }
}

/// Loads `preset`'s golden weights, checks logits, trains as the reference did (AdamW, then
/// expert balancing), checks losses and logits; returns the trained model and the multi-token
/// prediction loss of each step.
fn matches_golden(preset: &str) -> (Llama, Vec<f64>) {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join(format!("{preset}_golden.json"))).unwrap(),
    )
    .unwrap();
    let cfg = Config::preset(preset, &[]).unwrap();
    let mut params = Params::zeros(&cfg.model);
    let init = golden_dir().join(format!("{preset}_init.safetensors"));
    let extra = load_safetensors(&mut params, &init).unwrap();
    assert_eq!(extra, vec!["tokens".to_string()]);
    let (b, t, v) = (
        cfg.train.batch_size,
        cfg.train.seq_len,
        cfg.model.vocab_size,
    );
    let (x, y) = golden_batch(&init, t);
    assert_eq!(x.len(), b * t);

    let mut model = Llama::new(cfg.model.clone(), params);
    let mut ws = model.workspace(b, t);
    let first_logits = |model: &Llama, ws: &mut model::Workspace| -> Vec<f64> {
        let l = model.logits(&x, ws);
        (0..4)
            .flat_map(|pos| {
                l[pos * v..pos * v + 8]
                    .iter()
                    .map(|&z| z as f64)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let check = |got: &[f64], want: &[f64], what: &str| {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (w.abs() + 1e-2),
                "{what}[{i}]: frugal {g} vs PyTorch {w}"
            );
        }
    };
    check(
        &first_logits(&model, &mut ws),
        &floats(&golden, "logits_init"),
        "initial logits",
    );
    // That forward pass was not a training step: its routing must not count toward balancing.
    ws.take_expert_load();

    let mut opt = Optimizer::new(&cfg.train, &model.params);
    let mut grads = vec![0f32; model.params.len()];
    let (mut losses, mut mtp) = (vec![], vec![]);
    for _ in 0..floats(&golden, "losses").len() {
        grads.fill(0.0);
        let (sum, n) = model.forward_backward(&x, &y, &mut grads, 1.0 / (b * t) as f32, &mut ws);
        losses.push(sum / n as f64);
        mtp.push(ws.mtp_loss());
        opt.update(&mut model.params.data, &grads, 1.0);
        model.balance_experts(&ws.take_expert_load());
    }
    let want = floats(&golden, "losses");
    let worst = losses
        .iter()
        .zip(&want)
        .map(|(g, w)| ((g - w) / w).abs())
        .fold(0.0, f64::max);
    eprintln!("{preset} golden losses: worst relative difference {worst:e}");
    for (i, (g, w)) in losses.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs(),
            "loss at step {i}: frugal {g} vs PyTorch {w}\nall: {losses:?}"
        );
    }
    check(
        &first_logits(&model, &mut ws),
        &floats(&golden, "logits_final"),
        "logits after training",
    );
    (model, mtp)
}

/// The whole model's backward pass against central differences, on every tensor.
#[test]
fn whole_model_gradient_check() {
    gradient_check_preset("tiny", &[], 5);
}

/// With the logits soft-capped at 1 (these logits reach a few units, so tanh bends them).
#[test]
fn softcapped_model_gradient_check() {
    gradient_check_preset("tiny", &["model.logit_softcap=1.0"], 5);
}

/// With q/k/v biases (Qwen2's) and Llama 3.1's RoPE scaling.
#[test]
fn biased_model_gradient_check() {
    let scaling = "model.rope_scaling={type=\"llama3\", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=16}";
    gradient_check_preset("tiny", &["model.qkv_bias=true", scaling], 5);
}

/// The same with a mixture of experts: a dense layer then a MoE one with a shared expert,
/// gates scaled and a sequence-wise balance loss; and MoE in every layer without shared experts.
/// The selection of experts is piecewise constant: finite differences are only valid where no
/// step flips a token's choice, which holds at these seeds (a flip shows as one entry off by
/// orders of magnitude, e.g. -132 against 10 at seed 5 of the second case).
#[test]
fn moe_model_gradient_check() {
    gradient_check_preset(
        "tiny-moe",
        &["model.moe.route_scale=2.5", "model.moe.balance_loss=0.1"],
        5,
    );
    gradient_check_preset(
        "tiny-moe",
        &["model.moe.dense_layers=0", "model.moe.shared_experts=0"],
        6,
    );
}

/// With two multi-token prediction modules: their loss's gradient reaches every module tensor
/// and, through the hidden states and the shared embedding and head, the model's own.
#[test]
fn mtp_model_gradient_check() {
    gradient_check_preset("tiny-mtp", &[], 5);
}

/// With latent attention: the gradient reaches q_proj (RoPE and position-free parts), the
/// latent's projection and norm, the shared RoPE key and kv_b_proj.
#[test]
fn mla_model_gradient_check() {
    gradient_check_preset("tiny-mla", &[], 5);
}

fn gradient_check_preset(preset: &str, overrides: &[&str], seed: u64) {
    // Larger init than training uses, so gradients stand well above f32 rounding noise.
    let mut set = vec!["model.init_std=0.3".to_string(), "train.seq_len=12".into()];
    set.extend(overrides.iter().map(|s| s.to_string()));
    let cfg = Config::preset(preset, &set).unwrap();
    let mut model = Llama::init(cfg.model.clone(), seed);
    for s in model
        .params
        .specs
        .clone()
        .iter()
        .filter(|s| !s.is_matrix() && s.trained)
    {
        // Non-unit norm weights, so their gradients are exercised away from the identity.
        let mut rng = tensor::Rng::new(s.offset as u64);
        model.params.data[s.range()]
            .iter_mut()
            .for_each(|w| *w = 1.0 + 0.2 * rng.normal() as f32);
    }
    let (b, t, v) = (
        cfg.train.batch_size,
        cfg.train.seq_len,
        cfg.model.vocab_size as u64,
    );
    let mut rng = tensor::Rng::new(9);
    let x: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let mut y: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    y[3] = tensor::ops::cross_entropy::IGNORE;
    let mut ws = model.workspace(b, t);
    let mut grads = vec![0f32; model.params.len()];
    model.forward_backward(&x, &y, &mut grads, 1.0, &mut ws);
    // A balance loss enters the gradient per sequence, as much as a whole sequence of token
    // losses does (grad_scale · seq_len): the numeric side adds it the same way.
    let balance = |ws: &model::Workspace| t as f64 * ws.balance_loss();
    // Balancing biases steer selection only and get no gradient.
    for spec in model.params.specs.clone().into_iter().filter(|s| s.trained) {
        let r = spec.range();
        // Embedding rows of unused tokens have zero gradient: sample the used ones.
        let idx: Vec<usize> = if spec.name == "model.embed_tokens.weight" {
            x.iter()
                .take(6)
                .map(|&tok| r.start + tok as usize * cfg.model.d_model + 1)
                .collect()
        } else {
            tensor::check::sample_indices(r.len(), 12)
                .into_iter()
                .map(|i| r.start + i)
                .collect()
        };
        let mut data = model.params.data.clone();
        let numeric = numeric_grad(&mut data, &idx, 1e-2, |p| {
            let m = Llama::new(
                cfg.model.clone(),
                Params {
                    data: p.to_vec(),
                    ..model.params.clone()
                },
            );
            let mut ws = m.workspace(b, t);
            if m.params.mtp.is_empty() {
                m.loss(&x, &y, &mut ws).0 + balance(&ws)
            } else {
                // The modules' loss only exists in training: take it from a training pass.
                let mut scratch = vec![0f32; m.params.len()];
                let (sum, _) = m.forward_backward(&x, &y, &mut scratch, 1.0, &mut ws);
                sum + ws.mtp_objective() + balance(&ws)
            }
        });
        let analytic: Vec<f64> = idx.iter().map(|&i| grads[i] as f64).collect();
        let err = relative_error(&numeric, &analytic);
        assert!(
            err < 1e-2,
            "{preset} {overrides:?} {}: relative error {err:e}\nnumeric {numeric:?}\nanalytic {analytic:?}",
            spec.name
        );
    }
}

/// The weighted objective preference training uses: the gradient of Σ wᵢ·(−ln p(yᵢ)) with
/// signed weights (chosen and rejected tokens pull opposite ways), against finite differences of
/// `token_logprobs`, which must itself equal the per-token loss.
#[test]
fn weighted_token_gradient_check() {
    let cfg = Config::preset(
        "tiny",
        &["model.init_std=0.3".into(), "train.seq_len=10".into()],
    )
    .unwrap();
    let model = Llama::init(cfg.model.clone(), 8);
    let (b, t, v) = (2, 10, cfg.model.vocab_size as u64);
    let mut rng = tensor::Rng::new(4);
    let x: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let mut y: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    y[0] = tensor::ops::cross_entropy::IGNORE;
    let w: Vec<f32> = (0..b * t).map(|i| if i < t { 0.7 } else { -0.4 }).collect();
    let mut ws = model.workspace(b, t);
    let lp = model.token_logprobs(&x, &y, &mut ws);
    assert_eq!(lp[0], 0.0);
    let (sum, _) = model.loss(&x, &y, &mut ws);
    assert!((lp.iter().sum::<f64>() + sum).abs() < 1e-3 * sum.abs());
    let objective = |m: &Llama| -> f64 {
        let mut ws = m.workspace(b, t);
        let lp = m.token_logprobs(&x, &y, &mut ws);
        lp.iter().zip(&w).map(|(l, &wi)| -l * wi as f64).sum()
    };
    let mut grads = vec![0f32; model.params.len()];
    model.forward_backward_weighted(&x, &y, Some(&w), &mut grads, 1.0, &mut ws);
    check_named_grads(
        &model,
        &grads,
        &[
            "lm_head.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ],
        objective,
    );
}

/// Trains tiny on one fixed batch; returns the loss after each step.
fn train_tiny(overrides: &[&str], steps: usize) -> Vec<f64> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let cfg = Config::preset("tiny", &overrides).unwrap();
    let (b, t, v) = (
        cfg.train.batch_size,
        cfg.train.seq_len,
        cfg.model.vocab_size as u64,
    );
    let mut rng = tensor::Rng::new(1);
    let seq: Vec<u32> = (0..b * (t + 1)).map(|_| rng.below(v) as u32).collect();
    let x: Vec<u32> = seq.chunks(t + 1).flat_map(|s| s[..t].to_vec()).collect();
    let y: Vec<u32> = seq.chunks(t + 1).flat_map(|s| s[1..].to_vec()).collect();
    let mut model = Llama::init(cfg.model.clone(), cfg.train.seed);
    let mut opt = Optimizer::new(&cfg.train, &model.params);
    let (mut ws, mut grads) = (model.workspace(b, t), vec![0f32; model.params.len()]);
    (0..steps)
        .map(|_| {
            grads.fill(0.0);
            let (sum, n) =
                model.forward_backward(&x, &y, &mut grads, 1.0 / (b * t) as f32, &mut ws);
            opt.update(&mut model.params.data, &grads, 1.0);
            sum / n as f64
        })
        .collect()
}

#[test]
fn both_optimizers_fit_a_batch() {
    for (opt, lr) in [("adamw", "train.lr=0.01"), ("muon", "train.lr=0.01")] {
        let losses = train_tiny(&[&format!("train.optimizer={opt}"), lr], 40);
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(
            last < 0.5 * first,
            "{opt}: loss {first} -> {last} over 40 steps on one batch"
        );
    }
}

#[test]
fn runs_are_reproducible_and_thread_count_only_reassociates() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    // Wide enough that GEMMs take the multi-threaded path.
    let wide = [
        "model.d_model=128",
        "model.ffn_hidden=256",
        "train.batch_size=4",
        "train.seq_len=32",
    ];
    let two_a = pool(2).install(|| train_tiny(&wide, 5));
    let two_b = pool(2).install(|| train_tiny(&wide, 5));
    assert_eq!(
        two_a, two_b,
        "same seed and thread count must give bitwise identical losses"
    );
    let one = pool(1).install(|| train_tiny(&wide, 5));
    for (a, b) in one.iter().zip(&two_a) {
        assert!((a - b).abs() < 1e-5 * a.abs(), "1 vs 2 threads: {a} vs {b}");
    }
}

/// Finite differences of `objective` against `grads` on a few entries of each named tensor.
fn check_named_grads(
    model: &Llama,
    grads: &[f32],
    names: &[&str],
    objective: impl Fn(&Llama) -> f64,
) {
    for name in names {
        let spec = model.params.spec(name).unwrap().clone();
        let idx: Vec<usize> = tensor::check::sample_indices(spec.len(), 10)
            .into_iter()
            .map(|i| spec.offset + i)
            .collect();
        let mut data = model.params.data.clone();
        let numeric = numeric_grad(&mut data, &idx, 1e-2, |p| {
            objective(&Llama::new(
                model.cfg.clone(),
                Params {
                    data: p.to_vec(),
                    ..model.params.clone()
                },
            ))
        });
        let analytic: Vec<f64> = idx.iter().map(|&i| grads[i] as f64).collect();
        let err = relative_error(&numeric, &analytic);
        assert!(
            err < 1e-2,
            "{name}: relative error {err:e}\n{numeric:?}\n{analytic:?}"
        );
    }
}

/// The reward model's path: a gradient on the final hidden states, backpropagated through the
/// trunk, against finite differences of a linear function of those states.
#[test]
fn hidden_state_gradient_check() {
    let cfg = Config::preset(
        "tiny",
        &["model.init_std=0.3".into(), "train.seq_len=8".into()],
    )
    .unwrap();
    let model = Llama::init(cfg.model.clone(), 5);
    let (b, t, d) = (2, 8, cfg.model.d_model);
    let mut rng = tensor::Rng::new(6);
    let x: Vec<u32> = (0..b * t)
        .map(|_| rng.below(cfg.model.vocab_size as u64) as u32)
        .collect();
    let mut c = vec![0f32; b * t * d];
    rng.fill_normal(&mut c, 1.0);
    let objective = |m: &Llama| -> f64 {
        let mut ws = m.workspace(b, t);
        let h = m.hidden_states(&x, &mut ws).slice();
        h.iter().zip(&c).map(|(h, c)| (h * c) as f64).sum()
    };
    let mut ws = model.workspace(b, t);
    model.hidden_states(&x, &mut ws);
    let mut grads = vec![0f32; model.params.len()];
    model.backward_from_hidden(&x, &c, &mut grads, &mut ws);
    let head = model.params.spec("lm_head.weight").unwrap();
    assert!(grads[head.range()].iter().all(|&g| g == 0.0));
    check_named_grads(
        &model,
        &grads,
        &[
            "model.norm.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.embed_tokens.weight",
        ],
        objective,
    );
}

/// GRPO's per-token weights turn `backward_weighted_at` into the gradient of its whole
/// objective (clipped surrogate, k3 KL, DeepSeekMath's averaging) under the sampler's
/// temperature, checked by finite differences with some ratios inside the clip and some beyond.
#[test]
fn grpo_objective_gradient_check() {
    grpo_objective_gradient_check_with(&[]);
}

/// With a soft cap, the sampler's temperature divides the capped logits.
#[test]
fn softcapped_grpo_objective_gradient_check() {
    grpo_objective_gradient_check_with(&["model.logit_softcap=1.0"]);
}

fn grpo_objective_gradient_check_with(overrides: &[&str]) {
    use stages::pref::grpo::Surrogate;
    let mut set = vec!["model.init_std=0.3".to_string(), "train.seq_len=8".into()];
    set.extend(overrides.iter().map(|s| s.to_string()));
    let cfg = Config::preset("tiny", &set).unwrap();
    let model = Llama::init(cfg.model.clone(), 9);
    let (b, t, v) = (3, 8, cfg.model.vocab_size as u64);
    let mut rng = tensor::Rng::new(10);
    let x: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    // Each row's prompt is its first two positions.
    let y: Vec<u32> = (0..b * t)
        .map(|i| {
            if i % t < 2 {
                tensor::ops::cross_entropy::IGNORE
            } else {
                rng.below(v) as u32
            }
        })
        .collect();
    let temp = 0.7;
    let mut ws = model.workspace(b, t);
    let lp = model.token_logprobs_at(&x, &y, temp, &mut ws);
    // The log-probabilities are those of softmax(logits / T), the sampler's distribution.
    let logits = model.logits(&x, &mut ws);
    let vocab = cfg.model.vocab_size;
    for (i, &target) in y.iter().enumerate() {
        if target == tensor::ops::cross_entropy::IGNORE {
            continue;
        }
        let row: Vec<f64> = logits[i * vocab..(i + 1) * vocab]
            .iter()
            .map(|&z| z as f64 / temp as f64)
            .collect();
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + row.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
        assert!(
            (lp[i] - (row[target as usize] - lse)).abs() < 1e-4,
            "position {i}"
        );
    }
    // The sampling policy a little off (a few far enough to clip), the reference further.
    let old: Vec<f64> = lp
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l + if i % 5 == 0 {
                0.5
            } else {
                0.03 * (i % 3) as f64
            }
        })
        .collect();
    let reference: Vec<f64> = lp.iter().map(|l| l - 0.3).collect();
    let adv = [1.2, -0.7, 0.4];
    let actions = [t - 2; 3];
    let obj = Surrogate {
        clip: 0.2,
        beta: 0.1,
    };
    let mut w = vec![0f32; b * t];
    obj.token_weights(&lp, &old, &reference, &y, &adv, &actions, t, &mut w);
    let mut grads = vec![0f32; model.params.len()];
    // GRPO's path: the backward straight after the log-probabilities, without a second forward
    // (`model.logits` above ran its own forward, so the log-probabilities are read again).
    model.token_logprobs_at(&x, &y, temp, &mut ws);
    model.backward_weighted_at(&x, &y, Some(&w), temp, &mut grads, 1.0, &mut ws);
    let objective = |m: &Llama| -> f64 {
        let mut ws = m.workspace(b, t);
        let lp = m.token_logprobs_at(&x, &y, temp, &mut ws);
        let mut scratch = vec![0f32; b * t];
        obj.token_weights(&lp, &old, &reference, &y, &adv, &actions, t, &mut scratch)
            .0
    };
    check_named_grads(
        &model,
        &grads,
        &[
            "lm_head.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ],
        objective,
    );
}
