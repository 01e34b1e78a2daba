//! Multi-token prediction in training (DeepSeek-V3 §2.2). Module k (1..=D) reads the hidden
//! states h^{k−1} (h^0: the last layer's output, before the final norm) and the embeddings of
//! the tokens k places ahead, and predicts the tokens k + 1 places ahead:
//!
//!   h^k = block_k(eh_proj([enorm(embed(t_{i+k})) | hnorm(h^{k−1}_i)])),
//!   loss_k = CE(lm_head(shared_head.norm(h^k_i)), t_{i+k+1}),
//!
//! sharing the embedding table and the output head with the model. The modules' loss, weighted
//! λ/D, trains the model's trunk too: its gradient reaches h^0 and joins the main backward.

use crate::workspace::MtpActs;
use crate::{Llama, Workspace};
use tensor::device::HeadGrads;
use tensor::ops::cross_entropy::IGNORE;
use tensor::{Device, Gemm, Memory, Mut, Ref};

impl<D: Device> Llama<D> {
    /// The modules' forward and backward, after `forward_trunk` on `tokens`: gradients (each
    /// target weighted λ/D · `grad_scale`) accumulate into `grads`, dL/dh^0 is left in
    /// `ws.mtp_dh` for `backward_trunk`, and `ws.mtp_loss` gets the modules' mean
    /// cross-entropy, averaged over modules.
    pub(crate) fn mtp_forward_backward(
        &self,
        tokens: &[u32],
        targets: &[u32],
        grads: Mut<D>,
        grad_scale: f32,
        aux_weight: f32,
        ws: &mut Workspace<D>,
    ) {
        let depth = self.params.mtp.len();
        let Some(cfg) = self.cfg.mtp.as_ref().filter(|_| depth > 0) else {
            return;
        };
        for k in 1..=depth {
            self.mtp_module_forward(k, tokens, targets, ws);
        }
        // Backward, last module first; ws.mtp_dh carries dL/dh^k down to dL/dh^0.
        let lambda = cfg.weight / depth as f32;
        let (mut g_rest, mut g_head) = grads.split_at(self.params.lm_head);
        let (mut loss, mut objective) = (0f64, 0f64);
        for k in (1..=depth).rev() {
            let scale = grad_scale * lambda;
            let (sum, count) = self.mtp_module_loss(k, g_head.rb(), scale, ws);
            loss += sum / count.max(1) as f64;
            objective += lambda as f64 * sum;
            self.mtp_module_backward(k, g_rest.rb(), aux_weight, ws);
        }
        ws.mtp_loss = loss / depth as f64;
        ws.mtp_objective = objective;
        ws.mtp_pending = true;
    }

    /// Module k's forward: its shifted tokens and targets, then
    /// h^k = block_k(eh_proj([enorm(embed(t_{i+k})) | hnorm(h^{k−1}_i)])) and its final norm.
    fn mtp_module_forward(&self, k: usize, tokens: &[u32], targets: &[u32], ws: &mut Workspace<D>) {
        let (n, d, t) = (ws.tokens(), self.cfg.d_model, ws.seq_len);
        let (nl, eps) = (self.cfg.n_layers, self.cfg.norm_eps);
        let (dev, p) = (&self.dev, &self.params.data);
        let cx = self.block_ctx(ws.batch, ws.seq_len, ws.doc_starts.as_deref());
        let off = &self.params.mtp[k - 1];
        let (mt, h_prev) = module_and_input(&mut ws.mtp, ws.resid.at(nl * n * d..), k);
        let starts = ws.doc_starts.as_deref();
        for (i, (tok, tgt)) in mt.tokens.iter_mut().zip(&mut mt.targets).enumerate() {
            let (row, pos) = (i / t, i % t);
            // The token k ahead, within the window and the same packed document.
            let ahead = (pos + k < t)
                .then_some(row * t + pos + k)
                .filter(|&j| starts.is_none_or(|s| s[j] == s[i]));
            (*tok, *tgt) = match ahead {
                Some(j) => (tokens[j], targets[j]),
                None => (0, IGNORE),
            };
        }
        let embed = p.at(self.params.embed..);
        dev.embedding_forward(mt.emb.all_mut(), &mt.tokens, embed, d);
        let (enorm, hnorm) = (
            p.at(off.enorm..off.enorm + d),
            p.at(off.hnorm..off.hnorm + d),
        );
        let (en, rstd_e) = (mt.en.all_mut(), mt.rstd_e.all_mut());
        dev.rmsnorm_forward(en, rstd_e, mt.emb.all(), enorm, d, eps);
        let (hn, rstd_h) = (mt.hn.all_mut(), mt.rstd_h.all_mut());
        dev.rmsnorm_forward(hn, rstd_h, h_prev, hnorm, d, eps);
        dev.concat_cols(mt.cat.all_mut(), mt.en.all(), mt.hn.all(), d, d);
        let eh = Gemm::nt(n, d, 2 * d);
        dev.gemm(&eh, mt.cat.all(), p.at(off.eh_proj..), mt.x0.all_mut());
        let load = &mut ws.expert_load[nl + k - 1];
        let (x0, out) = (mt.x0.all(), mt.out.all_mut());
        ws.balance_loss += self.block_forward(
            nl + k - 1,
            &off.block,
            x0,
            out,
            &mut mt.block,
            cx,
            load,
            &mut None,
        );
        let norm = p.at(off.norm..off.norm + d);
        let (xf, rstd_f) = (mt.xf.all_mut(), mt.rstd_f.all_mut());
        dev.rmsnorm_forward(xf, rstd_f, mt.out.all(), norm, d, eps);
    }

