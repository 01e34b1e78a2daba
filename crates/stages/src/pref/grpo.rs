//! `frugal pref grpo`: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath; used
//! for DeepSeek-R1). Each step samples G replies to each of B prompts with the engine, scores
//! them (verifiable rules, or the trained reward model), normalises the rewards within each
//! group into advantages — no critic — and follows the clipped surrogate with a k3 KL penalty
//! to the frozen SFT model. Tokens the calculator tool wrote are the environment's, not the
//! policy's: they are fed but never trained on. Held-out greedy accuracy is measured before
//! and after. Checkpoints, metrics and the report go to `RUN/grpo/`.

use super::loss::{group_advantages, grpo_token};
use super::rewards::{self, Problem, Scored};
use super::rm::RewardModel;
use super::stage;
use base::config::Validate;
use base::{Error, Result};
use data::chat::ChatFormat;
use data::loader::{Cursor, Shuffled};
use engine::{self, Finish, Request, SamplingParams, Tools};
use model::{Llama, Workspace};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tensor::ops::cross_entropy::IGNORE;
use train::config::TrainConfig;
use train::trainer::Log;
use train::{write_report, At, Objective, Report, Step, Trainer};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoConfig {
    /// `batch_size` is prompts per step; `seq_len` the longest prompt + reply.
    pub train: TrainConfig,
    pub grpo: GrpoSection,
    /// Tune LoRA adapters on the SFT model instead of its weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<train::lora::LoraConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// "What is a op b?", checked exactly.
    Arithmetic,
    /// GSM8K word problems, the final `#### <number>` checked.
    Gsm8k,
    /// The reward model trained by `frugal pref rm` (RUN/rm), on preference prompts.
    RewardModel,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoSection {
    pub reward: RewardKind,
    /// G: replies sampled per prompt.
    pub group_size: usize,
    /// ε of the clipped ratio.
    pub clip: f64,
    /// β of the KL penalty to the reference.
    pub beta: f64,
    /// Policy updates per sampled batch (μ); with 1 the ratio is 1 and the clip never binds.
    pub updates_per_batch: usize,
    pub temperature: f32,
    pub max_reply_tokens: usize,
    /// Added for a reply that ends its turn with a `#### <number>` line (verifiable rewards).
    pub format_reward: f64,
    /// Added when a calculator call in the reply returned the answer (verifiable rewards).
    pub tool_reward: f64,
    /// Scales the graded reward of a wrong number: 1 − |given − answer| / |answer|, not below 0.
    pub closeness_reward: f64,
    /// Divide each group's advantages by its reward's standard deviation (GRPO as published
    /// and TRL's default). False is Dr. GRPO's choice: shaping terms stay small beside the answer.
    pub scale_rewards: bool,
    /// Prompts held out for the before/after measurement.
    pub val_prompts: usize,
    /// Arithmetic: operands run from 0 to this.
    pub max_operand: u32,
    /// Arithmetic: the operations, of `+-*` and `>` (the larger of two numbers).
    pub ops: String,
    /// GSM8K: the training split's JSONL; reward model: preference files whose prompts are used.
    pub sources: Vec<PathBuf>,
}

impl Default for GrpoSection {
    fn default() -> Self {
        GrpoSection {
            reward: RewardKind::Arithmetic,
            group_size: 8,
            clip: 0.2,
            beta: 0.04,
            updates_per_batch: 1,
            temperature: 1.0,
            max_reply_tokens: 48,
            format_reward: 0.1,
            tool_reward: Default::default(),
            closeness_reward: Default::default(),
            scale_rewards: true,
            val_prompts: 200,
            max_operand: 20,
            ops: "+-".into(),
            sources: Default::default(),
        }
    }
}

impl GrpoConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        base::config::load(path, overrides)
    }
}

