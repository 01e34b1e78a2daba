//! Budget-first planning of the speedrun: one wall-clock budget split across the recipe's
//! stages, and the training steps that fit each stage's share at the speeds measured on this
//! machine (a training step and batched decoding of the run's model shape, random weights).
//!
//! A plan is made once per run and saved as `RUN/plan.json`; a resumed speedrun reuses it, so
//! the schedule (cosine over the planned steps) never changes under a run. Predictions are
//! upper bounds: replies that stop before their token limit and prompts shorter than the
//! sequence make the stages finish early rather than late.

use crate::scaling::LossLaw;
use base::{Error, Result};
use ledger::si;
use model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Each stage's share of the budget. What is left (7%) pays for the plan, fetching, data
/// preparation, the tokenizer and the report (45 s of a 30-minute run on 2 cores). SFT's share
/// is what it takes the 9M model to learn the cold start's calculator calls (about an epoch of
/// its mixture: 441 steps over a mixture three times as large left held-out arithmetic at 0.8%,
/// 560 steps over the capped one reached 70%); GRPO's is what it takes to improve on that by
/// more than its interval (40 steps of 16 prompts x 8: +3.6 ± 2.9 points). Pretraining's is
/// ten minutes of training steps in a 30-minute run, with its validation passes on top.
pub const SHARES: [(&str, f64); 4] = [
    ("pretrain", 0.37),
    ("sft", 0.23),
    ("grpo", 0.20),
    ("eval", 0.13),
];

/// What a GRPO step costs beyond what the probe times: prompt prefill, sampling at temperature,
/// reward and tool parsing, per-token weights over the vocabulary. Measured on the speedrun
/// (2-core Xeon, 16 prompts x 8 replies): 40 steps of the 9.3M model predicted at 4m26s without
/// it ran 5m51s (1.32); 174 steps of the 5.5M model planned at 1.3 into 6m00s ran 6m38s (1.44).
const GRPO_OVERHEAD: f64 = 1.4;

/// How much longer a step of a long run takes than the probe's few steps (sustained clocks, a
/// heap and page cache that have grown): on the speedrun (2-core Xeon) pretraining's probe
/// timed 276 ms and its 2066 steps averaged 316 ms (1.14); SFT planned at 7m30s ran 8m40s
/// (1.16); a 969-step recipe run timed at 310 ms averaged 330 (1.07). Pretraining and SFT
/// steps are planned at this multiple; GRPO's overhead was measured against the probe itself.
const SUSTAINED: f64 = 1.12;

/// A training step's forward pass is about a third of its FLOPs (forward, then backward for
/// activations and weights): validation and reference passes are priced at that share.
const FORWARD_SHARE: f64 = 1.0 / 3.0;

/// What the plan is computed from: speeds measured on this machine for the run's model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Seconds per pretraining step (median), and the tokens in it.
    pub train_step_s: f64,
    pub tokens_per_step: usize,
    /// Seconds per SFT step, and per GRPO training token, at those stages' own batch and
    /// precision (the same as pretraining's where their settings are).
    pub sft_step_s: f64,
    pub grpo_s_per_token: f64,
    /// Generated tokens per second through the KV cache at SFT's format-check batch and at
    /// GRPO's rollout batch (all sequences together).
    pub decode_tok_s_small: f64,
    pub decode_tok_s_rollouts: f64,
}

impl Probe {
    /// Seconds of training compute per token (forward and backward).
    fn train_s_per_token(&self) -> f64 {
        self.train_step_s / self.tokens_per_step.max(1) as f64
    }
}

/// The shape of a training stage that the plan needs: what one step and its checks cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Next-token training on `tokens_per_step`, validated on `eval_tokens` every `eval_every`
    /// steps and once at the end.
    Pretrain {
        eval_every: usize,
        eval_tokens: usize,
    },
    /// SFT: pretraining's step on packed conversations, then `check_prompts` replies of up to
    /// `reply_tokens` decoded at the small batch.
    Sft {
        check_prompts: usize,
        reply_tokens: usize,
    },
    /// GRPO: `rows` rollouts of up to `reply_tokens` per step, trained on `rows × seq_len`
    /// tokens `updates` times after the old policy's and the reference's forward passes, and
    /// `val_prompts` greedy replies before and after.
    Grpo {
        rows: usize,
        seq_len: usize,
        reply_tokens: usize,
        updates: usize,
        val_prompts: usize,
    },
}

