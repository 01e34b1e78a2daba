//! `frugal sft`: instruction tuning. Starts from a run's pretrained checkpoint, trains on a
//! mixture of real conversations with the loss on assistant tokens only, and writes its own
//! checkpoints, metrics and report under `RUN/sft/`, resumable like pretraining. At the end,
//! the model answers held-out prompts through the inference engine, and the report says how
//! many replies were well-formed (closed by `<|assistant_end|>` within the limit).
//!
//! Conversations are packed into rows, and attention is masked at their boundaries, so a
//! conversation is trained exactly as if it were alone in its row (RoPE is relative).

use base::config::parse_toml;
use base::{Error, Result};
use data::chat::{ChatFormat, Conversation};
use data::loader::Cursor;
use data::sft_mix::{ChatSource, MixSpec, Packed};
use engine::{self, Finish, Request, SamplingParams, Tools};
use model::Llama;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tensor::ops::cross_entropy::IGNORE;
use tensor::Rng;
use train::checkpoint::{self, TrainState};
use train::config::TrainConfig;
use train::optim::Optimizer;
use train::schedule::lr_scale;
use train::{due, grad_norm, open_metrics, write_report, LoopClock};

/// An SFT config: `[train]` as in pretraining (the model comes from the run), and `[sft]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    pub train: TrainConfig,
    pub sft: SftSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftSection {
    pub sources: Vec<ChatSource>,
    /// Fraction of each source held out for validation and the format check ...
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f32,
    /// ... but at most this many conversations per source.
    #[serde(default = "default_max_val")]
    pub max_val_per_source: usize,
    /// Held-out prompts answered at the end to check replies are well-formed (0: skip).
    #[serde(default = "default_format_check")]
    pub format_check: usize,
    /// Token limit of each of those replies.
    #[serde(default = "default_reply_tokens")]
    pub reply_tokens: usize,
    #[serde(default = "default_check_sampling")]
    pub check_sampling: SamplingParams,
}

fn default_val_fraction() -> f32 {
    0.02
}
fn default_max_val() -> usize {
    200
}
fn default_format_check() -> usize {
    100
}
fn default_reply_tokens() -> usize {
    128
}
fn default_check_sampling() -> SamplingParams {
    SamplingParams {
        temperature: 0.7,
        top_k: 50,
        top_p: 0.95,
        repetition_penalty: 1.0,
    }
}

impl SftConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let cfg: SftConfig = parse_toml(text, origin, overrides)?;
        cfg.validate().map_err(|(field, msg)| {
            Error::config(origin, format!("{field}: {msg}"), "adjust that field")
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        self.train.validate()?;
        let s = &self.sft;
        if s.sources.is_empty() {
            return Err(("sft.sources", "lists no sources".into()));
        }
        let mut names = std::collections::HashSet::new();
        if let Some(dup) = s.sources.iter().find(|src| !names.insert(&src.name)) {
            return Err(("sft.sources", format!("name {:?} is used twice", dup.name)));
        }
        if !(0.0..=0.5).contains(&s.val_fraction) {
            return Err((
                "sft.val_fraction",
                format!("{} is not in [0, 0.5]", s.val_fraction),
            ));
        }
        if s.format_check > 0 && s.reply_tokens == 0 {
            return Err(("sft.reply_tokens", "must be at least 1".into()));
        }
        s.check_sampling
            .validate()
            .map_err(|e| ("sft.check_sampling", e))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an SftConfig always serialises")
    }
}

/// What an SFT run reports (also written to RUN/sft/report.json).
#[derive(Clone, Debug, Serialize)]
pub struct SftSummary {
    pub steps: usize,
    pub mixture: data::sft_mix::MixReport,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub final_loss: f64,
    pub val_loss: f64,
    pub format: Option<FormatCheck>,
}

/// Replies to held-out prompts, generated through the engine after training.
#[derive(Clone, Debug, Serialize)]
pub struct FormatCheck {
    pub prompts: usize,
    /// Replies closed by <|assistant_end|> within reply_tokens.
    pub well_formed: usize,
    /// Replies still going at reply_tokens.
    pub cut: usize,
    /// Replies ended by a token that starts another turn (<|user_start|>, <|bos|>, …).
    pub bad_end: usize,
    pub reply_tokens: usize,
    pub generated_tokens: usize,
    pub decode_tok_s: f64,
    pub batch: usize,
    pub examples: Vec<(String, String)>,
}

