//! Forward and backward passes of the Llama-style decoder, written out layer by layer in forward
//! order (norm → attention → MLP → block → model), as llm.c does: no autodiff graph, every
//! activation in a preallocated buffer, every gradient of a weight accumulated by one GEMM.

use crate::adapters::{Lora, LoraPass};
use crate::config::{ModelConfig, RopeScalingConfig};
use crate::{Params, Workspace};
use tensor::device::HeadGrads;
use tensor::ops::cross_entropy::Head;
use tensor::{Cpu, Device, Gemm, Memory, Mut, Ref};

/// A model on a device `D` (the CPU unless named): its config, its parameters in `D`'s memory,
/// and the device handle its kernels run on.
pub struct Llama<D: Device = Cpu> {
    pub cfg: ModelConfig,
    pub params: Params<D>,
    pub(crate) rope: D::Rope,
    pub(crate) dev: D,
    /// LoRA adapters beside the frozen weights (`attach_lora`).
    pub(crate) lora: Option<Lora<D>>,
}

impl Llama {
    /// A model on the CPU.
    pub fn new(cfg: ModelConfig, params: Params) -> Self {
        Self::on(Cpu, cfg, params)
    }

    /// A freshly initialised model on the CPU (see `Params::init`).
    pub fn init(cfg: ModelConfig, seed: u64) -> Self {
        let params = Params::init(&cfg, seed);
        Self::new(cfg, params)
    }
}

impl<D: Device> Llama<D> {
    /// The LM head's shape: width and soft cap (`ModelConfig::logit_softcap`).
    pub fn head_shape(&self) -> Head {
        Head::new(self.cfg.d_model, self.cfg.logit_softcap)
    }

    /// A model whose parameters are already in `dev`'s memory (see `Params::to_device`).
    pub fn on(dev: D, cfg: ModelConfig, params: Params<D>) -> Self {
        assert_eq!(
            params.len(),
            Params::zeros(&cfg).len(),
            "Llama::new: parameters do not match the config"
        );
        // Latent attention rotates only each head's last rope_dim channels.
        let rotated = cfg.mla().map_or(cfg.head_dim(), |m| m.rope_dim);
        let scaling = RopeScalingConfig::to_kernel(cfg.rope_scaling.as_ref());
        let rope = dev.rope_table(cfg.context_len, rotated, cfg.rope_theta, scaling);
        Llama {
            cfg,
            params,
            rope,
            dev,
            lora: None,
        }
    }

    /// The device this model computes on.
    pub fn device(&self) -> &D {
        &self.dev
    }

    pub fn workspace(&self, batch: usize, seq_len: usize) -> Workspace<D> {
        Workspace::on(&self.dev, &self.cfg, batch, seq_len)
    }

    /// Embedding, all layers and the final norm, leaving activations in `ws` and the normalised
    /// final hidden states in `ws.xf`. A pass that `train`s draws LoRA's dropout masks.
    ///
    /// # Shapes
    /// tokens: (B·T) row-major, ids < vocab_size (checked where data enters frugal).
    fn forward_trunk(&self, tokens: &[u32], ws: &mut Workspace<D>, train: bool) {
        assert!(
            tokens.len() == ws.tokens() && ws.seq_len <= self.cfg.context_len,
            "forward: tokens do not fit the workspace"
        );
        let (n, d) = (ws.tokens(), self.cfg.d_model);
        let (dev, p, pr) = (&self.dev, &self.params.data, &self.params);
        let eps = self.cfg.norm_eps;
        dev.embedding_forward(ws.resid.at_mut(..n * d), tokens, p.at(pr.embed..), d);
        let on = self.side().is_some();
        if let Some(lora) = self.side() {
            if !ws.lora.as_ref().is_some_and(|acts| lora.fit(acts, n)) {
                ws.lora = Some(lora.acts(dev, n));
            }
            let key = train.then(|| lora.next_key()).flatten();
            ws.lora.as_mut().expect("sized above").key = key;
        }
        let cx = self.block_ctx(ws.batch, ws.seq_len, ws.doc_starts.as_deref());
        let mut balance = 0f64;
        for (l, (off, a)) in pr.layers.iter().zip(ws.layers.iter_mut()).enumerate() {
            let (before, after) = ws.resid.at_mut(..).split_at((l + 1) * n * d);
            let (x_in, x_out) = (before.view().at(l * n * d..), after.into_at(..n * d));
            let load = &mut ws.expert_load[l];
            let acts = ws.lora.as_mut().filter(|_| on);
            let mut side = acts.map(|acts| LoraPass::layer(acts, l));
            balance += self.block_forward(l, off, x_in, x_out, a, cx, load, &mut side);
        }
        ws.balance_loss = balance;
        let last = ws.resid.at(self.cfg.n_layers * n * d..);
        let w = p.at(pr.final_norm..pr.final_norm + d);
        dev.rmsnorm_forward(ws.xf.all_mut(), ws.rstd_f.all_mut(), last, w, d, eps);
    }