/// One stage's share: its budget and, for training stages, the steps planned into it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub stage: String,
    pub budget_s: f64,
    /// None for a stage without steps (eval), or whose steps the user set.
    pub steps: Option<usize>,
    /// The plan's prediction of the stage's wall time.
    pub predicted_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpeedrunPlan {
    pub budget_s: f64,
    /// The CPU and the precision the probe ran at, so a plan read back on another machine is
    /// recognisably someone else's.
    pub cpu: String,
    pub precision: String,
    pub probe: Probe,
    pub stages: Vec<StagePlan>,
    /// The model size the law chose for pretraining's share (None: the config's size kept),
    /// and every size it weighed.
    #[serde(default)]
    pub size: Option<SizeChoice>,
    #[serde(default)]
    pub sizes: Vec<SizeChoice>,
    #[serde(default)]
    pub law: Option<LossLaw>,
}

impl SpeedrunPlan {
    pub fn path(run: &Path) -> PathBuf {
        run.join("plan.json")
    }

    pub fn read(run: &Path) -> Result<Option<SpeedrunPlan>> {
        let path = Self::path(run);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("is not a speedrun plan: {e}"),
                "delete it to plan the run again (its stages keep their checkpoints)",
            )
        })
    }

    pub fn write(&self, run: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a plan serialises");
        base::fs::write_atomic(&Self::path(run), text.as_bytes())
    }

    pub fn stage(&self, name: &str) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.stage == name)
    }

    /// The plan as the speedrun prints it at the start.
    pub fn table(&self) -> String {
        let mut o = format!(
            "budget {} on {} ({}): a step of {} tokens in {:.0} ms, decoding {:.0} / {:.0} tok/s\n",
            duration(self.budget_s),
            self.cpu,
            self.precision,
            self.probe.tokens_per_step,
            1e3 * self.probe.train_step_s,
            self.probe.decode_tok_s_small,
            self.probe.decode_tok_s_rollouts
        );
        if let (Some(law), Some(best)) = (&self.law, &self.size) {
            o.push_str(&sizes_table(law, &self.sizes, best));
        }
        o.push_str("stage       budget    steps   predicted\n");
        for s in &self.stages {
            o.push_str(&format!(
                "{:<10} {:>7} {:>8} {:>11}\n",
                s.stage,
                duration(s.budget_s),
                s.steps.map_or("-".into(), |n| n.to_string()),
                duration(s.predicted_s)
            ));
        }
        o
    }
}

/// The most steps of `shape` whose predicted wall time fits in `budget_s`, with that time.
/// At least one step: a stage too expensive for its share still runs, and the prediction
/// says by how much it is over.
pub fn steps_within(budget_s: f64, shape: Shape, p: &Probe) -> (usize, f64) {
    let (fixed, per_step) = stage_cost(shape, p);
    let steps = ((budget_s - fixed) / per_step).floor().max(1.0) as usize;
    (steps, fixed + steps as f64 * per_step)
}

/// A stage's predicted cost: seconds paid once, and seconds per step (checks that recur every
/// so many steps are spread over those steps).
fn stage_cost(shape: Shape, p: &Probe) -> (f64, f64) {
    let fwd_per_token = p.train_s_per_token() * FORWARD_SHARE;
    match shape {
        Shape::Pretrain {
            eval_every,
            eval_tokens,
        } => {
            let val = SUSTAINED * eval_tokens as f64 * fwd_per_token;
            (
                val,
                SUSTAINED * p.train_step_s + val / eval_every.max(1) as f64,
            )
        }
        Shape::Sft {
            check_prompts,
            reply_tokens,
        } => {
            let check = (check_prompts * reply_tokens) as f64 / p.decode_tok_s_small;
            (check, SUSTAINED * p.sft_step_s)
        }
        Shape::Grpo {
            rows,
            seq_len,
            reply_tokens,
            updates,
            val_prompts,
        } => {
            let decode = |n: usize| (n * reply_tokens) as f64 / p.decode_tok_s_rollouts;
            let tokens = (rows * seq_len) as f64;
            let train = tokens * p.grpo_s_per_token * updates as f64;
            let reference = 2.0 * tokens * p.grpo_s_per_token * FORWARD_SHARE;
            (
                2.0 * decode(val_prompts),
                GRPO_OVERHEAD * (decode(rows) + train + reference),
            )
        }
    }
}