    /// Module k's loss through the shared head, its gradient (times `scale`) into the head's
    /// gradient `g_head` and into `ws.g.dxn`; returns (Σ losses, count).
    fn mtp_module_loss(
        &self,
        k: usize,
        g_head: Mut<D>,
        scale: f32,
        ws: &mut Workspace<D>,
    ) -> (f64, usize) {
        let mt = &ws.mtp[k - 1];
        let grads = HeadGrads {
            dx: ws.g.dxn.all_mut(),
            dw: Some(g_head),
            scale,
            weights: None,
        };
        let w = self.params.data.at(self.params.lm_head..);
        let scratch = &mut ws.logits_scratch;
        self.dev.lm_head_loss(
            mt.xf.all(),
            w,
            &mt.targets,
            self.head_shape(),
            Some(grads),
            scratch,
        )
    }

    /// Module k's backward from dL/d(its normed output) in `ws.g.dxn` (plus, below the last
    /// module, dL/dh^k in `ws.mtp_dh`), leaving dL/dh^{k−1} in `ws.mtp_dh`.
    fn mtp_module_backward(&self, k: usize, mut g: Mut<D>, aux_weight: f32, ws: &mut Workspace<D>) {
        let (n, d, nl) = (ws.tokens(), self.cfg.d_model, self.cfg.n_layers);
        let depth = self.params.mtp.len();
        let (dev, p) = (&self.dev, &self.params.data);
        let cx = self.block_ctx(ws.batch, ws.seq_len, ws.doc_starts.as_deref());
        let off = &self.params.mtp[k - 1];
        let (mt, h_prev) = module_and_input(&mut ws.mtp, ws.resid.at(nl * n * d..), k);
        let span = |o: usize| o..o + d;
        dev.fill(ws.g.dresid.all_mut(), 0.0);
        let (dxn, out, rstd_f) = (ws.g.dxn.all(), mt.out.all(), mt.rstd_f.all());
        let (w, gw) = (p.at(span(off.norm)), g.at(span(off.norm)));
        dev.rmsnorm_backward(ws.g.dresid.all_mut(), gw, dxn, out, w, rstd_f, d);
        if k < depth {
            dev.add(ws.g.dresid.all_mut(), ws.mtp_dh.all());
        }
        let (x0, l) = (mt.x0.all(), nl + k - 1);
        self.block_backward(
            l,
            &off.block,
            x0,
            &mt.block,
            g.rb(),
            &mut ws.g,
            cx,
            aux_weight,
            &mut None,
        );
        // ws.g.dresid: dL/dx0. Through eh_proj to [d enorm | d hnorm].
        // dW_eh (d, 2d), then dcat (N, 2d) over cat: its forward values are spent.
        let dresid = ws.g.dresid.all();
        let dw_eh = Gemm::tn(d, 2 * d, n).accumulate(true);
        dev.gemm(&dw_eh, dresid, mt.cat.all(), g.at(off.eh_proj..));
        let dcat = Gemm::nn(n, 2 * d, d);
        dev.gemm(&dcat, dresid, p.at(off.eh_proj..), mt.cat.all_mut());
        dev.split_cols(mt.en.all_mut(), mt.hn.all_mut(), mt.cat.all(), d, d);
        // Embeddings of the shifted tokens.
        dev.fill(ws.g.dresid.all_mut(), 0.0);
        let (en, emb, rstd_e) = (mt.en.all(), mt.emb.all(), mt.rstd_e.all());
        let (w, gw) = (p.at(span(off.enorm)), g.at(span(off.enorm)));
        dev.rmsnorm_backward(ws.g.dresid.all_mut(), gw, en, emb, w, rstd_e, d);
        let g_embed = g.at(self.params.embed..);
        dev.embedding_backward(g_embed, ws.g.dresid.all(), &mt.tokens, d);
        // The previous hidden states.
        dev.fill(ws.mtp_dh.all_mut(), 0.0);
        let (hn, rstd_h) = (mt.hn.all(), mt.rstd_h.all());
        let (w, gw) = (p.at(span(off.hnorm)), g.at(span(off.hnorm)));
        dev.rmsnorm_backward(ws.mtp_dh.all_mut(), gw, hn, h_prev, w, rstd_h, d);
    }
}

/// Module k's buffers, and its input hidden states: the previous module's output, or h0 (the
/// last layer's output) for the first.
fn module_and_input<'a, D: Device>(
    mtp: &'a mut [MtpActs<D>],
    h0: Ref<'a, D>,
    k: usize,
) -> (&'a mut MtpActs<D>, Ref<'a, D>) {
    let (before, rest) = mtp.split_at_mut(k - 1);
    let h_prev = before.last().map_or(h0, |prev| prev.out.all());
    (&mut rest[0], h_prev)
}
