//! Run configuration: TOML with `[model]` and `[train]` tables, unknown keys refused, validated
//! into the structs below. `--set section.key=value` overrides apply before validation.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Configs built into the binary, so benchmarks and tests run from any directory.
const PRESETS: &[(&str, &str)] = &[
    ("tiny", include_str!("../../../configs/tiny.toml")),
    ("tiny-moe", include_str!("../../../configs/tiny-moe.toml")),
    ("tiny-mtp", include_str!("../../../configs/tiny-mtp.toml")),
    ("tiny-mla", include_str!("../../../configs/tiny-mla.toml")),
    ("ref", include_str!("../../../configs/ref.toml")),
];

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
#[serde(deny_unknown_fields)]
pub struct DistConfig {
    #[serde(default)]
    pub backend: Backend,
    /// ZeRO stage: 0 replicates the optimizer state on every rank; 1 shards it (reduce-scatter
    /// the gradients, update a 1/world slice, all-gather the parameters).
    #[serde(default)]
    pub zero: u8,
    /// Gradients travel in buckets of this many MiB, in a fixed order.
    #[serde(default = "default_bucket_mb")]
    pub bucket_mb: f64,
    /// A collective that waits longer than this (a rank died or hung) ends the run.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Fault injection for tests: rank `fault_rank` exits ("exit") or hangs ("hang") at step
    /// `fault_step` (numbered from 1); 0 disables.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fault_step: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fault_rank: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fault: String,
}

fn default_bucket_mb() -> f64 {
    25.0
}
fn default_timeout_s() -> f64 {
    300.0
}
fn is_zero(x: &usize) -> bool {
    *x == 0
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            backend: Backend::Auto,
            zero: 0,
            bucket_mb: default_bucket_mb(),
            timeout_s: default_timeout_s(),
            fault_step: 0,
            fault_rank: 0,
            fault: String::new(),
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
        if self.fault_step > 0 && !matches!(self.fault.as_str(), "exit" | "hang") {
            return Err((
                "dist.fault",
                format!("{:?} is not \"exit\" or \"hang\"", self.fault),
            ));
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

/// Attention variant, fixed at load time. Multi-head attention is `Gqa` with n_kv_heads = n_heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attention {
    /// Grouped-query attention (Llama 2/3): n_heads query heads share n_kv_heads key/value heads.
    Gqa,
    /// Multi-head latent attention (DeepSeek-V2/V3): keys and values come up from one small
    /// latent per token, and a RoPE key shared by the heads; shaped by the `[model.mla]` table.
    Mla,
}

/// Multi-head latent attention. Each head's query and key are [position-free part (head_dim −
/// rope_dim) | RoPE part (rope_dim)]; its value has head_dim channels. The latent is RMS-normed,
/// and queries come straight from the residual stream (DeepSeek-V2-Lite: no query latent).
/// HF DeepSeek config names in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlaConfig {
    /// Width of the key/value latent, the cache's per-token entry besides the RoPE key
    /// [kv_lora_rank].
    pub kv_rank: usize,
    /// RoPE channels of each query and of the one shared key [qk_rope_head_dim].
    pub rope_dim: usize,
}

/// MLP variant, fixed at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mlp {
    /// down(silu(gate(x)) · up(x)).
    Swiglu,
    /// DeepSeekMoE: shared experts plus top-k of many small routed experts, each a SwiGLU;
    /// shaped by the `[model.moe]` table.
    Moe,
}

/// The mixture-of-experts MLP (DeepSeek-V2/V3's DeepSeekMoE). HF DeepSeek-V3 config names in
/// brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeConfig {
    /// Routed experts per MoE layer [n_routed_experts].
    pub routed_experts: usize,
    /// Routed experts each token uses [num_experts_per_tok].
    pub top_k: usize,
    /// Always-on shared experts [n_shared_experts]; 0 for none.
    #[serde(default = "default_shared_experts")]
    pub shared_experts: usize,
    /// Hidden width of each expert's SwiGLU [moe_intermediate_size].
    pub expert_hidden: usize,
    /// The first this many layers keep the dense MLP of ffn_hidden [first_k_dense_replace].
    #[serde(default)]
    pub dense_layers: usize,
    /// Gates are scaled by this [routed_scaling_factor].
    #[serde(default = "default_route_scale")]
    pub route_scale: f32,
    /// γ of auxiliary-loss-free balancing: after each optimizer step, each expert's selection
    /// bias moves by γ toward balance (up if it got fewer tokens than the mean). 0 disables.
    #[serde(default = "default_bias_update")]
    pub bias_update: f32,
    /// α of the sequence-wise balance loss; 0 (the default) trains without any auxiliary loss.
    #[serde(default)]
    pub balance_loss: f32,
}

