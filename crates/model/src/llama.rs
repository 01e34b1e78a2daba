//! Forward and backward passes of the Llama-style decoder, written out layer by layer in forward
//! order (norm → attention → MLP → block → model), as llm.c does: no autodiff graph, every
//! activation in a preallocated buffer, every gradient of a weight accumulated by one GEMM.

use crate::config::ModelConfig;
use crate::{Params, Workspace};
use tensor::ops::add_inplace;
use tensor::ops::cross_entropy::{lm_head_cross_entropy, LossGrads};
use tensor::ops::embedding::{embedding_backward, embedding_forward};
use tensor::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use tensor::ops::rope::RopeTable;
use tensor::{sgemm, Gemm};

pub struct Llama {
    pub cfg: ModelConfig,
    pub params: Params,
    pub(crate) rope: RopeTable,
}

impl Llama {
    pub fn new(cfg: ModelConfig, params: Params) -> Self {
        assert_eq!(
            params.len(),
            Params::zeros(&cfg).len(),
            "Llama::new: parameters do not match the config"
        );
        // Latent attention rotates only each head's last rope_dim channels.
        let rotated = cfg.mla().map_or(cfg.head_dim(), |m| m.rope_dim);
        let rope = RopeTable::new(cfg.context_len, rotated, cfg.rope_theta);
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
        let (n, d) = (ws.tokens(), self.cfg.d_model);
        let p = &self.params.data;
        let eps = self.cfg.norm_eps;
        embedding_forward(&mut ws.resid[..n * d], tokens, &p[self.params.embed..], d);
        let cx = self.block_ctx(ws.batch, ws.seq_len, ws.doc_starts.as_deref());
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
            balance += self.block_forward(l, off, x_in, x_out, a, cx, &mut ws.expert_load[l]);
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
        if self.params.mtp.is_empty() {
            return self.forward_backward_weighted(tokens, targets, None, grads, grad_scale, ws);
        }
        // With multi-token prediction modules: their loss trains the trunk too (its gradient
        // joins the main one at the last layer's output), and `ws.mtp_loss()` reports it.
        self.forward_trunk(tokens, ws);
        let aux_weight = grad_scale * ws.seq_len as f32;
        self.mtp_forward_backward(tokens, targets, grads, grad_scale, aux_weight, ws);
        self.backward_weighted_at(tokens, targets, None, 1.0, grads, grad_scale, ws)
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
        // Head + loss: dxf (N, d) into ws.g.dxn; dW_head accumulated.
        let loss = lm_head_cross_entropy(
            &ws.xf,
            &p[pr.lm_head..],
            targets,
            d,
            Some(LossGrads {
                dx: &mut ws.g.dxn,
                dw: g_head,
                scale: grad_scale,
                weights,
            }),
            &mut ws.logits_scratch,
        );
        // d loss / d xf = (d loss / d (xf / T)) / T; the trunk's backward reads xf as it was.
        scale(&mut ws.xf, temperature);
        scale(&mut ws.g.dxn, 1.0 / temperature);
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
            grads.len() == self.params.len() && dxf.len() == ws.g.dxn.len(),
            "backward_from_hidden: buffers do not match the model"
        );
        ws.g.dxn.copy_from_slice(dxf);
        let aux_weight = 1.0 / ws.batch as f32;
        self.backward_trunk(tokens, &mut grads[..self.params.lm_head], aux_weight, ws);
    }

    /// The backward pass below the head: `ws.g.dxn` holds dL/d(final hidden states); gradients
    /// accumulate into `g_rest`, the parameters before the LM head. A MoE balance loss enters
    /// with `aux_weight` per sequence.
    fn backward_trunk(
        &self,
        tokens: &[u32],
        g_rest: &mut [f32],
        aux_weight: f32,
        ws: &mut Workspace,
    ) {
        let (n, d) = (ws.tokens(), self.cfg.d_model);
        let (p, pr) = (&self.params.data, &self.params);
        let last = &ws.resid[self.cfg.n_layers * n * d..];
        ws.g.dresid.fill(0.0);
        rmsnorm_backward(
            &mut ws.g.dresid,
            &mut g_rest[pr.final_norm..][..d],
            &ws.g.dxn,
            last,
            &p[pr.final_norm..][..d],
            &ws.rstd_f,
            d,
        );
        if std::mem::take(&mut ws.mtp_pending) {
            add_inplace(&mut ws.g.dresid, &ws.mtp_dh);
        }

        let cx = self.block_ctx(ws.batch, ws.seq_len, ws.doc_starts.as_deref());
        for (l, (off, a)) in pr.layers.iter().zip(ws.layers.iter()).enumerate().rev() {
            let x_in = &ws.resid[l * n * d..(l + 1) * n * d];
            self.block_backward(l, off, x_in, a, g_rest, &mut ws.g, cx, aux_weight);
        }
        embedding_backward(&mut g_rest[pr.embed..], &ws.g.dresid, tokens, d);
    }
}

/// x *= k, in place.
fn scale(x: &mut [f32], k: f32) {
    if k != 1.0 {
        x.iter_mut().for_each(|v| *v *= k);
    }
}
