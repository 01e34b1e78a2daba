//! The speedrun's plan: the budget split into stage shares, with the steps of each training
//! stage fitted to its share at the speeds this machine measures for the run's model. Made
//! once and saved in the run directory; a resumed speedrun reuses it.

use app::plan::{self, Probe, Shape, SpeedrunPlan};
use app::scaling::LossLaw;
use model::Llama;
use stages::pref::grpo::GrpoConfig;
use stages::sft::SftConfig;
use std::path::Path;
use tensor::device::Device;
use train::Config;

/// The three configs whose steps the plan sets.
pub struct Configs<'a> {
    pub pretrain: &'a mut Config,
    pub sft: &'a mut SftConfig,
    pub grpo: &'a mut GrpoConfig,
}

/// What the user fixed with `--set` (the plan leaves those): each stage's `train.steps`, and
/// the model's shape (`model.d_model`, `model.n_layers`, …).
#[derive(Default)]
pub struct Fixed {
    pub size: bool,
    pub pretrain: bool,
    pub sft: bool,
    pub grpo: bool,
}

impl Fixed {
    pub fn from_overrides(pretrain: &[String], sft: &[String], grpo: &[String]) -> Fixed {
        let sets = |o: &[String], keys: &[&str]| {
            o.iter()
                .any(|s| keys.iter().any(|k| s.trim_start().starts_with(k)))
        };
        let shape = [
            "model.d_model",
            "model.n_layers",
            "model.n_heads",
            "model.ffn_hidden",
        ];
        Fixed {
            size: sets(pretrain, &shape),
            pretrain: sets(pretrain, &["train.steps"]),
            sft: sets(sft, &["train.steps"]),
            grpo: sets(grpo, &["train.steps"]),
        }
    }
}

/// The widest model the plan weighs on a CPU: a step of d512 × 10 already takes seconds.
pub const CPU_MAX_D: usize = 512;

/// The run's plan: read from `RUN/plan.json`, or measured and written there.
pub fn make_or_reuse(
    run: &Path,
    budget_s: f64,
    law: Option<&LossLaw>,
    c: &mut Configs,
    fixed: &Fixed,
) -> anyhow::Result<SpeedrunPlan> {
    if let Some(p) = SpeedrunPlan::read(run)? {
        if (p.budget_s - budget_s).abs() > 0.5 {
            println!(
                "note: {} was planned for {}; its plan is kept (start a new --run to plan for {})",
                run.display(),
                plan::duration(p.budget_s),
                plan::duration(budget_s)
            );
        }
        println!("reused: {}", SpeedrunPlan::path(run).display());
        return Ok(p);
    }
    let p = make(budget_s, law, c, fixed)?;
    std::fs::create_dir_all(run)?;
    p.write(run)?;
    Ok(p)
}

/// Measures this machine and plans `budget_s`: first the model size (when a law is given and
/// the user fixed none), then every stage's steps for that size.
pub fn make(
    budget_s: f64,
    law: Option<&LossLaw>,
    c: &mut Configs,
    fixed: &Fixed,
) -> anyhow::Result<SpeedrunPlan> {
    let pretrain_s = budget_s * plan::SHARES[0].1;
    let weighed = match law.filter(|_| !fixed.size) {
        Some(law) => Some((law, choose_size(law, c.pretrain, pretrain_s)?)),
        None => None,
    };
    if let Some((_, (sizes, best))) = &weighed {
        sizes[*best].apply(&mut c.pretrain.model);
    }
    let probe = measure(c)?;
    let shapes = [
        (
            "pretrain",
            (!fixed.pretrain).then_some(pretrain_shape(c.pretrain)),
        ),
        (
            "sft",
            (!fixed.sft).then_some(Shape::Sft {
                check_prompts: c.sft.sft.format_check,
                reply_tokens: c.sft.sft.reply_tokens,
            }),
        ),
        (
            "grpo",
            (!fixed.grpo).then_some(Shape::Grpo {
                rows: c.grpo.train.batch_size * c.grpo.grpo.group_size,
                seq_len: c.grpo.train.seq_len,
                reply_tokens: c.grpo.grpo.max_reply_tokens,
                updates: c.grpo.grpo.updates_per_batch,
                val_prompts: c.grpo.grpo.val_prompts,
            }),
        ),
    ];
    let t = &c.pretrain.train;
    let precision = format!("{:?}", t.precision.on_this_cpu()).to_lowercase();
    let mut p = plan::plan(
        budget_s,
        &tensor::device::Cpu.describe(),
        &precision,
        probe,
        &shapes,
    );
    if let Some((law, (sizes, best))) = weighed {
        p.size = Some(sizes[best].clone());
        p.sizes = sizes;
        p.law = Some(law.clone());
    }
    Ok(p)
}

