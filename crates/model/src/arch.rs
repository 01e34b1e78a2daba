//! Architectures as the cost model sees them: enough of a transformer's shape to count its
//! parameters (total and active per token) and its FLOPs per token, for frugal's own models
//! and for published ones (GPT-2, Llama 3, DeepSeek-V3 with latent attention, mixture of
//! experts and multi-token prediction).
//!
//! FLOPs follow the PaLM paper's appendix B: a weight that multiplies an activation costs 2
//! FLOPs per token forward and 4 backward (input and weight gradients), so 6 per token in
//! training; attention's score and value products add, per layer and token, 2 FLOPs per
//! (key, query-or-value channel) forward and 4 backward. PaLM counts every key of the window
//! (T); a causal mask leaves (T+1)/2 on average, which is what the kernels compute.
//! Embedding lookups, norms, activations and softmax are not counted.

use crate::config::ModelConfig;

/// How many keys a query attends to, on average, in the attention term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnConvention {
    /// Every key of the window: PaLM's 12·L·H·Q·T, as PaLM, nanochat and llm.c report MFU.
    Palm,
    /// The keys a causal mask leaves, (T+1)/2 on average: the work the kernels really do.
    Causal,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttnArch {
    /// Multi-head (n_kv_heads = n_heads) or grouped-query attention.
    Gqa {
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
    },
    /// Multi-head latent attention (DeepSeek-V2/V3): queries and keys/values pass through
    /// low-rank latents; each head's query/key has a position-free part and a RoPE part.
    Mla {
        n_heads: usize,
        /// Query latent rank; 0 projects queries straight from the residual stream.
        q_lora_rank: usize,
        kv_lora_rank: usize,
        qk_nope_dim: usize,
        qk_rope_dim: usize,
        v_head_dim: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum FfnArch {
    /// One MLP: gated (SwiGLU: gate, up, down) or not (GELU/ReLU²: up, down).
    Dense { hidden: usize, gated: bool },
    /// Mixture of experts: `top_k` of `routed` experts per token plus `shared` always-on ones,
    /// each a (gated) MLP of `expert_hidden`, chosen by a linear router.
    Moe {
        routed: usize,
        top_k: usize,
        shared: usize,
        expert_hidden: usize,
        gated: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormArch {
    /// RMSNorm with a weight (Llama).
    Rms,
    /// RMSNorm without parameters (nanochat).
    RmsNoWeight,
    /// LayerNorm with weight and bias (GPT-2).
    Layer,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    pub vocab: usize,
    pub d_model: usize,
    pub n_layers: usize,
    /// Training sequence length: the T of the attention term.
    pub seq_len: usize,
    pub attention: AttnArch,
    /// The MLP of each layer, as (count of consecutive layers, kind); counts sum to n_layers.
    pub ffn: Vec<(usize, FfnArch)>,
    pub norm: NormArch,
    /// Biases on every linear layer (GPT-2).
    pub biases: bool,
    /// The output head shares the embedding table (GPT-2).
    pub tied_embeddings: bool,
    /// Learned absolute position embeddings of this many positions (GPT-2); 0 with RoPE.
    pub learned_positions: usize,
    /// Multi-token prediction modules (DeepSeek-V3): each one more transformer layer (with the
    /// last layer's MLP kind) and a 2d→d projection, sharing the embedding and head.
    pub mtp_depth: usize,
}

/// Parameter counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Params {
    /// Every parameter of the main model (MTP modules not included).
    pub total: f64,
    /// Parameters one token uses: all but the experts it is not routed to.
    pub active: f64,
    /// Active weights that multiply activations (the 6·N of training FLOPs): everything active
    /// but embedding tables, norms and biases; includes the head even when tied.
    pub matmul: f64,
    /// Parameters of the multi-token prediction modules.
    pub mtp: f64,
}

/// Forward+backward model FLOPs per token of `model` trained on sequences of `seq_len`,
/// multi-token prediction modules included, in the PaLM convention that MFU is reported in.
pub fn flops_per_token(model: &ModelConfig, seq_len: usize) -> f64 {
    let arch = Arch::from_model(model, seq_len);
    let conv = AttnConvention::Palm;
    arch.train_flops_per_token(conv) + arch.mtp_flops_per_token(conv)
}

impl Arch {
    /// frugal's own Llama-style model at a training length.
    pub fn from_model(m: &ModelConfig, seq_len: usize) -> Arch {
        Arch {
            vocab: m.vocab_size,
            d_model: m.d_model,
            n_layers: m.n_layers,
            seq_len,
            attention: match m.mla() {
                None => AttnArch::Gqa {
                    n_heads: m.n_heads,
                    n_kv_heads: m.n_kv_heads,
                    head_dim: m.head_dim(),
                },
                Some(a) => AttnArch::Mla {
                    n_heads: m.n_heads,
                    q_lora_rank: 0,
                    kv_lora_rank: a.kv_rank,
                    qk_nope_dim: m.head_dim() - a.rope_dim,
                    qk_rope_dim: a.rope_dim,
                    v_head_dim: m.head_dim(),
                },
            },
            ffn: Self::ffn_of(m),
            norm: NormArch::Rms,
            biases: false,
            tied_embeddings: false,
            learned_positions: 0,
            mtp_depth: m.mtp_depth(),
        }
    }

    /// The MLP kinds of frugal's model, layer by layer: dense SwiGLU, or DeepSeekMoE after
    /// `dense_layers` dense ones.
    fn ffn_of(m: &ModelConfig) -> Vec<(usize, FfnArch)> {
        let dense = |n: usize| {
            (
                n,
                FfnArch::Dense {
                    hidden: m.ffn_hidden,
                    gated: true,
                },
            )
        };
        match m.moe_at(m.n_layers - 1) {
            None => vec![dense(m.n_layers)],
            Some(e) => {
                let moe = FfnArch::Moe {
                    routed: e.routed_experts,
                    top_k: e.top_k,
                    shared: e.shared_experts,
                    expert_hidden: e.expert_hidden,
                    gated: true,
                };
                let mut ffn = vec![(m.n_layers - e.dense_layers, moe)];
                if e.dense_layers > 0 {
                    ffn.insert(0, dense(e.dense_layers));
                }
                ffn
            }
        }
    }

    /// Checks the shape adds up: layer counts, head divisibility, non-zero sizes.
    pub fn validate(&self) -> Result<(), String> {
        let layers: usize = self.ffn.iter().map(|(n, _)| n).sum();
        if layers != self.n_layers {
            return Err(format!(
                "the MLP layer counts sum to {layers}, not n_layers = {}",
                self.n_layers
            ));
        }
        if self.vocab == 0 || self.d_model == 0 || self.n_layers == 0 || self.seq_len == 0 {
            return Err("vocab, d_model, n_layers and seq_len must be positive".into());
        }
        if let AttnArch::Gqa {
            n_heads,
            n_kv_heads,
            head_dim,
        } = self.attention
        {
            if n_heads == 0 || n_kv_heads == 0 || head_dim == 0 || n_heads % n_kv_heads != 0 {
                return Err(format!(
                    "{n_heads} query heads, {n_kv_heads} kv heads of {head_dim}: kv heads must divide query heads"
                ));
            }
        }
        for (_, f) in &self.ffn {
            if let FfnArch::Moe { routed, top_k, .. } = *f {
                if top_k == 0 || top_k > routed {
                    return Err(format!("top_k {top_k} of {routed} routed experts"));
                }
            }
        }
        Ok(())
    }

    /// (weights, bias count) of the attention block.
    fn attention_params(&self) -> (f64, f64) {
        let d = self.d_model as f64;
        match self.attention {
            AttnArch::Gqa {
                n_heads,
                n_kv_heads,
                head_dim,
            } => {
                let qkv = ((n_heads + 2 * n_kv_heads) * head_dim) as f64;
                let o = (n_heads * head_dim) as f64;
                (d * qkv + o * d, qkv + d)
            }
            AttnArch::Mla {
                n_heads,
                q_lora_rank,
                kv_lora_rank,
                qk_nope_dim,
                qk_rope_dim,
                v_head_dim,
            } => {
                let (h, ql, kl) = (n_heads as f64, q_lora_rank as f64, kv_lora_rank as f64);
                let qk = (qk_nope_dim + qk_rope_dim) as f64;
                let q = if q_lora_rank == 0 {
                    d * h * qk
                } else {
                    d * ql + ql * h * qk
                };
                let kv_a = d * (kl + qk_rope_dim as f64);
                let kv_b = kl * h * (qk_nope_dim + v_head_dim) as f64;
                let o = h * v_head_dim as f64 * d;
                (q + kv_a + kv_b + o, 0.0)
            }
        }
    }

    /// Norm weights inside the attention block (MLA's latent norms).
    fn attention_norm_params(&self) -> f64 {
        match self.attention {
            AttnArch::Mla {
                q_lora_rank,
                kv_lora_rank,
                ..
            } => (q_lora_rank + kv_lora_rank) as f64,
            AttnArch::Gqa { .. } => 0.0,
        }
    }

    /// (total weights, active weights, bias count) of one MLP block.
    fn ffn_params(&self, f: &FfnArch) -> (f64, f64, f64) {
        let d = self.d_model as f64;
        let mlp = |hidden: usize, gated: bool| (if gated { 3.0 } else { 2.0 }) * d * hidden as f64;
        match *f {
            FfnArch::Dense { hidden, gated } => {
                let w = mlp(hidden, gated);
                let bias = hidden as f64 * if gated { 2.0 } else { 1.0 } + d;
                (w, w, bias)
            }
            FfnArch::Moe {
                routed,
                top_k,
                shared,
                expert_hidden,
                gated,
            } => {
                let e = mlp(expert_hidden, gated);
                let router = d * routed as f64;
                // The router's load-balancing bias (DeepSeek-V3's e_score_correction_bias) is
                // stored with the weights but multiplies nothing.
                let bias = routed as f64;
                (
                    (routed + shared) as f64 * e + router + bias,
                    (top_k + shared) as f64 * e + router + bias,
                    0.0,
                )
            }
        }
    }

    /// Norm parameters per layer and after the last layer.
    fn norm_params(&self) -> (f64, f64) {
        let d = self.d_model as f64;
        match self.norm {
            NormArch::Rms => (2.0 * d, d),
            NormArch::RmsNoWeight => (0.0, 0.0),
            NormArch::Layer => (4.0 * d, 2.0 * d),
        }
    }

    pub fn params(&self) -> Params {
        let d = self.d_model as f64;
        let (attn, attn_bias) = self.attention_params();
        let (norm_layer, norm_final) = self.norm_params();
        let per_layer_fixed = norm_layer + self.attention_norm_params();
        let embed = (self.vocab + self.learned_positions) as f64 * d;
        let head = self.vocab as f64 * d;
        let mut p = Params {
            total: embed + norm_final,
            active: embed + norm_final,
            matmul: head,
            mtp: 0.0,
        };
        if !self.tied_embeddings {
            p.total += head;
            p.active += head;
        }
        for (count, f) in &self.ffn {
            let n = *count as f64;
            let (ft, fa, fb) = self.ffn_params(f);
            let bias = if self.biases { attn_bias + fb } else { 0.0 };
            p.total += n * (attn + ft + bias + per_layer_fixed);
            p.active += n * (attn + fa + bias + per_layer_fixed);
            // The routers' balancing biases count as parameters but multiply nothing.
            let state = match f {
                FfnArch::Moe { routed, .. } => *routed as f64,
                FfnArch::Dense { .. } => 0.0,
            };
            p.matmul += n * (attn + fa - state);
        }
        if self.mtp_depth > 0 {
            let last = &self.ffn.last().expect("validated: at least one layer").1;
            let (ft, _, _) = self.ffn_params(last);
            // Per module: a transformer layer, a 2d→d projection, and the norms of both inputs
            // and of the layer; the embedding and head are the main model's.
            let module = attn + ft + 2.0 * d * d + per_layer_fixed + 3.0 * d;
            p.mtp = self.mtp_depth as f64 * module;
        }
        p
    }

    /// Attention FLOPs per token per layer, forward only: 2 per visible key and channel of the
    /// score (q·k) and value (p·v) products, summed over heads.
    fn attention_flops_fwd(&self, keys: f64) -> f64 {
        let channels = match self.attention {
            AttnArch::Gqa {
                n_heads, head_dim, ..
            } => 2 * n_heads * head_dim,
            AttnArch::Mla {
                n_heads,
                qk_nope_dim,
                qk_rope_dim,
                v_head_dim,
                ..
            } => n_heads * (qk_nope_dim + qk_rope_dim + v_head_dim),
        };
        2.0 * keys * channels as f64
    }

    fn mean_keys(&self, conv: AttnConvention) -> f64 {
        match conv {
            AttnConvention::Palm => self.seq_len as f64,
            AttnConvention::Causal => (self.seq_len as f64 + 1.0) / 2.0,
        }
    }

    /// Training FLOPs (forward and backward) per token of the main model.
    pub fn train_flops_per_token(&self, conv: AttnConvention) -> f64 {
        let p = self.params();
        let attn = self.attention_flops_fwd(self.mean_keys(conv));
        3.0 * (2.0 * p.matmul + self.n_layers as f64 * attn)
    }

    /// Training FLOPs per token of the multi-token prediction modules: each is a layer, its
    /// projection and another pass through the shared head.
    pub fn mtp_flops_per_token(&self, conv: AttnConvention) -> f64 {
        if self.mtp_depth == 0 {
            return 0.0;
        }
        let d = self.d_model as f64;
        let (attn, _) = self.attention_params();
        let last = &self.ffn.last().expect("validated").1;
        let (_, fa, _) = self.ffn_params(last);
        let matmul = attn + fa + 2.0 * d * d + self.vocab as f64 * d;
        let per_module = 6.0 * matmul + 3.0 * self.attention_flops_fwd(self.mean_keys(conv));
        self.mtp_depth as f64 * per_module
    }

    /// Forward FLOPs of one generated token at position `pos` (0-based) with a KV cache.
    pub fn decode_flops(&self, pos: usize) -> f64 {
        2.0 * self.params().matmul
            + self.n_layers as f64 * self.attention_flops_fwd(pos as f64 + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A preset's model and its training length (the `[train]` table's seq_len).
    fn preset(name: &str) -> (crate::config::ModelConfig, usize) {
        let cfg = crate::config::ModelConfig::preset(name, &[]).unwrap();
        let table: toml::Table = toml::from_str(crate::config::preset_text(name).unwrap()).unwrap();
        let seq_len = table["train"]["seq_len"].as_integer().unwrap() as usize;
        (cfg, seq_len)
    }

    fn tiny() -> Arch {
        let (cfg, seq_len) = preset("tiny");
        Arch::from_model(&cfg, seq_len)
    }

    #[test]
    fn own_model_counts_match_its_parameter_buffer() {
        for name in ["tiny", "ref", "tiny-mla"] {
            let (cfg, seq_len) = preset(name);
            let model = crate::Llama::init(cfg.clone(), 0);
            let p = Arch::from_model(&cfg, seq_len).params();
            assert_eq!(p.total, model.params.len() as f64, "{name}");
            assert_eq!(p.active, p.total, "{name}: dense models use every weight");
        }
    }

    #[test]
    fn moe_model_counts_match_its_parameter_buffer() {
        let (cfg, seq_len) = preset("tiny-moe");
        let model = crate::Llama::init(cfg.clone(), 0);
        let arch = Arch::from_model(&cfg, seq_len);
        let p = arch.params();
        assert_eq!(p.total, model.params.len() as f64);
        // One MoE layer: 2 of 4 routed experts (3·16·32 weights each) sit idle per token.
        assert_eq!(p.total - p.active, 2.0 * 3.0 * 16.0 * 32.0);
        let (dense, seq_len) = preset("tiny");
        let dense = Arch::from_model(&dense, seq_len).params();
        // Active MLP width 48 + router (4·32) against the dense 64.
        assert_eq!(dense.matmul - p.matmul, 3.0 * 32.0 * 16.0 - 4.0 * 32.0);
    }

    #[test]
    fn causal_attention_is_half_the_palm_window_plus_one_key() {
        let a = tiny();
        let (palm, causal) = (
            a.train_flops_per_token(AttnConvention::Palm),
            a.train_flops_per_token(AttnConvention::Causal),
        );
        let (t, l, d) = (a.seq_len as f64, a.n_layers as f64, a.d_model as f64);
        // PaLM: 6N + 12·L·d·T; causal: 6N + 12·L·d·(T+1)/2.
        assert!((palm - causal - 12.0 * l * d * (t - (t + 1.0) / 2.0)).abs() < 1e-6 * palm);
        assert!((palm - 6.0 * a.params().matmul - 12.0 * l * d * t).abs() < 1e-6 * palm);
    }

    #[test]
    fn moe_activates_top_k_experts_and_mla_shrinks_nothing_it_should_not() {
        let mut a = tiny();
        let dense = a.params();
        a.ffn = vec![(
            a.n_layers,
            FfnArch::Moe {
                routed: 8,
                top_k: 2,
                shared: 0,
                expert_hidden: 64,
                gated: true,
            },
        )];
        a.validate().unwrap();
        let moe = a.params();
        let d = a.d_model as f64;
        let per_expert = 3.0 * d * 64.0;
        let l = a.n_layers as f64;
        assert_eq!(moe.total - moe.active, l * 6.0 * per_expert);
        assert!(moe.total != dense.total);
        a.ffn[0].1 = FfnArch::Moe {
            routed: 8,
            top_k: 9,
            shared: 0,
            expert_hidden: 64,
            gated: true,
        };
        assert!(a.validate().is_err());
        a.ffn = vec![(
            a.n_layers - 1,
            FfnArch::Dense {
                hidden: 8,
                gated: true,
            },
        )];
        assert!(a.validate().unwrap_err().contains("sum to"));
    }
}
