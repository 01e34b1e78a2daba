//! Pretraining: set up the run directory (or check it on --resume), build the model and the
//! token stream, and train on the one loop (`train::Trainer`) with next-token prediction as the
//! objective: a step accumulates the gradient over this rank's micro-batches, with the MoE
//! balance and multi-token prediction losses beside it; validation bits per byte and text
//! samples are its periodic measures.
//!
//! On several ranks (mpirun, srun, torchrun) each computes the gradient of its slice of the
//! global batch and the loop sums them; rank 0 alone logs, evaluates, samples and writes the
//! run directory. `train.batch_tokens` is the global batch, so a run's arithmetic
//! is the same at any world size and a checkpoint resumes on any number of ranks.

use crate::sample::{generate, SamplingParams};
use base::fs::write_atomic;
use base::{Error, Result};
use bpe::Tokenizer;
use data::loader::{open_splits, validation_windows, Cursor, Loader};
use model::Llama;
use std::path::Path;
use tensor::Rng;
use train::checkpoint;
use train::config::{Config, TrainConfig};
use train::dist::{Collective, Solo};
use train::trainer::Log;
use train::validation::evaluate_with_load;
use train::{At, Objective, Report, Setup, Step, Trainer, Update};

/// What a run reports at its end.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub params: usize,
    pub steps: usize,
    pub tokens: u64,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub final_loss: f64,
    pub val_loss: f64,
    pub val_bpb: f64,
    pub sample: String,
}

/// Runs (or, with `resume`, continues) pretraining of `cfg` in `run`. `log` receives one line
/// per step and every event worth a line.
pub fn pretrain(cfg: &Config, run: &Path, resume: bool, log: impl FnMut(&str)) -> Result<Summary> {
    pretrain_on(&Solo, cfg, run, resume, log)
}

/// `pretrain` as one rank of `comm`: every rank calls it with the same config; rank 0's `log`
/// receives the lines, the others' nothing.
pub fn pretrain_on(
    comm: &dyn Collective,
    cfg: &Config,
    run: &Path,
    resume: bool,
    log: impl FnMut(&str),
) -> Result<Summary> {
    train::dist::agree(comm, "resolved config", &cfg.to_toml())?;
    let data = cfg.data.as_ref().ok_or_else(|| {
        Error::config(
            "config",
            "has no [data] table",
            "add [data] with shards = ... and tokenizer = ...",
        )
    })?;
    let tok = open_tokenizer(cfg, &data.tokenizer)?;
    let (_, train_stream, val_stream) = open_splits(&data.shards, &tok)?;
    let bos = tok.special_id("<|bos|>").ok_or_else(|| {
        Error::input(
            "tokenizer",
            "has no <|bos|>",
            "train the tokenizer with frugal",
        )
    })?;
    if comm.rank() == 0 {
        prepare_run_dir(cfg, run, resume, &tok)?;
    }
    let t = &cfg.train;
    let micro = micro_batches(t, comm.world())?;
    let setup = Setup {
        comm,
        train: t,
        dist: cfg.dist.clone(),
        run,
        dir: run,
        stage: "pretrain",
        after: vec![&data.shards],
        prefix: "",
        resume,
        lora: None,
    };
    let mut tr = Trainer::open(setup, Llama::init(cfg.model.clone(), t.seed), log)?;
    let loader = Loader::new(train_stream, bos, t.seq_len, t.seed, tr.state.cursor)?;
    let val = validation_windows(&val_stream, t.seq_len, t.eval_tokens);
    let mut obj = Pretraining::new(cfg, &tr, loader, val, micro, tok, bos);
    let header = obj.header(&tr);
    header.iter().for_each(|line| tr.log(line));
    let out = tr.run(&mut obj)?;
    let (val_loss, val_bpb) = match out.ran {
        0 => logged_val(&tr.logged()).unwrap_or(obj.last_val),
        _ => obj.last_val,
    };
    let summary = Summary {
        params: tr.model.params.len(),
        steps: out.steps,
        tokens: out.tokens,
        wall_s: out.wall_s,
        tokens_per_s: out.tokens_per_s,
        mfu: out.mfu,
        final_loss: out.final_loss,
        val_loss,
        val_bpb,
        sample: obj.last_sample,
    };
    tr.finish(format!("{} steps", summary.steps))?;
    Ok(summary)
}

/// The run's tokenizer, which must match the model's vocabulary.
fn open_tokenizer(cfg: &Config, path: &Path) -> Result<Tokenizer> {
    let tok = Tokenizer::load(path).map_err(|e| {
        Error::input(
            path.display().to_string(),
            e.to_string(),
            "run `frugal tokenizer train` first",
        )
    })?;
    if tok.vocab_size() != cfg.model.vocab_size {
        return Err(Error::config(
            "model.vocab_size",
            format!(
                "{} differs from the tokenizer's {}",
                cfg.model.vocab_size,
                tok.vocab_size()
            ),
            "set model.vocab_size to the tokenizer's vocabulary size",
        ));
    }
    Ok(tok)
}

