//! All parameters in one flat f32 buffer, with a table of named views (HF Llama names).
//!
//! One buffer, not one allocation per tensor: the optimizer sweeps it in a single fused pass,
//! gradients mirror it exactly, and data-parallel training can all-reduce it in fixed buckets.
//! Tensors that are multiplied by the same input sit next to each other — q, k, v and gate, up —
//! so each group is one GEMM with a taller weight, while names and files stay HF-compatible.

use crate::config::ModelConfig;
use tensor::{Cpu, Device, Memory, Rng};

/// One named tensor: its HF name, shape, and offset into the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    /// False for state that rides in the parameter buffer (so checkpoints and exports carry
    /// it) but is moved by a rule of its own, not by the optimizer: the MoE routers'
    /// load-balancing biases.
    pub trained: bool,
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
    /// q_proj, k_proj, v_proj stacked: ((n_heads + 2·n_kv)·hd, d); with latent attention
    /// q_proj alone: (n_heads·hd, d).
    pub qkv: usize,
    /// q_proj, k_proj, v_proj biases stacked ((n_heads + 2·n_kv)·hd), with `qkv_bias`.
    pub qkv_bias: Option<usize>,
    pub o: usize,
    pub mlp_norm: usize,
    /// gate_proj, up_proj stacked: (2·hidden, d), hidden = `ModelConfig::dense_hidden`; in a
    /// MoE layer these are the shared experts (absent when there are none).
    pub gate_up: usize,
    pub down: usize,
    pub moe: Option<MoeOffsets>,
    pub mla: Option<MlaOffsets>,
}

/// Offsets of multi-head latent attention's own tensors (DeepSeek-V2/V3's HF names).
#[derive(Clone, Copy, Debug)]
pub struct MlaOffsets {
    /// self_attn.kv_a_proj_with_mqa: (kv_rank + rope_dim, d), the latent's rows then the
    /// shared RoPE key's.
    pub kv_a: usize,
    /// self_attn.kv_a_layernorm (kv_rank): RMSNorm of the latent.
    pub kv_norm: usize,
    /// self_attn.kv_b_proj: (n_heads·(head_dim − rope_dim + head_dim), kv_rank), per head
    /// [position-free key rows | value rows].
    pub kv_b: usize,
}

/// Offsets of a mixture-of-experts MLP's own tensors (DeepSeek-V3's HF names).
#[derive(Clone, Copy, Debug)]
pub struct MoeOffsets {
    /// mlp.gate.weight: (routed, d).
    pub router: usize,
    /// mlp.gate.e_score_correction_bias: (routed); a selection bias moved by load balancing.
    pub bias: usize,
    /// mlp.experts.{e}.{gate,up,down}_proj: expert e at experts + e·3·eh·d, laid out as
    /// [gate (eh, d) | up (eh, d) | down (d, eh)].
    pub experts: usize,
}

/// Offsets of one multi-token prediction module (DeepSeek-V3's HF names, as layer n_layers + k).
#[derive(Clone, Copy, Debug)]
pub struct MtpOffsets {
    /// enorm (d): RMSNorm of the shifted tokens' embeddings; hnorm (d): of the hidden states.
    pub enorm: usize,
    pub hnorm: usize,
    /// eh_proj: (d, 2d), applied to [enorm(embedding) | hnorm(hidden)].
    pub eh_proj: usize,
    pub block: LayerOffsets,
    /// shared_head.norm (d): the module's final norm before the shared output head.
    pub norm: usize,
}

/// The parameters in `D`'s memory (`data`), and where each tensor sits in it.
#[derive(Clone, Debug)]
pub struct Params<D: Device = Cpu> {
    pub data: D::Mem,
    pub specs: Vec<ParamSpec>,
    pub embed: usize,
    pub layers: Vec<LayerOffsets>,
    pub mtp: Vec<MtpOffsets>,
    pub final_norm: usize,
    pub lm_head: usize,
}

/// A matrix that writes into the residual stream or the logits (`ModelConfig::zero_init_outputs`).
fn is_output_projection(name: &str) -> bool {
    name == "lm_head.weight"
        || name.ends_with(".o_proj.weight")
        || name.ends_with(".down_proj.weight")
}

