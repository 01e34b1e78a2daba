//! `frugal pref rm`: the reward model of RLHF (Ouyang et al. 2022): the SFT transformer with its
//! LM head set aside and a scalar head on the final hidden state of the reply's last token
//! (`<|assistant_end|>`), trained on preference pairs with the Bradley–Terry loss
//! −ln σ(r_chosen − r_rejected). Held-out pairwise accuracy is measured before and after.
//! Checkpoints (the head and its moments in `extra.safetensors`), metrics and the report go to
//! `RUN/rm/`, where `frugal pref grpo` finds it.

use super::dpo::pair_tokens;
use super::loss::bradley_terry;
use super::stage;
use base::{Error, Result};
use data::chat::ChatFormat;
use data::pairs::{read_sources, shuffle, Pair};
use ledger::Meter;
use model::{Llama, Workspace};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tensor::Rng;
use train::checkpoint;
use train::config::TrainConfig;
use train::optim::Optimizer;
use train::schedule::lr_scale;
use train::{due, grad_norm, open_metrics, write_report, LoopClock};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmConfig {
    /// `batch_size` is pairs per step; `seq_len` the longest prompt + reply.
    pub train: TrainConfig,
    pub rm: RmSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmSection {
    /// Preference files: JSONL ({prompt, chosen, rejected} or HH-RLHF) or hhh_alignment JSON.
    pub sources: Vec<PathBuf>,
    /// Pairs held out to measure pairwise accuracy.
    #[serde(default = "default_val_pairs")]
    pub val_pairs: usize,
    #[serde(default = "default_max_reply")]
    pub max_reply_tokens: usize,
    /// The scalar head's learning rate (it starts from scratch; the trunk from SFT).
    #[serde(default = "default_head_lr")]
    pub head_lr: f32,
}

fn default_val_pairs() -> usize {
    400
}
fn default_max_reply() -> usize {
    96
}
fn default_head_lr() -> f32 {
    1e-3
}

impl RmConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        stage::load_config(
            path,
            overrides,
            |c: &Self| &c.train,
            |cfg| match &cfg.rm {
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
            },
        )
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
        let d = self.trunk.cfg.d_model;
        let h = self.trunk.hidden_states(x, ws);
        last.iter()
            .map(|&i| {
                let row = &h[i * d..(i + 1) * d];
                let dot: f64 = row
                    .iter()
                    .zip(&self.head[..d])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                dot + f64::from(self.head[d])
            })
            .collect()
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

/// A pair's two sequences packed as rows `2k` (chosen) and `2k + 1` (rejected).
struct Encoded {
    seqs: [Vec<u32>; 2],
}

/// Held-out pairwise accuracy of the reward model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RmEval {
    /// Pairs whose chosen reply gets the higher reward.
    pub accuracy: f64,
    /// Half-width of the accuracy's 95% confidence interval (normal approximation).
    pub ci95: f64,
    pub margin: f64,
    pub loss: f64,
    pub pairs: usize,
}

/// Rewards of pairs, in batches of the workspace's rows / 2.
fn pair_rewards(rm: &RewardModel, pairs: &[Encoded], ws: &mut Workspace) -> Vec<(f64, f64)> {
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
        let r = rm.rewards(&x, &last, ws);
        out.extend(r.chunks(2).take(chunk.len()).map(|c| (c[0], c[1])));
    }
    out
}