/// Micro-batches per rank and step: `batch_tokens` is the global batch, which the ranks share,
/// each accumulating micro-batches of its own.
fn micro_batches(t: &TrainConfig, world: usize) -> Result<usize> {
    let (b, seq) = (t.batch_size, t.seq_len);
    if !t.batch_tokens.is_multiple_of(world * b * seq) {
        return Err(Error::config(
            "train.batch_tokens",
            format!(
                "{} is not a multiple of ranks × batch_size × seq_len = {world} × {b} × {seq}",
                t.batch_tokens
            ),
            "choose batch_tokens, batch_size and the number of ranks to fit",
        ));
    }
    Ok((t.batch_tokens / (world * b * seq)).max(1))
}

/// The newest validation figures in a run's metrics.
fn logged_val(records: &[serde_json::Value]) -> Option<(f64, f64)> {
    records
        .iter()
        .rev()
        .find_map(|v| Some((v["val_loss"].as_f64()?, v["val_bpb"].as_f64()?)))
}

/// Next-token prediction on the token stream: this rank's micro-batches of the global batch,
/// with the MoE balance and multi-token-prediction losses beside it.
struct Pretraining<'a> {
    cfg: &'a Config,
    comm: &'a dyn Collective,
    loader: Loader,
    val: Vec<Vec<u32>>,
    tok: Tokenizer,
    prompt: Vec<u32>,
    bos: u32,
    micro: usize,
    step_tokens: usize,
    flops_per_step: f64,
    ws: model::Workspace,
    x: Vec<u32>,
    y: Vec<u32>,
    /// The step's tokens per routed expert, summed over ranks, for balancing.
    load: Vec<Vec<u64>>,
    last_val: (f64, f64),
    last_sample: String,
}

impl<'a> Pretraining<'a> {
    fn new(
        cfg: &'a Config,
        tr: &Trainer<'a>,
        loader: Loader,
        val: Vec<Vec<u32>>,
        micro: usize,
        tok: Tokenizer,
        bos: u32,
    ) -> Self {
        let t = &cfg.train;
        let (b, seq) = (t.batch_size, t.seq_len);
        let step_tokens = micro * tr.replica.comm().world() * b * seq;
        Pretraining {
            cfg,
            comm: tr.replica.comm(),
            loader,
            val,
            prompt: [vec![bos], tok.encode(&t.sample_prompt)].concat(),
            tok,
            bos,
            micro,
            step_tokens,
            flops_per_step: model::arch::flops_per_token(&cfg.model, seq) * step_tokens as f64,
            ws: tr.model.workspace(b, seq),
            x: vec![0u32; b * seq],
            y: vec![0u32; b * seq],
            load: Vec::new(),
            last_val: (f64::NAN, f64::NAN),
            last_sample: String::new(),
        }
    }

    /// The run's opening lines: the model, the batch, the data, the optimizer's memory.
    fn header(&self, tr: &Trainer) -> [String; 2] {
        let (cfg, t) = (self.cfg, &self.cfg.train);
        let world = self.comm.world();
        let arch = model::Arch::from_model(&cfg.model, t.seq_len).params();
        let active = match arch.active < arch.total {
            true => format!(" ({:.2}M active per token)", arch.active / 1e6),
            false => String::new(),
        };
        let zero = if tr.replica.zero().is_some() {
            ", ZeRO-1"
        } else {
            ""
        };
        let ranks = match world {
            1 => String::new(),
            _ => format!("{world} ranks ({}{zero}) x ", self.comm.backend()),
        };
        let n = tr.model.params.len();
        [
            format!(
                "model {:.2}M params{active} | KV cache {} B/token | {ranks}{} x {} x {} tokens/step | {} windows/epoch | {} val tokens | gemm peak {:.0} GFLOP/s ({} products)",
                n as f64 / 1e6,
                cfg.model.n_layers * cfg.model.kv_floats_per_token() * 4,
                self.micro,
                t.batch_size,
                t.seq_len,
                self.loader.windows_per_epoch(),
                self.val.len() * t.seq_len,
                tr.peak_gflops,
                t.precision.describe()
            ),
            format!(
                "optimizer state {:.2} MiB per rank (the whole state is {:.2} MiB)",
                tr.opt.state_bytes() as f64 / (1 << 20) as f64,
                (2 * n * 4) as f64 / (1 << 20) as f64
            ),
        ]
    }

    /// The step line's and record's expert and MTP figures.
    fn extras(&self, aux: f64, mtp: f64) -> (String, serde_json::Value) {
        let sequences = (self.micro * self.comm.world() * self.cfg.train.batch_size) as f64;
        let imbalance = model::load_imbalance(&self.load);
        let mut line = match imbalance.iter().copied().reduce(f64::max) {
            Some(worst) if aux > 0.0 => format!(
                " | load max/mean {worst:.2} | balance loss {:.2e}",
                aux / sequences
            ),
            Some(worst) => format!(" | load max/mean {worst:.2}"),
            None => String::new(),
        };
        let mut fields = serde_json::json!({});
        if !imbalance.is_empty() {
            // Per MoE layer: max/mean load, and tokens per expert.
            fields["expert_imbalance"] = serde_json::json!(imbalance);
            fields["expert_load"] = serde_json::json!(self
                .load
                .iter()
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>());
            fields["balance_loss"] = serde_json::json!(aux / sequences);
        }
        if self.cfg.model.mtp.is_some() {
            line = format!(" | mtp loss {mtp:.4}{line}");
            fields["mtp_loss"] = serde_json::json!(mtp);
        }
        (line, fields)
    }
}

