//! frugal's `[model]` table as transformers' `config.json`.
//!
//! A dense frugal model is a Llama: RMSNorm with weight, rotate-half RoPE (transformers'
//! convention, so no permutation of q/k rows), SwiGLU, grouped-query attention, untied
//! embeddings, no biases. What Llama cannot express is refused, naming the field.

use base::{Error, Result};
use model::config::{Attention, Mlp, ModelConfig, RopeScalingConfig};
use serde_json::{json, Value};
use std::path::Path;

/// Ids `config.json` and `generation_config.json` name.
#[derive(Clone, Debug)]
pub struct SpecialIds {
    /// None for models without one (Qwen2).
    pub bos: Option<u32>,
    /// What ends generation: the chat reply's end and the tokens that could only open another
    /// turn; `<|bos|>` alone for a base model.
    pub eos: Vec<u32>,
}

impl SpecialIds {
    /// `eos_token_id` as config.json writes it: one id, or the list of them.
    fn eos_json(&self) -> Value {
        match self.eos.as_slice() {
            [one] => json!(one),
            many => json!(many),
        }
    }
}

/// Why `cfg` has no Llama equivalent (what GGUF's `llama` and `qwen2` take), naming the
/// field; None when it has one.
pub fn llama_incompatibility(cfg: &ModelConfig) -> Option<String> {
    if cfg.attention == Attention::Mla {
        return Some(
            "model.attention = \"mla\": latent attention is DeepSeek-V2/V3's, which this export \
             does not write (the Hugging Face export does, as DeepseekV3ForCausalLM)"
                .into(),
        );
    }
    if cfg.mlp == Mlp::Moe {
        return Some(
            "model.mlp = \"moe\": mixture-of-experts is DeepSeek-V3's, which this export does \
             not write (the Hugging Face export does, with attention = \"mla\")"
                .into(),
        );
    }
    softcap(cfg)
}

fn softcap(cfg: &ModelConfig) -> Option<String> {
    (cfg.logit_softcap != 0.0).then(|| {
        format!(
            "model.logit_softcap = {}: neither Llama nor DeepSeek-V3 has a logit soft cap, so \
             its logits would differ",
            cfg.logit_softcap
        )
    })
}

/// Why `cfg` has no Hugging Face architecture, naming the field; None when it has one: a
/// Llama (dense, grouped-query), a Qwen2 (with q/k/v biases) or a DeepSeek-V3 (latent
/// attention, with dense or mixture-of-experts MLPs).
pub fn hf_incompatibility(cfg: &ModelConfig) -> Option<String> {
    if cfg.mlp == Mlp::Moe && cfg.attention == Attention::Gqa {
        return Some(
            "model.mlp = \"moe\" with attention = \"gqa\": DeepSeek's sigmoid-routed experts \
             exist in Hugging Face only with latent attention (DeepseekV3ForCausalLM), and \
             Mixtral's or Qwen2-MoE's softmax routing computes differently"
                .into(),
        );
    }
    if let Some(m) = cfg.mla().filter(|m| m.latent_eps(cfg.norm_eps) != 1e-6) {
        return Some(format!(
            "model.mla.latent_eps is {} (model.norm_eps when unset): DeepseekV3 fixes its latent \
             norm's epsilon at 1e-6, so the logits would differ; models meant for it set \
             model.mla.latent_eps = 1e-6 when trained",
            m.latent_eps(cfg.norm_eps)
        ));
    }
    if cfg.attention == Attention::Mla && cfg.rope_scaling.is_some() {
        return Some(
            "model.rope_scaling with attention = \"mla\": DeepSeek-V3 scales latent attention's \
             RoPE with YaRN, which frugal does not compute"
                .into(),
        );
    }
    softcap(cfg)
}

/// `config.json` for `cfg`: a LlamaForCausalLM, with q/k/v biases a Qwen2ForCausalLM, with
/// latent attention a DeepseekV3ForCausalLM.
pub fn hf_config(cfg: &ModelConfig, ids: &SpecialIds, torch_dtype: &str) -> Result<Value> {
    if let Some(why) = hf_incompatibility(cfg) {
        return Err(Error::config(
            "config.toml",
            why,
            "export a Llama-style or DeepSeek-V3-style model (latent attention with experts), without logit_softcap",
        ));
    }
    let shared = shared_fields(cfg, ids, torch_dtype);
    if let Some(m) = cfg.mla() {
        return Ok(with(shared, deepseek_v3_fields(cfg, m)));
    }
    let (arch, model_type) = if cfg.qkv_bias {
        ("Qwen2ForCausalLM", "qwen2")
    } else {
        ("LlamaForCausalLM", "llama")
    };
    let rope_scaling = match cfg.rope_scaling {
        None => Value::Null,
        Some(RopeScalingConfig::Linear { factor }) => {
            json!({"rope_type": "linear", "factor": short(factor)})
        }
        Some(RopeScalingConfig::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_context,
        }) => json!({"rope_type": "llama3", "factor": short(factor),
            "low_freq_factor": short(low_freq_factor), "high_freq_factor": short(high_freq_factor),
            "original_max_position_embeddings": original_context}),
    };
    let doc = with(
        shared,
        json!({
            "architectures": [arch],
            "model_type": model_type,
            "num_key_value_heads": cfg.n_kv_heads,
            "head_dim": cfg.head_dim(),
            "rope_scaling": rope_scaling,
        }),
    );
    let extra = if cfg.qkv_bias {
        json!({"use_sliding_window": false, "sliding_window": null,
               "max_window_layers": cfg.n_layers})
    } else {
        json!({"attention_bias": false, "mlp_bias": false, "pretraining_tp": 1})
    };
    Ok(with(doc, extra))
}

