//! Activation and gradient buffers for one (batch, seq_len) shape, allocated once and reused by
//! every step, so a training step allocates nothing.

use crate::config::ModelConfig;
use tensor::ops::moe::Routing;

/// What one layer's forward pass keeps for its backward pass. N = batch · seq_len rows.
pub(crate) struct LayerActs {
    /// input_layernorm(x): (N, d), and its 1/rms per row: (N).
    pub xn1: Vec<f32>,
    pub rstd1: Vec<f32>,
    /// [q | k | v] after RoPE: (N, (n_heads + 2·n_kv)·hd).
    pub qkv: Vec<f32>,
    /// Attention output before o_proj: (N, n_heads·hd); log-sum-exp: (B, n_heads, T).
    pub att: Vec<f32>,
    pub lse: Vec<f32>,
    /// Residual stream after attention: (N, d).
    pub x_mid: Vec<f32>,
    pub xn2: Vec<f32>,
    pub rstd2: Vec<f32>,
    /// [gate | up]: (N, 2·hidden); silu(gate)·up: (N, hidden), hidden = dense_hidden(layer).
    pub gu: Vec<f32>,
    pub h: Vec<f32>,
    /// The routed experts' activations, in MoE layers.
    pub moe: Option<MoeActs>,
}

/// A mixture-of-experts MLP's forward state. R = N · top_k dispatch rows, grouped by expert.
#[derive(Default)]
pub(crate) struct MoeActs {
    /// Router logits: (N, routed).
    pub logits: Vec<f32>,
    pub routing: Routing,
    /// Dispatched inputs (R, d), the experts' [gate | up] (R, 2·eh), silu(gate)·up (R, eh)
    /// and outputs (R, d).
    pub xd: Vec<f32>,
    pub gud: Vec<f32>,
    pub hd: Vec<f32>,
    pub yd: Vec<f32>,
}

impl MoeActs {
    pub fn new(n: usize, cfg: &crate::config::MoeConfig, d: usize) -> Self {
        let (r, eh) = (n * cfg.top_k, cfg.expert_hidden);
        MoeActs {
            logits: vec![0.0; n * cfg.routed_experts],
            routing: Routing::default(),
            xd: vec![0.0; r * d],
            gud: vec![0.0; r * 2 * eh],
            hd: vec![0.0; r * eh],
            yd: vec![0.0; r * d],
        }
    }
}

/// Backward scratch of the MoE layers, sized for the widest.
#[derive(Default)]
pub(crate) struct MoeGrads {
    pub dyd: Vec<f32>,
    pub dhd: Vec<f32>,
    pub dgud: Vec<f32>,
    pub dxd: Vec<f32>,
    pub dgates: Vec<f32>,
    pub dlogits: Vec<f32>,
}

pub struct Workspace {
    pub batch: usize,
    pub seq_len: usize,
    /// Sequences that pack several documents: for each token (B·T), the position in its
    /// sequence where its document starts; attention then stays within documents. None: one
    /// causal sequence per row (pretraining).
    pub doc_starts: Option<Vec<u32>>,
    /// Residual stream entering each layer, and leaving the last: (n_layers + 1, N, d).
    pub(crate) resid: Vec<f32>,
    pub(crate) layers: Vec<LayerActs>,
    /// Final norm output (N, d) and its 1/rms (N).
    pub(crate) xf: Vec<f32>,
    pub(crate) rstd_f: Vec<f32>,
    // Backward scratch, shared by all layers.
    pub(crate) dresid: Vec<f32>,
    pub(crate) dxn: Vec<f32>,
    pub(crate) dqkv: Vec<f32>,
    pub(crate) datt: Vec<f32>,
    pub(crate) dgu: Vec<f32>,
    pub(crate) dh: Vec<f32>,
    pub(crate) moe_grads: MoeGrads,
    pub(crate) logits_scratch: Vec<f32>,
    /// Tokens each routed expert received, per layer (empty for dense layers), summed over
    /// the forward passes since the trainer last took them (`take_expert_load`).
    pub(crate) expert_load: Vec<Vec<u64>>,
    /// The sequence-wise balance loss of the last forward pass, summed over its sequences.
    pub(crate) balance_loss: f64,
}

impl Workspace {
    pub fn new(cfg: &ModelConfig, batch: usize, seq_len: usize) -> Self {
        let n = batch * seq_len;
        let (d, hd) = (cfg.d_model, cfg.head_dim());
        let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        let att = cfg.n_heads * hd;
        let z = |len: usize| vec![0f32; len];
        let widest = (0..cfg.n_layers).map(|l| cfg.dense_hidden(l)).max();
        let max_hid = widest.unwrap_or(0);
        let layers = (0..cfg.n_layers)
            .map(|l| (l, cfg.dense_hidden(l)))
            .map(|(l, hid)| LayerActs {
                xn1: z(n * d),
                rstd1: z(n),
                qkv: z(n * qkv),
                att: z(n * att),
                lse: z(batch * cfg.n_heads * seq_len),
                x_mid: z(n * d),
                xn2: z(n * d),
                rstd2: z(n),
                gu: z(n * 2 * hid),
                h: z(n * hid),
                moe: cfg.moe_at(l).map(|m| MoeActs::new(n, m, d)),
            })
            .collect();
        // Validation leaves the last layer to the experts whenever there are experts.
        let moe_grads = cfg
            .moe_at(cfg.n_layers - 1)
            .map_or_else(MoeGrads::default, |m| {
                let (r, eh) = (n * m.top_k, m.expert_hidden);
                MoeGrads {
                    dyd: z(r * d),
                    dhd: z(r * eh),
                    dgud: z(r * 2 * eh),
                    dxd: z(r * d),
                    dgates: z(r),
                    dlogits: z(n * m.routed_experts),
                }
            });
        let expert_load = (0..cfg.n_layers)
            .map(|l| vec![0; cfg.moe_at(l).map_or(0, |m| m.routed_experts)])
            .collect();
        Workspace {
            batch,
            seq_len,
            doc_starts: None,
            resid: z((cfg.n_layers + 1) * n * d),
            layers,
            xf: z(n * d),
            rstd_f: z(n),
            dresid: z(n * d),
            dxn: z(n * d),
            dqkv: z(n * qkv),
            datt: z(n * att),
            dgu: z(n * 2 * max_hid),
            dh: z(n * max_hid),
            moe_grads,
            logits_scratch: Vec::new(),
            expert_load,
            balance_loss: 0.0,
        }
    }

    pub fn tokens(&self) -> usize {
        self.batch * self.seq_len
    }

    /// Tokens per routed expert of each layer (empty for dense layers) over the forward passes
    /// since the last call, which starts a new count.
    pub fn take_expert_load(&mut self) -> Vec<Vec<u64>> {
        let zeros = self.expert_load.iter().map(|l| vec![0; l.len()]).collect();
        std::mem::replace(&mut self.expert_load, zeros)
    }

    /// The sequence-wise balance loss (α included) of the last forward pass, summed over its
    /// sequences and MoE layers; 0 without one.
    pub fn balance_loss(&self) -> f64 {
        self.balance_loss
    }
}
