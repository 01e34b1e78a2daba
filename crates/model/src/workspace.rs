//! Activation and gradient buffers for one (batch, seq_len) shape, allocated once and reused by
//! every step, so a training step allocates nothing.

use crate::config::ModelConfig;
use tensor::{Cpu, Device, Memory};

/// What one layer's forward pass keeps for its backward pass. N = batch · seq_len rows.
pub(crate) struct LayerActs<D: Device> {
    /// input_layernorm(x): (N, d), and its 1/rms per row: (N).
    pub xn1: D::Mem,
    pub rstd1: D::Mem,
    /// [q | k | v] after RoPE: (N, (n_heads + 2·n_kv)·hd).
    pub qkv: D::Mem,
    /// Attention output before o_proj: (N, n_heads·hd); log-sum-exp: (B, n_heads, T).
    pub att: D::Mem,
    pub lse: D::Mem,
    /// Residual stream after attention: (N, d).
    pub x_mid: D::Mem,
    pub xn2: D::Mem,
    pub rstd2: D::Mem,
    /// [gate | up]: (N, 2·hidden); silu(gate)·up: (N, hidden), hidden = dense_hidden(layer).
    pub gu: D::Mem,
    pub h: D::Mem,
    /// The routed experts' activations, in MoE layers.
    pub moe: Option<MoeActs<D>>,
    /// Latent attention's own activations.
    pub mla: Option<MlaActs<D>>,
}

/// Latent attention's forward state (see `model::mla`).
pub(crate) struct MlaActs<D: Device> {
    /// The latent before and after its norm (N, kv_rank), and the norm's 1/rms (N).
    pub c: D::Mem,
    pub cn: D::Mem,
    pub rstd: D::Mem,
    /// The shared RoPE key, rotated: (N, rope_dim).
    pub kpe: D::Mem,
    /// kv_b_proj(cn): per head [position-free key | value], (N, heads·(nope + head_dim)).
    pub kv: D::Mem,
}

/// Latent attention's backward scratch: the gradients of `MlaActs`' tensors.
pub(crate) struct MlaGrads<D: Device> {
    pub dc: D::Mem,
    pub dcn: D::Mem,
    pub dkpe: D::Mem,
    pub dkv: D::Mem,
}

impl<D: Device> MlaGrads<D> {
    fn new(dev: &D, cfg: &ModelConfig, n: usize) -> Self {
        let md = cfg.mla().map(|m| crate::config::MlaDims::new(cfg, m));
        let z = |f: fn(&crate::config::MlaDims) -> usize| {
            dev.zeros(md.as_ref().map_or(0, |md| n * f(md)))
        };
        MlaGrads {
            dc: z(|md| md.rank),
            dcn: z(|md| md.rank),
            dkpe: z(|md| md.rope),
            dkv: z(|md| md.kv),
        }
    }
}

/// A mixture-of-experts MLP's forward state. R = N · top_k dispatch rows, grouped by expert.
pub(crate) struct MoeActs<D: Device> {
    /// Router logits: (N, routed).
    pub logits: D::Mem,
    pub routing: D::Routing,
    /// Dispatched inputs (R, d), the experts' [gate | up] (R, 2·eh), silu(gate)·up (R, eh)
    /// and outputs (R, d).
    pub xd: D::Mem,
    pub gud: D::Mem,
    pub hd: D::Mem,
    pub yd: D::Mem,
}

impl<D: Device> MoeActs<D> {
    pub fn new(dev: &D, n: usize, cfg: &crate::config::MoeConfig, d: usize) -> Self {
        let (r, eh) = (n * cfg.top_k, cfg.expert_hidden);
        MoeActs {
            logits: dev.zeros(n * cfg.routed_experts),
            routing: dev.routing(),
            xd: dev.zeros(r * d),
            gud: dev.zeros(r * 2 * eh),
            hd: dev.zeros(r * eh),
            yd: dev.zeros(r * d),
        }
    }
}

/// Empty buffers, sized at first use (the KV-cache forward's scratch).
impl Default for MoeActs<Cpu> {
    fn default() -> Self {
        MoeActs::new(&Cpu, 0, &crate::config::MoeConfig::default(), 0)
    }
}

