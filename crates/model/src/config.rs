//! The model's shape: the `[model]` table of a run config, with its architecture options as
//! enums fixed at load time (attention: grouped-query or latent; MLP: SwiGLU or mixture of
//! experts; multi-token prediction modules), validated before any buffer is sized from it.
//! The presets built into the binary live here too, so that tests and benchmarks of every
//! layer build the same shapes from any directory.

use base::{Error, Result};
use serde::{Deserialize, Serialize};
use tensor::ops::rope::RopeScaling;

/// Configs built into the binary, so benchmarks and tests run from any directory.
pub const PRESETS: &[(&str, &str)] = &[
    ("tiny", include_str!("../../../configs/tiny.toml")),
    ("tiny-moe", include_str!("../../../configs/tiny-moe.toml")),
    ("tiny-mtp", include_str!("../../../configs/tiny-mtp.toml")),
    ("tiny-mla", include_str!("../../../configs/tiny-mla.toml")),
    ("ref", include_str!("../../../configs/ref.toml")),
];

/// The text of the preset `name`; an error names the presets there are.
pub fn preset_text(name: &str) -> Result<&'static str> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
            Error::config(
                format!("preset {name}"),
                "no such preset",
                format!("use one of {names:?}"),
            )
        })
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
    /// ε of the latent's RMSNorm; `norm_eps` when absent. DeepSeek's own models (and
    /// transformers' DeepseekV3) fix it at 1e-6, which a model meant for them must use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_eps: Option<f32>,
}

impl MlaConfig {
    /// ε of the latent's RMSNorm in a model whose other norms use `norm_eps`.
    pub fn latent_eps(&self, norm_eps: f32) -> f32 {
        self.latent_eps.unwrap_or(norm_eps)
    }
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
#[serde(deny_unknown_fields, default)]
pub struct MoeConfig {
    /// Routed experts per MoE layer [n_routed_experts].
    pub routed_experts: usize,
    /// Routed experts each token uses [num_experts_per_tok].
    pub top_k: usize,
    /// Always-on shared experts [n_shared_experts]; 0 for none.
    pub shared_experts: usize,
    /// Hidden width of each expert's SwiGLU [moe_intermediate_size].
    pub expert_hidden: usize,
    /// The first this many layers keep the dense MLP of ffn_hidden [first_k_dense_replace].
    pub dense_layers: usize,
    /// Gates are scaled by this [routed_scaling_factor].
    pub route_scale: f32,
    /// γ of auxiliary-loss-free balancing: after each optimizer step, each expert's selection
    /// bias moves by γ toward balance (up if it got fewer tokens than the mean). 0 disables.
    pub bias_update: f32,
    /// α of the sequence-wise balance loss; 0 (the default) trains without any auxiliary loss.
    pub balance_loss: f32,
}

impl Default for MoeConfig {
    fn default() -> Self {
        MoeConfig {
            routed_experts: 0,
            top_k: 0,
            shared_experts: 1,
            expert_hidden: 0,
            dense_layers: Default::default(),
            route_scale: 1.0,
            bias_update: 1e-3,
            balance_loss: Default::default(),
        }
    }
}

impl MoeConfig {
    /// Hidden width of the shared experts taken together: one SwiGLU of this width.
    pub fn shared_hidden(&self) -> usize {
        self.shared_experts * self.expert_hidden
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// Standard deviation of the normal initialisation of matrices.
    pub init_std: f32,
    /// Start every residual branch's output projection (attention's o_proj, the MLP's and the
    /// experts' down_proj) and the head at zero, as modded-nanogpt and nanochat do: each block
    /// then begins as the identity and the first steps shape the stream instead of undoing
    /// noise.
    pub zero_init_outputs: bool,
    /// Soft cap c of the logits, c·tanh(logit / c) (Gemma 2's final_logit_softcapping; 15 in
    /// nanochat, 30 in modded-nanogpt); 0 for none.
    pub logit_softcap: f32,
    /// Biases on the query, key and value projections (Qwen2's; Llama has none).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub qkv_bias: bool,
    /// Stretching of RoPE's frequencies for long contexts (imported models'); none if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScalingConfig>,
    pub attention: Attention,
    pub mlp: Mlp,
    /// Required when attention = "mla".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mla: Option<MlaConfig>,
    /// Required when mlp = "moe".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeConfig>,
    /// Multi-token prediction modules (DeepSeek-V3), trained beside the model; none if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtp: Option<MtpConfig>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 0,
            context_len: 0,
            d_model: 0,
            n_layers: 0,
            n_heads: 0,
            n_kv_heads: 0,
            ffn_hidden: 0,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            init_std: 0.02,
            zero_init_outputs: false,
            logit_softcap: 0.0,
            qkv_bias: false,
            rope_scaling: None,
            attention: Attention::Gqa,
            mlp: Mlp::Swiglu,
            mla: Default::default(),
            moe: Default::default(),
            mtp: Default::default(),
        }
    }
}

