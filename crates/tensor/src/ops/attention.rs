//! Causal self-attention with grouped-query heads, blocked in the style of FlashAttention-2:
//! queries are processed in blocks of `BLOCK_Q` rows, so only a (BLOCK_Q × keys) tile of scores
//! ever exists, and the backward pass recomputes it from the saved log-sum-exp instead of
//! keeping the (T × T) probability matrix of every head.
//!
//! One parallel task per (sequence, kv head): it owns that kv head's dK and dV, so the query
//! heads sharing it accumulate without atomics, and results do not depend on the thread count.
//! Inside `matmul::bf16_products` the blocks' products take bf16 operands (f32 accumulation,
//! f32 softmax and log-sum-exp), as PyTorch's CPU autocast does for attention.

use super::math::{dot, exp, max, sum};
use crate::matmul::{sgemm_on_caller, sgemm_on_caller_raw, Gemm};
use crate::SendPtr;
use rayon::prelude::*;

const BLOCK_Q: usize = 64;

/// Where q, k and v sit in the rows of the fused projection output `qkv`: (B·T) rows of
/// `stride()` floats = [q heads (n_heads·hd) | k heads (n_kv·hd) | v heads (n_kv·hd)].
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub seq_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn stride(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
    /// Row width of the attention output: (B·T, n_heads·hd).
    pub fn out_stride(&self) -> usize {
        self.n_heads * self.head_dim
    }
    fn q_col(&self, h: usize) -> usize {
        h * self.head_dim
    }
    fn k_col(&self, g: usize) -> usize {
        (self.n_heads + g) * self.head_dim
    }
    fn v_col(&self, g: usize) -> usize {
        (self.n_heads + self.n_kv_heads + g) * self.head_dim
    }
    fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
    fn validate_starts(&self, starts: Option<&[u32]>) {
        let Some(st) = starts else { return };
        assert_eq!(
            st.len(),
            self.batch * self.seq_len,
            "attention: starts length"
        );
        for (i, &x) in st.iter().enumerate() {
            assert!(
                x as usize <= i % self.seq_len,
                "attention: token {i} starts its document after itself"
            );
        }
    }
    /// (query, key) pairs one head computes: the keys each query sees, summed over all queries.
    fn visible_pairs(&self, starts: Option<&[u32]>) -> u64 {
        let t = self.seq_len;
        (0..self.batch * t)
            .map(|r| visible(r % t, starts.map(|s| &s[r / t * t..][..t])).len() as u64)
            .sum()
    }

    /// Model FLOPs of one forward pass: S = Q·Kᵀ and O = P·V, 2·hd each per visible pair and
    /// head. The backward pass does twice as many (dP, dV, dQ, dK); its recomputation of S is
    /// hardware work, not model work, and is not counted.
    pub fn forward_flops(&self, starts: Option<&[u32]>) -> u64 {
        4 * (self.head_dim * self.n_heads) as u64 * self.visible_pairs(starts)
    }

    fn validate(&self, qkv: usize, out: usize, lse: usize) {
        let rows = self.batch * self.seq_len;
        assert!(
            self.n_kv_heads > 0 && self.n_heads.is_multiple_of(self.n_kv_heads),
            "attention: {self:?}: heads not divisible"
        );
        assert_eq!(
            qkv,
            rows * self.stride(),
            "attention: qkv length for {self:?}"
        );
        assert_eq!(
            out,
            rows * self.out_stride(),
            "attention: out length for {self:?}"
        );
        assert_eq!(
            lse,
            self.batch * self.n_heads * self.seq_len,
            "attention: lse length for {self:?}"
        );
    }
}

/// The keys query `i` sees: from its document's start (0 without document masking) to itself.
fn visible(i: usize, starts: Option<&[u32]>) -> std::ops::Range<usize> {
    let start = starts.map_or(0, |s| s[i] as usize);
    start..i + 1
}

/// Zeroes the masked keys of one row of scores and returns the visible ones.
fn mask_row(row: &mut [f32], keys: std::ops::Range<usize>) -> &mut [f32] {
    let (before, rest) = row.split_at_mut(keys.start);
    before.fill(0.0);
    let (vis, after) = rest.split_at_mut(keys.end - keys.start);
    after.fill(0.0);
    vis
}