    /// Summed cross-entropy over targets that are not `IGNORE`, and their count.
    pub fn loss(&self, tokens: &[u32], targets: &[u32], ws: &mut Workspace<D>) -> (f64, usize) {
        self.forward_trunk(tokens, ws, false);
        let head = self.params.data.at(self.params.lm_head..);
        let scratch = &mut ws.logits_scratch;
        self.dev
            .lm_head_loss(ws.xf.all(), head, targets, self.head_shape(), None, scratch)
    }

    /// Logits of every position: (B·T, vocab), on the host.
    pub fn logits(&self, tokens: &[u32], ws: &mut Workspace<D>) -> Vec<f32> {
        self.forward_trunk(tokens, ws, false);
        let (n, d, v) = (ws.tokens(), self.cfg.d_model, self.cfg.vocab_size);
        let mut out = self.dev.zeros(n * v);
        let head = self.params.data.at(self.params.lm_head..);
        self.dev
            .gemm(&Gemm::nt(n, v, d), ws.xf.all(), head, out.all_mut());
        let mut logits = self.dev.to_host(out);
        self.head_shape().cap(&mut logits);
        logits
    }

    /// Forward and backward: accumulates into `grads` (laid out like `params.data`, or like the
    /// adapters with LoRA: see `trainable_len`) the gradient
    /// of `grad_scale` · Σ losses, and returns (Σ losses, count). For a mean loss over one batch
    /// pass grad_scale = 1 / count; over accumulated micro-batches, 1 / (total count).
    pub fn forward_backward<'g>(
        &self,
        tokens: &[u32],
        targets: &[u32],
        grads: impl Into<Mut<'g, D>>,
        grad_scale: f32,
        ws: &mut Workspace<D>,
    ) -> (f64, usize) {
        let mut grads = grads.into();
        if self.params.mtp.is_empty() {
            return self.forward_backward_weighted(tokens, targets, None, grads, grad_scale, ws);
        }
        // With multi-token prediction modules: their loss trains the trunk too (its gradient
        // joins the main one at the last layer's output), and `ws.mtp_loss()` reports it.
        self.forward_trunk(tokens, ws, true);
        let aux_weight = grad_scale * ws.seq_len as f32;
        self.mtp_forward_backward(tokens, targets, grads.rb(), grad_scale, aux_weight, ws);
        self.backward_weighted_at(tokens, targets, None, 1.0, grads, grad_scale, ws)
    }

    /// Each target's log-probability, ln p(target | tokens before it): (B·T), 0 at IGNORE.
    pub fn token_logprobs(
        &self,
        tokens: &[u32],
        targets: &[u32],
        ws: &mut Workspace<D>,
    ) -> Vec<f64> {
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
        ws: &mut Workspace<D>,
    ) -> Vec<f64> {
        self.forward_trunk(tokens, ws, false);
        let mut out = vec![0f64; targets.len()];
        let w = self.params.data.at(self.params.lm_head..);
        let head = self.head_shape().at_temperature(temperature);
        let scratch = &mut ws.logits_scratch;
        self.dev
            .lm_head_token_losses(ws.xf.all(), w, targets, head, scratch, &mut out);
        out.iter_mut().for_each(|l| *l = -*l);
        out
    }

    /// `forward_backward` with a weight per target: accumulates the gradient of
    /// grad_scale · Σ wᵢ·lossᵢ (lossᵢ = −ln p(targetᵢ)). Preference objectives pass their
    /// derivative with respect to each token's log-probability, negated.
    pub fn forward_backward_weighted<'g>(
        &self,
        tokens: &[u32],
        targets: &[u32],
        weights: Option<&[f32]>,
        grads: impl Into<Mut<'g, D>>,
        grad_scale: f32,
        ws: &mut Workspace<D>,
    ) -> (f64, usize) {
        self.forward_trunk(tokens, ws, true);
        self.backward_weighted_at(tokens, targets, weights, 1.0, grads, grad_scale, ws)
    }

    /// The backward of `forward_backward_weighted`, with the loss −ln softmax(logits /
    /// temperature)[target] and without its forward: `ws` must hold this model's forward of
    /// `tokens`, as `token_logprobs_at` leaves it. A policy-gradient step that has just read the
    /// policy's log-probabilities saves a whole forward pass this way.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_weighted_at<'g>(
        &self,
        tokens: &[u32],
        targets: &[u32],
        weights: Option<&[f32]>,
        temperature: f32,
        grads: impl Into<Mut<'g, D>>,
        grad_scale: f32,
        ws: &mut Workspace<D>,
    ) -> (f64, usize) {
        let grads = grads.into();
        assert_eq!(
            grads.len(),
            self.trainable_len(),
            "forward_backward: gradient buffer does not match the trained parameters"
        );
        let (g_rest, g_head) = match self.lora {
            Some(_) => (grads, None),
            None => {
                let (rest, head) = grads.split_at(self.params.lm_head);
                (rest, Some(head))
            }
        };
        // Head + loss: dxf (N, d) into ws.g.dxn; dW_head accumulated (none when frozen).
        let head = HeadGrads {
            dx: ws.g.dxn.all_mut(),
            dw: g_head,
            scale: grad_scale,
            weights,
        };
        let w = self.params.data.at(self.params.lm_head..);
        let scratch = &mut ws.logits_scratch;
        let shape = self.head_shape().at_temperature(temperature);
        let loss = self
            .dev
            .lm_head_loss(ws.xf.all(), w, targets, shape, Some(head), scratch);
        // A balance loss is a mean over sequences where the LM loss is over tokens.
        let aux_weight = grad_scale * ws.seq_len as f32;
        self.backward_trunk(tokens, g_rest, aux_weight, ws);
        loss
    }

    /// The normalised final hidden states of every position, (B·T, d): what the LM head reads,
    /// and what a reward model's scalar head reads instead.
    pub fn hidden_states<'w>(&self, tokens: &[u32], ws: &'w mut Workspace<D>) -> Ref<'w, D> {
        self.forward_trunk(tokens, ws, false);
        ws.xf.all()
    }

    /// Backward from a gradient on the final hidden states, `dxf` (B·T, d), after
    /// `hidden_states` ran on the same tokens and workspace: accumulates into `grads` the
    /// gradient of every parameter below the LM head (the head's stays untouched).
    pub fn backward_from_hidden<'g>(
        &self,
        tokens: &[u32],
        dxf: impl Into<Ref<'g, D>>,
        grads: impl Into<Mut<'g, D>>,
        ws: &mut Workspace<D>,
    ) {
        let (dxf, grads) = (dxf.into(), grads.into());
        assert!(
            grads.len() == self.trainable_len() && dxf.len() == ws.g.dxn.numel(),
            "backward_from_hidden: buffers do not match the model"
        );
        self.dev.copy(ws.g.dxn.all_mut(), dxf);
        let aux_weight = 1.0 / ws.batch as f32;
        let g_rest = match self.lora {
            Some(_) => grads,
            None => grads.into_at(..self.params.lm_head),
        };
        self.backward_trunk(tokens, g_rest, aux_weight, ws);
    }

    /// The backward pass below the head: `ws.g.dxn` holds dL/d(final hidden states); gradients
    /// accumulate into `g_rest`, the parameters before the LM head (with LoRA, the adapters).
    /// A MoE balance loss enters with `aux_weight` per sequence.
    fn backward_trunk(
        &self,
        tokens: &[u32],
        mut g_rest: Mut<D>,
        aux_weight: f32,
        ws: &mut Workspace<D>,
    ) {
        let (n, d) = (ws.tokens(), self.cfg.d_model);
        let (dev, p, pr) = (&self.dev, &self.params.data, &self.params);
        let last = ws.resid.at(self.cfg.n_layers * n * d..);
        dev.fill(ws.g.dresid.all_mut(), 0.0);
        let frozen = self.lora.is_some();
        assert!(
            !frozen || self.side().is_some(),
            "backward: the adapters are switched off (a frozen_base guard is live)"
        );
        let fw = p.at(pr.final_norm..pr.final_norm + d);
        let fg = match frozen {
            true => ws.g.dnorm.all_mut(),
            false => g_rest.at(pr.final_norm..pr.final_norm + d),
        };
        let (dxn, rstd) = (ws.g.dxn.all(), ws.rstd_f.all());
        dev.rmsnorm_backward(ws.g.dresid.all_mut(), fg, dxn, last, fw, rstd, d);
        if std::mem::take(&mut ws.mtp_pending) {
            dev.add(ws.g.dresid.all_mut(), ws.mtp_dh.all());
        }

        let cx = self.block_ctx(ws.batch, ws.seq_len, ws.doc_starts.as_deref());
        for (l, (off, a)) in pr.layers.iter().zip(ws.layers.iter()).enumerate().rev() {
            let x_in = ws.resid.at(l * n * d..(l + 1) * n * d);
            let mut side = ws.lora.as_mut().map(|acts| LoraPass::layer(acts, l));
            let (g, bg) = (g_rest.rb(), &mut ws.g);
            self.block_backward(l, off, x_in, a, g, bg, cx, aux_weight, &mut side);
        }
        if !frozen {
            let g_embed = g_rest.into_at(pr.embed..);
            dev.embedding_backward(g_embed, ws.g.dresid.all(), tokens, d);
        }
    }
}
