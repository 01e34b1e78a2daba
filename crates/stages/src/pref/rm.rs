//! `frugal pref rm`: the reward model of RLHF (Ouyang et al. 2022): the SFT transformer with its
//! LM head set aside and a scalar head on the final hidden state of the reply's last token
//! (`<|assistant_end|>`), trained on preference pairs with the Bradley–Terry loss
//! −ln σ(r_chosen − r_rejected). Held-out pairwise accuracy is measured before and after.
//! Checkpoints (the head and its moments in `extra.safetensors`), metrics and the report go to
//! `RUN/rm/`, where `frugal pref grpo` finds it.

use super::dpo::pair_tokens;
use super::loss::bradley_terry;
use super::stage::{self, PairEval};
use base::config::Validate;
use base::{Error, Result};
use data::chat::ChatFormat;
use data::loader::{Cursor, Shuffled};
use model::{Llama, Workspace};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tensor::Rng;
use train::checkpoint::{self, Trained};
use train::config::TrainConfig;
use train::trainer::Log;
use train::{write_report, At, Objective, Report, Step, Trainer, Update};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmConfig {
    /// `batch_size` is pairs per step; `seq_len` the longest prompt + reply.
    pub train: TrainConfig,
    pub rm: RmSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmSection {
    /// Preference files: JSONL ({prompt, chosen, rejected} or HH-RLHF) or hhh_alignment JSON.
    pub sources: Vec<PathBuf>,
    /// Pairs held out to measure pairwise accuracy.
    pub val_pairs: usize,
    pub max_reply_tokens: usize,
    /// The scalar head's learning rate (it starts from scratch; the trunk from SFT).
    pub head_lr: f32,
}

impl Default for RmSection {
    fn default() -> Self {
        RmSection {
            sources: Vec::new(),
            val_pairs: 400,
            max_reply_tokens: 96,
            head_lr: 1e-3,
        }
    }
}

impl RmConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        base::config::load(path, overrides)
    }
}

impl Validate for RmConfig {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        self.train.validate()?;
        let cfg = self;
        match &cfg.rm {
            r if r.sources.is_empty() => Err(("rm.sources", "lists no files".into())),
            r if !(r.head_lr > 0.0 && r.head_lr.is_finite()) => Err((
                "rm.head_lr",
                format!("{} is not a positive number", r.head_lr),
            )),
            r if r.max_reply_tokens == 0 || r.max_reply_tokens >= cfg.train.seq_len => Err((
                "rm.max_reply_tokens",
                format!("must be in 1..{}", cfg.train.seq_len),
            )),
            _ => Ok(()),
        }
    }
}

/// The transformer and its scalar head: `head[..d]` the weight, `head[d]` the bias.
pub struct RewardModel {
    pub trunk: Llama,
    pub head: Vec<f32>,
}

/// Sequences in rows of `seq` (padded with token 0) and the index of each one's last token.
fn pack(seqs: &[&[u32]], seq: usize) -> (Vec<u32>, Vec<usize>) {
    let mut x = vec![0u32; seqs.len() * seq];
    let mut last = Vec::with_capacity(seqs.len());
    for (k, s) in seqs.iter().enumerate() {
        x[k * seq..k * seq + s.len()].copy_from_slice(s);
        last.push(k * seq + s.len() - 1);
    }
    (x, last)
}

impl RewardModel {
    /// The newest reward model of `run` (RUN/rm).
    pub fn load(run: &Path) -> Result<Self> {
        let dir = run.join("rm");
        let Some((_, ck)) = checkpoint::list(&dir)?.pop() else {
            return Err(Error::input(
                run.display().to_string(),
                "has no reward model",
                "train one with `frugal pref rm --run` first",
            ));
        };
        let cfg = train::Config::load(&run.join("config.toml"), &[])?;
        let trunk = checkpoint::load_weights(&ck, &cfg.model)?;
        let head = checkpoint::load_extra(&ck, "reward_head", cfg.model.d_model + 1)?;
        Ok(RewardModel { trunk, head })
    }