impl Objective for Pretraining<'_> {
    fn gradient(&mut self, model: &Llama, grads: &mut [f32], _: At) -> Result<Step> {
        let (rank, world) = (self.comm.rank(), self.comm.world());
        let (mut sum, mut aux, mut mtp) = (0f64, 0f64, 0f64);
        let scale = 1.0 / self.step_tokens as f32;
        for _ in 0..self.micro {
            self.loader
                .next_batch_of(&mut self.x, &mut self.y, rank, world);
            sum += model
                .forward_backward(&self.x, &self.y, &mut *grads, scale, &mut self.ws)
                .0;
            aux += self.ws.balance_loss();
            mtp += self.ws.mtp_loss() / (self.micro * world) as f64;
        }
        self.load = self.ws.take_expert_load();
        // The step's loss and expert loads over all ranks: every rank decides alike.
        let mut totals: Vec<f64> = [sum, aux, mtp]
            .into_iter()
            .chain(self.load.iter().flatten().map(|&c| c as f64))
            .collect();
        self.comm.all_reduce_f64(&mut totals)?;
        for (c, total) in self.load.iter_mut().flatten().zip(&totals[3..]) {
            *c = *total as u64;
        }
        let (line, fields) = self.extras(totals[1], totals[2]);
        Ok(Step {
            loss: totals[0] / self.step_tokens as f64,
            tokens: self.step_tokens as u64,
            flops: self.flops_per_step,
            line,
            fields,
            ..Step::default()
        })
    }

    fn after_update(&mut self, model: &mut Llama, _: Update) {
        model.balance_experts(&self.load);
    }

    fn cursor(&self) -> Cursor {
        self.loader.cursor()
    }

    fn evaluate(&mut self, model: &Llama, _: &mut Log) -> Result<Option<Report>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let load;
        (self.last_val, load) =
            evaluate_with_load(model, &self.tok, &self.val, self.cfg.train.batch_size);
        let imbalance = model::load_imbalance(&load);
        let experts = match imbalance.iter().copied().reduce(f64::max) {
            Some(worst) => format!(" | val load max/mean {worst:.2}"),
            None => String::new(),
        };
        let (loss, bpb) = self.last_val;
        let mut fields = serde_json::json!({"val_loss": loss, "val_bpb": bpb});
        if !imbalance.is_empty() {
            fields["val_expert_imbalance"] = serde_json::json!(imbalance);
        }
        Ok(Some(Report {
            line: format!("val loss {loss:.4} | val bpb {bpb:.4}{experts}"),
            fields,
            ..Report::default()
        }))
    }

    fn sample(&mut self, model: &Llama, rng: &mut Rng) -> Option<String> {
        let t = &self.cfg.train;
        let params = SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            ..Default::default()
        };
        let ids = generate(
            model,
            &self.prompt,
            t.sample_tokens,
            params,
            Some(self.bos),
            rng,
        );
        let text = self.tok.decode_lossy(&ids).unwrap_or_default();
        self.last_sample = format!("{}{text}", t.sample_prompt);
        Some(self.last_sample.clone())
    }
}

/// Rank 0's run directory: a new run must not overwrite one; a resumed run must be the same
/// config, but may change [dist]. Then the resolved config and the tokenizer are written.
fn prepare_run_dir(cfg: &Config, run: &Path, resume: bool, tok: &Tokenizer) -> Result<()> {
    let cfg_path = run.join("config.toml");
    if resume {
        let old = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        // Resolved again, so that a field added since the run began, at its default, matches.
        let origin = cfg_path.display().to_string();
        if Config::parse(&old, &origin, &[])?.to_toml_for_resume() != cfg.to_toml_for_resume() {
            return Err(Error::config(
                cfg_path.display().to_string(),
                "the run was made with a different config",
                "resume with the same config and --set overrides, or start a new run directory",
            ));
        }
    } else if !checkpoint::list(run)?.is_empty() {
        return Err(Error::config(
            run.display().to_string(),
            "already holds checkpoints",
            "pass --resume to continue it, or choose a new --run directory",
        ));
    }
    std::fs::create_dir_all(run).map_err(|e| Error::io(run, e))?;
    write_atomic(&cfg_path, cfg.to_toml().as_bytes())?;
    tok.save(&run.join("tokenizer.json")).map_err(|e| {
        Error::input(
            run.display().to_string(),
            e.to_string(),
            "check the run directory is writable",
        )
    })
}