/// `[model.rope_scaling]`: transformers' `rope_scaling` of the same type (HF names in
/// brackets).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RopeScalingConfig {
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3.1's frequency-dependent stretch.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        /// The context the model was first trained at [original_max_position_embeddings].
        original_context: usize,
    },
}

impl RopeScalingConfig {
    /// The kernel's form of it.
    pub fn to_kernel(scaling: Option<&Self>) -> RopeScaling {
        match scaling {
            None => RopeScaling::None,
            Some(&RopeScalingConfig::Linear { factor }) => RopeScaling::Linear { factor },
            Some(&RopeScalingConfig::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            }) => RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context: original_context as f32,
            },
        }
    }

    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let bad = |what: &str| Err(("model.rope_scaling", what.to_string()));
        match *self {
            RopeScalingConfig::Linear { factor } if factor <= 0.0 => bad("factor must be positive"),
            RopeScalingConfig::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } if factor <= 0.0
                || low_freq_factor <= 0.0
                || high_freq_factor <= low_freq_factor
                || original_context == 0 =>
            {
                bad("needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_context > 0")
            }
            _ => Ok(()),
        }
    }
}

/// Multi-token prediction (DeepSeek-V3 §2.2): `depth` sequential modules, the k-th predicting
/// the token k + 1 places ahead from the (k − 1)-th's hidden states and the embedding of the
/// token k places ahead. Each is one more decoder layer (with the last layer's MLP kind) and a
/// 2d → d projection; the embedding and the output head are the model's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtpConfig {
    /// Number of modules D [num_nextn_predict_layers].
    pub depth: usize,
    /// λ: the training loss adds λ/D · Σ_k (module k's cross-entropy).
    pub weight: f32,
}

impl Default for MtpConfig {
    fn default() -> Self {
        MtpConfig {
            depth: 0,
            weight: 0.3,
        }
    }
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
        if let Some(r) = &m.rope_scaling {
            r.validate()?;
        }
        if m.qkv_bias && m.attention == Attention::Mla {
            return Err((
                "model.qkv_bias",
                "applies to grouped-query attention's q/k/v projections, not to attention = \"mla\"".into(),
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
        if !(m.logit_softcap >= 0.0 && m.logit_softcap.is_finite()) {
            return Err((
                "model.logit_softcap",
                "must be 0 (no cap) or a positive finite number".into(),
            ));
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

impl ModelConfig {
    /// The `[model]` table of a built-in preset, with `--set model.key=value` overrides.
    pub fn preset(name: &str, overrides: &[String]) -> Result<Self> {
        #[derive(Deserialize)]
        struct ModelTable {
            model: ModelConfig,
        }
        impl base::config::Validate for ModelTable {
            fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
                self.model.validate()
            }
        }
        let origin = format!("preset {name}");
        let t: ModelTable = base::config::parse(preset_text(name)?, &origin, overrides)?;
        Ok(t.model)
    }
}

/// Widths of one token's latent attention tensors.
#[derive(Clone, Copy)]
pub struct MlaDims {
    pub heads: usize,
    pub head_dim: usize,
    pub rank: usize,
    pub rope: usize,
    /// Position-free channels of each query and key: head_dim − rope.
    pub nope: usize,
    /// kv_b_proj's output per token: heads · (nope + head_dim).
    pub kv: usize,
}

impl MlaDims {
    /// The shapes of the per-head keys' and values' expansion from the latent.
    pub fn expand(&self) -> tensor::ops::rows::KvExpand {
        tensor::ops::rows::KvExpand {
            heads: self.heads,
            head_dim: self.head_dim,
            nope: self.nope,
            rope: self.rope,
        }
    }

    pub fn new(cfg: &ModelConfig, m: &MlaConfig) -> Self {
        let (heads, head_dim) = (cfg.n_heads, cfg.head_dim());
        let nope = head_dim - m.rope_dim;
        MlaDims {
            heads,
            head_dim,
            rank: m.kv_rank,
            rope: m.rope_dim,
            nope,
            kv: heads * (nope + head_dim),
        }
    }
}
