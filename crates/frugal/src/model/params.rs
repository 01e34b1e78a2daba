//! All parameters in one flat f32 buffer, with a table of named views (HF Llama names).
//!
//! One buffer, not one allocation per tensor: the optimizer sweeps it in a single fused pass,
//! gradients mirror it exactly, and data-parallel training can all-reduce it in fixed buckets.
//! Tensors that are multiplied by the same input sit next to each other — q, k, v and gate, up —
//! so each group is one GEMM with a taller weight, while names and files stay HF-compatible.

use crate::config::ModelConfig;
use tensor::Rng;

/// One named tensor: its HF name, shape, and offset into the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
    /// Matrices are initialised randomly and weight-decayed; vectors (norm weights) are not.
    pub fn is_matrix(&self) -> bool {
        self.shape.len() >= 2
    }
}

/// Offsets of one decoder layer's tensors in the flat buffer.
#[derive(Clone, Copy, Debug)]
pub struct LayerOffsets {
    pub attn_norm: usize,
    /// q_proj, k_proj, v_proj stacked: ((n_heads + 2·n_kv)·hd, d).
    pub qkv: usize,
    pub o: usize,
    pub mlp_norm: usize,
    /// gate_proj, up_proj stacked: (2·ffn_hidden, d).
    pub gate_up: usize,
    pub down: usize,
}

#[derive(Clone, Debug)]
pub struct Params {
    pub data: Vec<f32>,
    pub specs: Vec<ParamSpec>,
    pub embed: usize,
    pub layers: Vec<LayerOffsets>,
    pub final_norm: usize,
    pub lm_head: usize,
}

impl Params {
    /// The layout for `cfg`, all zeros.
    pub fn zeros(cfg: &ModelConfig) -> Self {
        let (d, hd, h) = (cfg.d_model, cfg.head_dim(), cfg.ffn_hidden);
        let mut specs = Vec::new();
        let mut push = |name: String, shape: Vec<usize>| {
            let offset = specs.last().map_or(0, |s: &ParamSpec| s.offset + s.len());
            specs.push(ParamSpec {
                name,
                shape,
                offset,
            });
            offset
        };
        let embed = push("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d]);
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let attn_norm = push(format!("{p}.input_layernorm.weight"), vec![d]);
                let qkv = push(
                    format!("{p}.self_attn.q_proj.weight"),
                    vec![cfg.n_heads * hd, d],
                );
                push(
                    format!("{p}.self_attn.k_proj.weight"),
                    vec![cfg.n_kv_heads * hd, d],
                );
                push(
                    format!("{p}.self_attn.v_proj.weight"),
                    vec![cfg.n_kv_heads * hd, d],
                );
                let o = push(
                    format!("{p}.self_attn.o_proj.weight"),
                    vec![d, cfg.n_heads * hd],
                );
                let mlp_norm = push(format!("{p}.post_attention_layernorm.weight"), vec![d]);
                let gate_up = push(format!("{p}.mlp.gate_proj.weight"), vec![h, d]);
                push(format!("{p}.mlp.up_proj.weight"), vec![h, d]);
                let down = push(format!("{p}.mlp.down_proj.weight"), vec![d, h]);
                LayerOffsets {
                    attn_norm,
                    qkv,
                    o,
                    mlp_norm,
                    gate_up,
                    down,
                }
            })
            .collect();
        let final_norm = push("model.norm.weight".into(), vec![d]);
        let lm_head = push("lm_head.weight".into(), vec![cfg.vocab_size, d]);
        let total = specs.last().map_or(0, |s| s.offset + s.len());
        Params {
            data: vec![0.0; total],
            specs,
            embed,
            layers,
            final_norm,
            lm_head,
        }
    }

    /// Matrices ~ N(0, init_std²), norm weights = 1, drawn in `specs` order from `seed`.
    pub fn init(cfg: &ModelConfig, seed: u64) -> Self {
        let mut p = Self::zeros(cfg);
        let mut rng = Rng::new(seed);
        for s in &p.specs {
            let dst = &mut p.data[s.range()];
            if s.is_matrix() {
                rng.fill_normal(dst, cfg.init_std);
            } else {
                dst.fill(1.0);
            }
        }
        p
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn spec(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.spec(name).map(|s| &self.data[s.range()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn reference_preset_has_the_documented_size() {
        let cfg = Config::preset("ref", &[]).unwrap().model;
        let p = Params::zeros(&cfg);
        // 2 · 4096·384 (embedding, head) + 6 · (4·384² + 3·384·1024 + 2·384) + 384
        assert_eq!(
            p.len(),
            2 * 4096 * 384 + 6 * (4 * 384 * 384 + 3 * 384 * 1024 + 2 * 384) + 384
        );
        assert_eq!(p.specs.len(), 1 + 6 * 9 + 2);
        let q = p.spec("model.layers.0.self_attn.q_proj.weight").unwrap();
        let k = p.spec("model.layers.0.self_attn.k_proj.weight").unwrap();
        assert_eq!(
            q.offset + q.len(),
            k.offset,
            "q, k, v are stacked for the fused GEMM"
        );
        assert_eq!(
            p.layers[5].qkv,
            p.spec("model.layers.5.self_attn.q_proj.weight")
                .unwrap()
                .offset
        );
    }
}