impl Params {
    /// The layout for `cfg`, all zeros.
    pub fn zeros(cfg: &ModelConfig) -> Self {
        let d = cfg.d_model;
        let mut l = Layout::default();
        let embed = l.push("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d]);
        let layers = (0..cfg.n_layers).map(|i| l.layer(cfg, i)).collect();
        let mtp = (cfg.n_layers..cfg.n_layers + cfg.mtp_depth())
            .map(|i| {
                let p = format!("model.layers.{i}");
                let enorm = l.push(format!("{p}.enorm.weight"), vec![d]);
                let hnorm = l.push(format!("{p}.hnorm.weight"), vec![d]);
                let eh_proj = l.push(format!("{p}.eh_proj.weight"), vec![d, 2 * d]);
                let block = l.layer(cfg, i);
                let norm = l.push(format!("{p}.shared_head.norm.weight"), vec![d]);
                MtpOffsets {
                    enorm,
                    hnorm,
                    eh_proj,
                    block,
                    norm,
                }
            })
            .collect();
        let final_norm = l.push("model.norm.weight".into(), vec![d]);
        let lm_head = l.push("lm_head.weight".into(), vec![cfg.vocab_size, d]);
        Params {
            data: vec![0.0; l.end()],
            specs: l.specs,
            embed,
            layers,
            mtp,
            final_norm,
            lm_head,
        }
    }

    /// Matrices ~ N(0, init_std²) (the output projections zero with `zero_init_outputs`), norm
    /// weights = 1, biases (projections' and balancing) = 0, drawn in `specs` order from `seed`.
    pub fn init(cfg: &ModelConfig, seed: u64) -> Self {
        let mut p = Self::zeros(cfg);
        let mut rng = Rng::new(seed);
        for s in &p.specs {
            let dst = &mut p.data[s.range()];
            if s.is_matrix() {
                // Drawn even when zeroed, so that the other matrices do not change with it.
                rng.fill_normal(dst, cfg.init_std);
                if cfg.zero_init_outputs && is_output_projection(&s.name) {
                    dst.fill(0.0);
                }
            } else if !s.trained || s.name.ends_with(".bias") {
                dst.fill(0.0);
            } else {
                dst.fill(1.0);
            }
        }
        p
    }

    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.spec(name).map(|s| &self.data[s.range()])
    }

    /// The same parameters in `dev`'s memory.
    pub fn to_device<D: Device>(&self, dev: &D) -> Params<D> {
        Params {
            data: dev.upload(&self.data),
            specs: self.specs.clone(),
            embed: self.embed,
            layers: self.layers.clone(),
            mtp: self.mtp.clone(),
            final_norm: self.final_norm,
            lm_head: self.lm_head,
        }
    }
}

impl<D: Device> Params<D> {
    pub fn len(&self) -> usize {
        self.data.numel()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn spec(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }
}

/// Specs laid out one after another.
#[derive(Default)]
struct Layout {
    specs: Vec<ParamSpec>,
}

impl Layout {
    fn end(&self) -> usize {
        self.specs.last().map_or(0, |s| s.offset + s.len())
    }

    fn add(&mut self, name: String, shape: Vec<usize>, trained: bool) -> usize {
        let offset = self.end();
        self.specs.push(ParamSpec {
            name,
            shape,
            offset,
            trained,
        });
        offset
    }

    /// A trained tensor; returns its offset.
    fn push(&mut self, name: String, shape: Vec<usize>) -> usize {
        self.add(name, shape, true)
    }

