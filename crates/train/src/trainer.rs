//! The one training loop. A stage (pretraining, SFT, reward model, DPO, GRPO) is an
//! `Objective`: what a step's gradient is and what its held-out measure is. The `Trainer` does
//! everything else, the same way for all of them: resume from the newest checkpoint, the
//! learning-rate schedule, the loss guard (skip a bad step, roll back after too many), the
//! gradient sum across ranks, clipping by the global norm, the optimizer update, the step line
//! and metrics.jsonl, the ledger's meter, and the cadence of evaluation, samples and
//! checkpoints. A step reads as its phases:
//!
//! ```text
//! gradient → LossGuard::check → clip_and_update → advance → step_line → periodic
//! ```
//!
//! On several ranks each holds a `Trainer` over the same `Collective`; rank 0 alone logs,
//! evaluates, samples, bills and writes the run directory (see `ranks` for checkpoints).

use crate::checkpoint::TrainState;
use crate::clock::{due, LoopClock};
use crate::config::{DistConfig, TrainConfig};
use crate::dist::{Collective, Replica};
use crate::faults::Faults;
use crate::lora::Adapters;
use crate::optim::Optimizer;
use crate::ranks;
use crate::schedule::lr_scale;
use crate::step::open_metrics;
use base::{Error, Result};
use data::loader::Cursor;
use ledger::Meter;
use model::Llama;
use rayon::prelude::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tensor::ops::adamw::AdamWHyper;
use tensor::Rng;

/// Where a line of the run's log goes.
pub type Log<'a> = dyn FnMut(&str) + 'a;

/// Which pass of which step the objective is asked for.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// Optimizer steps done before this one.
    pub step: usize,
    /// The update within the step, below `Objective::updates_per_step`.
    pub round: usize,
}

/// What one gradient pass reports to the loop.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// The loss the guard watches and the log shows.
    pub loss: f64,
    /// Tokens trained on (tokens/s, the tokens-seen count).
    pub tokens: u64,
    /// Model FLOPs the pass spent, sampling included (ledger and MFU).
    pub flops: f64,
    /// Tokens fed only to sample (billed, not trained on).
    pub sampled: u64,
    /// Σ g² of gradients the objective keeps outside the model (a reward head), so that the
    /// clipping norm is the global one.
    pub outside_sum_sq: f64,
    /// The stage's own figures: appended to the step line (" | margin 0.12 | acc 0.50") ...
    pub line: String,
    /// ... and merged into the step's metrics.jsonl record (a JSON object).
    pub fields: Value,
}

/// A periodic measure (held-out loss, accuracy): a log line, its metrics record and its bill.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub line: String,
    pub fields: Value,
    pub tokens: u64,
    pub flops: f64,
}

/// The update just applied: what an objective's own parameters (a reward head) follow.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub step: usize,
    /// The schedule's factor on the learning rate.
    pub lr_scale: f32,
    /// The factor gradients were scaled by to clip the global norm (1: not clipped).
    pub clip: f32,
}

/// A stage's part of training. Only `gradient` is required.
pub trait Objective {
    /// Accumulates the gradient of the step's loss into `grads` (zeroed) for `model`.
    fn gradient(&mut self, model: &Llama, grads: &mut [f32], at: At) -> Result<Step>;

    /// Gradient-and-update rounds per step on one batch (PPO-style epochs; GRPO's μ).
    fn updates_per_step(&self) -> usize {
        1
    }

    /// Whether a loss far above its running mean is a fault. False for losses without a
    /// scale to compare against (a policy-gradient surrogate near 0); non-finite losses are
    /// always faults.
    fn watch_spikes(&self) -> bool {
        true
    }

    /// After the model's update: the objective's own parameters, expert balancing.
    fn after_update(&mut self, _model: &mut Llama, _update: Update) {}

    /// Where the objective's data stream stands (saved in checkpoints).
    fn cursor(&self) -> Cursor {
        Cursor::default()
    }