/// The fields every architecture's config.json has the same way.
fn shared_fields(cfg: &ModelConfig, ids: &SpecialIds, torch_dtype: &str) -> Value {
    json!({
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "max_position_embeddings": cfg.context_len,
        "rms_norm_eps": short(cfg.norm_eps),
        "rope_theta": short(cfg.rope_theta),
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "tie_word_embeddings": false,
        "initializer_range": short(cfg.init_std),
        "use_cache": true,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos_json(),
        "torch_dtype": torch_dtype,
    })
}

/// `doc` with `more`'s fields added.
fn with(mut doc: Value, more: Value) -> Value {
    for (k, v) in more.as_object().into_iter().flatten() {
        doc[k] = v.clone();
    }
    doc
}

/// DeepseekV3ForCausalLM's own fields: no query latent (q_lora_rank null, DeepSeek-V2-Lite's
/// shape), RoPE on halves (rope_interleave false, as frugal rotates), one routing group (no
/// group-limited routing), gates normalised over the chosen experts and scaled, the first
/// `dense_layers` layers dense (all of them without experts). Multi-token prediction modules
/// are left out (num_nextn_predict_layers 0).
fn deepseek_v3_fields(cfg: &ModelConfig, m: &model::config::MlaConfig) -> Value {
    let hd = cfg.head_dim();
    let moe = cfg.moe.as_ref().filter(|_| cfg.mlp == Mlp::Moe);
    json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "moe_intermediate_size": moe.map_or(cfg.ffn_hidden, |e| e.expert_hidden),
        "num_key_value_heads": cfg.n_heads,
        "n_shared_experts": moe.map_or(1, |e| e.shared_experts),
        "n_routed_experts": moe.map_or(2, |e| e.routed_experts),
        "num_experts_per_tok": moe.map_or(1, |e| e.top_k),
        "routed_scaling_factor": moe.map_or(1.0, |e| short(e.route_scale)),
        "first_k_dense_replace": moe.map_or(cfg.n_layers, |e| e.dense_layers),
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": true,
        "kv_lora_rank": m.kv_rank,
        "q_lora_rank": null,
        "qk_rope_head_dim": m.rope_dim,
        "qk_nope_head_dim": hd - m.rope_dim,
        "v_head_dim": hd,
        "rope_interleave": false,
        "num_nextn_predict_layers": 0,
        "rope_scaling": null,
        "attention_bias": false,
    })
}

/// An f32 as the shortest decimal that reads back as it (1e-5, not 9.999999747378752e-6).
pub fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// A checkpoint's `config.json` read as a frugal model.
pub struct HfModel {
    pub cfg: ModelConfig,
    /// architectures[0], e.g. LlamaForCausalLM.
    pub architecture: String,
    /// tie_word_embeddings: the head is the embedding (frugal keeps two tensors).
    pub tied: bool,
    pub notes: Vec<String>,
}

/// The model types frugal computes exactly: (model_type, architecture, q/k/v biases).
const FAMILY: &[(&str, &str, bool)] = &[
    ("llama", "LlamaForCausalLM", false),
    ("mistral", "MistralForCausalLM", false),
    ("qwen2", "Qwen2ForCausalLM", true),
];