    /// Rewards of whole sequences packed by `pack`, `ws` sized for them.
    fn rewards(&self, x: &[u32], last: &[usize], ws: &mut Workspace) -> Vec<f64> {
        rewards(&self.trunk, &self.head, x, last, ws)
    }

    /// Scores replies: each (prompt tokens ending in `<|assistant_start|>`, reply tokens without
    /// the end token). `end` (`<|assistant_end|>`) is appended, as in training; a sequence too
    /// long for the context keeps its `<|bos|>` and loses the oldest prompt tokens.
    pub fn score_replies(&self, replies: &[(&[u32], &[u32])], end: u32) -> Vec<f64> {
        let ctx = self.trunk.cfg.context_len;
        let seqs: Vec<Vec<u32>> = replies
            .iter()
            .map(|(p, r)| {
                let mut s: Vec<u32> = p.iter().chain(r.iter()).copied().collect();
                s.push(end);
                if s.len() > ctx {
                    s.drain(1..1 + s.len() - ctx);
                }
                s
            })
            .collect();
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(16) {
            let seq = chunk.iter().map(Vec::len).max().unwrap_or(1);
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            let (x, last) = pack(&refs, seq);
            let mut ws = self.trunk.workspace(chunk.len(), seq);
            out.extend(self.rewards(&x, &last, &mut ws));
        }
        out
    }
}

/// Rewards of whole sequences packed by `pack` under `trunk` and `head`, `ws` sized for them.
fn rewards(trunk: &Llama, head: &[f32], x: &[u32], last: &[usize], ws: &mut Workspace) -> Vec<f64> {
    let d = trunk.cfg.d_model;
    let h = trunk.hidden_states(x, ws).slice();
    last.iter()
        .map(|&i| {
            let row = &h[i * d..(i + 1) * d];
            let dot: f64 = row
                .iter()
                .zip(&head[..d])
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            dot + f64::from(head[d])
        })
        .collect()
}

/// A pair's two sequences packed as rows `2k` (chosen) and `2k + 1` (rejected).
struct Encoded {
    seqs: [Vec<u32>; 2],
}

/// Rewards of pairs, in batches of the workspace's rows / 2.
fn pair_rewards(
    trunk: &Llama,
    head: &[f32],
    pairs: &[Encoded],
    ws: &mut Workspace,
) -> Vec<(f64, f64)> {
    let (rows, seq) = (ws.batch, ws.seq_len);
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(rows / 2) {
        let mut refs: Vec<&[u32]> = chunk
            .iter()
            .flat_map(|p| [p.seqs[0].as_slice(), p.seqs[1].as_slice()])
            .collect();
        // Pad the last batch with copies of the first row: scored, never counted.
        while refs.len() < rows {
            refs.push(refs[0]);
        }
        let (x, last) = pack(&refs, seq);
        let r = rewards(trunk, head, &x, &last, ws);
        out.extend(r.chunks(2).take(chunk.len()).map(|c| (c[0], c[1])));
    }
    out
}

