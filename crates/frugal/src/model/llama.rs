//! Forward and backward passes of the Llama-style decoder, written out layer by layer in forward
//! order (norm → attention → MLP → block → model), as llm.c does: no autodiff graph, every
//! activation in a preallocated buffer, every gradient of a weight accumulated by one GEMM.

use super::{Params, Workspace};
use crate::config::ModelConfig;
use tensor::ops::add_inplace;
use tensor::ops::attention::{attention_backward_docs, attention_forward_docs, AttnShape};
use tensor::ops::cross_entropy::{lm_head_cross_entropy, LossGrads};
use tensor::ops::embedding::{embedding_backward, embedding_forward};
use tensor::ops::moe::balance_loss;
use tensor::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use tensor::ops::rope::{rope_backward, rope_forward, RopeLayout, RopeTable};
use tensor::ops::swiglu::{swiglu_backward, swiglu_forward};
use tensor::{sgemm, Gemm};

pub struct Llama {
    pub cfg: ModelConfig,
    pub params: Params,
    pub(crate) rope: RopeTable,
}

/// Dimensions used throughout one pass.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    d: usize,
    qkv: usize,
    att: usize,
}

impl Llama {
    pub fn new(cfg: ModelConfig, params: Params) -> Self {
        assert_eq!(
            params.len(),
            Params::zeros(&cfg).len(),
            "Llama::new: parameters do not match the config"
        );
        let rope = RopeTable::new(cfg.context_len, cfg.head_dim(), cfg.rope_theta);
        Llama { cfg, params, rope }
    }

    /// A freshly initialised model (see `Params::init`).
    pub fn init(cfg: ModelConfig, seed: u64) -> Self {
        let params = Params::init(&cfg, seed);
        Self::new(cfg, params)
    }

    pub fn workspace(&self, batch: usize, seq_len: usize) -> Workspace {
        Workspace::new(&self.cfg, batch, seq_len)
    }

    fn dims(&self, ws: &Workspace) -> Dims {
        let c = &self.cfg;
        let hd = c.head_dim();
        Dims {
            n: ws.tokens(),
            d: c.d_model,
            qkv: (c.n_heads + 2 * c.n_kv_heads) * hd,
            att: c.n_heads * hd,
        }
    }

    fn attn_shape(&self, ws: &Workspace) -> AttnShape {
        let c = &self.cfg;
        AttnShape {
            batch: ws.batch,
            seq_len: ws.seq_len,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim(),
        }
    }

    fn rope_layout(&self, ws: &Workspace, dims: Dims) -> RopeLayout {
        // q and k heads are adjacent in each qkv row: rotate them in one sweep.
        RopeLayout {
            stride: dims.qkv,
            col: 0,
            n_heads: self.cfg.n_heads + self.cfg.n_kv_heads,
            seq_len: ws.seq_len,
            pos0: 0,
        }
    }