impl Validate for GrpoConfig {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        self.train.validate()?;
        if let Some(l) = &self.lora {
            l.validate()?;
        }
        let cfg = self;
        {
            let (g, seq) = (&cfg.grpo, cfg.train.seq_len);
            let bad = |f: &'static str, m: String| Err((f, m));
            if g.group_size < 2 {
                return bad(
                    "grpo.group_size",
                    "must be at least 2: advantages compare replies within a group".into(),
                );
            }
            if !(g.clip > 0.0 && g.clip < 1.0) {
                return bad("grpo.clip", format!("{} is not in (0, 1)", g.clip));
            }
            if !(g.beta >= 0.0 && g.beta.is_finite()) {
                return bad("grpo.beta", format!("{} is not a number ≥ 0", g.beta));
            }
            if !(g.format_reward >= 0.0 && g.format_reward.is_finite()) {
                return bad(
                    "grpo.format_reward",
                    format!("{} is not a number ≥ 0", g.format_reward),
                );
            }
            for (f, v) in [
                ("grpo.tool_reward", g.tool_reward),
                ("grpo.closeness_reward", g.closeness_reward),
            ] {
                if !(v >= 0.0 && v.is_finite()) {
                    return bad(f, format!("{v} is not a number ≥ 0"));
                }
            }
            if g.updates_per_batch == 0 {
                return bad("grpo.updates_per_batch", "must be at least 1".into());
            }
            if !(g.temperature > 0.0 && g.temperature.is_finite()) {
                return bad(
                    "grpo.temperature",
                    "must be positive: GRPO needs varied samples".into(),
                );
            }
            if g.max_reply_tokens == 0 || g.max_reply_tokens >= seq {
                return bad("grpo.max_reply_tokens", format!("must be in 1..{seq}"));
            }
            if let Some(c) = g.ops.chars().find(|c| !"+-*>".contains(*c)) {
                return bad("grpo.ops", format!("'{c}' is not one of + - * >"));
            }
            if g.reward == RewardKind::Arithmetic && g.ops.is_empty() {
                return bad("grpo.ops", "is empty".into());
            }
            if g.reward != RewardKind::Arithmetic && g.sources.is_empty() {
                return bad(
                    "grpo.sources",
                    "lists no files (GSM8K train JSONL, or preference files for the reward model)"
                        .into(),
                );
            }
            Ok(())
        }
    }
}

/// Where the rewards come from.
enum Judge {
    Rules(rewards::Shaping),
    Model(Box<RewardModel>),
}

/// One sampled reply made ready for training: the row's inputs and targets (IGNORE outside the
/// policy's own tokens) and how many tokens it trains on.
struct Rollout {
    x: Vec<u32>,
    y: Vec<u32>,
    actions: usize,
    scored: Scored,
    /// The reply's tokens, tool output included.
    reply: Vec<u32>,
}

/// Samples replies to `problems` (each `copies` times) and scores them. Returns the rollouts in
/// order (problem-major) and the tokens the engine fed.
#[allow(clippy::too_many_arguments)]
fn rollouts(
    model: &Llama,
    fmt: &ChatFormat,
    judge: &Judge,
    problems: &[&Problem],
    copies: usize,
    sampling: SamplingParams,
    max_reply: usize,
    seq: usize,
    seed: u64,
) -> Result<(Vec<Rollout>, u64)> {
    let mut requests = Vec::with_capacity(problems.len() * copies);
    let mut prompts = Vec::with_capacity(problems.len());
    for p in problems {
        // A prompt too long for the row keeps `<|bos|>` and its most recent tokens.
        let limit = seq + 1 - max_reply;
        let ids = match fmt.render_prompt(&p.prompt, limit) {
            Ok(ids) => ids,
            Err(_) => {
                let mut ids = fmt.render_prompt(&p.prompt, usize::MAX)?;
                ids.drain(1..1 + ids.len() - limit);
                ids
            }
        };
        for c in 0..copies {
            requests.push(Request {
                prompt: ids.clone(),
                sampling,
                max_tokens: max_reply,
                stop: vec![fmt.reply_end()],
                seed: seed ^ ((requests.len() as u64 + 1) * 0x9E37_79B9) ^ c as u64,
            });
        }
        prompts.push(ids);
    }
    let tools = Tools::for_format(fmt);
    let mut forced: Vec<Vec<bool>> = vec![Vec::new(); requests.len()];
    let done = engine::generate(model, &requests, tools.as_ref(), |e| {
        forced[e.seq].push(e.forced);
        true
    })?;
    let mut fed = 0u64;
    for c in &done {
        fed += (c.prompt_tokens + 1) as u64;
    }
    let scores: Vec<Scored> = match judge {
        Judge::Rules(shaping) => done
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let answer = problems[i / copies].answer.as_deref().unwrap_or_default();
                let reply = rewards::Reply::parse(fmt, &c.tokens, c.finish == Finish::Stop);
                rewards::verify(&reply, answer, *shaping)
            })
            .collect(),
        Judge::Model(rm) => {
            let replies: Vec<(&[u32], &[u32])> = done
                .iter()
                .enumerate()
                .map(|(i, c)| (prompts[i / copies].as_slice(), c.tokens.as_slice()))
                .collect();
            rm.score_replies(&replies, fmt.reply_end())
                .into_iter()
                .map(|r| Scored {
                    reward: r,
                    ..Scored::default()
                })
                .collect()
        }
    };
    let mut out = Vec::with_capacity(done.len());
    for (i, (c, scored)) in done.into_iter().zip(scores).enumerate() {
        let prompt = &prompts[i / copies];
        // The stop token is the policy's last action.
        let mut full: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
        let mut is_forced: Vec<bool> = vec![false; prompt.len()];
        is_forced.extend(&forced[i]);
        if c.finish == Finish::Stop {
            full.push(fmt.reply_end());
            is_forced.push(false);
        }
        full.truncate(seq + 1);
        let (mut x, mut y) = (vec![0u32; seq], vec![IGNORE; seq]);
        let n = full.len() - 1;
        x[..n].copy_from_slice(&full[..n]);
        let mut actions = 0;
        for j in prompt.len() - 1..n {
            if !is_forced[j + 1] {
                y[j] = full[j + 1];
                actions += 1;
            }
        }
        out.push(Rollout {
            x,
            y,
            actions,
            scored,
            reply: c.tokens,
        });
    }
    Ok((out, fed))
}