    /// The held-out measure, every `train.eval_every` steps and at the end (rank 0).
    fn evaluate(&mut self, _model: &Llama, _log: &mut Log) -> Result<Option<Report>> {
        Ok(None)
    }

    /// A text sample, every `train.sample_every` steps and at the end (rank 0).
    fn sample(&mut self, _model: &Llama, _rng: &mut Rng) -> Option<String> {
        None
    }

    /// Tensors besides the model and its moments a checkpoint must hold.
    fn extra_tensors(&self) -> Vec<(&'static str, &[f32])> {
        Vec::new()
    }

    /// Loads those tensors from `checkpoint` (on resume and rollback).
    fn restore_extra(&mut self, _checkpoint: &Path) -> Result<()> {
        Ok(())
    }
}

/// Where and how a stage trains.
pub struct Setup<'a> {
    pub comm: &'a dyn Collective,
    pub train: &'a TrainConfig,
    /// `[dist]`: the default for stages that run in one process.
    pub dist: DistConfig,
    /// The run directory, whose ledger.json bills the stage.
    pub run: &'a Path,
    /// Where checkpoints and metrics.jsonl go (the run, or RUN/sft, RUN/dpo, …).
    pub dir: &'a Path,
    /// The ledger's name for the stage.
    pub stage: &'a str,
    /// Ledgers whose stages come before this one (the data's).
    pub after: Vec<&'a Path>,
    /// Starts each step line ("sft " → "sft step 12 | …").
    pub prefix: &'a str,
    pub resume: bool,
    /// Tune LoRA adapters on the frozen model instead of its weights: the `[lora]` table and
    /// the checkpoint the model was loaded from (which adapter checkpoints name as their base).
    pub lora: Option<(&'a crate::lora::LoraConfig, &'a Path)>,
}

/// What a finished loop reports.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub steps: usize,
    /// Steps this invocation ran (0 when resumed after the last).
    pub ran: usize,
    pub tokens: u64,
    pub wall_s: f64,
    /// Median over steps, from metrics.jsonl when this invocation ran none.
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub final_loss: f64,
}

/// The loss guard: a step whose loss is not finite, or above `spike_factor` × its running
/// mean, skips its update; more than `max_bad_steps` in a row roll back to the last
/// checkpoint; diverging again at a step already rolled back from twice is an error.
#[derive(Default)]
struct LossGuard {
    bad_streak: usize,
    rollbacks: Vec<usize>,
}

impl LossGuard {
    /// Why this step's `loss` must not update the model, if it must not.
    fn check(
        &self,
        t: &TrainConfig,
        state: &TrainState,
        loss: f64,
        spikes: bool,
    ) -> Option<String> {
        let step = state.step;
        if !loss.is_finite() {
            return Some(format!("loss is {loss}"));
        }
        let ema = state.loss_ema?;
        (spikes && step >= t.warmup_steps.max(10) && loss > t.spike_factor as f64 * ema).then(
            || {
                format!(
                    "loss {loss:.4} > {} x running mean {ema:.4}",
                    t.spike_factor
                )
            },
        )
    }
}

/// The loop's state for one stage; see the module's comment.
pub struct Trainer<'a> {
    pub model: Llama,
    pub opt: Optimizer,
    pub state: TrainState,
    pub replica: Replica<'a>,
    /// Rank 0's measured GEMM peak (NaN elsewhere), the denominator of MFU.
    pub peak_gflops: f64,
    setup: Setup<'a>,
    log: Box<Log<'a>>,
    meter: Option<Meter>,
    metrics: Option<(PathBuf, std::fs::File)>,
    clock: LoopClock,
    guard: LossGuard,
    faults: Faults,
    grads: Vec<f32>,
    /// The adapters trained instead of the model's weights, with `Setup::lora`.
    lora: Option<Adapters>,
    resumed_from: Option<PathBuf>,
    /// This invocation's steps: milliseconds and tokens.
    step_ms: Vec<f64>,
    step_tokens: Vec<f64>,
    step_flops: Vec<f64>,
    last_loss: f64,
    /// bf16 products while the trainer lives, where `train.precision` asks for them.
    _precision: Option<tensor::matmul::Bf16Products>,
}

