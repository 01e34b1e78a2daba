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
    /// Latent attention's own activations.
    pub mla: Option<MlaActs>,
}

/// Latent attention's forward state (see `model::mla`).
pub(crate) struct MlaActs {
    /// The latent before and after its norm (N, kv_rank), and the norm's 1/rms (N).
    pub c: Vec<f32>,
    pub cn: Vec<f32>,
    pub rstd: Vec<f32>,
    /// The shared RoPE key, rotated: (N, rope_dim).
    pub kpe: Vec<f32>,
    /// kv_b_proj(cn): per head [position-free key | value], (N, heads·(nope + head_dim)).
    pub kv: Vec<f32>,
}

/// Latent attention's backward scratch: the gradients of `MlaActs`' tensors.
#[derive(Default)]
pub(crate) struct MlaGrads {
    pub dc: Vec<f32>,
    pub dcn: Vec<f32>,
    pub dkpe: Vec<f32>,
    pub dkv: Vec<f32>,
}

impl MlaGrads {
    fn new(cfg: &ModelConfig, n: usize) -> Self {
        cfg.mla().map_or_else(Self::default, |m| {
            let md = crate::config::MlaDims::new(cfg, m);
            MlaGrads {
                dc: vec![0.0; n * md.rank],
                dcn: vec![0.0; n * md.rank],
                dkpe: vec![0.0; n * md.rope],
                dkv: vec![0.0; n * md.kv],
            }
        })
    }
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

impl LayerActs {
    /// Buffers for layer `l` (from n_layers on, a multi-token prediction module's block).
    fn new(cfg: &ModelConfig, l: usize, batch: usize, seq_len: usize) -> Self {
        let (n, d, hd, hid) = (
            batch * seq_len,
            cfg.d_model,
            cfg.head_dim(),
            cfg.dense_hidden(l),
        );
        let z = |len: usize| vec![0f32; len];
        LayerActs {
            xn1: z(n * d),
            rstd1: z(n),
            qkv: z(n * (cfg.n_heads + 2 * cfg.n_kv_heads) * hd),
            att: z(n * cfg.n_heads * hd),
            lse: z(batch * cfg.n_heads * seq_len),
            x_mid: z(n * d),
            xn2: z(n * d),
            rstd2: z(n),
            gu: z(n * 2 * hid),
            h: z(n * hid),
            moe: cfg.moe_at(l).map(|m| MoeActs::new(n, m, d)),
            mla: cfg.mla().map(|m| {
                let md = crate::config::MlaDims::new(cfg, m);
                MlaActs {
                    c: z(n * md.rank),
                    cn: z(n * md.rank),
                    rstd: z(n),
                    kpe: z(n * md.rope),
                    kv: z(n * md.kv),
                }
            }),
        }
    }
}

/// Backward scratch shared by every block: dL/d(residual stream) flows through `dresid`.
pub(crate) struct BlockGrads {
    pub dresid: Vec<f32>,
    pub dxn: Vec<f32>,
    pub dqkv: Vec<f32>,
    pub datt: Vec<f32>,
    pub dgu: Vec<f32>,
    pub dh: Vec<f32>,
    pub moe: MoeGrads,
    pub mla: MlaGrads,
}

/// One multi-token prediction module's forward state.
pub(crate) struct MtpActs {
    /// Its input tokens (the sequence shifted by k) and targets (shifted by k + 1; IGNORE past
    /// the window's end): (N).
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
    /// Embeddings of `tokens` (N, d); enorm of them and hnorm of the previous hidden states,
    /// side by side: (N, 2d); their 1/rms (N) each.
    pub emb: Vec<f32>,
    pub cat: Vec<f32>,
    pub en: Vec<f32>,
    pub hn: Vec<f32>,
    pub rstd_e: Vec<f32>,
    pub rstd_h: Vec<f32>,
    /// eh_proj(cat): the block's input (N, d); the block's output (N, d).
    pub x0: Vec<f32>,
    pub block: LayerActs,
    pub out: Vec<f32>,
    /// shared_head.norm(out) (N, d) and its 1/rms (N).
    pub xf: Vec<f32>,
    pub rstd_f: Vec<f32>,
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
    /// Backward scratch, shared by all blocks.
    pub(crate) g: BlockGrads,
    pub(crate) logits_scratch: Vec<f32>,
    pub(crate) mtp: Vec<MtpActs>,
    /// dL/d(last layer's output) from the multi-token prediction modules (N, d), waiting for
    /// the main backward when `mtp_pending`; and their loss, the mean over modules of each
    /// one's mean cross-entropy, in the last `forward_backward`.
    pub(crate) mtp_dh: Vec<f32>,
    pub(crate) mtp_pending: bool,
    pub(crate) mtp_loss: f64,
    pub(crate) mtp_objective: f64,
    /// Tokens each routed expert received, per layer then per MTP module (empty where dense),
    /// summed over the forward passes since the trainer last took them (`take_expert_load`).
    pub(crate) expert_load: Vec<Vec<u64>>,
    /// The sequence-wise balance loss of the last forward pass, summed over its sequences.
    pub(crate) balance_loss: f64,
}

impl Workspace {
    /// The final norm's output of the last forward: (N, d), what the LM head reads.
    pub fn final_normed(&self) -> &[f32] {
        &self.xf
    }

    pub fn new(cfg: &ModelConfig, batch: usize, seq_len: usize) -> Self {
        let n = batch * seq_len;
        let (d, hd) = (cfg.d_model, cfg.head_dim());
        let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        let att = cfg.n_heads * hd;
        let z = |len: usize| vec![0f32; len];
        let blocks = cfg.n_layers + cfg.mtp_depth();
        let max_hid = (0..blocks).map(|l| cfg.dense_hidden(l)).max().unwrap_or(0);
        let layers = (0..cfg.n_layers)
            .map(|l| LayerActs::new(cfg, l, batch, seq_len))
            .collect();
        // Validation leaves the last layer to the experts whenever there are experts.
        let moe = cfg
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
        let mtp = (cfg.n_layers..blocks)
            .map(|l| MtpActs {
                tokens: vec![0; n],
                targets: vec![0; n],
                emb: z(n * d),
                cat: z(n * 2 * d),
                en: z(n * d),
                hn: z(n * d),
                rstd_e: z(n),
                rstd_h: z(n),
                x0: z(n * d),
                block: LayerActs::new(cfg, l, batch, seq_len),
                out: z(n * d),
                xf: z(n * d),
                rstd_f: z(n),
            })
            .collect();
        let expert_load = (0..blocks)
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
            g: BlockGrads {
                dresid: z(n * d),
                dxn: z(n * d),
                dqkv: z(n * qkv),
                datt: z(n * att),
                dgu: z(n * 2 * max_hid),
                dh: z(n * max_hid),
                moe,
                mla: MlaGrads::new(cfg, n),
            },
            logits_scratch: Vec::new(),
            mtp,
            mtp_dh: z(if cfg.mtp_depth() > 0 { n * d } else { 0 }),
            mtp_pending: false,
            mtp_loss: 0.0,
            mtp_objective: 0.0,
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

    /// The multi-token prediction loss of the last `forward_backward`: module k's mean
    /// cross-entropy over its targets (the tokens k + 1 ahead), averaged over modules; 0 without
    /// modules. The training objective adds it times λ.
    pub fn mtp_loss(&self) -> f64 {
        self.mtp_loss
    }

    /// What the modules added to the objective whose gradient the last `forward_backward`
    /// took, before its grad_scale: λ/D · Σ_k (module k's summed cross-entropy).
    pub fn mtp_objective(&self) -> f64 {
        self.mtp_objective
    }
}
