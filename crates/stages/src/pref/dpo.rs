//! `frugal pref dpo`: Direct Preference Optimization (Rafailov et al. 2023) of a run's SFT
//! model against itself frozen as the reference. Each pair is two rows, the prompt rendered in
//! the chat format and each reply after it; only reply tokens are scored. A step computes the
//! policy's log-probabilities, the DPO loss and its derivative per pair, and backpropagates
//! that derivative as per-token weights of the cross-entropy gradient. Checkpoints, metrics and
//! the report go to `RUN/dpo/`, where `frugal eval` finds the dpo stage.

use super::loss::dpo;
use super::stage::{self, PairEval};
use base::config::Validate;
use base::Result;
use data::chat::ChatFormat;
use data::loader::{Cursor, Shuffled};
use data::pairs::Pair;
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
pub struct DpoConfig {
    /// `batch_size` is pairs per step; `seq_len` the longest prompt + reply.
    pub train: TrainConfig,
    pub dpo: DpoSection,
    /// Tune LoRA adapters on the SFT model instead of its weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<train::lora::LoraConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoSection {
    /// Preference files: JSONL ({prompt, chosen, rejected} or HH-RLHF) or hhh_alignment JSON.
    pub sources: Vec<PathBuf>,
    /// How far the policy may move from the reference: the β of the implicit reward.
    pub beta: f64,
    /// Pairs held out to measure the implicit reward's accuracy.
    pub val_pairs: usize,
    /// Replies are cut to this many tokens (the prompt is cut from the left to fit the rest).
    pub max_reply_tokens: usize,
}

impl Default for DpoSection {
    fn default() -> Self {
        DpoSection {
            sources: Vec::new(),
            beta: 0.1,
            val_pairs: 200,
            max_reply_tokens: 96,
        }
    }
}

impl DpoConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        base::config::load(path, overrides)
    }
}

impl Validate for DpoConfig {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        self.train.validate()?;
        if let Some(l) = &self.lora {
            l.validate()?;
        }
        let cfg = self;
        match &cfg.dpo {
            d if d.sources.is_empty() => Err(("dpo.sources", "lists no files".into())),
            d if !(d.beta > 0.0 && d.beta.is_finite()) => {
                Err(("dpo.beta", format!("{} is not a positive number", d.beta)))
            }
            d if d.max_reply_tokens == 0 || d.max_reply_tokens >= cfg.train.seq_len => Err((
                "dpo.max_reply_tokens",
                format!("must be in 1..{}", cfg.train.seq_len),
            )),
            _ => Ok(()),
        }
    }
}

/// One pair as two rows of (inputs, targets): chosen then rejected. Rows are `seq` long,
/// padded with IGNORE.
struct Rows {
    x: Vec<u32>,
    y: Vec<u32>,
}

/// A pair as two whole token sequences, each at most `seq + 1` long: the prompt (cut after
/// its first token to fit), the reply (cut to `max_reply` tokens) and its closing tokens
/// (`<|assistant_end|>` in frugal's format). Returns them, the prompt's length and whether it was cut.
pub(super) fn pair_tokens(
    f: &ChatFormat,
    p: &Pair,
    seq: usize,
    max_reply: usize,
) -> Result<([Vec<u32>; 2], usize, bool)> {
    let (mut prompt, chosen, chosen_end) = f.prompt_and_reply(&p.prompt, &p.chosen)?;
    let (_, rejected, rejected_end) = f.prompt_and_reply(&p.prompt, &p.rejected)?;
    // The reply is cut to fit max_reply with its closing tokens kept.
    let reply = |mut ids: Vec<u32>, end: Vec<u32>| {
        ids.truncate(max_reply.saturating_sub(end.len()));
        ids.extend(end);
        ids
    };
    let (c, r) = (reply(chosen, chosen_end), reply(rejected, rejected_end));
    let room = seq + 1 - c.len().max(r.len());
    let cut = prompt.len() > room;
    if cut {
        let drop = prompt.len() - room;
        prompt.drain(1..1 + drop);
    }
    let full = |reply: &[u32]| prompt.iter().chain(reply).copied().collect::<Vec<u32>>();
    Ok(([full(&c), full(&r)], prompt.len(), cut))
}

/// One pair as rows of (inputs, targets), targets IGNORE outside the reply.
fn encode_pair(f: &ChatFormat, p: &Pair, seq: usize, max_reply: usize) -> Result<(Rows, bool)> {
    let (seqs, prompt_len, cut) = pair_tokens(f, p, seq, max_reply)?;
    let mut rows = Rows {
        x: vec![0; 2 * seq],
        y: vec![IGNORE; 2 * seq],
    };
    for (k, full) in seqs.iter().enumerate() {
        let n = full.len() - 1;
        rows.x[k * seq..k * seq + n].copy_from_slice(&full[..n]);
        for j in prompt_len - 1..n {
            rows.y[k * seq + j] = full[j + 1];
        }
    }
    Ok((rows, cut))
}