/// GRPO's loss with DeepSeekMath's averaging: each reply's tokens averaged, replies averaged.
#[derive(Clone, Copy, Debug)]
pub struct Surrogate {
    pub clip: f64,
    pub beta: f64,
}

impl Surrogate {
    /// Fills `w` (rows of `seq`) with the per-token weights of the cross-entropy gradient that
    /// make `forward_backward_weighted` accumulate this loss's gradient: w = −d loss / d ln p.
    /// `lp`, `old` and `reference` are each token's log-probability under the policy, the
    /// policy that sampled, and the reference; `adv` each row's advantage; `actions` each row's
    /// trained tokens. Returns (loss, Σ k3 KL, tokens clipped, tokens).
    #[allow(clippy::too_many_arguments)]
    pub fn token_weights(
        &self,
        lp: &[f64],
        old: &[f64],
        reference: &[f64],
        targets: &[u32],
        adv: &[f64],
        actions: &[usize],
        seq: usize,
        w: &mut [f32],
    ) -> (f64, f64, usize, usize) {
        let rows = adv.len();
        let (mut loss, mut kl, mut clipped, mut n) = (0f64, 0f64, 0usize, 0usize);
        for (k, (&a, &len)) in adv.iter().zip(actions).enumerate() {
            let per = 1.0 / (len.max(1) * rows) as f64;
            for j in k * seq..(k + 1) * seq {
                if targets[j] == IGNORE {
                    w[j] = 0.0;
                    continue;
                }
                let (l, dl) = grpo_token(lp[j], old[j], reference[j], a, self.clip, self.beta);
                loss += l * per;
                kl += super::loss::kl_k3(lp[j], reference[j]).0;
                clipped += usize::from(((lp[j] - old[j]).exp() - 1.0).abs() > self.clip);
                n += 1;
                // The cross-entropy is −ln p: its weight is −d loss / d ln p.
                w[j] = (-dl * per) as f32;
            }
        }
        (loss, kl, clipped, n)
    }
}

/// Greedy accuracy on held-out problems (verifiable rewards), or the mean reward-model score.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GrpoEval {
    /// Replies with the right answer (0 for the reward model).
    pub accuracy: f64,
    /// Half-width of the accuracy's 95% confidence interval (normal approximation).
    pub ci95: f64,
    pub correct: usize,
    pub well_formed: f64,
    /// Replies whose calculator call returned the answer.
    pub tool_right: f64,
    pub mean_reward: f64,
    pub n: usize,
    /// Each held-out prompt's measure, in order: 1 or 0 for a right or wrong answer, or the
    /// reward model's score. Before and after are paired through it.
    #[serde(skip)]
    pub per_prompt: Vec<f64>,
}