    /// Embedding, all layers and the final norm, leaving activations in `ws` and the normalised
    /// final hidden states in `ws.xf`.
    ///
    /// # Shapes
    /// tokens: (B·T) row-major, ids < vocab_size (checked where data enters frugal).
    fn forward_trunk(&self, tokens: &[u32], ws: &mut Workspace) {
        assert!(
            tokens.len() == ws.tokens() && ws.seq_len <= self.cfg.context_len,
            "forward: tokens do not fit the workspace"
        );
        let dm = self.dims(ws);
        let (n, d) = (dm.n, dm.d);
        let p = &self.params.data;
        let eps = self.cfg.norm_eps;
        embedding_forward(&mut ws.resid[..n * d], tokens, &p[self.params.embed..], d);
        let (attn, rope) = (self.attn_shape(ws), self.rope_layout(ws, dm));
        let starts = ws.doc_starts.as_deref();
        let mut balance = 0f64;
        for (l, (off, a)) in self
            .params
            .layers
            .iter()
            .zip(ws.layers.iter_mut())
            .enumerate()
        {
            let (before, after) = ws.resid.split_at_mut((l + 1) * n * d);
            let (x_in, x_out) = (&before[l * n * d..], &mut after[..n * d]);
            // Attention block: x_mid = x_in + o_proj(attn(rope(qkv(norm(x_in)))))
            rmsnorm_forward(
                &mut a.xn1,
                &mut a.rstd1,
                x_in,
                &p[off.attn_norm..][..d],
                d,
                eps,
            );
            sgemm(&Gemm::nt(n, dm.qkv, d), &a.xn1, &p[off.qkv..], &mut a.qkv); // (N, qkv)
            rope_forward(&mut a.qkv, rope, &self.rope);
            attention_forward_docs(&mut a.att, &mut a.lse, &a.qkv, attn, starts); // (N, att)
            sgemm(&Gemm::nt(n, d, dm.att), &a.att, &p[off.o..], &mut a.x_mid); // (N, d)
            add_inplace(&mut a.x_mid, x_in);
            // MLP block: x_out = x_mid + down(silu(gate(h)) · up(h)), h = norm(x_mid); in a MoE
            // layer that SwiGLU is the shared experts', and the routed experts' output adds.
            rmsnorm_forward(
                &mut a.xn2,
                &mut a.rstd2,
                &a.x_mid,
                &p[off.mlp_norm..][..d],
                d,
                eps,
            );
            let hid = self.cfg.dense_hidden(l);
            if hid > 0 {
                sgemm(
                    &Gemm::nt(n, 2 * hid, d),
                    &a.xn2,
                    &p[off.gate_up..],
                    &mut a.gu,
                ); // (N, 2·hid)
                swiglu_forward(&mut a.h, &a.gu, hid);
                sgemm(&Gemm::nt(n, d, hid), &a.h, &p[off.down..], x_out); // (N, d)
            } else {
                x_out.fill(0.0);
            }
            if let (Some(m), Some(moe), Some(acts)) = (self.cfg.moe_at(l), &off.moe, &mut a.moe) {
                let load = self.moe_forward(m, moe, &a.xn2, x_out, acts);
                for (total, c) in ws.expert_load[l].iter_mut().zip(load) {
                    *total += c as u64;
                }
                if m.balance_loss > 0.0 {
                    balance += balance_loss(None, &acts.routing, ws.seq_len, m.balance_loss, 0.0);
                }
            }
            add_inplace(x_out, &a.x_mid);
        }
        ws.balance_loss = balance;
        let last = &ws.resid[self.cfg.n_layers * n * d..];
        rmsnorm_forward(
            &mut ws.xf,
            &mut ws.rstd_f,
            last,
            &p[self.params.final_norm..][..d],
            d,
            eps,
        );
    }

    /// Summed cross-entropy over targets that are not `IGNORE`, and their count.
    pub fn loss(&self, tokens: &[u32], targets: &[u32], ws: &mut Workspace) -> (f64, usize) {
        self.forward_trunk(tokens, ws);
        let d = self.cfg.d_model;
        lm_head_cross_entropy(
            &ws.xf,
            &self.params.data[self.params.lm_head..],
            targets,
            d,
            None,
            &mut ws.logits_scratch,
        )
    }

    /// Logits of every position: (B·T, vocab).
    pub fn logits(&self, tokens: &[u32], ws: &mut Workspace) -> Vec<f32> {
        self.forward_trunk(tokens, ws);
        let (n, d, v) = (ws.tokens(), self.cfg.d_model, self.cfg.vocab_size);
        let mut out = vec![0f32; n * v];
        sgemm(
            &Gemm::nt(n, v, d),
            &ws.xf,
            &self.params.data[self.params.lm_head..],
            &mut out,
        );
        out
    }

    /// Forward and backward: accumulates into `grads` (laid out like `params.data`) the gradient
    /// of `grad_scale` · Σ losses, and returns (Σ losses, count). For a mean loss over one batch
    /// pass grad_scale = 1 / count; over accumulated micro-batches, 1 / (total count).
    pub fn forward_backward(
        &self,
        tokens: &[u32],
        targets: &[u32],
        grads: &mut [f32],
        grad_scale: f32,
        ws: &mut Workspace,
    ) -> (f64, usize) {
        self.forward_backward_weighted(tokens, targets, None, grads, grad_scale, ws)
    }

    /// Each target's log-probability, ln p(target | tokens before it): (B·T), 0 at IGNORE.
    pub fn token_logprobs(&self, tokens: &[u32], targets: &[u32], ws: &mut Workspace) -> Vec<f64> {
        self.token_logprobs_at(tokens, targets, 1.0, ws)
    }