/// Splits `budget_s` by `SHARES`; `shapes` gives the training stages their steps (None: the
/// user fixed that stage's steps, and the stage is predicted at its share).
pub fn plan(
    budget_s: f64,
    cpu: &str,
    precision: &str,
    probe: Probe,
    shapes: &[(&str, Option<Shape>)],
) -> SpeedrunPlan {
    let stages = SHARES
        .iter()
        .map(|&(stage, share)| {
            let budget = budget_s * share;
            let shape = shapes.iter().find(|(s, _)| *s == stage).and_then(|s| s.1);
            let (steps, predicted_s) = match shape {
                Some(shape) => {
                    let (n, t) = steps_within(budget, shape, &probe);
                    (Some(n), t)
                }
                None => (None, budget),
            };
            StagePlan {
                stage: stage.into(),
                budget_s: budget,
                steps,
                predicted_s,
            }
        })
        .collect();
    SpeedrunPlan {
        budget_s,
        cpu: cpu.into(),
        precision: precision.into(),
        probe,
        stages,
        size: None,
        sizes: Vec::new(),
        law: None,
    }
}

/// The planning family of model shapes: head dimension 64, `d_model / 64 + 2` layers and a
/// SwiGLU hidden width of 3·d_model (the speedrun's d256 × 6 is one of them), from d128 up to
/// `max_d`; vocabulary, context and everything else as in `base`.
pub fn family(base: &ModelConfig, max_d: usize) -> Vec<ModelConfig> {
    [
        128, 192, 256, 320, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
    ]
    .into_iter()
    .filter(|&d| d <= max_d)
    .map(|d| {
        let mut m = base.clone();
        m.d_model = d;
        m.n_layers = d / 64 + 2;
        m.n_heads = d / 64;
        m.n_kv_heads = d / 64;
        m.ffn_hidden = 3 * d;
        m
    })
    .collect()
}

/// A model size weighed for a pretraining budget: its shape, and the tokens and loss the budget
/// buys it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeChoice {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub ffn_hidden: usize,
    pub params: f64,
    pub tokens_per_s: f64,
    pub tokens: f64,
    pub predicted_loss: f64,
}

impl SizeChoice {
    /// Sets this size's shape in `m`.
    pub fn apply(&self, m: &mut ModelConfig) {
        m.d_model = self.d_model;
        m.n_layers = self.n_layers;
        m.n_heads = self.n_heads;
        m.n_kv_heads = self.n_heads;
        m.ffn_hidden = self.ffn_hidden;
    }
}

/// Each of `shapes` trained for `seconds` at the throughput `tok_s` gives it (measured here,
/// or a GPU's FLOP/s over the shape's FLOPs per token), with the loss `law` predicts; and the
/// index of the lowest. Parameters count as the law was fitted: every weight, embeddings too.
pub fn weigh_sizes(
    law: &LossLaw,
    shapes: &[ModelConfig],
    seq_len: usize,
    seconds: f64,
    mut tok_s: impl FnMut(&ModelConfig) -> Result<f64>,
) -> Result<(Vec<SizeChoice>, usize)> {
    let mut out = Vec::new();
    for m in shapes {
        let params = model::Arch::from_model(m, seq_len).params().total;
        let rate = tok_s(m)?;
        let tokens = rate * seconds;
        out.push(SizeChoice {
            d_model: m.d_model,
            n_layers: m.n_layers,
            n_heads: m.n_heads,
            ffn_hidden: m.ffn_hidden,
            params,
            tokens_per_s: rate,
            tokens,
            predicted_loss: law.loss(params, tokens),
        });
    }
    let best = out
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.predicted_loss.total_cmp(&b.1.predicted_loss))
        .map(|(i, _)| i)
        .ok_or_else(|| {
            Error::input(
                "plan",
                "has no model size to weigh",
                "allow a larger width (the family starts at d_model 128)",
            )
        })?;
    Ok((out, best))
}