/// The change from `before` to `after` on the same prompts, and the half-width of its 95%
/// confidence interval from the paired differences: pairing removes the spread between
/// prompts, so the interval is far tighter than the two accuracies' own intervals suggest.
pub fn paired_change(before: &[f64], after: &[f64]) -> (f64, f64) {
    let n = before.len().min(after.len());
    if n == 0 {
        return (0.0, 0.0);
    }
    let d: Vec<f64> = before.iter().zip(after).map(|(b, a)| a - b).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, 1.96 * (var / n as f64).sqrt())
}

fn evaluate(
    model: &Llama,
    fmt: &ChatFormat,
    judge: &Judge,
    val: &[Problem],
    max_reply: usize,
    seq: usize,
    log: &mut impl FnMut(&str),
) -> Result<(GrpoEval, u64)> {
    let mut e = GrpoEval {
        n: val.len(),
        ..Default::default()
    };
    let mut fed = 0;
    let mut shown = 0;
    for chunk in val.chunks(64) {
        let refs: Vec<&Problem> = chunk.iter().collect();
        let (rs, f) = rollouts(
            model,
            fmt,
            judge,
            &refs,
            1,
            SamplingParams::greedy(),
            max_reply,
            seq,
            0,
        )?;
        fed += f;
        for (p, r) in chunk.iter().zip(rs) {
            if shown < 3 {
                shown += 1;
                log(&format!(
                    "  {:?} -> {:?}{}",
                    p.prompt
                        .messages
                        .last()
                        .map(|m| m.display())
                        .unwrap_or_default(),
                    fmt.parse_reply(&r.reply).display(),
                    if r.scored.correct { " (right)" } else { "" }
                ));
            }
            e.correct += usize::from(r.scored.correct);
            e.well_formed += f64::from(u8::from(r.scored.well_formed));
            e.tool_right += f64::from(u8::from(r.scored.tool_right));
            e.mean_reward += r.scored.reward;
            e.per_prompt.push(match judge {
                Judge::Model(_) => r.scored.reward,
                Judge::Rules(_) => f64::from(u8::from(r.scored.correct)),
            });
        }
    }
    let n = val.len().max(1) as f64;
    e.accuracy = e.correct as f64 / n;
    e.ci95 = 1.96 * (e.accuracy * (1.0 - e.accuracy) / n).sqrt();
    e.well_formed /= n;
    e.tool_right /= n;
    e.mean_reward /= n;
    Ok((e, fed))
}

#[derive(Clone, Debug, Serialize)]
pub struct GrpoSummary {
    pub steps: usize,
    pub wall_s: f64,
    pub reward: RewardKind,
    pub train_prompts: usize,
    pub group_size: usize,
    pub before: GrpoEval,
    pub after: GrpoEval,
    /// after − before on the held-out prompts (accuracy, or mean reward-model score), and the
    /// half-width of its paired 95% interval.
    pub change: f64,
    pub change_ci95: f64,
    pub skipped_rows: usize,
}

/// The problems of the configured task: (train, held out, rows skipped). The split is a
/// fixed function of the config, so cold-start data drawn from the training part never
/// touches the held-out problems.
pub fn problems(cfg: &GrpoConfig) -> Result<(Vec<Problem>, Vec<Problem>, usize)> {
    let g = &cfg.grpo;
    let seed = cfg.train.seed;
    let (mut all, skipped) = match g.reward {
        RewardKind::Arithmetic => (rewards::arithmetic(g.max_operand, &g.ops, seed), 0),
        RewardKind::Gsm8k => {
            let (mut all, mut skipped) = (Vec::new(), 0);
            for s in &g.sources {
                let (p, k, _) = rewards::gsm8k(s)?;
                all.extend(p);
                skipped += k;
            }
            (all, skipped)
        }
        RewardKind::RewardModel => {
            let (mut all, mut skipped) = (Vec::new(), 0);
            for s in &g.sources {
                let r = data::pairs::read_pairs(s)?;
                skipped += r.skipped;
                all.extend(r.pairs.into_iter().map(|p| Problem {
                    prompt: p.prompt,
                    answer: None,
                    worked: None,
                }));
            }
            (all, skipped)
        }
    };
    data::pairs::shuffle(&mut all, seed ^ 0x5EED);
    let n_val = g.val_prompts.min(all.len() / 5);
    let val = all.split_off(all.len() - n_val);
    if all.is_empty() {
        return Err(Error::input(
            "grpo",
            "the task has no prompts to train on",
            "raise grpo.max_operand or add sources",
        ));
    }
    Ok((all, val, skipped))
}

