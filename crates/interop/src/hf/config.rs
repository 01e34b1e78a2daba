//! frugal's `[model]` table as transformers' `config.json`.
//!
//! A dense frugal model is a Llama: RMSNorm with weight, rotate-half RoPE (transformers'
//! convention, so no permutation of q/k rows), SwiGLU, grouped-query attention, untied
//! embeddings, no biases. What Llama cannot express is refused, naming the field.

use base::{Error, Result};
use model::config::{Attention, Mlp, ModelConfig};
use serde_json::{json, Value};

/// Ids `config.json` and `generation_config.json` name.
#[derive(Clone, Debug)]
pub struct SpecialIds {
    pub bos: u32,
    /// What ends generation: the chat reply's end and the tokens that could only open another
    /// turn; `<|bos|>` alone for a base model.
    pub eos: Vec<u32>,
}

/// Why `cfg` has no Llama equivalent, naming the field; None when it has one.
pub fn llama_incompatibility(cfg: &ModelConfig) -> Option<String> {
    if cfg.attention == Attention::Mla {
        return Some(
            "model.attention = \"mla\": latent attention is DeepSeek-V2/V3's, and the export of \
             that architecture (DeepseekV3ForCausalLM) is not written yet"
                .into(),
        );
    }
    if cfg.mlp == Mlp::Moe {
        return Some(
            "model.mlp = \"moe\": mixture-of-experts is DeepSeek-V3's, and the export of that \
             architecture (DeepseekV3ForCausalLM) is not written yet"
                .into(),
        );
    }
    if cfg.logit_softcap != 0.0 {
        return Some(format!(
            "model.logit_softcap = {}: LlamaForCausalLM has no logit soft cap, so its logits \
             would differ",
            cfg.logit_softcap
        ));
    }
    None
}

/// `config.json` of a LlamaForCausalLM with `cfg`'s shape.
pub fn llama_config(cfg: &ModelConfig, ids: &SpecialIds, torch_dtype: &str) -> Result<Value> {
    if let Some(why) = llama_incompatibility(cfg) {
        return Err(Error::config(
            "config.toml",
            why,
            "export a dense model (attention = \"gqa\", mlp = \"swiglu\", logit_softcap = 0)",
        ));
    }
    let eos = match ids.eos.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim(),
        "max_position_embeddings": cfg.context_len,
        "rms_norm_eps": short(cfg.norm_eps),
        "rope_theta": short(cfg.rope_theta),
        "rope_scaling": null,
        "hidden_act": "silu",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "pretraining_tp": 1,
        "tie_word_embeddings": false,
        "initializer_range": short(cfg.init_std),
        "use_cache": true,
        "bos_token_id": ids.bos,
        "eos_token_id": eos,
        "torch_dtype": torch_dtype,
    }))
}

/// An f32 as the shortest decimal that reads back as it (1e-5, not 9.999999747378752e-6).
pub fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}
