//! One decoder block, forward and backward: x_mid = x_in + o_proj(attn(rope(qkv(norm(x_in))))),
//! x_out = x_mid + mlp(norm(x_mid)), where attention is grouped-query or latent (`mla`) and
//! the MLP is a SwiGLU, or in a MoE block the shared
//! experts' SwiGLU plus the routed experts. The model's layers and its multi-token prediction
//! modules are all such blocks.

use crate::workspace::{BlockGrads, LayerActs};
use crate::{LayerOffsets, Llama};
use tensor::ops::add_inplace;
use tensor::ops::attention::{attention_backward_docs, attention_forward_docs, AttnShape};
use tensor::ops::moe::balance_loss;
use tensor::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use tensor::ops::rope::{rope_backward, rope_forward, RopeLayout};
use tensor::ops::swiglu::{swiglu_backward, swiglu_forward};
use tensor::{sgemm, Gemm};

/// The shapes of one pass over a workspace's batch.
#[derive(Clone, Copy)]
pub(crate) struct BlockCtx<'w> {
    /// Rows (batch · seq_len), and widths of [q | k | v] and of the attention output.
    n: usize,
    qkv: usize,
    att: usize,
    attn: AttnShape,
    rope: RopeLayout,
    starts: Option<&'w [u32]>,
    seq_len: usize,
}