/// The (chosen, rejected) summed reply log-probabilities of each pair, in batches of the
/// workspace's size (the last one padded with rows that score nothing): one workspace for all.
fn pair_logps(model: &Llama, pairs: &[Rows], ws: &mut Workspace) -> Vec<(f64, f64)> {
    let (rows, seq) = (ws.batch, ws.seq_len);
    let mut out = Vec::with_capacity(pairs.len());
    let (mut x, mut y) = (vec![0u32; rows * seq], vec![IGNORE; rows * seq]);
    for chunk in pairs.chunks(rows / 2) {
        x.fill(0);
        y.fill(IGNORE);
        for (k, p) in chunk.iter().enumerate() {
            x[2 * k * seq..2 * (k + 1) * seq].copy_from_slice(&p.x);
            y[2 * k * seq..2 * (k + 1) * seq].copy_from_slice(&p.y);
        }
        let lp: Vec<f64> = model
            .token_logprobs(&x, &y, ws)
            .chunks(seq)
            .map(|r| r.iter().sum())
            .collect();
        out.extend(lp.chunks(2).take(chunk.len()).map(|c| (c[0], c[1])));
    }
    out
}

fn evaluate(
    model: &Llama,
    val: &[Rows],
    refs: &[(f64, f64)],
    beta: f64,
    ws: &mut Workspace,
) -> PairEval {
    let logps = pair_logps(model, val, ws);
    PairEval::of(logps.iter().zip(refs).map(|(&(pc, pr), &(rc, rr))| {
        let d = dpo(pc, pr, rc, rr, beta);
        (d.chosen_reward - d.rejected_reward, d.loss)
    }))
}

#[derive(Clone, Debug, Serialize)]
pub struct DpoSummary {
    pub steps: usize,
    pub wall_s: f64,
    pub train_pairs: usize,
    pub beta: f64,
    /// Held-out implicit-reward accuracy at the start (the policy is the reference: every
    /// margin is 0, so none counts as right) and at the end.
    pub before: PairEval,
    pub after: PairEval,
    pub prompts_cut: usize,
    pub skipped_rows: usize,
}

/// Runs (or, with `resume`, continues) DPO of the SFT model in `run`.
pub fn train(
    cfg: &DpoConfig,
    run: &Path,
    resume: bool,
    mut log: impl FnMut(&str),
) -> Result<DpoSummary> {
    let t = &cfg.train;
    let seq = t.seq_len;
    let resolved = toml::to_string(cfg).expect("a DpoConfig serialises");
    let (sft, dir) = stage::open(run, "dpo", "DPO", &resolved, seq, resume)?;
    let f = ChatFormat::for_run(&sft.tok, &sft.run)?;

    let d = &cfg.dpo;
    let split = stage::split_pairs(
        &d.sources,
        "dpo.sources",
        (t.seed, d.val_pairs, seq),
        &mut log,
        |p| encode_pair(&f, p, seq, d.max_reply_tokens),
    )?;
    let (train_rows, val_rows) = (&split.train[..], &split.val[..]);
    // The reference's log-probabilities are all DPO needs of it: scored before training
    // starts, the SFT model then becomes the policy itself, with no second copy kept (under
    // LoRA, adapters beside its frozen weights).
    let refs = References::score(&sft.model, train_rows, val_rows, cfg);
    let lora = cfg.lora.as_ref().map(|l| (l, sft.checkpoint.as_path()));
    let mut tr = Trainer::open(
        stage::setup(t, run, &dir, "dpo ", resume, lora),
        sft.model,
        log,
    )?;
    let mut obj = Dpo::new(cfg, &sft.cfg, refs, train_rows, val_rows, &mut tr)?;
    let out = tr.run(&mut obj)?;
    let summary = DpoSummary {
        steps: out.steps,
        wall_s: out.wall_s,
        train_pairs: train_rows.len(),
        beta: cfg.dpo.beta,
        before: obj.before,
        after: obj.after,
        prompts_cut: split.prompts_cut,
        skipped_rows: split.skipped_rows,
    };
    let detail = format!(
        "DPO, {} steps, held-out accuracy {:.3}",
        summary.steps, summary.after.accuracy
    );
    tr.finish(detail)?;
    write_report(&dir, &summary)?;
    Ok(summary)
}

/// The DPO loss of a batch of pairs against the frozen reference's log-probabilities.
struct Dpo<'a> {
    beta: f64,
    train: &'a [Rows],
    val: &'a [Rows],
    ref_train: Vec<(f64, f64)>,
    ref_val: Vec<(f64, f64)>,
    pairs: Shuffled,
    batch: usize,
    seq: usize,
    /// Model FLOPs per token of a step: a forward for the log-probabilities and a forward +
    /// backward for the gradient (8 = 2 + 6 per parameter and token).
    flops_per_token: f64,
    ws: Workspace,
    x: Vec<u32>,
    y: Vec<u32>,
    w: Vec<f32>,
    before: PairEval,
    after: PairEval,
}