/// Turns the raw scores of one query block (rows i0.., keys 0..i1) into causal softmax
/// probabilities in place, writing each row's log-sum-exp (of the scaled scores) to `lse`.
/// `starts` (the sequence's document starts, if any) also masks keys of earlier documents.
fn block_softmax(
    p: &mut [f32],
    i0: usize,
    i1: usize,
    scale: f32,
    lse: &mut [f32],
    starts: Option<&[u32]>,
) {
    for (r, row) in p.chunks_exact_mut(i1).enumerate() {
        let vis = mask_row(row, visible(i0 + r, starts));
        let m = max(vis) * scale;
        vis.iter_mut().for_each(|s| *s = exp(*s * scale - m));
        let total = sum(vis);
        lse[r] = m + total.ln();
        let inv = 1.0 / total;
        vis.iter_mut().for_each(|s| *s *= inv);
    }
}

/// The backward pass's recomputation: probabilities from raw scores and the saved `lse`.
fn block_probs(
    p: &mut [f32],
    i0: usize,
    i1: usize,
    scale: f32,
    lse: &[f32],
    starts: Option<&[u32]>,
) {
    for (r, row) in p.chunks_exact_mut(i1).enumerate() {
        let vis = mask_row(row, visible(i0 + r, starts));
        vis.iter_mut()
            .for_each(|s| *s = (*s * scale - lse[r]).exp());
    }
}

/// # Shapes
/// qkv: (B·T, stride); out (written): (B·T, n_heads·hd); lse (written): (B, n_heads, T).
pub fn attention_forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], s: AttnShape) {
    attention_forward_docs(out, lse, qkv, s, None);
}

/// `attention_forward` over sequences that pack several documents: `starts` (B·T) gives, for
/// each token, the position in its sequence where its document begins (≤ its own position),
/// and a token attends only to keys of its own document. Relative positions (RoPE) make each
/// document's result the same as if it were alone.
pub fn attention_forward_docs(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    s: AttnShape,
    starts: Option<&[u32]>,
) {
    s.validate(qkv.len(), out.len(), lse.len());
    s.validate_starts(starts);
    crate::flops::add(s.forward_flops(starts));
    let (t, hd, stride, os) = (s.seq_len, s.head_dim, s.stride(), s.out_stride());
    let (out_ptr, lse_ptr) = (SendPtr(out.as_mut_ptr()), SendPtr(lse.as_mut_ptr()));
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, g) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let seq = &qkv[b * t * stride..(b + 1) * t * stride];
            let starts = starts.map(|st| &st[b * t..(b + 1) * t]);
            let mut p = vec![0f32; BLOCK_Q * t];
            for h in g * s.group()..(g + 1) * s.group() {
                // SAFETY: lse rows (b, h, ..) belong to this task alone.
                let lse_bh = unsafe {
                    std::slice::from_raw_parts_mut(lse_ptr.get().add((b * s.n_heads + h) * t), t)
                };
                for i0 in (0..t).step_by(BLOCK_Q) {
                    let (i1, bq) = ((i0 + BLOCK_Q).min(t), (i0 + BLOCK_Q).min(t) - i0);
                    let p = &mut p[..bq * i1];
                    // S (bq, i1) = Q_blk (bq, hd) · K[..i1]ᵀ
                    let qk = Gemm::nt(bq, i1, hd).ld(stride, stride, i1);
                    sgemm_on_caller(&qk, &seq[i0 * stride + s.q_col(h)..], &seq[s.k_col(g)..], p);
                    block_softmax(p, i0, i1, s.scale(), &mut lse_bh[i0..i1], starts);
                    // O_blk (bq, hd) = P (bq, i1) · V[..i1] (i1, hd), written into head h's columns.
                    let pv = Gemm::nn(bq, hd, i1).ld(i1, stride, os);
                    // SAFETY: rows i0..i1 of sequence b, columns of head h: only this task writes them.
                    unsafe {
                        let o = out_ptr.get().add((b * t + i0) * os + h * hd);
                        sgemm_on_caller_raw(&pv, p, &seq[s.v_col(g)..], o);
                    }
                }
            }
        });
}

/// Writes dqkv (B·T, stride) from dout (B·T, n_heads·hd), recomputing probabilities from `lse`.
/// With P the probabilities, dP = dO·Vᵀ, Dᵢ = rowsum(dO∘O): dS = P∘(dP − D)·scale,
/// dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dO.
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    s: AttnShape,
) {
    attention_backward_docs(dqkv, dout, qkv, out, lse, s, None);
}

