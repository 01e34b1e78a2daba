//! Multi-head latent attention through the cache, in the absorbed form (DeepSeek-V2 §2.1.2).
//! A token's cache entry is its normed latent ĉ (kv_rank) and its rotated RoPE key (rope_dim):
//! no per-head keys or values. Head h's position-free key is W_UK_h·ĉ and its value W_UV_h·ĉ
//! (the two row blocks of kv_b_proj), so
//!
//!   q_h·k_h(j) = (W_UK_hᵀ·q_nope_h)·ĉ_j + q_pe_h·k_pe_j = [q_lat_h | q_pe_h]·[ĉ_j | k_pe_j]
//!   o_h = Σ_j p_j·W_UV_h·ĉ_j = W_UV_h·(Σ_j p_j·ĉ_j)
//!
//! and every head attends over the cache rows as they are: one key of kv_rank + rope_dim
//! channels whose first kv_rank are also the value. Training's expanded form (`model::mla`)
//! computes the same attention; `engine::tests` checks the two agree.

use crate::config::MlaConfig;
use crate::kv_cache::{causal_softmax, linear, KvCache, Rows, Scratch};
use crate::{Llama, MlaOffsets};
use rayon::prelude::*;
use tensor::ops::rmsnorm::rmsnorm_forward;
use tensor::ops::rope::{rope_forward, RopeLayout};
use tensor::{sgemm_serial, Gemm};

impl Llama {
    /// Latent attention of the stacked new rows (normed in `s.xn`) into `s.att`, appending
    /// their latents and RoPE keys to each cache's layer `slot`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mla_attention(
        &self,
        m: &MlaConfig,
        off: &MlaOffsets,
        q_proj: usize,
        slot: usize,
        batch: &mut [(&mut KvCache, &[u32])],
        rows: &Rows,
        s: &mut Scratch,
    ) {
        let c = &self.cfg;
        let (d, hd, nh) = (c.d_model, c.head_dim(), c.n_heads);
        let (rank, rope) = (m.kv_rank, m.rope_dim);
        let (nope, kw, att_w) = (hd - rope, rank + rope, nh * hd);
        let n = rows.len();
        let p = &self.params.data;
        let Scratch {
            xn,
            qkv: q,
            att,
            lat,
            c: lat_c,
            cn,
            rstd_c,
            ..
        } = s;
        q.resize(n * att_w, 0.0);
        lat.resize(n * kw, 0.0);
        lat_c.resize(n * rank, 0.0);
        cn.resize(n * rank, 0.0);
        rstd_c.resize(n, 0.0);
        linear(n, att_w, d, xn, &p[q_proj..], q);
        linear(n, kw, d, xn, &p[off.kv_a..], lat);
        // Norm the latents, which sit in the first kv_rank channels of each cache row.
        for (dst, row) in lat_c.chunks_exact_mut(rank).zip(lat.chunks_exact(kw)) {
            dst.copy_from_slice(&row[..rank]);
        }
        let w = &p[off.kv_norm..][..rank];
        let eps = c.mla().map_or(c.norm_eps, |m| m.latent_eps(c.norm_eps));
        rmsnorm_forward(cn, rstd_c, lat_c, w, rank, eps);
        for (row, src) in lat.chunks_exact_mut(kw).zip(cn.chunks_exact(rank)) {
            row[..rank].copy_from_slice(src);
        }
        // RoPE at each sequence's own positions, then append the rows to its cache.
        let mut first = 0;
        for (cache, new) in batch.iter_mut() {
            let (t, pos0) = (new.len(), cache.len());
            let key = RopeLayout {
                stride: kw,
                col: rank,
                n_heads: 1,
                seq_len: t,
                pos0,
            };
            rope_forward(&mut lat[first * kw..(first + t) * kw], key, &self.rope);
            for h in 0..nh {
                let query = RopeLayout {
                    stride: att_w,
                    col: h * hd + nope,
                    n_heads: 1,
                    seq_len: t,
                    pos0,
                };
                rope_forward(
                    &mut q[first * att_w..(first + t) * att_w],
                    query,
                    &self.rope,
                );
            }
            cache.k[slot].extend_from_slice(&lat[first * kw..(first + t) * kw]);
            first += t;
        }
        // Per (sequence, head): absorb W_UK into the queries, score against the cache rows,
        // mix the latents, and bring the mix up through W_UV.
        let kv_b = &p[off.kv_b..][..nh * (nope + hd) * rank];
        let mut starts = vec![0usize; batch.len()];
        for i in 1..batch.len() {
            starts[i] = starts[i - 1] + batch[i - 1].1.len();
        }
        let caches: Vec<&[f32]> = batch.iter().map(|(c, _)| c.k[slot].as_slice()).collect();
        let lens: Vec<usize> = batch.iter().map(|(_, new)| new.len()).collect();
        let tasks: Vec<(usize, usize)> = (0..batch.len())
            .flat_map(|i| (0..nh).map(move |h| (i, h)))
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let q = &*q;
        let outs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(i, h)| {
                let (t, cache) = (lens[i], caches[i]);
                let keys = cache.len() / kw;
                let pos0 = keys - t;
                let q = &q[starts[i] * att_w + h * hd..];
                let w_uk = &kv_b[h * (nope + hd) * rank..][..nope * rank];
                let w_uv = &kv_b[(h * (nope + hd) + nope) * rank..][..hd * rank];
                let mut qc = vec![0f32; t * kw];
                let absorb = Gemm::nn(t, rank, nope).ld(att_w, rank, kw);
                sgemm_serial(&absorb, q, w_uk, &mut qc);
                for (j, row) in qc.chunks_exact_mut(kw).enumerate() {
                    row[rank..].copy_from_slice(&q[j * att_w + nope..][..rope]);
                }
                let mut sc = vec![0f32; t * keys];
                let scores = Gemm::nt(t, keys, kw).ld(kw, kw, keys);
                sgemm_serial(&scores, &qc, cache, &mut sc);
                causal_softmax(&mut sc, keys, pos0, scale);
                let mut mix = vec![0f32; t * rank];
                let mixing = Gemm::nn(t, rank, keys).ld(keys, kw, rank);
                sgemm_serial(&mixing, &sc, cache, &mut mix);
                let mut out = vec![0f32; t * hd];
                sgemm_serial(&Gemm::nt(t, hd, rank), &mix, w_uv, &mut out);
                out
            })
            .collect();
        for (&(i, h), out) in tasks.iter().zip(&outs) {
            for (j, o) in out.chunks_exact(hd).enumerate() {
                att[(starts[i] + j) * att_w + h * hd..][..hd].copy_from_slice(o);
            }
        }
    }
}