/// The sizes weighed, the chosen one marked, and the law they were weighed by.
pub fn sizes_table(law: &LossLaw, sizes: &[SizeChoice], best: &SizeChoice) -> String {
    let mut o = format!(
        "law L(N, D) = {:.3} + {:.1}/N^{:.3} + {:.1}/D^{:.3} ({})\n",
        law.e, law.a, law.alpha, law.b, law.beta, law.source
    );
    o.push_str("size           params     tok/s    tokens  tokens/param  predicted loss\n");
    for s in sizes {
        o.push_str(&format!(
            "{:<12} {:>8} {:>9} {:>9} {:>13} {:>15.4}{}\n",
            format!("d{} x {}", s.d_model, s.n_layers),
            si(s.params),
            si(s.tokens_per_s),
            si(s.tokens),
            si(s.tokens / s.params),
            s.predicted_loss,
            if s == best { "  <- chosen" } else { "" }
        ));
    }
    o
}

/// Parses a wall-clock budget: `30m`, `1h30m`, `90s`, `2h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<f64> {
    let bad = || {
        Error::input(
            format!("--budget {text}"),
            "is not a duration",
            "write it as 30m, 1h30m, 90s or a number of seconds",
        )
    };
    let t = text.trim();
    if let Ok(s) = t.parse::<f64>() {
        return (s.is_finite() && s > 0.0).then_some(s).ok_or_else(bad);
    }
    let (mut total, mut number) = (0.0, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
        let n: f64 = number.parse().map_err(|_| bad())?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || total <= 0.0 {
        return Err(bad());
    }
    Ok(total)
}