impl Llama {
    /// The shapes of a pass over a batch; callers pass a workspace's fields, so that the pass
    /// can write the rest of it while this borrows its document starts.
    pub(crate) fn block_ctx<'w>(
        &self,
        batch: usize,
        seq_len: usize,
        starts: Option<&'w [u32]>,
    ) -> BlockCtx<'w> {
        let c = &self.cfg;
        let hd = c.head_dim();
        let qkv = (c.n_heads + 2 * c.n_kv_heads) * hd;
        BlockCtx {
            n: batch * seq_len,
            qkv,
            att: c.n_heads * hd,
            attn: AttnShape {
                batch,
                seq_len,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: hd,
            },
            // q and k heads are adjacent in each qkv row: rotate them in one sweep.
            rope: RopeLayout {
                stride: qkv,
                col: 0,
                n_heads: c.n_heads + c.n_kv_heads,
                seq_len,
                pos0: 0,
            },
            starts,
            seq_len,
        }
    }

    /// Block `l` (from n_layers on, a multi-token prediction module's): x_out = block(x_in),
    /// keeping activations in `a`. Adds its routed experts' token counts to `load`; returns its
    /// sequence-wise balance loss (0 without one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block_forward(
        &self,
        l: usize,
        off: &LayerOffsets,
        x_in: &[f32],
        x_out: &mut [f32],
        a: &mut LayerActs,
        cx: BlockCtx,
        load: &mut [u64],
    ) -> f64 {
        let (n, d, eps) = (cx.n, self.cfg.d_model, self.cfg.norm_eps);
        let p = &self.params.data;
        rmsnorm_forward(
            &mut a.xn1,
            &mut a.rstd1,
            x_in,
            &p[off.attn_norm..][..d],
            d,
            eps,
        );
        match (self.cfg.mla(), &off.mla) {
            (Some(m), Some(mla)) => self.mla_qkv_forward(m, mla, off.qkv, a, n, cx.seq_len),
            _ => {
                sgemm(&Gemm::nt(n, cx.qkv, d), &a.xn1, &p[off.qkv..], &mut a.qkv); // (N, qkv)
                rope_forward(&mut a.qkv, cx.rope, &self.rope);
            }
        }
        attention_forward_docs(&mut a.att, &mut a.lse, &a.qkv, cx.attn, cx.starts); // (N, att)
        sgemm(&Gemm::nt(n, d, cx.att), &a.att, &p[off.o..], &mut a.x_mid); // (N, d)
        add_inplace(&mut a.x_mid, x_in);
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
        let mut balance = 0.0;
        if let (Some(m), Some(moe), Some(acts)) = (self.cfg.moe_at(l), &off.moe, &mut a.moe) {
            let counts = self.moe_forward(m, moe, &a.xn2, x_out, acts);
            for (total, c) in load.iter_mut().zip(counts) {
                *total += c as u64;
            }
            if m.balance_loss > 0.0 {
                balance = balance_loss(None, &acts.routing, cx.seq_len, m.balance_loss, 0.0);
            }
        }
        add_inplace(x_out, &a.x_mid);
        balance
    }

    /// The backward of `block_forward`: `bg.dresid` holds dL/dx_out on entry and dL/dx_in on
    /// return; weight gradients accumulate into `g` (laid out like the parameters up to the
    /// head). A balance loss enters with `aux_weight` per sequence.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block_backward(
        &self,
        l: usize,
        off: &LayerOffsets,
        x_in: &[f32],
        a: &LayerActs,
        g: &mut [f32],
        bg: &mut BlockGrads,
        cx: BlockCtx,
        aux_weight: f32,
    ) {
        let (n, d) = (cx.n, self.cfg.d_model);
        let p = &self.params.data;
        // MLP. bg.dresid holds dL/dx_out.
        let hid = self.cfg.dense_hidden(l);
        if hid > 0 {
            let (dh, dgu) = (&mut bg.dh[..n * hid], &mut bg.dgu[..n * 2 * hid]);
            sgemm(&Gemm::nn(n, hid, d), &bg.dresid, &p[off.down..], dh); // dh (N, hid)
            sgemm(
                &Gemm::tn(d, hid, n).accumulate(true),
                &bg.dresid,
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
                &mut bg.dxn,
            ); // dxn2 (N, d)
        } else {
            bg.dxn.fill(0.0);
        }
        if let (Some(m), Some(moe), Some(acts)) = (self.cfg.moe_at(l), &off.moe, &a.moe) {
            self.moe_backward(
                m,
                moe,
                &a.xn2,
                &bg.dresid,
                &mut bg.dxn,
                g,
                acts,
                &mut bg.moe,
                (cx.seq_len, aux_weight),
            );
        }
        rmsnorm_backward(
            &mut bg.dresid,
            &mut g[off.mlp_norm..][..d],
            &bg.dxn,
            &a.x_mid,
            &p[off.mlp_norm..][..d],
            &a.rstd2,
            d,
        );
        // Attention. bg.dresid now holds dL/dx_mid.
        sgemm(
            &Gemm::nn(n, cx.att, d),
            &bg.dresid,
            &p[off.o..],
            &mut bg.datt,
        ); // datt (N, att)
        sgemm(
            &Gemm::tn(d, cx.att, n).accumulate(true),
            &bg.dresid,
            &a.att,
            &mut g[off.o..],
        ); // dW_o (d, att)
        attention_backward_docs(
            &mut bg.dqkv,
            &bg.datt,
            &a.qkv,
            &a.att,
            &a.lse,
            cx.attn,
            cx.starts,
        );
        if let (Some(m), Some(mla)) = (self.cfg.mla(), &off.mla) {
            let (dqkv, dxn, mg) = (&mut bg.dqkv, &mut bg.dxn, &mut bg.mla);
            self.mla_qkv_backward(m, mla, off.qkv, a, dqkv, dxn, g, mg, n, cx.seq_len);
        } else {
            rope_backward(&mut bg.dqkv, cx.rope, &self.rope);
            sgemm(
                &Gemm::tn(cx.qkv, d, n).accumulate(true),
                &bg.dqkv,
                &a.xn1,
                &mut g[off.qkv..],
            ); // (qkv, d)
            sgemm(
                &Gemm::nn(n, d, cx.qkv),
                &bg.dqkv,
                &p[off.qkv..],
                &mut bg.dxn,
            ); // dxn1 (N, d)
        }
        rmsnorm_backward(
            &mut bg.dresid,
            &mut g[off.attn_norm..][..d],
            &bg.dxn,
            x_in,
            &p[off.attn_norm..][..d],
            &a.rstd1,
            d,
        );
    }
}
