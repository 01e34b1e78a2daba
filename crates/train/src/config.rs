//! The run configuration: TOML with `[model]`, `[train]`, `[data]` and `[dist]` tables, unknown
//! keys refused, validated into the structs below. `--set section.key=value` overrides apply
//! before validation (`base::config`). The model's own table is `model::config`.

use base::config::Validate;
use base::Result;
use model::config::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Where pretraining reads its tokens (absent for benchmarks on random tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataConfig>,
    /// How ranks talk when the launcher starts several (mpirun, srun, torchrun).
    #[serde(default, skip_serializing_if = "DistConfig::is_default")]
    pub dist: DistConfig,
}

/// Which engine carries the collectives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One process: Solo; launched by mpirun/srun: MPI; by torchrun: NCCL.
    #[default]
    Auto,
    Solo,
    Mpi,
    Nccl,
}

/// `[dist]`: data parallelism across the ranks a launcher starts. None of it changes the
/// arithmetic of a step, so a run may resume with other values (and another world size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    pub backend: Backend,
    /// ZeRO stage: 0 replicates the optimizer state on every rank; 1 shards it (reduce-scatter
    /// the gradients, update a 1/world slice, all-gather the parameters).
    pub zero: u8,
    /// Gradients travel in buckets of this many MiB, in a fixed order.
    pub bucket_mb: f64,
    /// A collective that waits longer than this (a rank died or hung) ends the run.
    pub timeout_s: f64,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            backend: Backend::Auto,
            zero: 0,
            bucket_mb: 25.0,
            timeout_s: 300.0,
        }
    }
}

impl DistConfig {
    fn is_default(&self) -> bool {
        *self == DistConfig::default()
    }

    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.zero > 1 {
            return Err(("dist.zero", format!("{} is not 0 or 1", self.zero)));
        }
        if !(self.bucket_mb > 0.0 && self.bucket_mb.is_finite()) {
            return Err(("dist.bucket_mb", "must be a positive number".into()));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            return Err(("dist.timeout_s", "must be a positive number".into()));
        }
        Ok(())
    }
}

/// Inputs of `frugal pretrain`: the output of `frugal data tokenize` and its tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Directory holding manifest.json and the shards.
    pub shards: std::path::PathBuf,
    /// The tokenizer.json the shards were made with.
    pub tokenizer: std::path::PathBuf,
}

/// Learning-rate schedule after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Cosine decay to min_lr_frac · lr at the last step.
    Cosine,
    /// Warmup-stable-decay: constant, then linear decay to min_lr_frac over the last decay_frac.
    Wsd,
}

/// Precision of a training step's large matrix products. Master weights, gradients, optimizer
/// state, activations and accumulation are f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    /// Operands rounded to bf16, products accumulated in f32 (AVX-512 BF16 CPUs).
    Bf16,
    /// bf16 where this CPU has AVX-512 BF16, else f32: decided on each machine a run (or a
    /// resumption of it) starts on.
    Auto,
}

