//! Multi-head latent attention in training (DeepSeek-V2 §2.1), in the expanded form: each
//! token's keys and values are brought up from its latent and assembled into the same packed
//! [q | k | v] rows that grouped-query attention fills, so the fused attention kernel and its
//! backward serve both. With r = rope_dim and nope = head_dim − r, per token:
//!
//!   q_h = q_proj(x)_h = [q_nope_h | rope(q_pe_h)]                  (head_dim each)
//!   [c | k_pe] = kv_a_proj_with_mqa(x),  ĉ = kv_a_layernorm(c)       (kv_rank, r)
//!   [k_nope_h | v_h] = kv_b_proj(ĉ)_h                              (nope, head_dim)
//!   k_h = [k_nope_h | rope(k_pe)]                                   (k_pe shared by the heads)
//!
//! The engine keeps only ĉ and rope(k_pe) per token and attends in the absorbed form
//! (`engine::mla`); the two agree up to rounding.

use crate::config::{MlaConfig, MlaDims};
use crate::workspace::{LayerActs, MlaActs, MlaGrads};
use crate::{Llama, MlaOffsets};
use tensor::ops::rope::RopeLayout;
use tensor::{Device, Gemm, Memory, Mut};

impl MlaDims {
    /// Where head h's RoPE channels sit in rows of `stride` floats whose heads are head_dim
    /// apart from column `col`.
    pub fn rope_of_head(
        &self,
        h: usize,
        stride: usize,
        col: usize,
        seq_len: usize,
        pos0: usize,
    ) -> RopeLayout {
        RopeLayout {
            stride,
            col: col + h * self.head_dim + self.nope,
            n_heads: 1,
            seq_len,
            pos0,
        }
    }
}

impl<D: Device> Llama<D> {
    /// Fills `a.qkv` (N, 3·heads·head_dim) from the normed input `a.xn1`, RoPE applied: the
    /// expanded form's queries, keys and values. `seq_len` numbers positions within each row's
    /// sequence.
    pub(crate) fn mla_qkv_forward(
        &self,
        m: &MlaConfig,
        off: &MlaOffsets,
        q_proj: usize,
        a: &mut LayerActs<D>,
        n: usize,
        seq_len: usize,
    ) {
        let md = MlaDims::new(&self.cfg, m);
        let (dev, d, p) = (&self.dev, self.cfg.d_model, &self.params.data);
        let att = md.heads * md.head_dim;
        let stride = 3 * att;
        let acts: &mut MlaActs<D> = a.mla.as_mut().expect("latent attention activations");
        let xn1 = a.xn1.all();
        // Queries straight into the packed rows.
        let q = Gemm::nt(n, att, d).ld(d, d, stride);
        dev.gemm(&q, xn1, p.at(q_proj..), a.qkv.all_mut());
        // The latent and the shared RoPE key: the two row blocks of kv_a_proj_with_mqa.
        let (w_c, w_pe) = p.at(off.kv_a..).split_at(md.rank * d);
        dev.gemm(&Gemm::nt(n, md.rank, d), xn1, w_c, acts.c.all_mut());
        dev.gemm(&Gemm::nt(n, md.rope, d), xn1, w_pe, acts.kpe.all_mut());
        let norm = p.at(off.kv_norm..off.kv_norm + md.rank);
        let (cn, rstd) = (acts.cn.all_mut(), acts.rstd.all_mut());
        let eps = self
            .cfg
            .mla()
            .map_or(self.cfg.norm_eps, |m| m.latent_eps(self.cfg.norm_eps));
        dev.rmsnorm_forward(cn, rstd, acts.c.all(), norm, md.rank, eps);
        let kv_b = Gemm::nt(n, md.kv, md.rank);
        dev.gemm(&kv_b, acts.cn.all(), p.at(off.kv_b..), acts.kv.all_mut());
        let whole = RopeLayout {
            stride: md.rope,
            col: 0,
            n_heads: 1,
            seq_len,
            pos0: 0,
        };
        dev.rope_forward(acts.kpe.all_mut(), whole, &self.rope);
        for h in 0..md.heads {
            let layout = md.rope_of_head(h, stride, 0, seq_len, 0);
            dev.rope_forward(a.qkv.all_mut(), layout, &self.rope);
        }
        let (kv, kpe) = (acts.kv.all(), acts.kpe.all());
        dev.expand_kv(a.qkv.all_mut(), kv, kpe, md.expand());
    }

