//! `frugal sft`: instruction tuning. Starts from a run's pretrained checkpoint, trains on a
//! mixture of real conversations with the loss on assistant tokens only, and writes its own
//! checkpoints, metrics and report under `RUN/sft/`, resumable like pretraining. At the end,
//! the model answers held-out prompts through the inference engine, and the report says how
//! many replies were well-formed (closed by `<|assistant_end|>` within the limit).
//!
//! Conversations are packed into rows, and attention is masked at their boundaries, so a
//! conversation is trained exactly as if it were alone in its row (RoPE is relative).

use base::config::Validate;
use base::{Error, Result};
use data::chat::{ChatFormat, Conversation};
use data::loader::{Cursor, Shuffled};
use data::sft_mix::{ChatSource, MixSpec, Mixture, Packed};
use engine::{self, Finish, Request, SamplingParams, Tools};
use model::{Llama, Workspace};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tensor::ops::cross_entropy::IGNORE;
use train::checkpoint;
use train::config::{DistConfig, TrainConfig};
use train::dist::Solo;
use train::trainer::Log;
use train::{write_report, At, Objective, Report, Setup, Step, Trainer, Update};

/// An SFT config: `[train]` as in pretraining (the model comes from the run), and `[sft]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    pub train: TrainConfig,
    pub sft: SftSection,
    /// Tune LoRA adapters on the base model instead of its weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<train::lora::LoraConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftSection {
    pub sources: Vec<ChatSource>,
    /// Fraction of each source held out for validation and the format check ...
    pub val_fraction: f32,
    /// ... but at most this many conversations per source.
    pub max_val_per_source: usize,
    /// Held-out prompts answered at the end to check replies are well-formed (0: skip).
    pub format_check: usize,
    /// Token limit of each of those replies.
    pub reply_tokens: usize,
    pub check_sampling: SamplingParams,
}

impl Default for SftSection {
    fn default() -> Self {
        SftSection {
            sources: Vec::new(),
            val_fraction: 0.02,
            max_val_per_source: 200,
            format_check: 100,
            reply_tokens: 128,
            check_sampling: SamplingParams {
                temperature: 0.7,
                top_k: 50,
                top_p: 0.95,
                repetition_penalty: 1.0,
            },
        }
    }
}

impl SftConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        base::config::load(path, overrides)
    }

    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        base::config::parse(text, origin, overrides)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("an SftConfig always serialises")
    }
}

