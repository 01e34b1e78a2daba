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
use tensor::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use tensor::ops::rope::{rope_backward, rope_forward, RopeLayout};
use tensor::ops::rows::{expand_kv, expand_kv_backward};
use tensor::{sgemm, Gemm};

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

impl Llama {
    /// Fills `a.qkv` (N, 3·heads·head_dim) from the normed input `a.xn1`, RoPE applied: the
    /// expanded form's queries, keys and values. `seq_len` numbers positions within each row's
    /// sequence.
    pub(crate) fn mla_qkv_forward(
        &self,
        m: &MlaConfig,
        off: &MlaOffsets,
        q_proj: usize,
        a: &mut LayerActs,
        n: usize,
        seq_len: usize,
    ) {
        let md = MlaDims::new(&self.cfg, m);
        let (d, p) = (self.cfg.d_model, &self.params.data);
        let att = md.heads * md.head_dim;
        let stride = 3 * att;
        let acts: &mut MlaActs = a.mla.as_mut().expect("latent attention activations");
        // Queries straight into the packed rows.
        sgemm(
            &Gemm::nt(n, att, d).ld(d, d, stride),
            &a.xn1,
            &p[q_proj..],
            &mut a.qkv,
        );
        // The latent and the shared RoPE key: the two row blocks of kv_a_proj_with_mqa.
        let (w_c, w_pe) = p[off.kv_a..].split_at(md.rank * d);
        sgemm(&Gemm::nt(n, md.rank, d), &a.xn1, w_c, &mut acts.c);
        sgemm(&Gemm::nt(n, md.rope, d), &a.xn1, w_pe, &mut acts.kpe);
        rmsnorm_forward(
            &mut acts.cn,
            &mut acts.rstd,
            &acts.c,
            &p[off.kv_norm..][..md.rank],
            md.rank,
            self.cfg.norm_eps,
        );
        sgemm(
            &Gemm::nt(n, md.kv, md.rank),
            &acts.cn,
            &p[off.kv_b..],
            &mut acts.kv,
        );
        let whole = RopeLayout {
            stride: md.rope,
            col: 0,
            n_heads: 1,
            seq_len,
            pos0: 0,
        };
        rope_forward(&mut acts.kpe, whole, &self.rope);
        for h in 0..md.heads {
            rope_forward(
                &mut a.qkv,
                md.rope_of_head(h, stride, 0, seq_len, 0),
                &self.rope,
            );
        }
        expand_kv(&mut a.qkv, &acts.kv, &acts.kpe, md.expand());
    }

    /// The backward of `mla_qkv_forward`: from dL/d(qkv) in `dqkv` (which it consumes),
    /// accumulates the weights' gradients into `g` and writes dL/d(xn1) into `dxn`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mla_qkv_backward(
        &self,
        m: &MlaConfig,
        off: &MlaOffsets,
        q_proj: usize,
        a: &LayerActs,
        dqkv: &mut [f32],
        dxn: &mut [f32],
        g: &mut [f32],
        mg: &mut MlaGrads,
        n: usize,
        seq_len: usize,
    ) {
        let md = MlaDims::new(&self.cfg, m);
        let (d, p) = (self.cfg.d_model, &self.params.data);
        let att = md.heads * md.head_dim;
        let stride = 3 * att;
        let acts = a.mla.as_ref().expect("latent attention activations");
        for h in 0..md.heads {
            rope_backward(dqkv, md.rope_of_head(h, stride, 0, seq_len, 0), &self.rope);
        }
        // The keys' and values' gradients back into kv_b_proj's layout; the heads' RoPE key
        // gradients sum into the one shared key's.
        expand_kv_backward(&mut mg.dkv, &mut mg.dkpe, dqkv, md.expand());
        let whole = RopeLayout {
            stride: md.rope,
            col: 0,
            n_heads: 1,
            seq_len,
            pos0: 0,
        };
        rope_backward(&mut mg.dkpe, whole, &self.rope);
        // Queries: dW_q and the first part of dxn.
        sgemm(
            &Gemm::tn(att, d, n).ld(stride, d, d).accumulate(true),
            dqkv,
            &a.xn1,
            &mut g[q_proj..],
        ); // (heads·hd, d)
        sgemm(
            &Gemm::nn(n, d, att).ld(stride, d, d),
            dqkv,
            &p[q_proj..],
            dxn,
        ); // (N, d)
           // kv_b_proj, then the latent's norm.
        sgemm(
            &Gemm::tn(md.kv, md.rank, n).accumulate(true),
            &mg.dkv,
            &acts.cn,
            &mut g[off.kv_b..],
        ); // (kv, rank)
        sgemm(
            &Gemm::nn(n, md.rank, md.kv),
            &mg.dkv,
            &p[off.kv_b..],
            &mut mg.dcn,
        ); // (N, rank)
        mg.dc.fill(0.0);
        rmsnorm_backward(
            &mut mg.dc,
            &mut g[off.kv_norm..][..md.rank],
            &mg.dcn,
            &acts.c,
            &p[off.kv_norm..][..md.rank],
            &acts.rstd,
            md.rank,
        );
        // kv_a_proj_with_mqa: its latent rows, then its RoPE key rows.
        let (w_c, w_pe) = p[off.kv_a..].split_at(md.rank * d);
        let (g_c, g_pe) = g[off.kv_a..].split_at_mut(md.rank * d);
        sgemm(
            &Gemm::tn(md.rank, d, n).accumulate(true),
            &mg.dc,
            &a.xn1,
            g_c,
        );
        sgemm(
            &Gemm::tn(md.rope, d, n).accumulate(true),
            &mg.dkpe,
            &a.xn1,
            g_pe,
        );
        sgemm(&Gemm::nn(n, d, md.rank).accumulate(true), &mg.dc, w_c, dxn);
        sgemm(
            &Gemm::nn(n, d, md.rope).accumulate(true),
            &mg.dkpe,
            w_pe,
            dxn,
        );
    }
}