impl MoeConfig {
    /// Hidden width of the shared experts taken together: one SwiGLU of this width.
    pub fn shared_hidden(&self) -> usize {
        self.shared_experts * self.expert_hidden
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Number of token ids, including special tokens.
    pub vocab_size: usize,
    /// Longest sequence the model is built for (RoPE table length).
    pub context_len: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    pub n_layers: usize,
    /// Query heads; head_dim = d_model / n_heads.
    pub n_heads: usize,
    /// Key/value heads; divides n_heads.
    pub n_kv_heads: usize,
    /// Hidden width of the SwiGLU MLP.
    pub ffn_hidden: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    /// Standard deviation of the normal initialisation of matrices.
    #[serde(default = "default_init_std")]
    pub init_std: f32,
    #[serde(default = "default_attention")]
    pub attention: Attention,
    #[serde(default = "default_mlp")]
    pub mlp: Mlp,
    /// Required when attention = "mla".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mla: Option<MlaConfig>,
    /// Required when mlp = "moe".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeConfig>,
    /// Multi-token prediction modules (DeepSeek-V3), trained beside the model; none if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtp: Option<MtpConfig>,
}

/// Multi-token prediction (DeepSeek-V3 §2.2): `depth` sequential modules, the k-th predicting
/// the token k + 1 places ahead from the (k − 1)-th's hidden states and the embedding of the
/// token k places ahead. Each is one more decoder layer (with the last layer's MLP kind) and a
/// 2d → d projection; the embedding and the output head are the model's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtpConfig {
    /// Number of modules D [num_nextn_predict_layers].
    pub depth: usize,
    /// λ: the training loss adds λ/D · Σ_k (module k's cross-entropy).
    #[serde(default = "default_mtp_weight")]
    pub weight: f32,
}

/// Precision of a training step's large matrix products. Master weights, gradients, optimizer
/// state, activations and accumulation are f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    /// Operands rounded to bf16, products accumulated in f32 (AVX-512 BF16 CPUs).
    Bf16,
}

impl Precision {
    /// The config's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
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
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Tokens per sequence (≤ model.context_len).
    pub seq_len: usize,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    /// "f32", or "bf16": the projections', head's and weight gradients' products in bf16.
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// Peak AdamW learning rate.
    pub lr: f32,
    #[serde(default = "default_beta1")]
    pub beta1: f32,
    #[serde(default = "default_beta2")]
    pub beta2: f32,
    #[serde(default = "default_eps")]
    pub eps: f32,
    /// Decoupled weight decay of matrices (never of norm weights).
    #[serde(default)]
    pub weight_decay: f32,
    /// Learning rate of Muon's matrices (optimizer = "muon").
    #[serde(default = "default_muon_lr")]
    pub muon_lr: f32,
    #[serde(default = "default_muon_momentum")]
    pub muon_momentum: f32,
    #[serde(default)]
    pub seed: u64,
    /// Optimizer steps of `frugal pretrain`.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Tokens per optimizer step; a multiple of batch_size · seq_len (the rest is gradient
    /// accumulation). 0 means one micro-batch per step.
    #[serde(default)]
    pub batch_tokens: usize,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    #[serde(default)]
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak.
    #[serde(default = "default_min_lr_frac")]
    pub min_lr_frac: f32,
    /// Fraction of steps in the decay phase of the WSD schedule.
    #[serde(default = "default_decay_frac")]
    pub decay_frac: f32,
    /// Clip the global gradient norm to this value (0 disables clipping).
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f32,
    /// Validation every this many steps (0: only at the end), on this many tokens.
    #[serde(default = "default_eval_every")]
    pub eval_every: usize,
    #[serde(default = "default_eval_tokens")]
    pub eval_tokens: usize,
    /// A sample from `sample_prompt` every this many steps (0: only at the end).
    #[serde(default)]
    pub sample_every: usize,
    #[serde(default = "default_sample_prompt")]
    pub sample_prompt: String,
    #[serde(default = "default_sample_tokens")]
    pub sample_tokens: usize,
    /// A checkpoint every this many steps (and at the end); the last `keep_checkpoints` are kept.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Loss guard: a loss above spike_factor × its running average (or not finite) skips the
    /// update; more than max_bad_steps such steps in a row roll back to the last checkpoint.
    #[serde(default = "default_spike_factor")]
    pub spike_factor: f32,
    #[serde(default = "default_max_bad_steps")]
    pub max_bad_steps: usize,
    /// Fault injection for tests of the loss guard: the loss of these steps (numbered as in the
    /// log, from 1) is replaced by NaN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject_nan_steps: Vec<usize>,
}