/// Seconds as the tables print them: `42 s`, `12m05s`, `1h02m`.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe {
            train_step_s: 0.5,
            tokens_per_step: 2048,
            sft_step_s: 0.5,
            grpo_s_per_token: 0.5 / 2048.0,
            decode_tok_s_small: 1000.0,
            decode_tok_s_rollouts: 4000.0,
        }
    }

    #[test]
    fn durations_parse_in_every_unit_and_refuse_the_rest() {
        assert_eq!(parse_duration("30m").unwrap(), 1800.0);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400.0);
        assert_eq!(parse_duration("90s").unwrap(), 90.0);
        assert_eq!(parse_duration("120").unwrap(), 120.0);
        for bad in ["", "m", "30x", "-5", "0", "30m5"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn pretraining_steps_pay_for_their_validation() {
        let p = probe();
        let shape = Shape::Pretrain {
            eval_every: 500,
            eval_tokens: 6144,
        };
        // A validation pass is 6144 tokens at a third of 0.5 s / 2048 tokens = 0.5 s, and
        // every cost is at the sustained rate.
        let (step, val) = (SUSTAINED * 0.5, SUSTAINED * 0.5);
        let (steps, t) = steps_within(600.0, shape, &p);
        assert_eq!(steps, ((600.0 - val) / (step + val / 500.0)) as usize);
        assert!(t <= 600.0 && t > 599.0, "{t}");
        // One more step would not fit.
        assert!(val + (steps + 1) as f64 * (step + val / 500.0) > 600.0);
    }

    #[test]
    fn grpo_steps_count_rollouts_updates_and_the_evaluations_before_and_after() {
        let p = probe();
        let shape = Shape::Grpo {
            rows: 64,
            seq_len: 64,
            reply_tokens: 40,
            updates: 1,
            val_prompts: 500,
        };
        let (fixed, per_step) = stage_cost(shape, &p);
        assert!((fixed - 2.0 * 500.0 * 40.0 / 4000.0).abs() < 1e-9);
        let train = 64.0 * 64.0 * 0.5 / 2048.0;
        let expected = GRPO_OVERHEAD * (64.0 * 40.0 / 4000.0 + train + 2.0 * train / 3.0);
        assert!(
            (per_step - expected).abs() < 1e-9,
            "{per_step} vs {expected}"
        );
        // A budget below the fixed cost still plans one step, predicted over budget.
        let (steps, t) = steps_within(1.0, shape, &p);
        assert_eq!(steps, 1);
        assert!(t > 1.0);
    }

    #[test]
    fn the_plan_splits_the_budget_by_share_and_keeps_a_users_steps() {
        let shapes = [
            (
                "pretrain",
                Some(Shape::Pretrain {
                    eval_every: 500,
                    eval_tokens: 262_144,
                }),
            ),
            ("sft", None),
        ];
        let plan = plan(1800.0, "cpu", "bf16", probe(), &shapes);
        let names: Vec<&str> = plan.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["pretrain", "sft", "grpo", "eval"]);
        let total: f64 = plan.stages.iter().map(|s| s.budget_s).sum();
        let shared: f64 = SHARES.iter().map(|s| s.1).sum();
        assert!((total - shared * 1800.0).abs() < 1e-6 && shared < 0.95);
        let pretrain = Shape::Pretrain {
            eval_every: 500,
            eval_tokens: 262_144,
        };
        let want = steps_within(0.37 * 1800.0, pretrain, &probe()).0;
        assert_eq!(plan.stage("pretrain").unwrap().steps, Some(want));
        assert!(want > 900, "{want} steps of 0.5 s in 666 s");
        assert_eq!(plan.stage("sft").unwrap().steps, None);
        assert!(plan.table().contains("pretrain"));
    }

    #[test]
    fn a_plan_survives_its_file_and_a_damaged_file_is_named() {
        let dir = std::env::temp_dir().join(format!("frugal-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(SpeedrunPlan::read(&dir).unwrap(), None);
        let p = plan(600.0, "cpu", "f32", probe(), &[]);
        p.write(&dir).unwrap();
        assert_eq!(SpeedrunPlan::read(&dir).unwrap(), Some(p));
        std::fs::write(SpeedrunPlan::path(&dir), "{").unwrap();
        let e = SpeedrunPlan::read(&dir).unwrap_err().to_string();
        assert!(e.contains("plan.json") && e.contains("delete it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_size_with_the_lowest_predicted_loss_is_chosen() {
        let base = model::ModelConfig {
            vocab_size: 8192,
            ..Default::default()
        };
        let shapes = family(&base, 512);
        let widths: Vec<usize> = shapes.iter().map(|m| m.d_model).collect();
        assert_eq!(widths, [128, 192, 256, 320, 384, 512]);
        let d256 = &shapes[2];
        assert_eq!((d256.n_layers, d256.n_heads, d256.ffn_hidden), (6, 4, 768));
        let law = LossLaw::chinchilla();
        // Throughput falling as 1/FLOPs per token: a fixed FLOP/s, as on a GPU.
        let flops = 1e12;
        let rate = |m: &ModelConfig| Ok(flops / model::arch::flops_per_token(m, 256));
        let (sizes, best) = weigh_sizes(&law, &shapes, 256, 3600.0, rate).unwrap();
        let lowest = sizes
            .iter()
            .map(|s| s.predicted_loss)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(sizes[best].predicted_loss, lowest);
        for s in &sizes {
            assert!((s.predicted_loss - law.loss(s.params, s.tokens)).abs() < 1e-12);
        }
        // 3.6e15 FLOPs: Chinchilla's optimum is a few million parameters, not the largest.
        assert!(best > 0 && best < sizes.len() - 1, "{sizes:?}");
        let mut m = base.clone();
        sizes[best].apply(&mut m);
        assert_eq!(m.d_model, sizes[best].d_model);
        assert!(sizes_table(&law, &sizes, &sizes[best]).contains("<- chosen"));
    }

    #[test]
    fn durations_print_in_the_largest_sensible_unit() {
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(725.0), "12m05s");
        assert_eq!(duration(3720.0), "1h02m");
    }
}