/// Mean loss over the targets of `rows` (IGNORE excluded), in batches.
pub fn eval_loss(model: &Llama, rows: &Packed, batch: usize) -> f64 {
    let t = rows.seq_len;
    let (mut sum, mut count) = (0f64, 0usize);
    for start in (0..rows.rows()).step_by(batch.max(1)) {
        let end = (start + batch).min(rows.rows());
        let x = &rows.inputs[start * t..end * t];
        let y = &rows.targets[start * t..end * t];
        let mut ws = model.workspace(end - start, t);
        ws.doc_starts = Some(rows.starts[start * t..end * t].to_vec());
        let (s, n) = model.loss(x, y, &mut ws);
        sum += s;
        count += n;
    }
    sum / count.max(1) as f64
}

/// Answers `prompts` (conversations ending with a user message) in batches of `batch`.
pub fn format_check(
    model: &Llama,
    f: &ChatFormat,
    prompts: &[Conversation],
    reply_tokens: usize,
    sampling: SamplingParams,
    batch: usize,
    seed: u64,
) -> Result<FormatCheck> {
    let ctx = model.cfg.context_len;
    let t = f.t;
    let tools = Tools { tok: f.tok, t };
    let mut requests = Vec::new();
    for (i, c) in prompts.iter().enumerate() {
        let prompt = f.render_prompt(c, ctx - 1)?;
        requests.push(Request {
            max_tokens: reply_tokens.min(ctx - prompt.len()),
            prompt,
            sampling,
            // Any token that would start a new turn also ends the reply, as malformed.
            stop: t.reply_stops(),
            seed: seed + i as u64,
        });
    }
    let (mut well, mut cut, mut bad_end, mut generated, mut decode_s) = (0, 0, 0, 0, 0f64);
    let mut examples = Vec::new();
    let batch = batch.max(1);
    for (k, chunk) in requests.chunks(batch).enumerate() {
        let t0 = Instant::now();
        let out = engine::generate(model, chunk, Some(&tools), |_| true)?;
        decode_s += t0.elapsed().as_secs_f64();
        for (j, c) in out.iter().enumerate() {
            generated += c.tokens.len();
            match (c.finish, c.stop_token) {
                (Finish::Stop, Some(id)) if id == t.assistant_end => well += 1,
                (Finish::Stop, _) => bad_end += 1,
                _ => cut += 1,
            }
            let i = k * batch + j;
            if i < 5 {
                let user = prompts[i].messages.last().map(|m| m.display());
                let reply = f.parse_reply(&c.tokens).display();
                examples.push((user.unwrap_or_default(), reply));
            }
        }
    }
    Ok(FormatCheck {
        prompts: requests.len(),
        well_formed: well,
        cut,
        bad_end,
        reply_tokens,
        generated_tokens: generated,
        decode_tok_s: generated as f64 / decode_s.max(1e-9),
        batch,
        examples,
    })
}