    /// `token_logprobs` under the distribution a sampler at `temperature` draws from,
    /// softmax(logits / temperature): what a policy-gradient method must differentiate when
    /// its samples came from that sampler.
    pub fn token_logprobs_at(
        &self,
        tokens: &[u32],
        targets: &[u32],
        temperature: f32,
        ws: &mut Workspace,
    ) -> Vec<f64> {
        self.forward_trunk(tokens, ws);
        // The head is linear: logits / T are the head applied to xf / T. xf is put back after,
        // so that `backward_weighted_at` can follow without a second forward.
        scale(&mut ws.xf, 1.0 / temperature);
        let mut out = vec![0f64; targets.len()];
        tensor::ops::cross_entropy::lm_head_token_losses(
            &ws.xf,
            &self.params.data[self.params.lm_head..],
            targets,
            self.cfg.d_model,
            &mut ws.logits_scratch,
            &mut out,
        );
        scale(&mut ws.xf, temperature);
        out.iter_mut().for_each(|l| *l = -*l);
        out
    }

    /// `forward_backward` with a weight per target: accumulates the gradient of
    /// grad_scale · Σ wᵢ·lossᵢ (lossᵢ = −ln p(targetᵢ)). Preference objectives pass their
    /// derivative with respect to each token's log-probability, negated.
    pub fn forward_backward_weighted(
        &self,
        tokens: &[u32],
        targets: &[u32],
        weights: Option<&[f32]>,
        grads: &mut [f32],
        grad_scale: f32,
        ws: &mut Workspace,
    ) -> (f64, usize) {
        self.forward_trunk(tokens, ws);
        self.backward_weighted_at(tokens, targets, weights, 1.0, grads, grad_scale, ws)
    }

