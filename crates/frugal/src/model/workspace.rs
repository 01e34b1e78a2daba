//! Activation and gradient buffers for one (batch, seq_len) shape, allocated once and reused by
//! every step, so a training step allocates nothing.

use crate::config::ModelConfig;

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
    /// [gate | up]: (N, 2·ffn_hidden); silu(gate)·up: (N, ffn_hidden).
    pub gu: Vec<f32>,
    pub h: Vec<f32>,
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
    pub(crate) logits_scratch: Vec<f32>,
}

impl Workspace {
    pub fn new(cfg: &ModelConfig, batch: usize, seq_len: usize) -> Self {
        let n = batch * seq_len;
        let (d, hd, hid) = (cfg.d_model, cfg.head_dim(), cfg.ffn_hidden);
        let qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        let att = cfg.n_heads * hd;
        let z = |len: usize| vec![0f32; len];
        let layers = (0..cfg.n_layers)
            .map(|_| LayerActs {
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
            })
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
            dgu: z(n * 2 * hid),
            dh: z(n * hid),
            logits_scratch: Vec::new(),
        }
    }

    pub fn tokens(&self) -> usize {
        self.batch * self.seq_len
    }
}