/// Cold-start SFT data (as DeepSeek-R1 warms up before RL): the worked answers of the first
/// `count` training problems as GSM8K-shaped JSONL rows (`{"question", "answer"}`), which
/// `frugal sft` reads with calculator calls. Returns the rows and the held-out count.
pub fn cold_start(cfg: &GrpoConfig, count: usize) -> Result<(Vec<serde_json::Value>, usize)> {
    let (train, val, _) = problems(cfg)?;
    let rows = train
        .iter()
        .filter_map(|p| {
            let q = p.prompt.messages.last()?.display();
            Some(serde_json::json!({"question": q, "answer": p.worked.as_ref()?}))
        })
        .take(count)
        .collect();
    Ok((rows, val.len()))
}

/// Runs (or, with `resume`, continues) GRPO of the SFT model in `run`.
pub fn train(
    cfg: &GrpoConfig,
    run: &Path,
    resume: bool,
    mut log: impl FnMut(&str),
) -> Result<GrpoSummary> {
    let (t, g) = (&cfg.train, &cfg.grpo);
    let judge = match g.reward {
        RewardKind::RewardModel => Judge::Model(Box::new(RewardModel::load(run)?)),
        _ => Judge::Rules(rewards::Shaping {
            format: g.format_reward,
            tool: g.tool_reward,
            closeness: g.closeness_reward,
        }),
    };
    let resolved = toml::to_string(cfg).expect("a GrpoConfig serialises");
    let (sft, dir) = stage::open(run, "grpo", "GRPO", &resolved, t.seq_len, resume)?;
    let fmt = ChatFormat::for_run(&sft.tok, &sft.run)?;
    let (train_set, val, skipped_rows) = problems(cfg)?;
    log(&format!(
        "{:?}: {} training prompts, {} held out, G = {}",
        g.reward,
        train_set.len(),
        val.len(),
        g.group_size
    ));
    // Under LoRA the policy is the SFT model itself, adapters beside its frozen weights, and
    // the reference is that frozen base: one copy of the weights. Full fine-tuning keeps a
    // frozen copy for the reference.
    let (policy, reference) = match cfg.lora {
        Some(_) => (sft.model, None),
        None => {
            let copy = Llama::new(sft.cfg.model.clone(), sft.model.params.clone());
            (copy, Some(&sft.model))
        }
    };
    let lora = cfg.lora.as_ref().map(|l| (l, sft.checkpoint.as_path()));
    let mut tr = Trainer::open(
        stage::setup(t, run, &dir, "grpo ", resume, lora),
        policy,
        log,
    )?;
    let mut obj = Grpo::new(
        cfg, &sft.cfg, reference, &fmt, &judge, &train_set, &val, &mut tr,
    )?;
    let out = tr.run(&mut obj)?;
    let (before, after) = (obj.before, obj.after);
    let (change, change_ci95) = paired_change(&before.per_prompt, &after.per_prompt);
    let summary = GrpoSummary {
        steps: out.steps,
        wall_s: out.wall_s,
        reward: g.reward,
        train_prompts: train_set.len(),
        group_size: g.group_size,
        change,
        change_ci95,
        before,
        after,
        skipped_rows,
    };
    let detail = format!(
        "GRPO ({:?}), {} steps, held-out accuracy {:.3} -> {:.3}",
        g.reward, summary.steps, summary.before.accuracy, summary.after.accuracy
    );
    tr.finish(detail)?;
    write_report(&dir, &summary)?;
    Ok(summary)
}

/// GRPO's clipped surrogate with a KL penalty, on groups of replies the policy samples each
/// step; `updates_per_batch` updates per sampled batch.
struct Grpo<'a> {
    g: &'a GrpoSection,
    fmt: &'a ChatFormat<'a>,
    judge: &'a Judge,
    train: &'a [Problem],
    val: &'a [Problem],
    /// The frozen reference; None under LoRA, whose reference is the policy's frozen base.
    reference: Option<&'a Llama>,
    prompts: Shuffled,
    seed: u64,
    batch: usize,
    seq: usize,
    sampling: SamplingParams,
    /// Model FLOPs of a forward pass per token, and of the policy's backward (less with LoRA,
    /// whose frozen weights get no gradient).
    fwd_flops: f64,
    bwd_flops: f64,
    ws: Workspace,
    x: Vec<u32>,
    y: Vec<u32>,
    w: Vec<f32>,
    /// The step's rollouts, advantages, and the old policy's and reference's log-probabilities.
    rs: Vec<Rollout>,
    adv: Vec<f64>,
    old_lp: Vec<f64>,
    ref_lp: Vec<f64>,
    sample_s: f64,
    before: GrpoEval,
    after: GrpoEval,
}