impl<'a> Trainer<'a> {
    /// Sets up training of `model`: its optimizer (this rank's shard under ZeRO-1), the newest
    /// checkpoint of `setup.dir` when resuming, metrics.jsonl, the GEMM peak and the meter.
    /// `log` receives rank 0's lines.
    pub fn open(
        setup: Setup<'a>,
        mut model: Llama,
        mut log: impl FnMut(&str) + 'a,
    ) -> Result<Self> {
        let (t, comm) = (setup.train, setup.comm);
        let faults = Faults::from_env()?;
        // Before the GEMM peak is measured, so that MFU divides by the peak of this precision.
        let precision = crate::precision(t)?;
        let lead = comm.rank() == 0;
        let mut log: Box<Log<'a>> = Box::new(move |line: &str| {
            if lead {
                log(line)
            }
        });
        let unsplittable = crate::optim::unsplittable(t, &model.params);
        let replica = Replica::new(comm, &setup.dist, model.params.len(), &unsplittable);
        let mut lora = open_adapters(&setup, &mut model, &mut log)?;
        // With adapters the model's weights are frozen: its optimizer holds no state.
        let shard = match lora {
            Some(_) => 0..0,
            None => replica.owned(),
        };
        let mut opt = Optimizer::new_shard(t, &model.params, shard);
        let mut state = fresh_state(t);
        let mut resumed_from = None;
        if setup.resume {
            let restored = match lora.as_mut() {
                Some(ad) => restore_adapters(setup.dir, ad, &mut model)?,
                None => ranks::restore(&replica, setup.dir, t, &mut model, &mut opt)?,
            };
            if let Some((dir, restored)) = restored {
                log(&format!(
                    "resumed from {} (step {})",
                    dir.display(),
                    restored.step
                ));
                state = restored;
                resumed_from = Some(dir);
            }
        }
        let metrics = match lead {
            true => {
                let path = setup.dir.join("metrics.jsonl");
                Some((path.clone(), open_metrics(&path, state.step)?))
            }
            false => None,
        };
        // Rank 0's figure is the one logged and billed; a bench on every rank at once would
        // only compete for the cores it measures.
        let peak_gflops = match lead {
            true => tensor::peak::bench_gemm(5).peak_gflops,
            false => f64::NAN,
        };
        let meter = match lead && state.step < t.steps {
            true => Some(
                Meter::start_after(setup.run, setup.stage, Some(peak_gflops), &setup.after)?
                    .ranks(comm.world()),
            ),
            false => None,
        };
        Ok(Trainer {
            grads: vec![0f32; model.trainable_len()],
            lora,
            clock: LoopClock::start(&state),
            model,
            opt,
            state,
            replica,
            peak_gflops,
            setup,
            log,
            meter,
            metrics,
            guard: LossGuard::default(),
            faults,
            resumed_from,
            step_ms: Vec::new(),
            step_tokens: Vec::new(),
            step_flops: Vec::new(),
            last_loss: f64::NAN,
            _precision: precision,
        })
    }

    /// A line for the run's log (rank 0's).
    pub fn log(&mut self, line: &str) {
        (self.log)(line)
    }

    /// The model and the log at once, for work outside the steps that reports as it goes
    /// (a reference model's evaluation on the trained model's frozen base).
    pub fn model_and_log(&mut self) -> (&Llama, &mut Log<'a>) {
        (&self.model, &mut *self.log)
    }

    /// Bills work done outside the steps (a frozen reference's pass): `tokens` through the
    /// model, `flops` model FLOPs.
    pub fn bill(&mut self, tokens: u64, flops: f64) -> Result<()> {
        match self.meter.as_mut() {
            Some(m) => {
                m.add(tokens, flops);
                m.save_every(30.0)
            }
            None => Ok(()),
        }
    }

    /// Trains to `train.steps`.
    pub fn run(&mut self, obj: &mut impl Objective) -> Result<Outcome> {
        if let Some(dir) = &self.resumed_from {
            obj.restore_extra(dir)?;
        }
        let mut sample_rng = Rng::from_state(self.state.sample_rng);
        while self.state.step < self.setup.train.steps {
            let t0 = Instant::now();
            let Some((step, norm, lr)) = self.step(obj)? else {
                continue;
            };
            self.step_line(&step, norm, lr, t0)?;
            self.periodic(obj, &mut sample_rng)?;
        }
        if self.setup.comm.world() > 1 {
            let world = self.setup.comm.world();
            let hash = ranks::check_identical(self.setup.comm, &self.model.params.data)?;
            self.log(&format!(
                "parameters identical on all {world} ranks (fnv64 {hash:016x})"
            ));
        }
        Ok(self.outcome())
    }

    /// One step: the objective's gradient, the guard, then clip and update, as many rounds as
    /// the objective asks. None when the guard skipped the step or rolled back.
    fn step(&mut self, obj: &mut impl Objective) -> Result<Option<(Step, f64, f32)>> {
        let t = self.setup.train;
        let at_step = self.state.step;
        self.faults.before_step(self.setup.comm.rank(), at_step);
        let lr = lr_scale(t, at_step);
        let mut total = Step::default();
        let mut norm = 0.0;
        for round in 0..obj.updates_per_step() {
            self.grads.fill(0.0);
            if let Some(lora) = self.model.lora_mut() {
                // The step's dropout masks follow from the seed and the step, as on resume.
                use tensor::ops::dropout::subkey;
                lora.reseed(subkey(subkey(t.seed, at_step as u64), round as u64));
            }
            let s = obj.gradient(
                &self.model,
                &mut self.grads,
                At {
                    step: at_step,
                    round,
                },
            )?;
            self.bill(s.tokens + s.sampled, s.flops)?;
            let loss = match self.faults.nan_loss(at_step + 1) {
                true => f64::NAN,
                false => s.loss,
            };
            if let Some(why) = self.guard.check(t, &self.state, loss, obj.watch_spikes()) {
                self.bad_step(obj, &why)?;
                return Ok(None);
            }
            norm = self.clip_and_update(obj, &s, lr)?;
            total = Step {
                tokens: total.tokens + s.tokens,
                flops: total.flops + s.flops,
                sampled: total.sampled + s.sampled,
                ..s
            };
        }
        self.guard.bad_streak = 0;
        self.advance(obj, &total);
        Ok(Some((total, norm, lr)))
    }

    /// Sums the ranks' gradients (this rank's shard, under ZeRO-1), clips by the global norm,
    /// updates what this rank owns and shares the updated shards. Returns the norm.
    fn clip_and_update(&mut self, obj: &mut impl Objective, s: &Step, lr: f32) -> Result<f64> {
        let t = self.setup.train;
        if let Some(ad) = self.lora.as_mut() {
            let sum_sq: f64 = self.grads.iter().map(|&g| g as f64 * g as f64).sum();
            let norm = (sum_sq + s.outside_sum_sq).sqrt();
            let clip = clip_factor(t, norm);
            let hyper = AdamWHyper {
                lr: t.lr * lr,
                beta1: t.beta1,
                beta2: t.beta2,
                eps: t.eps,
                weight_decay: t.weight_decay,
            };
            ad.update(&mut self.grads, &hyper, clip);
            ad.install(&mut self.model);
            let update = Update {
                step: self.state.step,
                lr_scale: lr,
                clip,
            };
            obj.after_update(&mut self.model, update);
            return Ok(norm);
        }
        let own = self.replica.owned();
        self.replica.sync_grads(&mut self.grads)?;
        let norm = match self.replica.grad_norm(&self.grads)? {
            n if s.outside_sum_sq > 0.0 => (n.powi(2) + s.outside_sum_sq).sqrt(),
            n => n,
        };
        let clip = clip_factor(t, norm);
        if clip < 1.0 {
            self.grads[own.clone()]
                .par_iter_mut()
                .for_each(|g| *g *= clip);
        }
        self.opt.update(
            &mut self.model.params.data[own.clone()],
            &self.grads[own],
            lr,
        );
        self.replica.all_gather(&mut self.model.params.data, None)?;
        let step = self.state.step;
        obj.after_update(
            &mut self.model,
            Update {
                step,
                lr_scale: lr,
                clip,
            },
        );
        Ok(norm)
    }

    /// The state after a good step.
    fn advance(&mut self, obj: &impl Objective, s: &Step) {
        let state = &mut self.state;
        state.loss_ema = Some(state.loss_ema.map_or(s.loss, |e| 0.9 * e + 0.1 * s.loss));
        state.tokens_seen += s.tokens;
        state.step += 1;
        state.cursor = obj.cursor();
        self.last_loss = s.loss;
    }

    /// A step the guard refused: logged and skipped, or, after too many in a row, a rollback
    /// to the newest checkpoint that keeps moving through the data (replaying the same
    /// batches would replay the fault).
    fn bad_step(&mut self, obj: &mut impl Objective, why: &str) -> Result<()> {
        let t = self.setup.train;
        let (prefix, step) = (self.setup.prefix, self.state.step);
        self.guard.bad_streak += 1;
        let streak = self.guard.bad_streak;
        self.log(&format!(
            "{prefix}step {} | loss guard: {why}; update skipped ({streak} in a row)",
            step + 1
        ));
        self.emit(json!({"step": step + 1, "skipped": why}))?;
        if streak <= t.max_bad_steps {
            self.state.step += 1;
            return Ok(());
        }
        self.guard.bad_streak = 0;
        if self.guard.rollbacks.iter().filter(|&&s| s == step).count() >= 2 {
            return Err(Error::input(
                self.setup.dir.display().to_string(),
                format!(
                    "the loss diverged at step {} again after two rollbacks",
                    step + 1
                ),
                "lower train.lr, raise train.warmup_steps, or check the data around this point",
            ));
        }
        let restored = match self.lora.as_mut() {
            Some(ad) => restore_adapters(self.setup.dir, ad, &mut self.model)?,
            None => ranks::restore(
                &self.replica,
                self.setup.dir,
                t,
                &mut self.model,
                &mut self.opt,
            )?,
        };
        let Some((dir, restored)) = restored else {
            self.log("loss guard: no checkpoint to roll back to yet; continuing");
            return Ok(());
        };
        obj.restore_extra(&dir)?;
        self.guard.rollbacks.push(step);
        let s = &self.state;
        self.state = TrainState {
            cursor: obj.cursor(),
            sample_rng: s.sample_rng,
            tokens_seen: s.tokens_seen,
            elapsed_s: s.elapsed_s,
            ..restored
        };
        self.log(&format!(
            "loss guard: {streak} bad steps in a row; rolled back to {} (step {})",
            dir.display(),
            self.state.step
        ));
        Ok(())
    }

    /// The step's line in the log and its record in metrics.jsonl. Steps are numbered by how
    /// many updates are done, as checkpoints are.
    fn step_line(&mut self, s: &Step, norm: f64, lr: f32, t0: Instant) -> Result<()> {
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.step_ms.push(ms);
        self.step_tokens.push(s.tokens as f64);
        self.step_flops.push(s.flops);
        let tps = s.tokens as f64 / (ms / 1e3);
        let mfu = s.flops / (ms / 1e3) / 1e9 / self.peak_gflops;
        let lr = self.setup.train.lr * lr;
        let dollars = self.meter.as_ref().map_or(0.0, |m| m.dollars());
        let (step, loss) = (self.state.step, s.loss);
        self.log(&format!(
            "{}step {step} | loss {loss:.4} | lr {lr:.2e} | {ms:.0} ms | {tps:.0} tok/s | mfu {:.0}% | grad norm {norm:.3}{} | ${dollars:.4}",
            self.setup.prefix,
            100.0 * mfu,
            s.line
        ));
        let mut record = json!({"step": step, "loss": loss, "lr": lr, "ms": ms, "tok_s": tps, "mfu": mfu, "grad_norm": norm});
        merge(&mut record, &s.fields);
        self.emit(record)
    }

    /// What falls on this step: evaluation and a sample (rank 0), a checkpoint.
    fn periodic(&mut self, obj: &mut impl Objective, sample_rng: &mut Rng) -> Result<()> {
        let (t, step) = (self.setup.train, self.state.step);
        let lead = self.setup.comm.rank() == 0;
        let prefix = self.setup.prefix;
        if lead && due(step, t.steps, t.eval_every) {
            if let Some(r) = obj.evaluate(&self.model, &mut *self.log)? {
                self.bill(r.tokens, r.flops)?;
                self.log(&format!("{prefix}step {step} | {}", r.line));
                let mut record = json!({"step": step});
                merge(&mut record, &r.fields);
                self.emit(record)?;
            }
        }
        if lead && due(step, t.steps, t.sample_every) {
            if let Some(text) = obj.sample(&self.model, sample_rng) {
                self.log(&format!("{prefix}step {step} | sample: {text:?}"));
            }
        }
        if due(step, t.steps, t.checkpoint_every) {
            self.state.sample_rng = sample_rng.state();
            self.checkpoint(obj)?;
        }
        Ok(())
    }

    /// Bills, then checkpoints: killed between the two, the ledger bills steps that will be
    /// redone (and billed again), which they were; never the reverse.
    fn checkpoint(&mut self, obj: &impl Objective) -> Result<()> {
        self.state.elapsed_s = self.clock.wall_s();
        if let Some(m) = &self.meter {
            m.save()?;
        }
        let comm = self.setup.comm;
        if comm.world() > 1 {
            ranks::check_identical(comm, &self.model.params.data)?;
        }
        let (t, dir) = (self.setup.train, self.setup.dir);
        let extra = obj.extra_tensors();
        if let Some(ad) = &self.lora {
            let dir =
                crate::checkpoint::save_adapters(dir, ad, &self.state, t.keep_checkpoints, &extra)?;
            let (prefix, step) = (self.setup.prefix, self.state.step);
            self.log(&format!(
                "{prefix}step {step} | checkpoint {} (adapters)",
                dir.display()
            ));
            return Ok(());
        }
        let saved = ranks::save(
            &mut self.replica,
            dir,
            t,
            &self.model,
            &self.opt,
            &self.state,
            &extra,
        )?;
        if let Some(dir) = saved {
            let (prefix, step) = (self.setup.prefix, self.state.step);
            self.log(&format!(
                "{prefix}step {step} | checkpoint {}",
                dir.display()
            ));
        }
        Ok(())
    }

    fn emit(&mut self, record: Value) -> Result<()> {
        match self.metrics.as_mut() {
            Some((path, f)) => writeln!(f, "{record}").map_err(|e| Error::io(&*path, e)),
            None => Ok(()),
        }
    }

    /// Closes the meter with `detail` (what the stage did, for the ledger).
    pub fn finish(self, detail: String) -> Result<()> {
        match self.meter {
            Some(mut m) => {
                m.detail(detail);
                m.finish().map(drop)
            }
            None => Ok(()),
        }
    }

    /// The run's figures. A run resumed after its last step did no work now: they come from
    /// its metrics instead.
    fn outcome(&self) -> Outcome {
        let ran = self.step_ms.len();
        let (mut ms, mut tokens, mut mfus) =
            (self.step_ms.clone(), self.step_tokens.clone(), Vec::new());
        let mut final_loss = self.last_loss;
        if ms.is_empty() {
            for v in self.logged() {
                if let (Some(m), Some(tps)) = (v["ms"].as_f64(), v["tok_s"].as_f64()) {
                    ms.push(m);
                    tokens.push(tps * m / 1e3);
                }
                mfus.extend(v["mfu"].as_f64());
                final_loss = v["loss"].as_f64().unwrap_or(final_loss);
            }
        }
        let median_ms = base::stats::median(&ms);
        let step_tokens = base::stats::median(&tokens);
        let mfu = match mfus.is_empty() {
            true => {
                base::stats::median(&self.step_flops) / (median_ms / 1e3) / 1e9 / self.peak_gflops
            }
            false => base::stats::median(&mfus),
        };
        Outcome {
            steps: self.state.step,
            ran,
            tokens: self.state.tokens_seen,
            wall_s: self.clock.wall_s(),
            tokens_per_s: if ms.is_empty() {
                0.0
            } else {
                step_tokens / (median_ms / 1e3)
            },
            mfu,
            final_loss,
        }
    }

    /// The records of metrics.jsonl (rank 0; empty elsewhere).
    pub fn logged(&self) -> Vec<Value> {
        let Some((path, _)) = &self.metrics else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The factor that clips a gradient of global `norm` to `train.grad_clip` (1: no clipping).
fn clip_factor(t: &TrainConfig, norm: f64) -> f32 {
    match t.grad_clip > 0.0 && norm > t.grad_clip as f64 {
        true => (t.grad_clip as f64 / norm) as f32,
        false => 1.0,
    }
}

/// The adapters `setup.lora` asks for, on one process, attached to `model` and announced in
/// the log.
fn open_adapters(setup: &Setup, model: &mut Llama, log: &mut Box<Log>) -> Result<Option<Adapters>> {
    let Some((cfg, base)) = setup.lora else {
        return Ok(None);
    };
    if setup.comm.world() > 1 {
        return Err(Error::config(
            "lora",
            "LoRA trains on one process",
            "launch the stage without mpirun/torchrun, or remove the [lora] table",
        ));
    }
    let ad = Adapters::new(cfg, model, base)?;
    ad.attach(model);
    let total = model.params.len();
    log(&format!(
        "LoRA: rank {}, alpha {}, dropout {}, on {}: {} trained parameters ({:.2}% of {total}); the base {} is frozen",
        cfg.rank,
        cfg.alpha,
        cfg.dropout,
        cfg.target_modules.join(", "),
        ad.len(),
        100.0 * ad.len() as f64 / total as f64,
        base.display()
    ));
    Ok(Some(ad))
}

/// The newest adapter checkpoint of `dir` into `ad` and the adapters attached to `model`.
fn restore_adapters(
    dir: &Path,
    ad: &mut Adapters,
    model: &mut Llama,
) -> Result<Option<(PathBuf, TrainState)>> {
    let Some((_, newest)) = crate::checkpoint::list(dir)?.pop() else {
        return Ok(None);
    };
    let state = crate::checkpoint::load_adapters(&newest, ad)?;
    ad.install(model);
    Ok(Some((newest, state)))
}

/// A fresh run's state.
fn fresh_state(t: &TrainConfig) -> TrainState {
    TrainState {
        step: 0,
        cursor: Cursor::default(),
        loss_ema: None,
        sample_rng: Rng::new(t.seed ^ 0x5A).state(),
        tokens_seen: 0,
        elapsed_s: 0.0,
    }
}

/// Adds the fields of the object `more` to the object `record`.
fn merge(record: &mut Value, more: &Value) {
    if let (Some(r), Some(m)) = (record.as_object_mut(), more.as_object()) {
        r.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}