/// What DPO needs of its frozen reference: every pair's log-probabilities, and the starting
/// point measured with them.
struct References {
    train: Vec<(f64, f64)>,
    val: Vec<(f64, f64)>,
    before: PairEval,
    secs: f64,
    ws: Workspace,
}

impl References {
    /// Scores every pair with the reference, and the held-out pairs with it as the policy.
    fn score(reference: &Llama, train: &[Rows], val: &[Rows], cfg: &DpoConfig) -> Self {
        let t0 = Instant::now();
        let mut ws = reference.workspace(2 * cfg.train.batch_size, cfg.train.seq_len);
        let ref_train = pair_logps(reference, train, &mut ws);
        let ref_val = pair_logps(reference, val, &mut ws);
        let secs = t0.elapsed().as_secs_f64();
        let before = evaluate(reference, val, &ref_val, cfg.dpo.beta, &mut ws);
        References {
            train: ref_train,
            val: ref_val,
            before,
            secs,
            ws,
        }
    }
}

impl<'a> Dpo<'a> {
    /// Bills the reference's pass (part of the method's cost) and sets up the steps.
    fn new(
        cfg: &DpoConfig,
        sft_cfg: &train::Config,
        refs: References,
        train: &'a [Rows],
        val: &'a [Rows],
        tr: &mut Trainer,
    ) -> Result<Self> {
        let t = &cfg.train;
        let (b, seq) = (t.batch_size, t.seq_len);
        let per_token = model::arch::flops_per_token(&sft_cfg.model, sft_cfg.train.seq_len);
        tr.log(&format!(
            "reference log-probabilities of {} pairs in {:.1}s",
            train.len() + val.len(),
            refs.secs
        ));
        let ref_tokens = (2 * (train.len() + val.len()) * seq) as u64;
        tr.bill(ref_tokens, ref_tokens as f64 * per_token / 3.0)?;
        Ok(Dpo {
            beta: cfg.dpo.beta,
            train,
            val,
            ref_train: refs.train,
            ref_val: refs.val,
            pairs: Shuffled::new(train.len(), t.seed, tr.state.cursor),
            batch: b,
            seq,
            // The policy's forward and backward, and the reference's forward.
            flops_per_token: tr.model.train_flops_per_token(sft_cfg.train.seq_len)
                + per_token / 3.0,
            ws: refs.ws,
            x: vec![0u32; 2 * b * seq],
            y: vec![0u32; 2 * b * seq],
            w: vec![0f32; 2 * b * seq],
            before: refs.before,
            after: refs.before,
        })
    }
}

impl Objective for Dpo<'_> {
    fn gradient(&mut self, model: &Llama, grads: &mut [f32], _: At) -> Result<Step> {
        let (b, seq) = (self.batch, self.seq);
        let batch: Vec<usize> = (0..b).map(|_| self.pairs.next_index()).collect();
        for (k, &i) in batch.iter().enumerate() {
            self.x[2 * k * seq..2 * (k + 1) * seq].copy_from_slice(&self.train[i].x);
            self.y[2 * k * seq..2 * (k + 1) * seq].copy_from_slice(&self.train[i].y);
        }
        let lp: Vec<f64> = model
            .token_logprobs(&self.x, &self.y, &mut self.ws)
            .chunks(seq)
            .map(|r| r.iter().sum())
            .collect();
        let (mut loss, mut acc, mut margin) = (0f64, 0f64, 0f64);
        for (k, &i) in batch.iter().enumerate() {
            let (rc, rr) = self.ref_train[i];
            let d = dpo(lp[2 * k], lp[2 * k + 1], rc, rr, self.beta);
            loss += d.loss;
            margin += d.chosen_reward - d.rejected_reward;
            acc += f64::from(u8::from(d.chosen_reward > d.rejected_reward));
            // d loss / d ln p(token) = d loss / d π for every reply token; the cross-entropy
            // is −ln p, hence the sign.
            for (row, g) in [(2 * k, d.d_chosen), (2 * k + 1, d.d_rejected)] {
                for j in row * seq..(row + 1) * seq {
                    self.w[j] = if self.y[j] == IGNORE { 0.0 } else { -g as f32 };
                }
            }
        }
        let (x, y, w) = (&self.x, &self.y, &self.w);
        model.forward_backward_weighted(x, y, Some(w), grads, 1.0 / b as f32, &mut self.ws);
        let (bf, tokens) = (b as f64, (2 * b * seq) as u64);
        Ok(Step {
            loss: loss / bf,
            tokens,
            flops: tokens as f64 * self.flops_per_token,
            line: format!(" | margin {:.3} | acc {:.2}", margin / bf, acc / bf),
            fields: serde_json::json!({"margin": margin / bf, "accuracy": acc / bf}),
            ..Step::default()
        })
    }

    fn cursor(&self) -> Cursor {
        self.pairs.cursor()
    }

    fn evaluate(&mut self, model: &Llama, _: &mut Log) -> Result<Option<Report>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        self.after = evaluate(model, self.val, &self.ref_val, self.beta, &mut self.ws);
        Ok(Some(self.after.report("implicit-reward")))
    }
}