fn pretrain_shape(cfg: &Config) -> Shape {
    Shape::Pretrain {
        eval_every: cfg.train.eval_every,
        eval_tokens: cfg.train.eval_tokens,
    }
}

/// Every size of the planning family up to `CPU_MAX_D`, timed here for a few steps and
/// weighed by `law` at the tokens its steps would see in `seconds` (validation paid for).
fn choose_size(
    law: &LossLaw,
    cfg: &Config,
    seconds: f64,
) -> anyhow::Result<(Vec<plan::SizeChoice>, usize)> {
    let shapes = plan::family(&cfg.model, CPU_MAX_D);
    let rate = |m: &model::ModelConfig| {
        let mut c = cfg.clone();
        c.model = m.clone();
        let bench = app::bench::bench_train(&c, 3, |_, _, _| {})?;
        let step_s = bench.median_ms(1) / 1e3;
        let probe = Probe {
            train_step_s: step_s,
            tokens_per_step: bench.tokens_per_step,
            sft_step_s: step_s,
            grpo_s_per_token: step_s / bench.tokens_per_step as f64,
            decode_tok_s_small: 1.0,
            decode_tok_s_rollouts: 1.0,
        };
        let (steps, _) = plan::steps_within(seconds, pretrain_shape(&c), &probe);
        Ok((steps * bench.tokens_per_step) as f64 / seconds)
    };
    Ok(plan::weigh_sizes(
        law,
        &shapes,
        cfg.train.seq_len,
        seconds,
        rate,
    )?)
}

/// Times the run's model shape on this machine: training steps at each training stage's batch
/// and precision, and cached decoding at SFT's check batch and GRPO's rollout batch (random
/// weights: the speed of a step does not depend on them).
fn measure(c: &Configs) -> anyhow::Result<Probe> {
    let step = |t: &train::config::TrainConfig| -> anyhow::Result<(f64, usize)> {
        let mut cfg = c.pretrain.clone();
        cfg.train = t.clone();
        let bench = app::bench::bench_train(&cfg, 4, |_, _, _| {})?;
        Ok((bench.median_ms(1) / 1e3, bench.tokens_per_step))
    };
    let (pre, sft, grpo) = (&c.pretrain.train, &c.sft.train, &c.grpo.train);
    let context = c.pretrain.model.context_len;
    for (stage, t) in [("pretraining", pre), ("SFT", sft), ("GRPO", grpo)] {
        anyhow::ensure!(
            t.seq_len <= context,
            "the {stage} config's train.seq_len {} exceeds the model's context_len {context}: \
             lower it, or raise model.context_len with --set",
            t.seq_len
        );
    }
    let (train_step_s, tokens_per_step) = step(pre)?;
    let same = |t: &train::config::TrainConfig| {
        t.precision.on_this_cpu() == pre.precision.on_this_cpu() && t.optimizer == pre.optimizer
    };
    let sft_step_s = if same(sft) && (sft.batch_size, sft.seq_len) == (pre.batch_size, pre.seq_len)
    {
        train_step_s
    } else {
        step(sft)?.0
    };
    let grpo_s_per_token = if same(grpo) {
        train_step_s / tokens_per_step as f64
    } else {
        let (s, n) = step(grpo)?;
        s / n as f64
    };
    let model = Llama::init(c.pretrain.model.clone(), 0);
    let rows = grpo.batch_size * c.grpo.grpo.group_size;
    let decode = |batch: usize| app::bench::bench_infer(&model, batch, 32, 16, 1).decode_tok_s;
    Ok(Probe {
        train_step_s,
        tokens_per_step,
        sft_step_s,
        grpo_s_per_token,
        decode_tok_s_small: decode(8),
        decode_tok_s_rollouts: decode(rows),
    })
}

/// Sets the planned size and each planned stage's steps in the configs, and each checkpoint
/// interval to at most a quarter of the steps so that a killed stage loses little.
pub fn apply(p: &SpeedrunPlan, c: &mut Configs) {
    if let Some(size) = &p.size {
        size.apply(&mut c.pretrain.model);
    }
    let set = |t: &mut train::config::TrainConfig, stage: &str| {
        if let Some(steps) = p.stage(stage).and_then(|s| s.steps) {
            t.steps = steps;
            t.warmup_steps = t.warmup_steps.min(steps / 10);
            t.checkpoint_every = t.checkpoint_every.clamp(1, (steps / 4).max(1));
        }
    };
    set(&mut c.pretrain.train, "pretrain");
    set(&mut c.sft.train, "sft");
    set(&mut c.grpo.train, "grpo");
}
