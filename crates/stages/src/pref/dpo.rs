//! `frugal pref dpo`: Direct Preference Optimization (Rafailov et al. 2023) of a run's SFT
//! model against itself frozen as the reference. Each pair is two rows, the prompt rendered in
//! the chat format and each reply after it; only reply tokens are scored. A step computes the
//! policy's log-probabilities, the DPO loss and its derivative per pair, and backpropagates
//! that derivative as per-token weights of the cross-entropy gradient. Checkpoints, metrics and
//! the report go to `RUN/dpo/`, where `frugal eval` finds the dpo stage.

use super::loss::dpo;
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
use std::time::Instant;
use tensor::ops::cross_entropy::IGNORE;
use tensor::Rng;
use train::checkpoint;
use train::config::TrainConfig;
use train::optim::Optimizer;
use train::schedule::lr_scale;
use train::{due, grad_norm, open_metrics, write_report, LoopClock};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoConfig {
    /// `batch_size` is pairs per step; `seq_len` the longest prompt + reply.
    pub train: TrainConfig,
    pub dpo: DpoSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoSection {
    /// Preference files: JSONL ({prompt, chosen, rejected} or HH-RLHF) or hhh_alignment JSON.
    pub sources: Vec<PathBuf>,
    /// How far the policy may move from the reference: the β of the implicit reward.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Pairs held out to measure the implicit reward's accuracy.
    #[serde(default = "default_val_pairs")]
    pub val_pairs: usize,
    /// Replies are cut to this many tokens (the prompt is cut from the left to fit the rest).
    #[serde(default = "default_max_reply")]
    pub max_reply_tokens: usize,
}

fn default_beta() -> f64 {
    0.1
}
fn default_val_pairs() -> usize {
    200
}
fn default_max_reply() -> usize {
    96
}

impl DpoConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        stage::load_config(
            path,
            overrides,
            |c: &Self| &c.train,
            |cfg| match &cfg.dpo {
                d if d.sources.is_empty() => Err(("dpo.sources", "lists no files".into())),
                d if !(d.beta > 0.0 && d.beta.is_finite()) => {
                    Err(("dpo.beta", format!("{} is not a positive number", d.beta)))
                }
                d if d.max_reply_tokens == 0 || d.max_reply_tokens >= cfg.train.seq_len => Err((
                    "dpo.max_reply_tokens",
                    format!("must be in 1..{}", cfg.train.seq_len),
                )),
                _ => Ok(()),
            },
        )
    }
}

/// One pair as two rows of (inputs, targets): chosen then rejected. Rows are `seq` long,
/// padded with IGNORE.
struct Rows {
    x: Vec<u32>,
    y: Vec<u32>,
}

/// A pair as two whole token sequences, each at most `seq + 1` long: the `<|bos|>`-started
/// prompt (cut from the left to fit), the reply (cut to `max_reply` tokens) and
/// `<|assistant_end|>`. Returns them, the prompt's length and whether it was cut.
pub(super) fn pair_tokens(
    f: &ChatFormat,
    p: &Pair,
    seq: usize,
    max_reply: usize,
) -> Result<([Vec<u32>; 2], usize, bool)> {
    let t = f.t;
    let mut prompt = f.render(&p.prompt)?.ids;
    prompt.push(t.assistant_start);
    let reply = |text: &str| {
        let mut ids = f.tok.encode(text);
        ids.truncate(max_reply - 1);
        ids.push(t.assistant_end);
        ids
    };
    let (c, r) = (reply(&p.chosen), reply(&p.rejected));
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

/// Held-out measures of the implicit reward β·(π − π_ref).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DpoEval {
    /// Pairs whose chosen reply gets the higher implicit reward.
    pub accuracy: f64,
    /// Half-width of the accuracy's 95% confidence interval (normal approximation).
    pub ci95: f64,
    pub margin: f64,
    pub loss: f64,
    pub pairs: usize,
}