fn default_rope_theta() -> f32 {
    10000.0
}
fn default_norm_eps() -> f32 {
    1e-5
}
fn default_init_std() -> f32 {
    0.02
}
fn default_precision() -> Precision {
    Precision::F32
}
fn default_attention() -> Attention {
    Attention::Gqa
}
fn default_mlp() -> Mlp {
    Mlp::Swiglu
}
fn default_mtp_weight() -> f32 {
    0.3
}
fn default_shared_experts() -> usize {
    1
}
fn default_route_scale() -> f32 {
    1.0
}
fn default_bias_update() -> f32 {
    1e-3
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Adamw
}
fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.95
}
fn default_eps() -> f32 {
    1e-8
}
fn default_muon_lr() -> f32 {
    0.02
}
fn default_muon_momentum() -> f32 {
    0.95
}
fn default_steps() -> usize {
    1000
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_min_lr_frac() -> f32 {
    0.1
}
fn default_decay_frac() -> f32 {
    0.2
}
fn default_grad_clip() -> f32 {
    1.0
}
fn default_eval_every() -> usize {
    250
}
fn default_eval_tokens() -> usize {
    1 << 16
}
fn default_sample_prompt() -> String {
    "The".into()
}
fn default_sample_tokens() -> usize {
    48
}
fn default_checkpoint_every() -> usize {
    500
}
fn default_keep_checkpoints() -> usize {
    2
}
fn default_spike_factor() -> f32 {
    4.0
}
fn default_max_bad_steps() -> usize {
    3
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// The latent attention's shape, when attention = "mla".
    pub fn mla(&self) -> Option<&MlaConfig> {
        match (self.attention, &self.mla) {
            (Attention::Mla, Some(m)) => Some(m),
            _ => None,
        }
    }

    /// Floats one token keeps in one layer's KV cache: its keys and values, or with latent
    /// attention its latent and RoPE key.
    pub fn kv_floats_per_token(&self) -> usize {
        match self.mla() {
            Some(m) => m.kv_rank + m.rope_dim,
            None => 2 * self.n_kv_heads * self.head_dim(),
        }
    }

    /// Multi-token prediction modules (0 without them).
    pub fn mtp_depth(&self) -> usize {
        self.mtp.as_ref().map_or(0, |m| m.depth)
    }

    /// The mixture of experts of `layer`, or None where the layer's MLP is dense. Layers from
    /// n_layers on are the multi-token prediction modules', which take the last layer's kind.
    pub fn moe_at(&self, layer: usize) -> Option<&MoeConfig> {
        match (self.mlp, &self.moe) {
            (Mlp::Moe, Some(m)) if layer >= m.dense_layers => Some(m),
            _ => None,
        }
    }

    /// Width of the layer's dense SwiGLU: ffn_hidden, or the shared experts' in a MoE layer.
    pub fn dense_hidden(&self, layer: usize) -> usize {
        self.moe_at(layer)
            .map_or(self.ffn_hidden, MoeConfig::shared_hidden)
    }
}

impl ModelConfig {
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let m = self;
        let positive = [
            ("model.vocab_size", m.vocab_size),
            ("model.context_len", m.context_len),
            ("model.d_model", m.d_model),
            ("model.n_layers", m.n_layers),
            ("model.n_heads", m.n_heads),
            ("model.n_kv_heads", m.n_kv_heads),
            ("model.ffn_hidden", m.ffn_hidden),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        if !m.d_model.is_multiple_of(m.n_heads) || !m.head_dim().is_multiple_of(2) {
            return Err((
                "model.n_heads",
                format!(
                    "d_model {} / n_heads {} must be an even integer (RoPE pairs)",
                    m.d_model, m.n_heads
                ),
            ));
        }
        if !m.n_heads.is_multiple_of(m.n_kv_heads) {
            return Err((
                "model.n_kv_heads",
                format!("{} must divide n_heads {}", m.n_kv_heads, m.n_heads),
            ));
        }
        if m.vocab_size > u32::MAX as usize {
            return Err(("model.vocab_size", "must fit in 32 bits".into()));
        }
        match (m.mlp, &m.moe) {
            (Mlp::Moe, None) => return Err((
                "model.moe",
                "mlp = \"moe\" needs a [model.moe] table (routed_experts, top_k, expert_hidden)"
                    .into(),
            )),
            (Mlp::Swiglu, Some(_)) => {
                return Err((
                    "model.moe",
                    "is set but mlp is \"swiglu\": set mlp = \"moe\" or remove the table".into(),
                ))
            }
            (_, Some(e)) => e.validate(m.n_layers)?,
            _ => {}
        }
        match (m.attention, &m.mla) {
            (Attention::Mla, None) => {
                return Err((
                    "model.mla",
                    "attention = \"mla\" needs a [model.mla] table (kv_rank, rope_dim)".into(),
                ))
            }
            (Attention::Gqa, Some(_)) => {
                return Err((
                    "model.mla",
                    "is set but attention is \"gqa\": set attention = \"mla\" or remove the table"
                        .into(),
                ))
            }
            (Attention::Mla, Some(a)) => {
                if m.n_kv_heads != m.n_heads {
                    return Err((
                        "model.n_kv_heads",
                        format!(
                            "latent attention gives every head its own key and value: set it to n_heads ({})",
                            m.n_heads
                        ),
                    ));
                }
                if a.kv_rank == 0 {
                    return Err(("model.mla.kv_rank", "must be at least 1".into()));
                }
                if a.rope_dim == 0 || !a.rope_dim.is_multiple_of(2) || a.rope_dim >= m.head_dim() {
                    return Err((
                        "model.mla.rope_dim",
                        format!(
                            "must be even, positive and below head_dim {} (the rest of each query and key is position-free)",
                            m.head_dim()
                        ),
                    ));
                }
            }
            _ => {}
        }
        if let Some(t) = &m.mtp {
            if t.depth == 0 || !(t.weight > 0.0 && t.weight.is_finite()) {
                return Err((
                    "model.mtp.depth",
                    "depth must be at least 1 and weight positive (remove [model.mtp] for none)"
                        .into(),
                ));
            }
        }
        let positive = |x: f32| x > 0.0 && x.is_finite();
        for (field, ok) in [
            ("model.norm_eps", positive(m.norm_eps)),
            ("model.init_std", positive(m.init_std)),
            ("model.rope_theta", positive(m.rope_theta)),
        ] {
            if !ok {
                return Err((field, "must be a positive finite number".into()));
            }
        }
        Ok(())
    }
}

impl MoeConfig {
    fn validate(&self, n_layers: usize) -> std::result::Result<(), (&'static str, String)> {
        if self.routed_experts == 0 || self.expert_hidden == 0 {
            return Err((
                "model.moe.routed_experts",
                "routed_experts and expert_hidden must be at least 1".into(),
            ));
        }
        if self.top_k == 0 || self.top_k > self.routed_experts {
            return Err((
                "model.moe.top_k",
                format!(
                    "{} is not between 1 and routed_experts {}",
                    self.top_k, self.routed_experts
                ),
            ));
        }
        if self.dense_layers >= n_layers {
            return Err((
                "model.moe.dense_layers",
                format!(
                    "{} leaves none of the {n_layers} layers to the experts",
                    self.dense_layers
                ),
            ));
        }
        let zero_or_more = |x: f32| x >= 0.0 && x.is_finite();
        let ok = self.route_scale > 0.0
            && self.route_scale.is_finite()
            && zero_or_more(self.bias_update)
            && zero_or_more(self.balance_loss);
        if !ok {
            return Err((
                "model.moe.route_scale",
                "route_scale must be positive; bias_update and balance_loss zero or positive"
                    .into(),
            ));
        }
        Ok(())
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
                return Err((field, "must be at least 1".into()));
            }
        }
        let positive = |x: f32| x > 0.0 && x.is_finite();
        for (field, ok) in [
            ("train.lr", positive(t.lr)),
            ("train.muon_lr", positive(t.muon_lr)),
            ("train.eps", positive(t.eps)),
        ] {
            if !ok {
                return Err((field, "must be a positive finite number".into()));
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

impl Config {
    /// Reads `path`, applies `overrides` ("section.key=value", value in TOML syntax; bare words
    /// are taken as strings), and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// A config built into the binary: "tiny" (tests) or "ref" (benchmark).
    pub fn preset(name: &str, overrides: &[String]) -> Result<Self> {
        let (_, text) = PRESETS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
            Error::config(
                format!("preset {name}"),
                "no such preset",
                format!("use one of {names:?}"),
            )
        })?;
        Self::parse(text, &format!("preset {name}"), overrides)
    }

    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let cfg: Config = parse_toml(text, origin, overrides)?;
        cfg.validate().map_err(|(field, msg)| {
            Error::config(origin, format!("{field}: {msg}"), "adjust that field")
        })?;
        Ok(cfg)
    }

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

/// Deserialises TOML `text` (from `origin`, for messages) after applying `--set` overrides.
/// Errors name the line when the parser knows it, and unknown or mistyped keys.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    overrides: &[String],
) -> Result<T> {
    // "file.toml, line 7" when the parser knows where the problem is.
    let at = |e: &toml::de::Error| match e.span() {
        Some(span) => {
            let line = 1 + text[..span.start.min(text.len())].matches('\n').count();
            format!("{origin}, line {line}")
        }
        None => origin.to_string(),
    };
    let mut value: toml::Table = toml::from_str(text)
        .map_err(|e| Error::config(at(&e), e.message(), "fix the TOML syntax at that line"))?;
    for o in overrides {
        apply_override(&mut value, o).map_err(|msg| {
            Error::config(origin, msg, "write overrides as --set section.key=value")
        })?;
    }
    // Without overrides, deserialise the text itself so that errors carry a line number.
    let parsed = if overrides.is_empty() {
        toml::from_str(text)
    } else {
        toml::Value::Table(value).try_into()
    };
    parsed.map_err(|e: toml::de::Error| {
        let hint = "check the key's spelling and type against the shipped configs in configs/";
        Error::config(at(&e), e.message(), hint)
    })
}

fn apply_override(root: &mut toml::Table, spec: &str) -> std::result::Result<(), String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| format!("override {spec:?} has no '='"))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    // A TOML literal (`3e-4`, `"muon"`, `[1, 2]`), or else the bare word as a string (`muon`).
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let (last, parents) = path.split_last().ok_or("empty override key")?;
    let mut table = root;
    for p in parents {
        table = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("override {key}: {p} is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
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
    fn every_shipped_config_is_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("data-") {
                continue; // data preparation configs, checked where they are read
            }
            if name.starts_with("sft-") {
                crate::sft::SftConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            if name.starts_with("dpo-") {
                crate::pref::dpo::DpoConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            if name.starts_with("rm-") {
                crate::pref::rm::RmConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            if name.starts_with("grpo-") {
                crate::pref::grpo::GrpoConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            if name == "cost.toml" {
                crate::cost::CostConfig::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            Config::load(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
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