impl Precision {
    /// The config's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        }
    }

    /// What runs on this machine: `Auto` becomes `Bf16` or `F32`.
    pub fn on_this_cpu(self) -> Precision {
        match self {
            Precision::Auto if tensor::matmul::bf16::available() => Precision::Bf16,
            Precision::Auto => Precision::F32,
            p => p,
        }
    }

    /// "bf16", "f32", or for `Auto` what it chose: "bf16 (auto)".
    pub fn describe(self) -> String {
        match self {
            Precision::Auto => format!("{} (auto)", self.on_this_cpu().name()),
            p => p.name().to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
    /// Muon for the hidden matrices, AdamW for embeddings, head and norms.
    Muon,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Tokens per sequence (≤ model.context_len).
    pub seq_len: usize,
    pub optimizer: OptimizerKind,
    /// "f32", or "bf16": the projections', head's and weight gradients' products in bf16.
    pub precision: Precision,
    /// Peak AdamW learning rate.
    pub lr: f32,
    /// Peak AdamW rate of the token embedding, which then is not decayed (nanochat's
    /// embedding_lr: a row moves only when its token occurs, so it wants a far larger step
    /// than the head). Absent: `lr`, decayed like the other matrices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_lr: Option<f32>,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay of matrices (never of norm weights).
    pub weight_decay: f32,
    /// Learning rate of Muon's matrices (optimizer = "muon").
    pub muon_lr: f32,
    pub muon_momentum: f32,
    pub seed: u64,
    /// Optimizer steps of `frugal pretrain`.
    pub steps: usize,
    /// Tokens per optimizer step; a multiple of batch_size · seq_len (the rest is gradient
    /// accumulation). 0 means one micro-batch per step.
    pub batch_tokens: usize,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_frac: f32,
    /// Fraction of steps in the decay phase of the WSD schedule.
    pub decay_frac: f32,
    /// Clip the global gradient norm to this value (0 disables clipping).
    pub grad_clip: f32,
    /// Validation every this many steps (0: only at the end), on this many tokens.
    pub eval_every: usize,
    pub eval_tokens: usize,
    /// A sample from `sample_prompt` every this many steps (0: only at the end).
    pub sample_every: usize,
    pub sample_prompt: String,
    pub sample_tokens: usize,
    /// A checkpoint every this many steps (and at the end); the last `keep_checkpoints` are kept.
    pub checkpoint_every: usize,
    pub keep_checkpoints: usize,
    /// Loss guard: a loss above spike_factor × its running average (or not finite) skips the
    /// update; more than max_bad_steps such steps in a row roll back to the last checkpoint.
    pub spike_factor: f32,
    pub max_bad_steps: usize,
}

/// What a config leaves out. `batch_size`, `seq_len` and `lr` have no sensible default: left
/// at 0 they fail validation, which names them.
impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 0,
            seq_len: 0,
            optimizer: OptimizerKind::Adamw,
            precision: Precision::F32,
            lr: 0.0,
            embed_lr: None,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            muon_lr: 0.02,
            muon_momentum: 0.95,
            seed: 0,
            steps: 1000,
            batch_tokens: 0,
            schedule: Schedule::Cosine,
            warmup_steps: 0,
            min_lr_frac: 0.1,
            decay_frac: 0.2,
            grad_clip: 1.0,
            eval_every: 250,
            eval_tokens: 1 << 16,
            sample_every: 0,
            sample_prompt: "The".into(),
            sample_tokens: 48,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            spike_factor: 4.0,
            max_bad_steps: 3,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let t = self;
        for (field, v) in [
            ("train.batch_size", t.batch_size),
            ("train.seq_len", t.seq_len),
        ] {
            if v == 0 {
                return Err((field, "must be set, to at least 1".into()));
            }
        }
        let positive = |x: f32| x > 0.0 && x.is_finite();
        for (field, ok) in [
            ("train.lr", positive(t.lr)),
            ("train.muon_lr", positive(t.muon_lr)),
            ("train.embed_lr", t.embed_lr.is_none_or(positive)),
            ("train.eps", positive(t.eps)),
        ] {
            if !ok {
                return Err((field, "must be set, to a positive finite number".into()));
            }
        }
        if !t.batch_tokens.is_multiple_of(t.batch_size * t.seq_len) {
            return Err((
                "train.batch_tokens",
                format!(
                    "{} is not a multiple of batch_size × seq_len = {}",
                    t.batch_tokens,
                    t.batch_size * t.seq_len
                ),
            ));
        }
        if t.steps == 0 || t.warmup_steps > t.steps {
            return Err((
                "train.warmup_steps",
                format!(
                    "{} must not exceed steps {} (and steps must be at least 1)",
                    t.warmup_steps, t.steps
                ),
            ));
        }
        if !(0.0..=1.0).contains(&t.min_lr_frac)
            || !(0.0..=1.0).contains(&t.decay_frac)
            || t.grad_clip < 0.0
            || t.spike_factor <= 1.0
        {
            return Err((
                "train.min_lr_frac",
                "min_lr_frac and decay_frac must be in [0, 1], grad_clip ≥ 0, spike_factor > 1"
                    .into(),
            ));
        }
        if t.weight_decay < 0.0 || !t.weight_decay.is_finite() {
            return Err(("train.weight_decay", "must be zero or positive".into()));
        }
        let unit = |x: f32| (0.0..1.0).contains(&x);
        for (field, v) in [
            ("train.beta1", t.beta1),
            ("train.beta2", t.beta2),
            ("train.muon_momentum", t.muon_momentum),
        ] {
            if !unit(v) {
                return Err((field, format!("{v} is not in [0, 1)")));
            }
        }
        Ok(())
    }
}

