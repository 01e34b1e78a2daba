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
use tensor::ops::add_inplace;
use tensor::ops::cross_entropy::{lm_head_cross_entropy, LossGrads, IGNORE};
use tensor::ops::embedding::{embedding_backward, embedding_forward};
use tensor::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use tensor::ops::rows::{concat_cols, split_cols};
use tensor::{sgemm, Gemm};

impl Llama {
    /// The modules' forward and backward, after `forward_trunk` on `tokens`: gradients (each
    /// target weighted λ/D · `grad_scale`) accumulate into `grads`, dL/dh^0 is left in
    /// `ws.mtp_dh` for `backward_trunk`, and `ws.mtp_loss` gets the modules' mean
    /// cross-entropy, averaged over modules.
    pub(crate) fn mtp_forward_backward(
        &self,
        tokens: &[u32],
        targets: &[u32],
        grads: &mut [f32],
        grad_scale: f32,
        aux_weight: f32,
        ws: &mut Workspace,
    ) {
        let depth = self.params.mtp.len();
        let Some(cfg) = self.cfg.mtp.as_ref().filter(|_| depth > 0) else {
            return;
        };
        let (n, d, t) = (ws.tokens(), self.cfg.d_model, ws.seq_len);
        let (nl, eps) = (self.cfg.n_layers, self.cfg.norm_eps);
        let p = &self.params.data;
        let cx = self.block_ctx(ws.batch, ws.seq_len, ws.doc_starts.as_deref());
        // Forward, module by module.
        for k in 1..=depth {
            let off = &self.params.mtp[k - 1];
            let (mt, h_prev) = module_and_input(&mut ws.mtp, &ws.resid[nl * n * d..], k);
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
            embedding_forward(&mut mt.emb, &mt.tokens, &p[self.params.embed..], d);
            rmsnorm_forward(
                &mut mt.en,
                &mut mt.rstd_e,
                &mt.emb,
                &p[off.enorm..][..d],
                d,
                eps,
            );
            rmsnorm_forward(
                &mut mt.hn,
                &mut mt.rstd_h,
                h_prev,
                &p[off.hnorm..][..d],
                d,
                eps,
            );
            concat_cols(&mut mt.cat, &mt.en, &mt.hn, d, d);
            sgemm(
                &Gemm::nt(n, d, 2 * d),
                &mt.cat,
                &p[off.eh_proj..],
                &mut mt.x0,
            );
            let load = &mut ws.expert_load[nl + k - 1];
            ws.balance_loss += self.block_forward(
                nl + k - 1,
                &off.block,
                &mt.x0,
                &mut mt.out,
                &mut mt.block,
                cx,
                load,
            );
            rmsnorm_forward(
                &mut mt.xf,
                &mut mt.rstd_f,
                &mt.out,
                &p[off.norm..][..d],
                d,
                eps,
            );
        }
        // Backward, last module first; ws.mtp_dh carries dL/dh^k down to dL/dh^0.
        let lambda = cfg.weight / depth as f32;
        let (g_rest, g_head) = grads.split_at_mut(self.params.lm_head);
        let (mut loss, mut objective) = (0f64, 0f64);
        for k in (1..=depth).rev() {
            let off = &self.params.mtp[k - 1];
            let (mt, h_prev) = module_and_input(&mut ws.mtp, &ws.resid[nl * n * d..], k);
            let (sum, count) = lm_head_cross_entropy(
                &mt.xf,
                &p[self.params.lm_head..],
                &mt.targets,
                d,
                Some(LossGrads {
                    dx: &mut ws.g.dxn,
                    dw: g_head,
                    scale: grad_scale * lambda,
                    weights: None,
                }),
                &mut ws.logits_scratch,
            );
            loss += sum / count.max(1) as f64;
            objective += lambda as f64 * sum;
            ws.g.dresid.fill(0.0);
            rmsnorm_backward(
                &mut ws.g.dresid,
                &mut g_rest[off.norm..][..d],
                &ws.g.dxn,
                &mt.out,
                &p[off.norm..][..d],
                &mt.rstd_f,
                d,
            );
            if k < depth {
                add_inplace(&mut ws.g.dresid, &ws.mtp_dh);
            }
            let l = nl + k - 1;
            self.block_backward(
                l, &off.block, &mt.x0, &mt.block, g_rest, &mut ws.g, cx, aux_weight,
            );
            // ws.g.dresid: dL/dx0. Through eh_proj to [d enorm | d hnorm].
            sgemm(
                &Gemm::tn(d, 2 * d, n).accumulate(true),
                &ws.g.dresid,
                &mt.cat,
                &mut g_rest[off.eh_proj..],
            ); // dW_eh (d, 2d)
            sgemm(
                &Gemm::nn(n, 2 * d, d),
                &ws.g.dresid,
                &p[off.eh_proj..],
                &mut mt.cat,
            ); // dcat (N, 2d), over cat: its forward values are spent
            split_cols(&mut mt.en, &mut mt.hn, &mt.cat, d, d);
            // Embeddings of the shifted tokens.
            ws.g.dresid.fill(0.0);
            rmsnorm_backward(
                &mut ws.g.dresid,
                &mut g_rest[off.enorm..][..d],
                &mt.en,
                &mt.emb,
                &p[off.enorm..][..d],
                &mt.rstd_e,
                d,
            );
            embedding_backward(
                &mut g_rest[self.params.embed..],
                &ws.g.dresid,
                &mt.tokens,
                d,
            );
            // The previous hidden states.
            ws.mtp_dh.fill(0.0);
            rmsnorm_backward(
                &mut ws.mtp_dh,
                &mut g_rest[off.hnorm..][..d],
                &mt.hn,
                h_prev,
                &p[off.hnorm..][..d],
                &mt.rstd_h,
                d,
            );
        }
        ws.mtp_loss = loss / depth as f64;
        ws.mtp_objective = objective;
        ws.mtp_pending = true;
    }
}

/// Module k's buffers, and its input hidden states: the previous module's output, or h0 (the
/// last layer's output) for the first.
fn module_and_input<'a>(
    mtp: &'a mut [MtpActs],
    h0: &'a [f32],
    k: usize,
) -> (&'a mut MtpActs, &'a [f32]) {
    let (before, rest) = mtp.split_at_mut(k - 1);
    let h_prev = before.last().map_or(h0, |prev| &prev.out[..]);
    (&mut rest[0], h_prev)
}