impl<'a> Grpo<'a> {
    /// Measures the SFT model on the held-out prompts (billed) before any update.
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: &'a GrpoConfig,
        sft_cfg: &train::Config,
        reference: Option<&'a Llama>,
        fmt: &'a ChatFormat<'a>,
        judge: &'a Judge,
        train: &'a [Problem],
        val: &'a [Problem],
        tr: &mut Trainer,
    ) -> Result<Self> {
        let (t, g) = (&cfg.train, &cfg.grpo);
        let (seq, rows) = (t.seq_len, t.batch_size * g.group_size);
        let fwd_flops = model::arch::flops_per_token(&sft_cfg.model, sft_cfg.train.seq_len) / 3.0;
        let (before, fed) = {
            let (policy, log) = tr.model_and_log();
            let frozen = policy.frozen_base();
            let model = reference.unwrap_or(&frozen);
            evaluate(model, fmt, judge, val, g.max_reply_tokens, seq, &mut |l| {
                log(l)
            })?
        };
        tr.bill(fed, fed as f64 * fwd_flops)?;
        tr.log(&format!(
            "SFT model on {} held-out prompts: accuracy {:.3} ± {:.3} ({} right), well-formed {:.2}, mean reward {:.3}",
            before.n, before.accuracy, before.ci95, before.correct, before.well_formed, before.mean_reward
        ));
        Ok(Grpo {
            g,
            fmt,
            judge,
            train,
            val,
            reference,
            prompts: Shuffled::new(train.len(), t.seed, tr.state.cursor),
            seed: t.seed,
            batch: t.batch_size,
            seq,
            sampling: SamplingParams {
                temperature: g.temperature,
                ..SamplingParams::default()
            },
            fwd_flops,
            bwd_flops: tr.model.train_flops_per_token(sft_cfg.train.seq_len) - fwd_flops,
            ws: tr.model.workspace(rows, seq),
            x: vec![0u32; rows * seq],
            y: vec![0u32; rows * seq],
            w: vec![0f32; rows * seq],
            rs: Vec::new(),
            adv: Vec::new(),
            old_lp: Vec::new(),
            ref_lp: Vec::new(),
            sample_s: 0.0,
            after: before.clone(),
            before,
        })
    }

    /// Samples the step's groups and scores them. Returns the tokens the engine fed.
    fn sample_groups(&mut self, model: &Llama, step: usize) -> Result<u64> {
        let g = self.g;
        let batch: Vec<&Problem> = (0..self.batch)
            .map(|_| &self.train[self.prompts.next_index()])
            .collect();
        let t0 = Instant::now();
        // The samples: a fixed function of the seed and the step, so a resumed run sees what
        // an uninterrupted one would.
        let seed = stage::step_seed(self.seed, step);
        let max_reply = g.max_reply_tokens;
        let (rs, fed) = rollouts(
            model,
            self.fmt,
            self.judge,
            &batch,
            g.group_size,
            self.sampling,
            max_reply,
            self.seq,
            seed,
        )?;
        self.sample_s = t0.elapsed().as_secs_f64();
        self.adv = rs
            .chunks(g.group_size)
            .flat_map(|grp| {
                let r: Vec<f64> = grp.iter().map(|r| r.scored.reward).collect();
                group_advantages(&r, g.scale_rewards, 1e-4)
            })
            .collect();
        let seq = self.seq;
        for (k, r) in rs.iter().enumerate() {
            self.x[k * seq..(k + 1) * seq].copy_from_slice(&r.x);
            self.y[k * seq..(k + 1) * seq].copy_from_slice(&r.y);
        }
        self.rs = rs;
        // Every log-probability is the sampler's, softmax(logits / T), as TRL computes them:
        // the ratio and the policy gradient then refer to the distribution that drew the
        // replies, and the KL compares the policy and the reference at the same temperature.
        let temp = g.temperature;
        let (x, y, ws) = (&self.x, &self.y, &mut self.ws);
        self.ref_lp = match self.reference {
            Some(r) => r.token_logprobs_at(x, y, temp, ws),
            None => model.frozen_base().token_logprobs_at(x, y, temp, ws),
        };
        self.old_lp = model.token_logprobs_at(&self.x, &self.y, temp, &mut self.ws);
        Ok(fed)
    }

    /// The step line's and record's figures of the step's rollouts and the last update.
    fn figures(&self, kl: f64, clipped: usize, actions: usize) -> (String, serde_json::Value) {
        let rs = &self.rs;
        let call = self.fmt.tokens().map(|t| t.python_start);
        let n = rs.len() as f64;
        let mean = |f: &dyn Fn(&Rollout) -> f64| rs.iter().map(f).sum::<f64>() / n;
        let reward = mean(&|r| r.scored.reward);
        let acc = mean(&|r| f64::from(u8::from(r.scored.correct)));
        let formed = mean(&|r| f64::from(u8::from(r.scored.well_formed)));
        let len = mean(&|r| r.reply.len() as f64);
        let tool = mean(&|r| f64::from(u8::from(call.is_some_and(|c| r.reply.contains(&c)))));
        let tool_right = mean(&|r| f64::from(u8::from(r.scored.tool_right)));
        let flat = rs
            .chunks(self.g.group_size)
            .filter(|grp| grp.iter().all(|r| r.scored.reward == grp[0].scored.reward))
            .count();
        let kl = kl / actions.max(1) as f64;
        let line = format!(
            " | reward {reward:.3} | correct {acc:.3} | well-formed {formed:.2} | tool {tool:.2} ({tool_right:.3} right) | kl {kl:.4} | len {len:.1} | flat groups {flat}/{} | sample {:.1}s",
            self.batch, self.sample_s
        );
        let fields = serde_json::json!({
            "reward": reward, "correct": acc, "well_formed": formed, "kl": kl, "reply_len": len,
            "tool_calls": tool, "tool_right": tool_right, "flat_groups": flat,
            "clip_frac": clipped as f64 / actions.max(1) as f64,
        });
        (line, fields)
    }
}