impl<D: Device> MoeGrads<D> {
    /// Scratch for the MoE layers of `cfg` over n rows (empty buffers in a dense model).
    fn new(dev: &D, cfg: &ModelConfig, n: usize) -> Self {
        let d = cfg.d_model;
        // Validation leaves the last layer to the experts whenever there are experts.
        let m = cfg.moe_at(cfg.n_layers - 1);
        let z = |f: &dyn Fn(&crate::config::MoeConfig) -> usize| dev.zeros(m.map_or(0, f));
        MoeGrads {
            dyd: z(&|m| n * m.top_k * d),
            dhd: z(&|m| n * m.top_k * m.expert_hidden),
            dgud: z(&|m| n * m.top_k * 2 * m.expert_hidden),
            dxd: z(&|m| n * m.top_k * d),
            dgates: z(&|m| n * m.top_k),
            dlogits: z(&|m| n * m.routed_experts),
        }
    }
}

/// Backward scratch of the MoE layers, sized for the widest.
pub(crate) struct MoeGrads<D: Device> {
    pub dyd: D::Mem,
    pub dhd: D::Mem,
    pub dgud: D::Mem,
    pub dxd: D::Mem,
    pub dgates: D::Mem,
    pub dlogits: D::Mem,
}

impl<D: Device> LayerActs<D> {
    /// Buffers for layer `l` (from n_layers on, a multi-token prediction module's block).
    fn new(dev: &D, cfg: &ModelConfig, l: usize, batch: usize, seq_len: usize) -> Self {
        let (n, d, hd, hid) = (
            batch * seq_len,
            cfg.d_model,
            cfg.head_dim(),
            cfg.dense_hidden(l),
        );
        let z = |len: usize| dev.zeros(len);
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
            moe: cfg.moe_at(l).map(|m| MoeActs::new(dev, n, m, d)),
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
pub(crate) struct BlockGrads<D: Device> {
    pub dresid: D::Mem,
    pub dxn: D::Mem,
    pub dqkv: D::Mem,
    pub datt: D::Mem,
    pub dgu: D::Mem,
    pub dh: D::Mem,
    pub moe: MoeGrads<D>,
    pub mla: MlaGrads<D>,
    /// Where a frozen norm's weight gradient goes (d), computed with its input's and unread.
    pub dnorm: D::Mem,
}

/// LoRA's side path over a batch (`model::lora`): T = s·A·drop(x) of each adapter of each
/// layer (N, r), kept for the backward, and scratch for a dropped input or its gradient.
pub(crate) struct LoraActs<D: Device> {
    pub t: Vec<Vec<D::Mem>>,
    pub u: D::Mem,
    pub dt: D::Mem,
    /// The masks' key of the forward these activations are from; None: no dropout.
    pub key: Option<u64>,
}

impl<D: Device> LoraActs<D> {
    /// Buffers for `per_layer[l]` adapters in layer l, of rank r, the widest input `widest`
    /// wide, over n rows.
    pub fn new(dev: &D, per_layer: &[usize], r: usize, widest: usize, n: usize) -> Self {
        let t = per_layer
            .iter()
            .map(|&k| (0..k).map(|_| dev.zeros(n * r)).collect());
        LoraActs {
            t: t.collect(),
            u: dev.zeros(n * widest),
            dt: dev.zeros(n * r),
            key: None,
        }
    }

    /// Whether these were sized for `per_layer` adapters of rank r over n rows.
    pub fn fits(&self, per_layer: &[usize], r: usize, n: usize) -> bool {
        self.t.iter().map(Vec::len).eq(per_layer.iter().copied()) && self.dt.numel() == n * r
    }
}

/// One multi-token prediction module's forward state.
pub(crate) struct MtpActs<D: Device> {
    /// Its input tokens (the sequence shifted by k) and targets (shifted by k + 1; IGNORE past
    /// the window's end): (N).
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
    /// Embeddings of `tokens` (N, d); enorm of them and hnorm of the previous hidden states,
    /// side by side: (N, 2d); their 1/rms (N) each.
    pub emb: D::Mem,
    pub cat: D::Mem,
    pub en: D::Mem,
    pub hn: D::Mem,
    pub rstd_e: D::Mem,
    pub rstd_h: D::Mem,
    /// eh_proj(cat): the block's input (N, d); the block's output (N, d).
    pub x0: D::Mem,
    pub block: LayerActs<D>,
    pub out: D::Mem,
    /// shared_head.norm(out) (N, d) and its 1/rms (N).
    pub xf: D::Mem,
    pub rstd_f: D::Mem,
}

pub struct Workspace<D: Device = Cpu> {
    pub batch: usize,
    pub seq_len: usize,
    /// Sequences that pack several documents: for each token (B·T), the position in its
    /// sequence where its document starts; attention then stays within documents. None: one
    /// causal sequence per row (pretraining).
    pub doc_starts: Option<Vec<u32>>,
    /// Residual stream entering each layer, and leaving the last: (n_layers + 1, N, d).
    pub(crate) resid: D::Mem,
    pub(crate) layers: Vec<LayerActs<D>>,
    /// Final norm output (N, d) and its 1/rms (N).
    pub(crate) xf: D::Mem,
    pub(crate) rstd_f: D::Mem,
    /// Backward scratch, shared by all blocks.
    pub(crate) g: BlockGrads<D>,
    pub(crate) logits_scratch: D::Mem,
    pub(crate) mtp: Vec<MtpActs<D>>,
    /// dL/d(last layer's output) from the multi-token prediction modules (N, d), waiting for
    /// the main backward when `mtp_pending`; and their loss, the mean over modules of each
    /// one's mean cross-entropy, in the last `forward_backward`.
    pub(crate) mtp_dh: D::Mem,
    pub(crate) mtp_pending: bool,
    pub(crate) mtp_loss: f64,
    pub(crate) mtp_objective: f64,
    /// Tokens each routed expert received, per layer then per MTP module (empty where dense),
    /// summed over the forward passes since the trainer last took them (`take_expert_load`).
    pub(crate) expert_load: Vec<Vec<u64>>,
    /// The sequence-wise balance loss of the last forward pass, summed over its sequences.
    pub(crate) balance_loss: f64,
    /// LoRA's side path, sized at the first pass of a model with adapters.
    pub(crate) lora: Option<LoraActs<D>>,
}

impl Workspace {
    /// Buffers on the CPU.
    pub fn new(cfg: &ModelConfig, batch: usize, seq_len: usize) -> Self {
        Self::on(&Cpu, cfg, batch, seq_len)
    }

    /// The final norm's output of the last forward: (N, d), what the LM head reads.
    pub fn final_normed(&self) -> &[f32] {
        &self.xf
    }
}

impl<D: Device> Workspace<D> {
    /// Buffers for batches of `batch` sequences of `seq_len` tokens, in `dev`'s memory.
    pub fn on(dev: &D, cfg: &ModelConfig, batch: usize, seq_len: usize) -> Self {
        let n = batch * seq_len;
        let (d, hd) = (cfg.d_model, cfg.head_dim());
        let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        let att = cfg.n_heads * hd;
        let z = |len: usize| dev.zeros(len);
        let blocks = cfg.n_layers + cfg.mtp_depth();
        let max_hid = (0..blocks).map(|l| cfg.dense_hidden(l)).max().unwrap_or(0);
        let layers = (0..cfg.n_layers)
            .map(|l| LayerActs::new(dev, cfg, l, batch, seq_len))
            .collect();
        let moe = MoeGrads::new(dev, cfg, n);
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
                block: LayerActs::new(dev, cfg, l, batch, seq_len),
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
                mla: MlaGrads::new(dev, cfg, n),
                dnorm: z(d),
            },
            logits_scratch: dev.zeros(0),
            mtp,
            mtp_dh: z(if cfg.mtp_depth() > 0 { n * d } else { 0 }),
            mtp_pending: false,
            mtp_loss: 0.0,
            mtp_objective: 0.0,
            expert_load,
            balance_loss: 0.0,
            lora: None,
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
