//! One decoder block, forward and backward: x_mid = x_in + o_proj(attn(rope(qkv(norm(x_in))))),
//! x_out = x_mid + mlp(norm(x_mid)), where attention is grouped-query or latent (`mla`) and
//! the MLP is a SwiGLU, or in a MoE block the shared
//! experts' SwiGLU plus the routed experts. The model's layers and its multi-token prediction
//! modules are all such blocks.

use crate::adapters::{LoraPass, Proj};
use crate::workspace::{BlockGrads, LayerActs};
use crate::{LayerOffsets, Llama};
use tensor::ops::attention::AttnShape;
use tensor::ops::rope::RopeLayout;
use tensor::{Device, Gemm, Memory, Mut, Ref};

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

impl<D: Device> Llama<D> {
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
    /// keeping activations in `a` (and the adapters' in `side`, with LoRA). Adds its routed
    /// experts' token counts to `load`; returns its sequence-wise balance loss (0 without one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block_forward(
        &self,
        l: usize,
        off: &LayerOffsets,
        x_in: Ref<D>,
        mut x_out: Mut<D>,
        a: &mut LayerActs<D>,
        cx: BlockCtx,
        load: &mut [u64],
        side: &mut Option<LoraPass<D>>,
    ) -> f64 {
        let (n, d, eps) = (cx.n, self.cfg.d_model, self.cfg.norm_eps);
        let (dev, p) = (&self.dev, &self.params.data);
        let norm1 = p.at(off.attn_norm..off.attn_norm + d);
        dev.rmsnorm_forward(a.xn1.all_mut(), a.rstd1.all_mut(), x_in, norm1, d, eps);
        match (self.cfg.mla(), &off.mla) {
            (Some(m), Some(mla)) => self.mla_qkv_forward(m, mla, off.qkv, a, n, cx.seq_len),
            _ => {
                let w_qkv = p.at(off.qkv..);
                dev.gemm(&Gemm::nt(n, cx.qkv, d), a.xn1.all(), w_qkv, a.qkv.all_mut()); // (N, qkv)
                if let Some(b) = off.qkv_bias {
                    dev.add_bias(a.qkv.all_mut(), p.at(b..b + cx.qkv));
                }
                self.side_forward(l, Proj::Qkv, a.xn1.all(), a.qkv.all_mut(), cx.qkv, side);
                dev.rope_forward(a.qkv.all_mut(), cx.rope, &self.rope);
            }
        }
        let (att, lse) = (a.att.all_mut(), a.lse.all_mut());
        dev.attention_forward(att, lse, a.qkv.all(), cx.attn, cx.starts); // (N, att)
        let o = Gemm::nt(n, d, cx.att);
        dev.gemm(&o, a.att.all(), p.at(off.o..), a.x_mid.all_mut()); // (N, d)
        self.side_forward(l, Proj::O, a.att.all(), a.x_mid.all_mut(), d, side);
        dev.add(a.x_mid.all_mut(), x_in);
        let norm2 = p.at(off.mlp_norm..off.mlp_norm + d);
        dev.rmsnorm_forward(
            a.xn2.all_mut(),
            a.rstd2.all_mut(),
            a.x_mid.all(),
            norm2,
            d,
            eps,
        );
        let hid = self.cfg.dense_hidden(l);
        if hid > 0 {
            let gate_up = Gemm::nt(n, 2 * hid, d);
            dev.gemm(&gate_up, a.xn2.all(), p.at(off.gate_up..), a.gu.all_mut()); // (N, 2·hid)
            self.side_forward(l, Proj::GateUp, a.xn2.all(), a.gu.all_mut(), 2 * hid, side);
            dev.swiglu_forward(a.h.all_mut(), a.gu.all(), hid);
            dev.gemm(
                &Gemm::nt(n, d, hid),
                a.h.all(),
                p.at(off.down..),
                x_out.rb(),
            ); // (N, d)
            self.side_forward(l, Proj::Down, a.h.all(), x_out.rb(), d, side);
        } else {
            dev.fill(x_out.rb(), 0.0);
        }
        let mut balance = 0.0;
        if let (Some(m), Some(moe), Some(acts)) = (self.cfg.moe_at(l), &off.moe, &mut a.moe) {
            let counts = self.moe_forward(m, moe, a.xn2.all(), x_out.rb(), acts);
            for (total, c) in load.iter_mut().zip(counts) {
                *total += c as u64;
            }
            if m.balance_loss > 0.0 {
                let r = &acts.routing;
                balance = dev.moe_balance_loss(None, r, cx.seq_len, m.balance_loss, 0.0);
            }
        }
        dev.add(x_out, a.x_mid.all());
        balance
    }

    /// The backward of `block_forward`: `bg.dresid` holds dL/dx_out on entry and dL/dx_in on
    /// return; weight gradients accumulate into `g` (laid out like the parameters up to the
    /// head, or with LoRA like the adapters, the frozen weights getting none). A balance loss
    /// enters with `aux_weight` per sequence.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block_backward(
        &self,
        l: usize,
        off: &LayerOffsets,
        x_in: Ref<D>,
        a: &LayerActs<D>,
        mut g: Mut<D>,
        bg: &mut BlockGrads<D>,
        cx: BlockCtx,
        aux_weight: f32,
        side: &mut Option<LoraPass<D>>,
    ) {
        let (n, d) = (cx.n, self.cfg.d_model);
        let (dev, p) = (&self.dev, &self.params.data);
        let frozen = self.lora.is_some();
        // MLP. bg.dresid holds dL/dx_out.
        let hid = self.cfg.dense_hidden(l);
        if hid > 0 {
            let (dh, dgu) = (&mut bg.dh, &mut bg.dgu);
            let dresid = bg.dresid.all();
            dev.gemm(
                &Gemm::nn(n, hid, d),
                dresid,
                p.at(off.down..),
                dh.at_mut(..n * hid),
            ); // dh (N, hid)
            if frozen {
                let dh = dh.at_mut(..n * hid);
                self.side_backward(l, Proj::Down, dresid, d, a.h.all(), dh, &mut g, side);
            } else {
                let dw_down = Gemm::tn(d, hid, n).accumulate(true);
                dev.gemm(&dw_down, dresid, a.h.all(), g.at(off.down..)); // dW_down (d, hid)
            }
            let (dh, gu) = (dh.at(..n * hid), a.gu.all());
            dev.swiglu_backward(dgu.at_mut(..n * 2 * hid), dh, gu, hid);
            let dgu = dgu.at(..n * 2 * hid);
            if !frozen {
                let dw_gate_up = Gemm::tn(2 * hid, d, n).accumulate(true);
                dev.gemm(&dw_gate_up, dgu, a.xn2.all(), g.at(off.gate_up..)); // (2·hid, d)
            }
            let w_gate_up = p.at(off.gate_up..);
            dev.gemm(&Gemm::nn(n, d, 2 * hid), dgu, w_gate_up, bg.dxn.all_mut()); // dxn2 (N, d)
            let (xn2, dxn) = (a.xn2.all(), bg.dxn.all_mut());
            self.side_backward(l, Proj::GateUp, dgu, 2 * hid, xn2, dxn, &mut g, side);
        } else {
            dev.fill(bg.dxn.all_mut(), 0.0);
        }
        if let (Some(m), Some(moe), Some(acts)) = (self.cfg.moe_at(l), &off.moe, &a.moe) {
            let (dout, dx) = (bg.dresid.all(), bg.dxn.all_mut());
            let scratch = &mut bg.moe;
            let aux = (cx.seq_len, aux_weight);
            self.moe_backward(m, moe, a.xn2.all(), dout, dx, g.rb(), acts, scratch, aux);
        }
        let w2 = p.at(off.mlp_norm..off.mlp_norm + d);
        let g2 = match frozen {
            true => bg.dnorm.all_mut(),
            false => g.at(off.mlp_norm..off.mlp_norm + d),
        };
        let (dxn, x_mid, rstd2) = (bg.dxn.all(), a.x_mid.all(), a.rstd2.all());
        dev.rmsnorm_backward(bg.dresid.all_mut(), g2, dxn, x_mid, w2, rstd2, d);
        // Attention. bg.dresid now holds dL/dx_mid.
        let dresid = bg.dresid.all();
        dev.gemm(
            &Gemm::nn(n, cx.att, d),
            dresid,
            p.at(off.o..),
            bg.datt.all_mut(),
        ); // datt (N, att)
        if frozen {
            let (att, datt) = (a.att.all(), bg.datt.all_mut());
            self.side_backward(l, Proj::O, dresid, d, att, datt, &mut g, side);
        } else {
            let dw_o = Gemm::tn(d, cx.att, n).accumulate(true);
            dev.gemm(&dw_o, dresid, a.att.all(), g.at(off.o..)); // dW_o (d, att)
        }
        let (datt, qkv, att, lse) = (bg.datt.all(), a.qkv.all(), a.att.all(), a.lse.all());
        dev.attention_backward(bg.dqkv.all_mut(), datt, qkv, att, lse, cx.attn, cx.starts);
        if let (Some(m), Some(mla)) = (self.cfg.mla(), &off.mla) {
            let (dqkv, dxn, mg) = (&mut bg.dqkv, &mut bg.dxn, &mut bg.mla);
            self.mla_qkv_backward(m, mla, off.qkv, a, dqkv, dxn, g.rb(), mg, n, cx.seq_len);
        } else {
            dev.rope_backward(bg.dqkv.all_mut(), cx.rope, &self.rope);
            if !frozen {
                if let Some(b) = off.qkv_bias {
                    dev.bias_backward(g.at(b..b + cx.qkv), bg.dqkv.all());
                }
                let dw_qkv = Gemm::tn(cx.qkv, d, n).accumulate(true);
                dev.gemm(&dw_qkv, bg.dqkv.all(), a.xn1.all(), g.at(off.qkv..)); // (qkv, d)
            }
            let w_qkv = p.at(off.qkv..);
            dev.gemm(
                &Gemm::nn(n, d, cx.qkv),
                bg.dqkv.all(),
                w_qkv,
                bg.dxn.all_mut(),
            ); // dxn1 (N, d)
            let (dqkv, xn1, dxn) = (bg.dqkv.all(), a.xn1.all(), bg.dxn.all_mut());
            self.side_backward(l, Proj::Qkv, dqkv, cx.qkv, xn1, dxn, &mut g, side);
        }
        let w1 = p.at(off.attn_norm..off.attn_norm + d);
        let g1 = match frozen {
            true => bg.dnorm.all_mut(),
            false => g.at(off.attn_norm..off.attn_norm + d),
        };
        let (dxn, rstd1) = (bg.dxn.all(), a.rstd1.all());
        dev.rmsnorm_backward(bg.dresid.all_mut(), g1, dxn, x_in, w1, rstd1, d);
    }
}