/// Reads `doc` (the `config.json` at `path`) as a frugal `[model]` table. Every field that would
/// change the computation is read or refused by name; `context_len` overrides
/// max_position_embeddings.
pub fn hf_model_config(doc: &Value, path: &Path, context_len: Option<usize>) -> Result<HfModel> {
    let origin = path.display().to_string();
    let refuse = |field: &str, msg: String| {
        Error::config(
            format!("{origin} field {field}"),
            msg,
            "import a Llama, Mistral or Qwen2 checkpoint; frugal refuses what it would compute differently",
        )
    };
    let model_type = doc["model_type"].as_str().unwrap_or_default();
    let Some(&(_, arch, qkv_bias)) = FAMILY.iter().find(|(t, ..)| *t == model_type) else {
        let known: Vec<&str> = FAMILY.iter().map(|(t, ..)| *t).collect();
        return Err(refuse(
            "model_type",
            format!(
                "is {:?}; frugal imports {}",
                doc["model_type"],
                known.join(", ")
            ),
        ));
    };
    let architecture = doc["architectures"][0].as_str().unwrap_or(arch).to_string();
    if architecture != arch {
        return Err(refuse(
            "architectures",
            format!("is {architecture:?}; a {model_type} causal LM is {arch:?}"),
        ));
    }
    let int = |field: &str| -> Result<usize> {
        doc[field]
            .as_u64()
            .filter(|&v| v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| {
                refuse(
                    field,
                    format!("is {}, expected a positive integer", doc[field]),
                )
            })
    };
    let float = |field: &str, default: f64| -> Result<f32> {
        match &doc[field] {
            Value::Null => Ok(default as f32),
            v => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| refuse(field, format!("is {v}, expected a number"))),
        }
    };
    let flag = |field: &str| doc[field].as_bool().unwrap_or(false);
    let (d, n_heads) = (int("hidden_size")?, int("num_attention_heads")?);
    let n_kv_heads = match &doc["num_key_value_heads"] {
        Value::Null => n_heads,
        _ => int("num_key_value_heads")?,
    };
    if let Some(hd) = doc["head_dim"].as_u64() {
        if hd as usize * n_heads != d {
            return Err(refuse(
                "head_dim",
                format!(
                    "is {hd}, but frugal's heads are hidden_size / num_attention_heads = {}",
                    d / n_heads
                ),
            ));
        }
    }
    let act = doc["hidden_act"].as_str().unwrap_or("silu");
    if act != "silu" {
        return Err(refuse(
            "hidden_act",
            format!("is {act:?}; frugal's MLP is SwiGLU (silu)"),
        ));
    }
    if flag("mlp_bias") {
        return Err(refuse(
            "mlp_bias",
            "is true; frugal's MLP has no biases".into(),
        ));
    }
    if model_type != "qwen2" && flag("attention_bias") {
        return Err(refuse(
            "attention_bias",
            "is true (biases on q, k, v and o); frugal has q/k/v biases only (Qwen2's)".into(),
        ));
    }
    if flag("use_sliding_window") {
        return Err(refuse(
            "use_sliding_window",
            "is true; frugal's attention is full causal".into(),
        ));
    }
    if doc.get("quantization_config").is_some_and(|q| !q.is_null()) {
        return Err(refuse(
            "quantization_config",
            "is set; import an unquantised checkpoint".into(),
        ));
    }
    let mut notes = Vec::new();
    let mut context = int("max_position_embeddings")?;
    if let Some(w) = doc["sliding_window"].as_u64().map(|w| w as usize) {
        // Within its window, sliding-window attention is full attention.
        if w < context && model_type == "mistral" {
            notes.push(format!(
                "context limited to the sliding window of {w} tokens, where attention is full"
            ));
            context = w;
        }
    }
    if let Some(c) = context_len {
        context = c;
    }
    let (theta, rope_scaling) = rope(doc, &refuse)?;
    let cfg = ModelConfig {
        vocab_size: int("vocab_size")?,
        context_len: context,
        d_model: d,
        n_layers: int("num_hidden_layers")?,
        n_heads,
        n_kv_heads,
        ffn_hidden: int("intermediate_size")?,
        rope_theta: theta,
        norm_eps: float("rms_norm_eps", 1e-6)?,
        init_std: float("initializer_range", 0.02)?,
        qkv_bias,
        rope_scaling,
        ..Default::default()
    };
    cfg.validate().map_err(|(field, msg)| refuse(field, msg))?;
    Ok(HfModel {
        cfg,
        architecture,
        tied: flag("tie_word_embeddings"),
        notes,
    })
}

/// RoPE's base and scaling: transformers 5's `rope_parameters`, or the older `rope_theta` and
/// `rope_scaling` fields.
fn rope(
    doc: &Value,
    refuse: &dyn Fn(&str, String) -> Error,
) -> Result<(f32, Option<RopeScalingConfig>)> {
    let (params, field) = match (&doc["rope_parameters"], &doc["rope_scaling"]) {
        (p @ Value::Object(_), _) => (p.clone(), "rope_parameters"),
        (_, s @ Value::Object(_)) => (s.clone(), "rope_scaling"),
        _ => (Value::Null, "rope_scaling"),
    };
    let theta = params["rope_theta"]
        .as_f64()
        .or(doc["rope_theta"].as_f64())
        .unwrap_or(10000.0) as f32;
    let kind = params["rope_type"]
        .as_str()
        .or(params["type"].as_str())
        .unwrap_or("default");
    let num = |k: &str| -> Result<f32> {
        params[k].as_f64().map(|x| x as f32).ok_or_else(|| {
            refuse(
                &format!("{field}.{k}"),
                format!("is {}, expected a number", params[k]),
            )
        })
    };
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScalingConfig::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Some(RopeScalingConfig::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_context: num("original_max_position_embeddings")? as usize,
        }),
        other => {
            return Err(refuse(
                &format!("{field}.rope_type"),
                format!(
                "is {other:?}; frugal computes the \"default\", \"linear\" and \"llama3\" types"
            ),
            ))
        }
    };
    Ok((theta, scaling))
}