impl Validate for SftConfig {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        self.train.validate()?;
        if let Some(l) = &self.lora {
            l.validate()?;
        }
        let s = &self.sft;
        if s.sources.is_empty() {
            return Err(("sft.sources", "lists no sources".into()));
        }
        if let Some(src) = s
            .sources
            .iter()
            .find(|s| s.name.is_empty() || s.path.as_os_str().is_empty())
        {
            return Err((
                "sft.sources",
                format!("{:?} lacks its name or path", src.name),
            ));
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
    let tools = Tools::for_format(f);
    let mut requests = Vec::new();
    for (i, c) in prompts.iter().enumerate() {
        let prompt = f.render_prompt(c, ctx - 1)?;
        requests.push(Request {
            max_tokens: reply_tokens.min(ctx - prompt.len()),
            prompt,
            sampling,
            // Any token that would start a new turn also ends the reply, as malformed.
            stop: f.reply_stops(),
            seed: seed + i as u64,
        });
    }
    let (mut well, mut cut, mut bad_end, mut generated, mut decode_s) = (0, 0, 0, 0, 0f64);
    let mut examples = Vec::new();
    let batch = batch.max(1);
    for (k, chunk) in requests.chunks(batch).enumerate() {
        let t0 = Instant::now();
        let out = engine::generate(model, chunk, tools.as_ref(), |_| true)?;
        decode_s += t0.elapsed().as_secs_f64();
        for (j, c) in out.iter().enumerate() {
            generated += c.tokens.len();
            match (c.finish, c.stop_token) {
                (Finish::Stop, Some(id)) if id == f.reply_end() => well += 1,
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
    let f = ChatFormat::for_run(&base.tok, &base.run).map_err(|e| {
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
    checkpoint::open_stage_dir(&dir, &cfg.to_toml(), resume, "SFT")?;
    let mix = mixture(cfg, &f, &mut log)?;
    let setup = Setup {
        comm: &Solo,
        train: t,
        dist: DistConfig::default(),
        run,
        dir: &dir,
        stage: "sft",
        after: Vec::new(),
        prefix: "sft ",
        resume,
        lora: cfg.lora.as_ref().map(|l| (l, base.checkpoint.as_path())),
    };
    let mut tr = Trainer::open(setup, base.model, log)?;
    tr.log(&format!("fine-tuning {}", base.checkpoint.display()));
    let mut obj = Sft::new(&mix, t, &tr);
    let out = tr.run(&mut obj)?;
    let val_loss = match obj.val_loss.is_nan() && mix.val.rows() > 0 {
        true => eval_loss(&tr.model, &mix.val, t.batch_size),
        false => obj.val_loss,
    };
    let format = held_out_replies(cfg, &f, &mix.held_out, &mut tr)?;
    let summary = SftSummary {
        steps: out.steps,
        mixture: mix.report,
        wall_s: out.wall_s,
        tokens_per_s: out.tokens_per_s,
        final_loss: out.final_loss,
        val_loss,
        format,
    };
    tr.finish(format!("{} steps", summary.steps))?;
    write_report(&dir, &summary)?;
    Ok(summary)
}

/// The mixture of the config's sources, packed into rows, with a line per source.
fn mixture(cfg: &SftConfig, f: &ChatFormat, log: &mut impl FnMut(&str)) -> Result<Mixture> {
    let t0 = Instant::now();
    let t = &cfg.train;
    let spec = MixSpec {
        sources: &cfg.sft.sources,
        seq_len: t.seq_len,
        seed: t.seed,
        val_fraction: cfg.sft.val_fraction,
        max_val_per_source: cfg.sft.max_val_per_source,
    };
    let mix = data::sft_mix::build(&spec, f)?;
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
    if mix.train.rows() == 0 {
        return Err(Error::input(
            "sft.sources",
            "hold no conversation that fits train.seq_len",
            "add conversations, or raise train.seq_len",
        ));
    }
    Ok(mix)
}

/// The format check on held-out prompts that leave room for a whole reply, logged.
fn held_out_replies(
    cfg: &SftConfig,
    f: &ChatFormat,
    held_out: &[Conversation],
    tr: &mut Trainer,
) -> Result<Option<FormatCheck>> {
    let s = &cfg.sft;
    let ctx = tr.model.cfg.context_len;
    let room = ctx.saturating_sub(s.reply_tokens).max(ctx / 2);
    let prompts: Vec<Conversation> = held_out
        .iter()
        .filter(|c| f.render_prompt(c, room).is_ok())
        .take(s.format_check)
        .cloned()
        .collect();
    if prompts.is_empty() {
        return Ok(None);
    }
    let fc = format_check(
        &tr.model,
        f,
        &prompts,
        s.reply_tokens,
        s.check_sampling,
        8,
        cfg.train.seed,
    )?;
    tr.log(&format!(
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
        tr.log(&format!("  user: {u:?}\n  assistant: {a:?}"));
    }
    Ok(Some(fc))
}

/// Next-token prediction on the assistant's tokens of packed conversations: a step is
/// `micro × batch_size` rows in the one shuffle's order, its loss the mean over all their
/// assistant tokens.
struct Sft<'a> {
    train: &'a Packed,
    val: &'a Packed,
    rows: Shuffled,
    micro: usize,
    batch: usize,
    seq: usize,
    flops_per_step: f64,
    ws: Workspace,
    x: Vec<u32>,
    y: Vec<u32>,
    load: Vec<Vec<u64>>,
    val_loss: f64,
}

impl<'a> Sft<'a> {
    fn new(mix: &'a Mixture, t: &TrainConfig, tr: &Trainer) -> Self {
        let (b, seq) = (t.batch_size, t.seq_len);
        let micro = (t.batch_tokens / (b * seq)).max(1);
        // Packed rows are charged whole: padding costs the same FLOPs as text. The count is
        // pretraining's, multi-token prediction modules included (less the frozen weights'
        // gradients with LoRA).
        let per_token = tr.model.train_flops_per_token(seq);
        Sft {
            train: &mix.train,
            val: &mix.val,
            rows: Shuffled::new(mix.train.rows(), t.seed, tr.state.cursor),
            micro,
            batch: b,
            seq,
            flops_per_step: per_token * (micro * b * seq) as f64,
            ws: tr.model.workspace(b, seq),
            x: vec![0u32; b * seq],
            y: vec![0u32; b * seq],
            load: Vec::new(),
            val_loss: f64::NAN,
        }
    }

    /// Copies `rows` into the micro-batch's inputs, targets and document starts.
    fn fill(&mut self, rows: &[usize]) {
        let seq = self.seq;
        let mut starts = self.ws.doc_starts.take().unwrap_or_default();
        starts.resize(self.batch * seq, 0);
        for (k, &r) in rows.iter().enumerate() {
            let (xi, yi, si) = self.train.row(r);
            self.x[k * seq..(k + 1) * seq].copy_from_slice(xi);
            self.y[k * seq..(k + 1) * seq].copy_from_slice(yi);
            starts[k * seq..(k + 1) * seq].copy_from_slice(si);
        }
        self.ws.doc_starts = Some(starts);
    }
}

impl Objective for Sft<'_> {
    fn gradient(&mut self, model: &Llama, grads: &mut [f32], _: At) -> Result<Step> {
        let picked: Vec<usize> = (0..self.micro * self.batch)
            .map(|_| self.rows.next_index())
            .collect();
        let count: usize = picked
            .iter()
            .map(|&r| self.train.row(r).1.iter().filter(|&&t| t != IGNORE).count())
            .sum();
        let scale = 1.0 / count.max(1) as f32;
        let mut sum = 0f64;
        for mb in picked.chunks(self.batch) {
            self.fill(mb);
            sum += model
                .forward_backward(&self.x, &self.y, &mut *grads, scale, &mut self.ws)
                .0;
        }
        // Routed experts keep balancing through fine-tuning, as through pretraining.
        self.load = self.ws.take_expert_load();
        Ok(Step {
            loss: sum / count.max(1) as f64,
            tokens: (self.micro * self.batch * self.seq) as u64,
            flops: self.flops_per_step,
            line: format!(" | {count} targets | epoch {}", self.rows.cursor().epoch),
            fields: serde_json::json!({"targets": count}),
            ..Step::default()
        })
    }

    fn after_update(&mut self, model: &mut Llama, _: Update) {
        model.balance_experts(&self.load);
    }

    fn cursor(&self) -> Cursor {
        self.rows.cursor()
    }

    fn evaluate(&mut self, model: &Llama, _: &mut Log) -> Result<Option<Report>> {
        if self.val.rows() == 0 {
            return Ok(None);
        }
        self.val_loss = eval_loss(model, self.val, self.batch);
        Ok(Some(Report {
            line: format!("val loss {:.4}", self.val_loss),
            fields: serde_json::json!({"val_loss": self.val_loss}),
            ..Report::default()
        }))
    }
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