impl Objective for Grpo<'_> {
    fn gradient(&mut self, model: &Llama, grads: &mut [f32], at: At) -> Result<Step> {
        let trained = (self.x.len()) as u64;
        // Round 0 samples, and scores with the reference and the sampling policy; it is the
        // update on the sampling policy itself, whose log-probabilities are old_lp. Later
        // rounds score the updated policy.
        let later;
        let (fed, forwards, lp) = match at.round {
            0 => {
                let fed = self.sample_groups(model, at.step)?;
                (fed, 2.0, &self.old_lp)
            }
            _ => {
                let (x, y) = (&self.x, &self.y);
                later = model.token_logprobs_at(x, y, self.g.temperature, &mut self.ws);
                (0, 1.0, &later)
            }
        };
        let lens: Vec<usize> = self.rs.iter().map(|r| r.actions).collect();
        let obj = Surrogate {
            clip: self.g.clip,
            beta: self.g.beta,
        };
        let (y, seq) = (&self.y, self.seq);
        let (loss, kl, clipped, actions) = obj.token_weights(
            lp,
            &self.old_lp,
            &self.ref_lp,
            y,
            &self.adv,
            &lens,
            seq,
            &mut self.w,
        );
        // `ws` holds the policy's forward of these rows, from the log-probabilities above.
        let (x, w, temp) = (&self.x, &self.w, self.g.temperature);
        model.backward_weighted_at(x, y, Some(w), temp, grads, 1.0, &mut self.ws);
        let (line, fields) = self.figures(kl, clipped, actions);
        Ok(Step {
            loss,
            tokens: if at.round == 0 { trained } else { 0 },
            flops: fed as f64 * self.fwd_flops
                + trained as f64 * (forwards * self.fwd_flops + self.bwd_flops),
            sampled: fed,
            line,
            fields,
            ..Step::default()
        })
    }

    fn updates_per_step(&self) -> usize {
        self.g.updates_per_batch
    }

    /// The surrogate has no scale to compare against: near 0, of either sign.
    fn watch_spikes(&self) -> bool {
        false
    }

    fn cursor(&self) -> Cursor {
        self.prompts.cursor()
    }

    fn evaluate(&mut self, model: &Llama, log: &mut Log) -> Result<Option<Report>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let mut log = |line: &str| log(line);
        let max_reply = self.g.max_reply_tokens;
        let (e, fed) = evaluate(
            model, self.fmt, self.judge, self.val, max_reply, self.seq, &mut log,
        )?;
        let (change, ci) = paired_change(&self.before.per_prompt, &e.per_prompt);
        let report = Report {
            line: format!(
                "held-out accuracy {:.3} ± {:.3} ({} of {}) | well-formed {:.2} | mean reward {:.3} | change {change:+.3} ± {ci:.3} (paired 95%)",
                e.accuracy, e.ci95, e.correct, e.n, e.well_formed, e.mean_reward
            ),
            fields: serde_json::json!({
                "val_accuracy": e.accuracy, "val_well_formed": e.well_formed,
                "val_reward": e.mean_reward, "val_change": change, "val_change_ci95": ci,
            }),
            tokens: fed,
            flops: fed as f64 * self.fwd_flops,
        };
        self.after = e;
        Ok(Some(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpe::Tokenizer;
    use train::config::Config;

    #[test]
    fn paired_change_is_the_mean_difference_with_its_interval() {
        // Four prompts: two turned right, one turned wrong, one stayed right. Differences
        // 1, 1, −1, 0: mean 0.25, sample variance 2.75 / 3.
        let (c, ci) = paired_change(&[0.0, 0.0, 1.0, 1.0], &[1.0, 1.0, 0.0, 1.0]);
        assert!((c - 0.25).abs() < 1e-12);
        assert!((ci - 1.96 * (2.75f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
        // Nothing changed: no change, and no doubt about it.
        assert_eq!(
            paired_change(&[1.0, 0.0, 1.0], &[1.0, 0.0, 1.0]),
            (0.0, 0.0)
        );
        assert_eq!(paired_change(&[], &[]), (0.0, 0.0));
    }

    /// The rows GRPO trains on hold exactly the tokens the policy chose, at the positions it
    /// chose them: with greedy sampling every trained target is the full forward pass's argmax
    /// there, forced tool output is never a target, and a finished reply ends on its stop token.
    #[test]
    fn rollout_targets_are_the_sampled_tokens() {
        let tok = Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap();
        let vocab = tok.vocab_size();
        let seq = 64;
        let overrides = [
            format!("model.vocab_size={vocab}"),
            format!("model.context_len={seq}"),
        ];
        let cfg = Config::preset("tiny", &overrides).unwrap();
        let fmt = ChatFormat::new(&tok).unwrap();
        let problems = rewards::arithmetic(3, "+", 1);
        let refs: Vec<&Problem> = problems.iter().take(4).collect();
        let rules = Judge::Rules(rewards::Shaping {
            format: 0.0,
            tool: 0.0,
            closeness: 0.0,
        });
        let mut checked = 0;
        for seed in 0..6 {
            let model = Llama::init(cfg.model.clone(), seed);
            let greedy = SamplingParams::greedy();
            let (rs, _) = rollouts(&model, &fmt, &rules, &refs, 1, greedy, 24, seq, 0).unwrap();
            let mut ws = model.workspace(1, seq);
            for (r, p) in rs.iter().zip(&refs) {
                let prompt = fmt.render_prompt(&p.prompt, seq).unwrap();
                assert_eq!(r.x[..prompt.len()], prompt[..]);
                assert!(r.y[..prompt.len() - 1].iter().all(|&t| t == IGNORE));
                let logits = model.logits(&r.x, &mut ws);
                let mut chosen = Vec::new();
                for (j, &target) in r.y.iter().enumerate() {
                    if target == IGNORE {
                        continue;
                    }
                    let row = &logits[j * vocab..(j + 1) * vocab];
                    let best = (0..vocab)
                        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                        .unwrap();
                    assert_eq!(target as usize, best, "position {j}");
                    chosen.push(target);
                }
                assert_eq!(chosen.len(), r.actions);
                // A reply that stopped before its budget was trained on its stop token last;
                // the rest are its own tokens in order, forced tool output left out.
                if r.reply.len() < 24 {
                    assert_eq!(chosen.pop(), Some(fmt.reply_end()));
                }
                let mut rest = r.reply.iter();
                assert!(chosen.iter().all(|c| rest.any(|t| t == c)));
                checked += chosen.len();
            }
        }
        assert!(checked > 50, "only {checked} tokens checked");
    }
}