impl Validate for Config {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let (m, t) = (&self.model, &self.train);
        m.validate()?;
        t.validate()?;
        self.dist.validate()?;
        if t.seq_len > m.context_len {
            return Err((
                "train.seq_len",
                format!("{} exceeds model.context_len {}", t.seq_len, m.context_len),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Reads `path`, applies `overrides` ("section.key=value", value in TOML syntax; bare words
    /// are taken as strings), and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        base::config::load(path, overrides)
    }

    /// A config built into the binary: "tiny" (tests) or "ref" (benchmark).
    pub fn preset(name: &str, overrides: &[String]) -> Result<Self> {
        let text = model::config::preset_text(name)?;
        Self::parse(text, &format!("preset {name}"), overrides)
    }

    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        base::config::parse(text, origin, overrides)
    }

    /// The resolved config without `[dist]`: what a resumed run must match (the ranks and how
    /// they talk may change between sessions; the training arithmetic may not).
    pub fn to_toml_for_resume(&self) -> String {
        Config {
            dist: DistConfig::default(),
            ..self.clone()
        }
        .to_toml()
    }

    /// The fully resolved config as TOML, for run directories.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_round_trip() {
        let tiny = Config::preset("tiny", &[]).unwrap();
        assert_eq!(tiny.model.n_kv_heads, 2);
        let again = Config::parse(&tiny.to_toml(), "round trip", &[]).unwrap();
        assert_eq!(tiny, again);
        let r = Config::preset("ref", &[]).unwrap();
        assert_eq!(
            (r.model.d_model, r.model.n_layers, r.train.batch_size),
            (384, 6, 8)
        );
    }

    #[test]
    fn overrides_apply_and_are_validated() {
        let c = Config::preset(
            "tiny",
            &["train.lr=0.5".into(), "train.optimizer=muon".into()],
        )
        .unwrap();
        assert_eq!((c.train.lr, c.train.optimizer), (0.5, OptimizerKind::Muon));
        let e = Config::preset("tiny", &["model.n_kv_heads=3".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.n_kv_heads") && e.contains("HINT"), "{e}");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let text = include_str!("../../../configs/tiny.toml").replace("d_model", "d_modle");
        let e = Config::parse(&text, "x.toml", &[]).unwrap_err().to_string();
        assert!(e.contains("x.toml, line 6") && e.contains("d_modle"), "{e}");
        let text = include_str!("../../../configs/tiny.toml")
            .replace("n_layers = 2", "n_layers = \"two\"");
        let e = Config::parse(&text, "x.toml", &[]).unwrap_err().to_string();
        assert!(e.contains("n_layers") || e.contains("invalid type"), "{e}");
        let e = Config::parse("[model]\nvocab_size = 1", "y.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field"), "{e}");
        assert!(Config::preset("nope", &[]).is_err());
    }

    #[test]
    fn moe_tables_are_checked() {
        let moe = Config::preset("tiny-moe", &[]).unwrap();
        assert_eq!(moe.model.moe_at(0), None, "the first layer stays dense");
        assert_eq!(moe.model.moe_at(1).unwrap().top_k, 2);
        assert_eq!(moe.model.dense_hidden(1), 16);
        let again = Config::parse(&moe.to_toml(), "round trip", &[]).unwrap();
        assert_eq!(moe, again);
        for (set, field) in [
            ("model.moe.top_k=5", "model.moe.top_k"),
            ("model.moe.top_k=0", "model.moe.top_k"),
            ("model.moe.dense_layers=2", "model.moe.dense_layers"),
            ("model.moe.bias_update=-1", "model.moe.route_scale"),
            ("model.mlp=swiglu", "model.moe"),
        ] {
            let e = Config::preset("tiny-moe", &[set.into()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{set}: {e}");
        }
        let e = Config::preset("tiny", &["model.mlp=moe".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[model.moe]"), "{e}");
    }
}