    /// One decoder layer's tensors, as model.layers.{i}.
    fn layer(&mut self, cfg: &ModelConfig, i: usize) -> LayerOffsets {
        let d = cfg.d_model;
        let hd = cfg.head_dim();
        let p = format!("model.layers.{i}");
        let attn_norm = self.push(format!("{p}.input_layernorm.weight"), vec![d]);
        let qkv = self.push(
            format!("{p}.self_attn.q_proj.weight"),
            vec![cfg.n_heads * hd, d],
        );
        let mla = cfg.mla().map(|m| {
            let a = format!("{p}.self_attn");
            let kv_a = self.push(
                format!("{a}.kv_a_proj_with_mqa.weight"),
                vec![m.kv_rank + m.rope_dim, d],
            );
            let kv_norm = self.push(format!("{a}.kv_a_layernorm.weight"), vec![m.kv_rank]);
            let kv_b = self.push(
                format!("{a}.kv_b_proj.weight"),
                vec![cfg.n_heads * (2 * hd - m.rope_dim), m.kv_rank],
            );
            MlaOffsets {
                kv_a,
                kv_norm,
                kv_b,
            }
        });
        if mla.is_none() {
            self.push(
                format!("{p}.self_attn.k_proj.weight"),
                vec![cfg.n_kv_heads * hd, d],
            );
            self.push(
                format!("{p}.self_attn.v_proj.weight"),
                vec![cfg.n_kv_heads * hd, d],
            );
        }
        // [q | k | v] biases side by side, like the rows they are added to.
        let qkv_bias = cfg.qkv_bias.then(|| {
            let a = format!("{p}.self_attn");
            let q = self.push(format!("{a}.q_proj.bias"), vec![cfg.n_heads * hd]);
            self.push(format!("{a}.k_proj.bias"), vec![cfg.n_kv_heads * hd]);
            self.push(format!("{a}.v_proj.bias"), vec![cfg.n_kv_heads * hd]);
            q
        });
        let o = self.push(
            format!("{p}.self_attn.o_proj.weight"),
            vec![d, cfg.n_heads * hd],
        );
        let mlp_norm = self.push(format!("{p}.post_attention_layernorm.weight"), vec![d]);
        let h = cfg.dense_hidden(i);
        let moe = cfg.moe_at(i).map(|m| {
            let router = self.push(format!("{p}.mlp.gate.weight"), vec![m.routed_experts, d]);
            let bias = self.state(
                format!("{p}.mlp.gate.e_score_correction_bias"),
                vec![m.routed_experts],
            );
            (router, bias)
        });
        let mlp = if moe.is_some() {
            format!("{p}.mlp.shared_experts")
        } else {
            format!("{p}.mlp")
        };
        let (gate_up, down) = if h > 0 {
            let gate_up = self.push(format!("{mlp}.gate_proj.weight"), vec![h, d]);
            self.push(format!("{mlp}.up_proj.weight"), vec![h, d]);
            (
                gate_up,
                self.push(format!("{mlp}.down_proj.weight"), vec![d, h]),
            )
        } else {
            (0, 0) // no shared experts: never read
        };
        let moe = cfg.moe_at(i).zip(moe).map(|(m, (router, bias))| {
            let eh = m.expert_hidden;
            let mut experts = None;
            for e in 0..m.routed_experts {
                let q = format!("{p}.mlp.experts.{e}");
                let first = self.push(format!("{q}.gate_proj.weight"), vec![eh, d]);
                self.push(format!("{q}.up_proj.weight"), vec![eh, d]);
                self.push(format!("{q}.down_proj.weight"), vec![d, eh]);
                experts.get_or_insert(first);
            }
            MoeOffsets {
                router,
                bias,
                experts: experts.expect("validated: at least one routed expert"),
            }
        });
        LayerOffsets {
            attn_norm,
            qkv,
            qkv_bias,
            o,
            mlp_norm,
            gate_up,
            down,
            moe,
            mla,
        }
    }

    /// State the optimizer leaves alone.
    fn state(&mut self, name: String, shape: Vec<usize>) -> usize {
        self.add(name, shape, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn reference_preset_has_the_documented_size() {
        let cfg = ModelConfig::preset("ref", &[]).unwrap();
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

    #[test]
    fn zero_init_outputs_zeroes_only_the_output_projections() {
        for preset in ["tiny", "tiny-moe", "tiny-mla"] {
            let base = ModelConfig::preset(preset, &[]).unwrap();
            let zeroed =
                ModelConfig::preset(preset, &["model.zero_init_outputs=true".into()]).unwrap();
            let (a, b) = (Params::init(&base, 7), Params::init(&zeroed, 7));
            let mut outputs = 0;
            for s in &a.specs {
                let (x, y) = (&a.data[s.range()], &b.data[s.range()]);
                if is_output_projection(&s.name) {
                    outputs += 1;
                    assert!(
                        y.iter().all(|&v| v == 0.0),
                        "{preset}: {} is not zero",
                        s.name
                    );
                    assert!(
                        x.iter().any(|&v| v != 0.0),
                        "{preset}: {} is zero by default",
                        s.name
                    );
                } else {
                    assert_eq!(x, y, "{preset}: {} changed", s.name);
                }
            }
            // o_proj and at least one down_proj per layer, and the head.
            assert!(
                outputs > 2 * base.n_layers,
                "{preset}: {outputs} output projections"
            );
        }
    }
}