/// `attention_backward` with the document masking of `attention_forward_docs`.
pub fn attention_backward_docs(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    s: AttnShape,
    starts: Option<&[u32]>,
) {
    s.validate(qkv.len(), out.len(), lse.len());
    s.validate_starts(starts);
    assert!(
        dqkv.len() == qkv.len() && dout.len() == out.len(),
        "attention_backward: gradient shapes"
    );
    crate::flops::add(2 * s.forward_flops(starts));
    let (t, hd, stride, os, scale) = (s.seq_len, s.head_dim, s.stride(), s.out_stride(), s.scale());
    let dqkv_ptr = SendPtr(dqkv.as_mut_ptr());
    (0..s.batch * s.n_kv_heads)
        .into_par_iter()
        .for_each(|task| {
            let (b, g) = (task / s.n_kv_heads, task % s.n_kv_heads);
            let seq = &qkv[b * t * stride..(b + 1) * t * stride];
            let dout_seq = &dout[b * t * os..(b + 1) * t * os];
            let starts = starts.map(|st| &st[b * t..(b + 1) * t]);
            let out_seq = &out[b * t * os..(b + 1) * t * os];
            let (mut p, mut dp) = (vec![0f32; BLOCK_Q * t], vec![0f32; BLOCK_Q * t]);
            let (mut dk, mut dv, mut dsum) =
                (vec![0f32; t * hd], vec![0f32; t * hd], vec![0f32; t]);
            let seq_ptr = dqkv_ptr.get().wrapping_add(b * t * stride);
            for h in g * s.group()..(g + 1) * s.group() {
                let lse_bh = &lse[(b * s.n_heads + h) * t..][..t];
                for (i, d) in dsum.iter_mut().enumerate() {
                    let (o, d_o) = (
                        &out_seq[i * os + h * hd..][..hd],
                        &dout_seq[i * os + h * hd..][..hd],
                    );
                    *d = dot(o, d_o);
                }
                for i0 in (0..t).step_by(BLOCK_Q) {
                    let (i1, bq) = ((i0 + BLOCK_Q).min(t), (i0 + BLOCK_Q).min(t) - i0);
                    let (p, dp) = (&mut p[..bq * i1], &mut dp[..bq * i1]);
                    let q_blk = &seq[i0 * stride + s.q_col(h)..];
                    let do_blk = &dout_seq[i0 * os + h * hd..];
                    sgemm_on_caller(
                        &Gemm::nt(bq, i1, hd).ld(stride, stride, i1),
                        q_blk,
                        &seq[s.k_col(g)..],
                        p,
                    );
                    block_probs(p, i0, i1, scale, &lse_bh[i0..i1], starts);
                    // dP (bq, i1) = dO_blk (bq, hd) · V[..i1]ᵀ
                    sgemm_on_caller(
                        &Gemm::nt(bq, i1, hd).ld(os, stride, i1),
                        do_blk,
                        &seq[s.v_col(g)..],
                        dp,
                    );
                    for (r, (dp_row, p_row)) in
                        dp.chunks_exact_mut(i1).zip(p.chunks_exact(i1)).enumerate()
                    {
                        let di = dsum[i0 + r];
                        for (x, &pr) in dp_row.iter_mut().zip(p_row) {
                            *x = pr * (*x - di) * scale;
                        }
                    }
                    // dQ_blk (bq, hd) = dS (bq, i1) · K[..i1] — the only writer of these q columns.
                    // SAFETY: rows i0..i1 of sequence b, q columns of head h belong to this task.
                    unsafe {
                        let dq = seq_ptr.add(i0 * stride + s.q_col(h));
                        sgemm_on_caller_raw(
                            &Gemm::nn(bq, hd, i1).ld(i1, stride, stride),
                            dp,
                            &seq[s.k_col(g)..],
                            dq,
                        );
                    }
                    // dK[..i1] += dSᵀ · Q_blk ; dV[..i1] += Pᵀ · dO_blk   (i1, hd)
                    sgemm_on_caller(
                        &Gemm::tn(i1, hd, bq).ld(i1, stride, hd).accumulate(true),
                        dp,
                        q_blk,
                        &mut dk,
                    );
                    sgemm_on_caller(
                        &Gemm::tn(i1, hd, bq).ld(i1, os, hd).accumulate(true),
                        p,
                        do_blk,
                        &mut dv,
                    );
                }
            }
            for i in 0..t {
                // SAFETY: k and v columns of kv head g in sequence b belong to this task.
                unsafe {
                    let row = seq_ptr.add(i * stride);
                    std::ptr::copy_nonoverlapping(dk[i * hd..].as_ptr(), row.add(s.k_col(g)), hd);
                    std::ptr::copy_nonoverlapping(dv[i * hd..].as_ptr(), row.add(s.v_col(g)), hd);
                }
            }
        });
}

pub mod reference {
    use super::AttnShape;