fn evaluate(trunk: &Llama, head: &[f32], val: &[Encoded], ws: &mut Workspace) -> PairEval {
    let rewards = pair_rewards(trunk, head, val, ws);
    PairEval::of(
        rewards
            .into_iter()
            .map(|(c, r)| (c - r, bradley_terry(c, r).0)),
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct RmSummary {
    pub steps: usize,
    pub wall_s: f64,
    pub train_pairs: usize,
    pub before: PairEval,
    pub after: PairEval,
    pub prompts_cut: usize,
    pub skipped_rows: usize,
}

/// Adam (with bias correction) on the head's few parameters.
fn adam_head(head: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], step: u64, lr: f32) {
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
    for i in 0..head.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        head[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
    }
}

/// Trains (or, with `resume`, continues training) the reward model of `run` from its SFT model.
pub fn train(
    cfg: &RmConfig,
    run: &Path,
    resume: bool,
    mut log: impl FnMut(&str),
) -> Result<RmSummary> {
    let t = &cfg.train;
    let seq = t.seq_len;
    let resolved = toml::to_string(cfg).expect("an RmConfig serialises");
    let (sft, dir) = stage::open(run, "rm", "the reward model", &resolved, seq, resume)?;
    let f = ChatFormat::for_run(&sft.tok, &sft.run)?;

    let r = &cfg.rm;
    let split = stage::split_pairs(
        &r.sources,
        "rm.sources",
        (t.seed, r.val_pairs, seq),
        &mut log,
        |p| {
            let (seqs, _, cut) = pair_tokens(&f, p, seq - 1, r.max_reply_tokens)?;
            Ok((Encoded { seqs }, cut))
        },
    )?;
    let (train_set, val) = (&split.train[..], &split.val[..]);
    let trunk = Llama::new(sft.cfg.model.clone(), sft.model.params.clone());
    let mut tr = Trainer::open(stage::setup(t, run, &dir, "rm ", resume, None), trunk, log)?;
    let mut obj = Rm::new(cfg, &sft, train_set, val, &tr);
    let before = obj.after;
    tr.log(&format!(
        "held-out pairwise accuracy before training {:.3} ± {:.3} ({} pairs)",
        before.accuracy, before.ci95, before.pairs
    ));
    let out = tr.run(&mut obj)?;
    let summary = RmSummary {
        steps: out.steps,
        wall_s: out.wall_s,
        train_pairs: train_set.len(),
        before,
        after: obj.after,
        prompts_cut: split.prompts_cut,
        skipped_rows: split.skipped_rows,
    };
    let detail = format!(
        "reward model, {} steps, held-out accuracy {:.3}",
        summary.steps, summary.after.accuracy
    );
    tr.finish(detail)?;
    write_report(&dir, &summary)?;
    Ok(summary)
}

/// The Bradley–Terry loss of the reward head on the trunk's last hidden state; the head is
/// the objective's own parameters, with its own Adam.
struct Rm<'a> {
    train: &'a [Encoded],
    val: &'a [Encoded],
    pairs: Shuffled,
    batch: usize,
    seq: usize,
    head: Vec<f32>,
    head_m: Vec<f32>,
    head_v: Vec<f32>,
    head_grad: Vec<f32>,
    head_lr: f32,
    flops_per_token: f64,
    ws: Workspace,
    /// d loss / d final hidden state, nonzero only at each sequence's last token.
    dxf: Vec<f32>,
    after: PairEval,
}

impl<'a> Rm<'a> {
    /// A fresh head, small and random, so that rewards start near 0 (the trunk is SFT's);
    /// measured on the held-out pairs with the SFT trunk.
    fn new(
        cfg: &RmConfig,
        sft: &Trained,
        train: &'a [Encoded],
        val: &'a [Encoded],
        tr: &Trainer,
    ) -> Self {
        let t = &cfg.train;
        let (b, seq, d) = (t.batch_size, t.seq_len, sft.cfg.model.d_model);
        let mut head = vec![0f32; d + 1];
        Rng::new(t.seed ^ 0x4EAD).fill_normal(&mut head[..d], 1.0 / ((d + 1) as f32).sqrt());
        let mut ws = sft.model.workspace(2 * b, seq);
        let before = evaluate(&sft.model, &head, val, &mut ws);
        Rm {
            train,
            val,
            pairs: Shuffled::new(train.len(), t.seed, tr.state.cursor),
            batch: b,
            seq,
            head,
            head_m: vec![0f32; d + 1],
            head_v: vec![0f32; d + 1],
            head_grad: vec![0f32; d + 1],
            head_lr: cfg.rm.head_lr,
            flops_per_token: model::arch::flops_per_token(&sft.cfg.model, sft.cfg.train.seq_len),
            ws,
            dxf: vec![0f32; 2 * b * seq * d],
            after: before,
        }
    }
}