/// Runs (or, with `resume`, continues) SFT of the pretrained model in `run`.
pub fn sft(
    cfg: &SftConfig,
    run: &Path,
    resume: bool,
    mut log: impl FnMut(&str),
) -> Result<SftSummary> {
    let base = checkpoint::load_trained(run, false)?;
    let f = ChatFormat::new(&base.tok).map_err(|e| {
        Error::input(
            run.join("tokenizer.json").display().to_string(),
            e.to_string(),
            "this run's tokenizer cannot render chats; retrain the tokenizer with frugal and pretrain again",
        )
    })?;
    let t = &cfg.train;
    let ctx = base.cfg.model.context_len;
    if t.seq_len > ctx {
        return Err(Error::config(
            "train.seq_len",
            format!("{} exceeds the model's context_len {ctx}", t.seq_len),
            "lower train.seq_len",
        ));
    }
    let dir = run.join("sft");
    let resolved = cfg.to_toml();
    checkpoint::open_stage_dir(&dir, &resolved, resume, "SFT")?;

    let t0 = Instant::now();
    let spec = MixSpec {
        sources: &cfg.sft.sources,
        seq_len: t.seq_len,
        seed: t.seed,
        val_fraction: cfg.sft.val_fraction,
        max_val_per_source: cfg.sft.max_val_per_source,
    };
    let mix = data::sft_mix::build(&spec, &f)?;
    for s in &mix.report.sources {
        log(&format!(
            "source {}: {} conversations, {} train, {} val, {} shortened to fit, {} too long for {} tokens",
            s.name, s.read, s.train, s.val, s.shortened, s.too_long, t.seq_len + 1
        ));
    }
    log(&format!(
        "mixture: {} train rows ({:.1}% filled, {} assistant tokens), {} val rows, built in {:.1}s",
        mix.report.train_rows,
        100.0 * mix.report.fill,
        mix.report.train_target_tokens,
        mix.report.val_rows,
        t0.elapsed().as_secs_f64()
    ));

    let mut model = base.model;
    let mut opt = Optimizer::new(t, &model.params);
    let mut state = TrainState {
        step: 0,
        cursor: Cursor::default(),
        loss_ema: None,
        sample_rng: Rng::new(t.seed).state(),
        tokens_seen: 0,
        elapsed_s: 0.0,
    };
    if resume {
        if let Some((_, ck)) = checkpoint::list(&dir)?.pop() {
            state = checkpoint::load(&ck, &mut model, &mut opt)?;
            log(&format!(
                "resumed from {} (step {})",
                ck.display(),
                state.step
            ));
        }
    }
    log(&format!("fine-tuning {}", base.checkpoint.display()));
    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = open_metrics(&metrics_path, state.step)?;
    let mut emit = |v: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{v}").map_err(|e| Error::io(&metrics_path, e))
    };

    let (b, seq) = (t.batch_size, t.seq_len);
    let micro = (t.batch_tokens / (b * seq)).max(1);
    let rows = mix.train.rows();
    // Packed rows are charged whole: padding costs the same FLOPs as text.
    let flops_per_step = model::Arch::from_model(&base.cfg.model, seq)
        .train_flops_per_token(model::AttnConvention::Palm)
        * (micro * b * seq) as f64;
    let peak_gflops = tensor::peak::bench_gemm(5).peak_gflops;
    let mut meter = ledger::Meter::start(run, "sft", Some(peak_gflops))?;
    let mut ws = model.workspace(b, seq);
    let mut grads = vec![0f32; model.params.len()];
    let (mut x, mut y) = (vec![0u32; b * seq], vec![0u32; b * seq]);
    let epoch_order = |epoch: u64| {
        let mut order: Vec<u32> = (0..rows as u32).collect();
        let mut rng = Rng::new(t.seed ^ (epoch + 1).wrapping_mul(0x9E3779B97F4A7C15));
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order
    };
    let mut order = epoch_order(state.cursor.epoch);
    let (mut last_loss, mut val_loss) = (f64::NAN, f64::NAN);
    let mut step_ms = Vec::new();
    let clock = LoopClock::start(&state);
    while state.step < t.steps {
        let t_step = Instant::now();
        // Gather the step's rows first: the loss is the mean over all its assistant tokens.
        let mut batch_rows = Vec::with_capacity(micro * b);
        for _ in 0..micro * b {
            if state.cursor.index as usize >= rows {
                state.cursor = Cursor {
                    epoch: state.cursor.epoch + 1,
                    index: 0,
                };
                order = epoch_order(state.cursor.epoch);
            }
            batch_rows.push(order[state.cursor.index as usize] as usize);
            state.cursor.index += 1;
        }
        let count: usize = batch_rows
            .iter()
            .map(|&r| mix.train.row(r).1.iter().filter(|&&t| t != IGNORE).count())
            .sum();
        grads.fill(0.0);
        let mut sum = 0f64;
        for mb in batch_rows.chunks(b) {
            let mut starts = ws.doc_starts.take().unwrap_or_default();
            starts.resize(b * seq, 0);
            for (k, &r) in mb.iter().enumerate() {
                let (xi, yi, si) = mix.train.row(r);
                x[k * seq..(k + 1) * seq].copy_from_slice(xi);
                y[k * seq..(k + 1) * seq].copy_from_slice(yi);
                starts[k * seq..(k + 1) * seq].copy_from_slice(si);
            }
            ws.doc_starts = Some(starts);
            sum += model
                .forward_backward(&x, &y, &mut grads, 1.0 / count.max(1) as f32, &mut ws)
                .0;
        }
        let loss = sum / count.max(1) as f64;
        if !loss.is_finite() {
            return Err(Error::input(
                dir.display().to_string(),
                format!("the loss is {loss} at step {}", state.step + 1),
                "lower train.lr or raise train.warmup_steps",
            ));
        }
        let norm = grad_norm(&grads);
        if t.grad_clip > 0.0 && norm > t.grad_clip as f64 {
            let k = (t.grad_clip as f64 / norm) as f32;
            grads.par_iter_mut().for_each(|g| *g *= k);
        }
        let lr = lr_scale(t, state.step);
        opt.update(&mut model.params.data, &grads, lr);
        // Routed experts keep balancing through fine-tuning, as through pretraining.
        model.balance_experts(&ws.take_expert_load());
        state.step += 1;
        state.tokens_seen += (micro * b * seq) as u64;
        meter.add((micro * b * seq) as u64, flops_per_step);
        meter.save_every(30.0)?;
        last_loss = loss;
        let ms = t_step.elapsed().as_secs_f64() * 1e3;
        step_ms.push(ms);
        log(&format!(
            "sft step {} | loss {loss:.4} | lr {:.2e} | {ms:.0} ms | {count} targets | epoch {} | grad norm {norm:.3} | ${:.4}",
            state.step,
            t.lr * lr,
            state.cursor.epoch,
            meter.dollars()
        ));
        emit(
            serde_json::json!({"step": state.step, "loss": loss, "lr": t.lr * lr, "ms": ms, "targets": count, "grad_norm": norm}),
        )?;
        if due(state.step, t.steps, t.eval_every) && mix.val.rows() > 0 {
            val_loss = eval_loss(&model, &mix.val, b);
            log(&format!("sft step {} | val loss {val_loss:.4}", state.step));
            emit(serde_json::json!({"step": state.step, "val_loss": val_loss}))?;
        }
        if due(state.step, t.steps, t.checkpoint_every) {
            state.elapsed_s = clock.wall_s();
            meter.save()?; // before the checkpoint, as in pretraining
            let ck = checkpoint::save(&dir, &model, &opt, &state, t.keep_checkpoints)?;
            log(&format!(
                "sft step {} | checkpoint {}",
                state.step,
                ck.display()
            ));
        }
    }
    if val_loss.is_nan() && mix.val.rows() > 0 {
        val_loss = eval_loss(&model, &mix.val, b);
    }
    let s = &cfg.sft;
    // Held-out prompts that leave room for a whole reply.
    let room = ctx.saturating_sub(s.reply_tokens).max(ctx / 2);
    let prompts: Vec<Conversation> = mix
        .held_out
        .iter()
        .filter(|c| f.render_prompt(c, room).is_ok())
        .take(s.format_check)
        .cloned()
        .collect();
    let format = if !prompts.is_empty() {
        let fc = format_check(
            &model,
            &f,
            &prompts,
            s.reply_tokens,
            s.check_sampling,
            8,
            t.seed,
        )?;
        log(&format!(
            "format check: {} of {} replies to held-out prompts well-formed ({:.0}%; {} cut at {} tokens, {} ended by another turn's token) | {:.0} tok/s decode at batch {}",
            fc.well_formed,
            fc.prompts,
            100.0 * fc.well_formed as f64 / fc.prompts.max(1) as f64,
            fc.cut,
            fc.reply_tokens,
            fc.bad_end,
            fc.decode_tok_s,
            fc.batch
        ));
        for (u, a) in &fc.examples {
            log(&format!("  user: {u:?}\n  assistant: {a:?}"));
        }
        Some(fc)
    } else {
        None
    };
    let median_ms = base::stats::median(&step_ms);
    let summary = SftSummary {
        steps: state.step,
        mixture: mix.report,
        wall_s: clock.wall_s(),
        tokens_per_s: if step_ms.is_empty() {
            0.0
        } else {
            (micro * b * seq) as f64 / (median_ms / 1e3)
        },
        final_loss: last_loss,
        val_loss,
        format,
    };
    meter.detail(format!("{} steps", summary.steps));
    meter.finish()?;
    write_report(&dir, &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use model::Llama;
    use train::config::Config;

    #[test]
    fn a_packed_row_trains_like_its_conversations_alone() {
        // Large weights, so that attention across the boundary would change the result.
        let cfg = Config::preset("tiny", &["model.init_std=0.3".into()]).unwrap();
        let model = Llama::init(cfg.model, 5);
        let doc = |len: usize, seed: u32| -> (Vec<u32>, Vec<u32>) {
            let ids: Vec<u32> = (0..=len as u32).map(|i| (i * 37 + seed) % 128).collect();
            (ids[..len].to_vec(), ids[1..].to_vec())
        };
        let ((xa, ya), (xb, yb)) = (doc(7, 3), doc(9, 11));
        let x = [xa.clone(), xb.clone()].concat();
        let y = [ya.clone(), yb.clone()].concat();
        let starts: Vec<u32> = [vec![0; 7], vec![7; 9]].concat();
        let n = model.params.len();
        let run = |x: &[u32], y: &[u32], starts: Option<Vec<u32>>, grads: &mut [f32]| {
            let mut ws = model.workspace(1, x.len());
            ws.doc_starts = starts;
            model.forward_backward(x, y, grads, 1.0, &mut ws).0
        };
        let (mut g_row, mut g_sep) = (vec![0f32; n], vec![0f32; n]);
        let packed = run(&x, &y, Some(starts), &mut g_row);
        let alone = run(&xa, &ya, None, &mut g_sep) + run(&xb, &yb, None, &mut g_sep);
        assert!((packed - alone).abs() < 1e-4 * alone, "{packed} vs {alone}");
        tensor::check::assert_close(&g_row, &g_sep, 1e-3, "gradients of packed vs alone");
        // Without the mask the second conversation sees the first: a different loss.
        let leaky = run(&x, &y, None, &mut vec![0f32; n]);
        assert!((leaky - alone).abs() > 1e-3 * alone, "{leaky} vs {alone}");
    }
}