    /// Plain causal softmax attention in f64, the full (T × T) matrix per head.
    pub fn attention_forward(out: &mut [f32], qkv: &[f32], s: AttnShape) {
        let (t, hd, stride, os) = (s.seq_len, s.head_dim, s.stride(), s.out_stride());
        let scale = 1.0 / (hd as f64).sqrt();
        for b in 0..s.batch {
            for h in 0..s.n_heads {
                let g = h / (s.n_heads / s.n_kv_heads);
                let at =
                    |i: usize, col: usize, j: usize| qkv[(b * t + i) * stride + col + j] as f64;
                for i in 0..t {
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..hd)
                                .map(|d| at(i, s.q_col(h), d) * at(j, s.k_col(g), d))
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let z: f64 = w.iter().sum();
                    for d in 0..hd {
                        let v: f64 = (0..=i).map(|j| w[j] / z * at(j, s.v_col(g), d)).sum();
                        out[(b * t + i) * os + h * hd + d] = v as f32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, dot, grad_check, projection};

    fn check(s: AttnShape) {
        let rows = s.batch * s.seq_len;
        let qkv = projection(rows * s.stride(), 1);
        let (mut out, mut lse, mut out_ref) = (
            vec![0.0; rows * s.out_stride()],
            vec![0.0; s.batch * s.n_heads * s.seq_len],
            vec![0.0; rows * s.out_stride()],
        );
        attention_forward(&mut out, &mut lse, &qkv, s);
        reference::attention_forward(&mut out_ref, &qkv, s);
        assert_close(&out, &out_ref, 1e-5, &format!("attention forward {s:?}"));

        let proj = projection(out.len(), 2);
        let mut dqkv = vec![f32::NAN; qkv.len()]; // every element must be written
        attention_backward(&mut dqkv, &proj, &qkv, &out, &lse, s);
        grad_check(
            &format!("attention dqkv {s:?}"),
            &mut qkv.clone(),
            &dqkv,
            |x| {
                let mut o = vec![0.0; rows * s.out_stride()];
                reference::attention_forward(&mut o, x, s);
                dot(&o, &proj)
            },
        );
    }

    #[test]
    fn multi_head() {
        check(AttnShape {
            batch: 2,
            seq_len: 9,
            n_heads: 3,
            n_kv_heads: 3,
            head_dim: 8,
        });
    }

    #[test]
    fn grouped_query_across_several_blocks() {
        // 70 > BLOCK_Q: a full block, a partial block, and causal masking across both.
        check(AttnShape {
            batch: 2,
            seq_len: 70,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        });
    }

    #[test]
    fn documents_packed_in_a_sequence_attend_only_to_themselves() {
        let s = AttnShape {
            batch: 2,
            seq_len: 150,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        // Document boundaries inside blocks, on a block edge, and a one-token document.
        let docs: [&[usize]; 2] = [&[0, 40, 130], &[0, 64, 65]];
        let (t, stride, os) = (s.seq_len, s.stride(), s.out_stride());
        let mut starts = vec![0u32; 2 * t];
        for (b, bounds) in docs.iter().enumerate() {
            for i in 0..t {
                starts[b * t + i] = *bounds.iter().filter(|&&x| x <= i).max().unwrap() as u32;
            }
        }
        let qkv = projection(2 * t * stride, 3);
        let (mut out, mut lse) = (vec![0.0; 2 * t * os], vec![0.0; 2 * s.n_heads * t]);
        attention_forward_docs(&mut out, &mut lse, &qkv, s, Some(&starts));
        let proj = projection(out.len(), 4);
        let mut dqkv = vec![f32::NAN; qkv.len()];
        attention_backward_docs(&mut dqkv, &proj, &qkv, &out, &lse, s, Some(&starts));
        // Each document alone gives the same rows.
        for (b, bounds) in docs.iter().enumerate() {
            for (k, &a) in bounds.iter().enumerate() {
                let e = bounds.get(k + 1).copied().unwrap_or(t);
                let one = AttnShape {
                    batch: 1,
                    seq_len: e - a,
                    ..s
                };
                let rows = (b * t + a)..(b * t + e);
                let q = &qkv[rows.start * stride..rows.end * stride];
                let (mut o, mut l) = (vec![0.0; (e - a) * os], vec![0.0; s.n_heads * (e - a)]);
                attention_forward(&mut o, &mut l, q, one);
                let name = format!("document {a}..{e} of sequence {b}");
                assert_close(&out[rows.start * os..rows.end * os], &o, 1e-5, &name);
                let mut dq = vec![0.0; q.len()];
                let pr = &proj[rows.start * os..rows.end * os];
                attention_backward(&mut dq, pr, q, &o, &l, one);
                assert_close(
                    &dqkv[rows.start * stride..rows.end * stride],
                    &dq,
                    1e-5,
                    &name,
                );
            }
        }
    }
}