    /// The backward of `mla_qkv_forward`: from dL/d(qkv) in `dqkv` (which it consumes),
    /// accumulates the weights' gradients into `g` and writes dL/d(xn1) into `dxn`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mla_qkv_backward(
        &self,
        m: &MlaConfig,
        off: &MlaOffsets,
        q_proj: usize,
        a: &LayerActs<D>,
        dqkv: &mut D::Mem,
        dxn: &mut D::Mem,
        mut g: Mut<D>,
        mg: &mut MlaGrads<D>,
        n: usize,
        seq_len: usize,
    ) {
        let md = MlaDims::new(&self.cfg, m);
        let (dev, d, p) = (&self.dev, self.cfg.d_model, &self.params.data);
        let att = md.heads * md.head_dim;
        let stride = 3 * att;
        let acts = a.mla.as_ref().expect("latent attention activations");
        for h in 0..md.heads {
            let layout = md.rope_of_head(h, stride, 0, seq_len, 0);
            dev.rope_backward(dqkv.all_mut(), layout, &self.rope);
        }
        // The keys' and values' gradients back into kv_b_proj's layout; the heads' RoPE key
        // gradients sum into the one shared key's.
        let (dkv, dkpe) = (mg.dkv.all_mut(), mg.dkpe.all_mut());
        dev.expand_kv_backward(dkv, dkpe, dqkv.all(), md.expand());
        let whole = RopeLayout {
            stride: md.rope,
            col: 0,
            n_heads: 1,
            seq_len,
            pos0: 0,
        };
        dev.rope_backward(mg.dkpe.all_mut(), whole, &self.rope);
        let (dqkv, xn1) = (dqkv.all(), a.xn1.all());
        // Queries: dW_q and the first part of dxn.
        let dw_q = Gemm::tn(att, d, n).ld(stride, d, d).accumulate(true);
        dev.gemm(&dw_q, dqkv, xn1, g.at(q_proj..)); // (heads·hd, d)
        let dx_q = Gemm::nn(n, d, att).ld(stride, d, d);
        dev.gemm(&dx_q, dqkv, p.at(q_proj..), dxn.all_mut()); // (N, d)
                                                              // kv_b_proj, then the latent's norm.
        let dw_kv_b = Gemm::tn(md.kv, md.rank, n).accumulate(true);
        dev.gemm(&dw_kv_b, mg.dkv.all(), acts.cn.all(), g.at(off.kv_b..)); // (kv, rank)
        let dcn = Gemm::nn(n, md.rank, md.kv);
        dev.gemm(&dcn, mg.dkv.all(), p.at(off.kv_b..), mg.dcn.all_mut()); // (N, rank)
        dev.fill(mg.dc.all_mut(), 0.0);
        let (w, gw) = (p.at(off.kv_norm..), g.at(off.kv_norm..));
        let (w, gw) = (w.at(..md.rank), gw.into_at(..md.rank));
        let (dcn, c, rstd) = (mg.dcn.all(), acts.c.all(), acts.rstd.all());
        dev.rmsnorm_backward(mg.dc.all_mut(), gw, dcn, c, w, rstd, md.rank);
        // kv_a_proj_with_mqa: its latent rows, then its RoPE key rows.
        let (w_c, w_pe) = p.at(off.kv_a..).split_at(md.rank * d);
        let (g_c, g_pe) = g.into_at(off.kv_a..).split_at(md.rank * d);
        let (dc, dkpe) = (mg.dc.all(), mg.dkpe.all());
        dev.gemm(&Gemm::tn(md.rank, d, n).accumulate(true), dc, xn1, g_c);
        dev.gemm(&Gemm::tn(md.rope, d, n).accumulate(true), dkpe, xn1, g_pe);
        dev.gemm(
            &Gemm::nn(n, d, md.rank).accumulate(true),
            dc,
            w_c,
            dxn.all_mut(),
        );
        dev.gemm(
            &Gemm::nn(n, d, md.rope).accumulate(true),
            dkpe,
            w_pe,
            dxn.all_mut(),
        );
    }
}