fn evaluate(
    model: &Llama,
    val: &[Rows],
    refs: &[(f64, f64)],
    beta: f64,
    ws: &mut Workspace,
) -> DpoEval {
    let mut e = DpoEval::default();
    for (&(pc, pr), &(rc, rr)) in pair_logps(model, val, ws).iter().zip(refs) {
        let d = dpo(pc, pr, rc, rr, beta);
        let m = d.chosen_reward - d.rejected_reward;
        e.accuracy += f64::from(u8::from(m > 0.0));
        e.margin += m;
        e.loss += d.loss;
    }
    let n = val.len().max(1) as f64;
    let acc = e.accuracy / n;
    DpoEval {
        accuracy: acc,
        ci95: 1.96 * (acc * (1.0 - acc) / n).sqrt(),
        margin: e.margin / n,
        loss: e.loss / n,
        pairs: val.len(),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DpoSummary {
    pub steps: usize,
    pub wall_s: f64,
    pub train_pairs: usize,
    pub beta: f64,
    /// Held-out implicit-reward accuracy at the start (the policy is the reference: every
    /// margin is 0, so none counts as right) and at the end.
    pub before: DpoEval,
    pub after: DpoEval,
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
    let f = ChatFormat::new(&sft.tok)?;

    // Pairs: every source, shuffled with the seed, the last val_pairs held out.
    let (mut pairs, skipped_rows) = read_sources(&cfg.dpo.sources, &mut log)?;
    shuffle(&mut pairs, t.seed);
    let n_val = cfg.dpo.val_pairs.min(pairs.len() / 5);
    let mut prompts_cut = 0;
    let mut rows = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let (r, cut) = encode_pair(&f, p, seq, cfg.dpo.max_reply_tokens)?;
        prompts_cut += usize::from(cut);
        rows.push(r);
    }
    let (train_rows, val_rows) = rows.split_at(rows.len() - n_val);
    if train_rows.is_empty() {
        return Err(Error::input(
            "dpo.sources",
            "hold no pairs to train on",
            "add preference files",
        ));
    }
    log(&format!(
        "{} train pairs, {} held out, {prompts_cut} prompts cut from the left to fit {seq} tokens",
        train_rows.len(),
        val_rows.len()
    ));

    // The bill starts here: the reference's pass is part of the method's cost.
    let peak = tensor::peak::bench_gemm(5).peak_gflops;
    let mut meter = Meter::start(run, "preference", Some(peak))?;
    // The reference's log-probabilities, once.
    let reference = &sft.model;
    let b = t.batch_size;
    let t0 = Instant::now();
    let mut ws = reference.workspace(2 * b, seq);
    let ref_train = pair_logps(reference, train_rows, &mut ws);
    let ref_val = pair_logps(reference, val_rows, &mut ws);
    log(&format!(
        "reference log-probabilities of {} pairs in {:.1}s",
        rows.len(),
        t0.elapsed().as_secs_f64()
    ));
    let ref_tokens = (2 * rows.len() * seq) as u64;
    meter.add(
        ref_tokens,
        ref_tokens as f64 * model::arch::flops_per_token(&sft.cfg.model, sft.cfg.train.seq_len)
            / 3.0,
    );

    let mut model = Llama::new(sft.cfg.model.clone(), sft.model.params.clone());
    let mut opt = Optimizer::new(t, &model.params);
    let (mut state, _) = stage::start_state(&dir, resume, t.seed, &mut model, &mut opt, &mut log)?;
    let before = evaluate(reference, val_rows, &ref_val, cfg.dpo.beta, &mut ws);
    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = open_metrics(&metrics_path, state.step)?;
    let mut emit = |v: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{v}").map_err(|e| Error::io(&metrics_path, e))
    };
    // Model FLOPs of a step: two rows per pair, a forward for the log-probabilities and a
    // forward + backward for the gradient (8 = 2 + 6 per parameter and token).
    let flops_per_token =
        model::arch::flops_per_token(&sft.cfg.model, sft.cfg.train.seq_len) * 8.0 / 6.0;
    let mut grads = vec![0f32; model.params.len()];
    let (mut x, mut y, mut w) = (
        vec![0u32; 2 * b * seq],
        vec![0u32; 2 * b * seq],
        vec![0f32; 2 * b * seq],
    );
    let clock = LoopClock::start(&state);
    let mut after = before;
    while state.step < t.steps {
        // The step's pairs: a fixed function of the seed and the step, so a resumed run
        // sees what an uninterrupted one would.
        let mut step_rng = Rng::new(stage::step_seed(t.seed, state.step));
        let batch: Vec<usize> = (0..b)
            .map(|_| step_rng.below(train_rows.len() as u64) as usize)
            .collect();
        for (k, &i) in batch.iter().enumerate() {
            x[2 * k * seq..2 * (k + 1) * seq].copy_from_slice(&train_rows[i].x);
            y[2 * k * seq..2 * (k + 1) * seq].copy_from_slice(&train_rows[i].y);
        }
        let lp: Vec<f64> = model
            .token_logprobs(&x, &y, &mut ws)
            .chunks(seq)
            .map(|r| r.iter().sum())
            .collect();
        let (mut loss, mut acc, mut margin) = (0f64, 0f64, 0f64);
        for (k, &i) in batch.iter().enumerate() {
            let (rc, rr) = ref_train[i];
            let d = dpo(lp[2 * k], lp[2 * k + 1], rc, rr, cfg.dpo.beta);
            loss += d.loss;
            margin += d.chosen_reward - d.rejected_reward;
            acc += f64::from(u8::from(d.chosen_reward > d.rejected_reward));
            // d loss / d ln p(token) = d loss / d π for every reply token; the cross-entropy
            // is −ln p, hence the sign.
            for (row, g) in [(2 * k, d.d_chosen), (2 * k + 1, d.d_rejected)] {
                for j in 0..seq {
                    w[row * seq + j] = if y[row * seq + j] == IGNORE {
                        0.0
                    } else {
                        -g as f32
                    };
                }
            }
        }
        let bf = b as f64;
        grads.fill(0.0);
        model.forward_backward_weighted(&x, &y, Some(&w), &mut grads, 1.0 / b as f32, &mut ws);
        let norm = grad_norm(&grads);
        if t.grad_clip > 0.0 && norm > t.grad_clip as f64 {
            let k = (t.grad_clip as f64 / norm) as f32;
            grads.par_iter_mut().for_each(|g| *g *= k);
        }
        let lr = lr_scale(t, state.step);
        opt.update(&mut model.params.data, &grads, lr);
        state.step += 1;
        let tokens = (2 * b * seq) as u64;
        state.tokens_seen += tokens;
        meter.add(tokens, tokens as f64 * flops_per_token);
        meter.save_every(30.0)?;
        log(&format!(
            "dpo step {} | loss {:.4} | margin {:.3} | acc {:.2} | lr {:.2e} | grad norm {norm:.3} | ${:.4}",
            state.step, loss / bf, margin / bf, acc / bf, t.lr * lr, meter.dollars()
        ));
        emit(
            serde_json::json!({"step": state.step, "loss": loss / bf, "margin": margin / bf, "accuracy": acc / bf, "grad_norm": norm}),
        )?;
        if due(state.step, t.steps, t.eval_every) && !val_rows.is_empty() {
            after = evaluate(&model, val_rows, &ref_val, cfg.dpo.beta, &mut ws);
            log(&format!(
                "dpo step {} | held-out implicit-reward accuracy {:.3} ± {:.3} | margin {:.3} | loss {:.4}",
                state.step, after.accuracy, after.ci95, after.margin, after.loss
            ));
            emit(
                serde_json::json!({"step": state.step, "val_accuracy": after.accuracy, "val_margin": after.margin, "val_loss": after.loss}),
            )?;
        }
        if due(state.step, t.steps, t.checkpoint_every) {
            state.elapsed_s = clock.wall_s();
            meter.save()?;
            checkpoint::save(&dir, &model, &opt, &state, t.keep_checkpoints)?;
        }
    }
    let summary = DpoSummary {
        steps: state.step,
        wall_s: clock.wall_s(),
        train_pairs: train_rows.len(),
        beta: cfg.dpo.beta,
        before,
        after,
        prompts_cut,
        skipped_rows,
    };
    meter.detail(format!(
        "DPO, {} steps, held-out accuracy {:.3}",
        state.step, after.accuracy
    ));
    meter.finish()?;
    write_report(&dir, &summary)?;
    Ok(summary)
}