fn evaluate(rm: &RewardModel, val: &[Encoded], ws: &mut Workspace) -> RmEval {
    let mut e = RmEval::default();
    for (c, r) in pair_rewards(rm, val, ws) {
        e.accuracy += f64::from(u8::from(c > r));
        e.margin += c - r;
        e.loss += bradley_terry(c, r).0;
    }
    let n = val.len().max(1) as f64;
    let acc = e.accuracy / n;
    RmEval {
        accuracy: acc,
        ci95: 1.96 * (acc * (1.0 - acc) / n).sqrt(),
        margin: e.margin / n,
        loss: e.loss / n,
        pairs: val.len(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RmSummary {
    pub steps: usize,
    pub wall_s: f64,
    pub train_pairs: usize,
    pub before: RmEval,
    pub after: RmEval,
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
    let f = ChatFormat::new(&sft.tok)?;

    let (mut pairs, skipped_rows) = read_sources(&cfg.rm.sources, &mut log)?;
    shuffle(&mut pairs, t.seed);
    let n_val = cfg.rm.val_pairs.min(pairs.len() / 5);
    let mut prompts_cut = 0;
    let encoded: Vec<Encoded> = pairs
        .iter()
        .map(|p: &Pair| {
            let (seqs, _, cut) = pair_tokens(&f, p, seq - 1, cfg.rm.max_reply_tokens)?;
            prompts_cut += usize::from(cut);
            Ok(Encoded { seqs })
        })
        .collect::<Result<_>>()?;
    let (train_set, val) = encoded.split_at(encoded.len() - n_val);
    if train_set.is_empty() {
        return Err(Error::input(
            "rm.sources",
            "hold no pairs to train on",
            "add preference files",
        ));
    }
    log(&format!(
        "{} train pairs, {} held out, {prompts_cut} prompts cut from the left to fit {seq} tokens",
        train_set.len(),
        val.len()
    ));

    let peak = tensor::peak::bench_gemm(5).peak_gflops;
    let mut meter = Meter::start(run, "preference", Some(peak))?;
    let d = sft.cfg.model.d_model;
    // The head starts small and random (the trunk is SFT's): rewards start near 0.
    let mut head = vec![0f32; d + 1];
    Rng::new(t.seed ^ 0x4EAD).fill_normal(&mut head[..d], 1.0 / ((d + 1) as f32).sqrt());
    let mut rm = RewardModel {
        trunk: Llama::new(sft.cfg.model.clone(), sft.model.params.clone()),
        head,
    };
    let mut opt = Optimizer::new(t, &rm.trunk.params);
    let (mut hm, mut hv) = (vec![0f32; d + 1], vec![0f32; d + 1]);
    let b = t.batch_size;
    let mut ws = rm.trunk.workspace(2 * b, seq);
    let before = evaluate(&rm, val, &mut ws);
    let (mut state, ck) =
        stage::start_state(&dir, resume, t.seed, &mut rm.trunk, &mut opt, &mut log)?;
    if let Some(ck) = ck {
        rm.head = checkpoint::load_extra(&ck, "reward_head", d + 1)?;
        hm = checkpoint::load_extra(&ck, "reward_head.m", d + 1)?;
        hv = checkpoint::load_extra(&ck, "reward_head.v", d + 1)?;
    }
    log(&format!(
        "held-out pairwise accuracy before training {:.3} ± {:.3} ({} pairs)",
        before.accuracy, before.ci95, before.pairs
    ));
    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = open_metrics(&metrics_path, state.step)?;
    let mut emit = |v: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{v}").map_err(|e| Error::io(&metrics_path, e))
    };
    let flops_per_token = model::arch::flops_per_token(&sft.cfg.model, sft.cfg.train.seq_len);
    let mut grads = vec![0f32; rm.trunk.params.len()];
    let mut dxf = vec![0f32; 2 * b * seq * d];
    let clock = LoopClock::start(&state);
    let mut after = before;
    while state.step < t.steps {
        let mut step_rng = Rng::new(stage::step_seed(t.seed, state.step));
        let batch: Vec<&Encoded> = (0..b)
            .map(|_| &train_set[step_rng.below(train_set.len() as u64) as usize])
            .collect();
        let refs: Vec<&[u32]> = batch
            .iter()
            .flat_map(|p| [p.seqs[0].as_slice(), p.seqs[1].as_slice()])
            .collect();
        let (x, last) = pack(&refs, seq);
        let r = rm.rewards(&x, &last, &mut ws);
        // Bradley–Terry per pair, averaged over the batch; its gradient flows into the head
        // and, through the last token's hidden state, into the trunk.
        let h = ws.final_normed();
        let mut gh = vec![0f32; d + 1];
        dxf.fill(0.0);
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
                    dxf[i * d + j] = g * rm.head[j];
                }
                gh[d] += g;
            }
        }
        grads.fill(0.0);
        rm.trunk.backward_from_hidden(&x, &dxf, &mut grads, &mut ws);
        let norm = (grad_norm(&grads).powi(2)
            + gh.iter().map(|g| f64::from(*g).powi(2)).sum::<f64>())
        .sqrt();
        let clip = if t.grad_clip > 0.0 && norm > t.grad_clip as f64 {
            (t.grad_clip as f64 / norm) as f32
        } else {
            1.0
        };
        if clip < 1.0 {
            grads.par_iter_mut().for_each(|g| *g *= clip);
            gh.iter_mut().for_each(|g| *g *= clip);
        }
        let lr = lr_scale(t, state.step);
        opt.update(&mut rm.trunk.params.data, &grads, lr);
        adam_head(
            &mut rm.head,
            &gh,
            &mut hm,
            &mut hv,
            state.step as u64 + 1,
            cfg.rm.head_lr * lr,
        );
        state.step += 1;
        let tokens = (2 * b * seq) as u64;
        state.tokens_seen += tokens;
        meter.add(tokens, tokens as f64 * flops_per_token);
        meter.save_every(30.0)?;
        let bf = b as f64;
        log(&format!(
            "rm step {} | loss {:.4} | margin {:.3} | acc {:.2} | lr {:.2e} | grad norm {norm:.3} | ${:.4}",
            state.step, loss / bf, margin / bf, acc / bf, t.lr * lr, meter.dollars()
        ));
        emit(
            serde_json::json!({"step": state.step, "loss": loss / bf, "margin": margin / bf, "accuracy": acc / bf, "grad_norm": norm}),
        )?;
        if due(state.step, t.steps, t.eval_every) && !val.is_empty() {
            after = evaluate(&rm, val, &mut ws);
            log(&format!(
                "rm step {} | held-out pairwise accuracy {:.3} ± {:.3} | margin {:.3} | loss {:.4}",
                state.step, after.accuracy, after.ci95, after.margin, after.loss
            ));
            emit(
                serde_json::json!({"step": state.step, "val_accuracy": after.accuracy, "val_margin": after.margin, "val_loss": after.loss}),
            )?;
        }
        if due(state.step, t.steps, t.checkpoint_every) {
            state.elapsed_s = clock.wall_s();
            meter.save()?;
            checkpoint::save_with(
                &dir,
                &rm.trunk,
                &opt,
                &state,
                t.keep_checkpoints,
                &[
                    ("reward_head", &rm.head),
                    ("reward_head.m", &hm),
                    ("reward_head.v", &hv),
                ],
            )?;
        }
    }
    let summary = RmSummary {
        steps: state.step,
        wall_s: clock.wall_s(),
        train_pairs: train_set.len(),
        before,
        after,
        prompts_cut,
        skipped_rows,
    };
    meter.detail(format!(
        "reward model, {} steps, held-out accuracy {:.3}",
        state.step, after.accuracy
    ));
    meter.finish()?;
    write_report(&dir, &summary)?;
    Ok(summary)
}