    /// The backward of `forward_backward_weighted`, with the loss −ln softmax(logits /
    /// temperature)[target] and without its forward: `ws` must hold this model's forward of
    /// `tokens`, as `token_logprobs_at` leaves it. A policy-gradient step that has just read the
    /// policy's log-probabilities saves a whole forward pass this way.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_weighted_at(
        &self,
        tokens: &[u32],
        targets: &[u32],
        weights: Option<&[f32]>,
        temperature: f32,
        grads: &mut [f32],
        grad_scale: f32,
        ws: &mut Workspace,
    ) -> (f64, usize) {
        assert_eq!(
            grads.len(),
            self.params.len(),
            "forward_backward: gradient buffer does not match the parameters"
        );
        scale(&mut ws.xf, 1.0 / temperature);
        let d = self.cfg.d_model;
        let (p, pr) = (&self.params.data, &self.params);
        let (g_head, g_rest) = {
            let (rest, head) = grads.split_at_mut(pr.lm_head);
            (head, rest)
        };
        // Head + loss: dxf (N, d) into ws.dxn; dW_head accumulated.
        let loss = lm_head_cross_entropy(
            &ws.xf,
            &p[pr.lm_head..],
            targets,
            d,
            Some(LossGrads {
                dx: &mut ws.dxn,
                dw: g_head,
                scale: grad_scale,
                weights,
            }),
            &mut ws.logits_scratch,
        );
        // d loss / d xf = (d loss / d (xf / T)) / T; the trunk's backward reads xf as it was.
        scale(&mut ws.xf, temperature);
        scale(&mut ws.dxn, 1.0 / temperature);
        // A balance loss is a mean over sequences where the LM loss is over tokens.
        let aux_weight = grad_scale * ws.seq_len as f32;
        self.backward_trunk(tokens, g_rest, aux_weight, ws);
        loss
    }

    /// The normalised final hidden states of every position, (B·T, d): what the LM head reads,
    /// and what a reward model's scalar head reads instead.
    pub fn hidden_states<'w>(&self, tokens: &[u32], ws: &'w mut Workspace) -> &'w [f32] {
        self.forward_trunk(tokens, ws);
        &ws.xf
    }

    /// Backward from a gradient on the final hidden states, `dxf` (B·T, d), after
    /// `hidden_states` ran on the same tokens and workspace: accumulates into `grads` the
    /// gradient of every parameter below the LM head (the head's stays untouched).
    pub fn backward_from_hidden(
        &self,
        tokens: &[u32],
        dxf: &[f32],
        grads: &mut [f32],
        ws: &mut Workspace,
    ) {
        assert!(
            grads.len() == self.params.len() && dxf.len() == ws.dxn.len(),
            "backward_from_hidden: buffers do not match the model"
        );
        ws.dxn.copy_from_slice(dxf);
        let aux_weight = 1.0 / ws.batch as f32;
        self.backward_trunk(tokens, &mut grads[..self.params.lm_head], aux_weight, ws);
    }

    /// The backward pass below the head: `ws.dxn` holds dL/d(final hidden states); gradients
    /// accumulate into `g_rest`, the parameters before the LM head. A MoE balance loss enters
    /// with `aux_weight` per sequence.
    fn backward_trunk(
        &self,
        tokens: &[u32],
        g_rest: &mut [f32],
        aux_weight: f32,
        ws: &mut Workspace,
    ) {
        let dm = self.dims(ws);
        let (n, d) = (dm.n, dm.d);
        let (p, pr) = (&self.params.data, &self.params);
        let last = &ws.resid[self.cfg.n_layers * n * d..];
        ws.dresid.fill(0.0);
        rmsnorm_backward(
            &mut ws.dresid,
            &mut g_rest[pr.final_norm..][..d],
            &ws.dxn,
            last,
            &p[pr.final_norm..][..d],
            &ws.rstd_f,
            d,
        );

        let (attn, rope) = (self.attn_shape(ws), self.rope_layout(ws, dm));
        let starts = ws.doc_starts.as_deref();
        for (l, (off, a)) in pr.layers.iter().zip(ws.layers.iter()).enumerate().rev() {
            let x_in = &ws.resid[l * n * d..(l + 1) * n * d];
            let g = &mut *g_rest;
            // MLP block. ws.dresid holds dL/dx_out.
            let hid = self.cfg.dense_hidden(l);
            if hid > 0 {
                let (dh, dgu) = (&mut ws.dh[..n * hid], &mut ws.dgu[..n * 2 * hid]);
                sgemm(&Gemm::nn(n, hid, d), &ws.dresid, &p[off.down..], dh); // dh (N, hid)
                sgemm(
                    &Gemm::tn(d, hid, n).accumulate(true),
                    &ws.dresid,
                    &a.h,
                    &mut g[off.down..],
                ); // dW_down (d, hid)
                swiglu_backward(dgu, dh, &a.gu, hid);
                sgemm(
                    &Gemm::tn(2 * hid, d, n).accumulate(true),
                    dgu,
                    &a.xn2,
                    &mut g[off.gate_up..],
                ); // (2·hid, d)
                sgemm(
                    &Gemm::nn(n, d, 2 * hid),
                    dgu,
                    &p[off.gate_up..],
                    &mut ws.dxn,
                ); // dxn2 (N, d)
            } else {
                ws.dxn.fill(0.0);
            }
            if let (Some(m), Some(moe), Some(acts)) = (self.cfg.moe_at(l), &off.moe, &a.moe) {
                self.moe_backward(
                    m,
                    moe,
                    &a.xn2,
                    &ws.dresid,
                    &mut ws.dxn,
                    g,
                    acts,
                    &mut ws.moe_grads,
                    (ws.seq_len, aux_weight),
                );
            }
            rmsnorm_backward(
                &mut ws.dresid,
                &mut g[off.mlp_norm..][..d],
                &ws.dxn,
                &a.x_mid,
                &p[off.mlp_norm..][..d],
                &a.rstd2,
                d,
            );
            // Attention block. ws.dresid now holds dL/dx_mid.
            sgemm(
                &Gemm::nn(n, dm.att, d),
                &ws.dresid,
                &p[off.o..],
                &mut ws.datt,
            ); // datt (N, att)
            sgemm(
                &Gemm::tn(d, dm.att, n).accumulate(true),
                &ws.dresid,
                &a.att,
                &mut g[off.o..],
            ); // dW_o (d, att)
            attention_backward_docs(&mut ws.dqkv, &ws.datt, &a.qkv, &a.att, &a.lse, attn, starts);
            rope_backward(&mut ws.dqkv, rope, &self.rope);
            sgemm(
                &Gemm::tn(dm.qkv, d, n).accumulate(true),
                &ws.dqkv,
                &a.xn1,
                &mut g[off.qkv..],
            ); // (qkv, d)
            sgemm(
                &Gemm::nn(n, d, dm.qkv),
                &ws.dqkv,
                &p[off.qkv..],
                &mut ws.dxn,
            ); // dxn1 (N, d)
            rmsnorm_backward(
                &mut ws.dresid,
                &mut g[off.attn_norm..][..d],
                &ws.dxn,
                x_in,
                &p[off.attn_norm..][..d],
                &a.rstd1,
                d,
            );
        }
        embedding_backward(&mut g_rest[pr.embed..], &ws.dresid, tokens, d);
    }
}

/// x *= k, in place.
fn scale(x: &mut [f32], k: f32) {
    if k != 1.0 {
        x.iter_mut().for_each(|v| *v *= k);
    }
}