impl Objective for Rm<'_> {
    fn gradient(&mut self, model: &Llama, grads: &mut [f32], _: At) -> Result<Step> {
        let (b, d) = (self.batch, model.cfg.d_model);
        let batch: Vec<&Encoded> = (0..b)
            .map(|_| &self.train[self.pairs.next_index()])
            .collect();
        let refs: Vec<&[u32]> = batch
            .iter()
            .flat_map(|p| [p.seqs[0].as_slice(), p.seqs[1].as_slice()])
            .collect();
        let (x, last) = pack(&refs, self.seq);
        let r = rewards(model, &self.head, &x, &last, &mut self.ws);
        // Bradley–Terry per pair, averaged over the batch; its gradient flows into the head
        // and, through the last token's hidden state, into the trunk.
        let h = self.ws.final_normed();
        let gh = &mut self.head_grad;
        gh.fill(0.0);
        self.dxf.fill(0.0);
        let (mut loss, mut acc, mut margin) = (0f64, 0f64, 0f64);
        for k in 0..b {
            let (l, gc, gr) = bradley_terry(r[2 * k], r[2 * k + 1]);
            loss += l;
            acc += f64::from(u8::from(r[2 * k] > r[2 * k + 1]));
            margin += r[2 * k] - r[2 * k + 1];
            for (row, g) in [(2 * k, gc), (2 * k + 1, gr)] {
                let g = (g / b as f64) as f32;
                let i = last[row];
                for j in 0..d {
                    gh[j] += g * h[i * d + j];
                    self.dxf[i * d + j] = g * self.head[j];
                }
                gh[d] += g;
            }
        }
        model.backward_from_hidden(&x, &self.dxf, grads, &mut self.ws);
        let (bf, tokens) = (b as f64, (2 * b * self.seq) as u64);
        Ok(Step {
            loss: loss / bf,
            tokens,
            flops: tokens as f64 * self.flops_per_token,
            outside_sum_sq: gh.iter().map(|g| f64::from(*g).powi(2)).sum(),
            line: format!(" | margin {:.3} | acc {:.2}", margin / bf, acc / bf),
            fields: serde_json::json!({"margin": margin / bf, "accuracy": acc / bf}),
            ..Step::default()
        })
    }

    /// The head follows the trunk: clipped alike, at `head_lr` on the same schedule.
    fn after_update(&mut self, _: &mut Llama, u: Update) {
        self.head_grad.iter_mut().for_each(|g| *g *= u.clip);
        let lr = self.head_lr * u.lr_scale;
        let (m, v) = (&mut self.head_m, &mut self.head_v);
        adam_head(&mut self.head, &self.head_grad, m, v, u.step as u64 + 1, lr);
    }

    fn cursor(&self) -> Cursor {
        self.pairs.cursor()
    }

    fn evaluate(&mut self, model: &Llama, _: &mut Log) -> Result<Option<Report>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        self.after = evaluate(model, &self.head, self.val, &mut self.ws);
        Ok(Some(self.after.report("pairwise")))
    }

    fn extra_tensors(&self) -> Vec<(&'static str, &[f32])> {
        vec![
            ("reward_head", &self.head),
            ("reward_head.m", &self.head_m),
            ("reward_head.v", &self.head_v),
        ]
    }

    fn restore_extra(&mut self, ck: &Path) -> Result<()> {
        let n = self.head.len();
        self.head = checkpoint::load_extra(ck, "reward_head", n)?;
        self.head_m = checkpoint::load_extra(ck, "reward_head.m", n)?;
        self.head_v = checkpoint::load_extra(ck, "reward_head.v", n)?;
        Ok(())
    }
}
