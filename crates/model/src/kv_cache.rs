//! The Llama model as a `LanguageModel`: a KV cache per sequence, and a forward pass over only
//! the new tokens of each sequence (a whole prompt at prefill, one token per step after).
//! Sequences of different lengths run together: their new tokens are stacked into one matrix,
//! so every projection is one GEMM for the whole batch, and only attention is per sequence.

use crate::adapters::Proj;
use crate::language_model::{token_score, LanguageModel, TokenScore};

use crate::workspace::MoeActs;
use crate::{LayerOffsets, Llama};
use rayon::prelude::*;
use tensor::matmul::{sgemm_nt_few_rows, FEW_ROWS};
use tensor::ops::add_inplace;
use tensor::ops::attention::{attention_forward, AttnShape};
use tensor::ops::embedding::embedding_forward;
use tensor::ops::math::{dot, exp, sum};
use tensor::ops::rmsnorm::rmsnorm_forward;
use tensor::ops::rope::{rope_forward, RopeLayout};
use tensor::ops::swiglu::swiglu_forward;
use tensor::{sgemm, sgemm_serial, Gemm};

/// out (m, n) = x (m, k) · w (n, k)ᵀ: a packed GEMM for prompts, the few-rows kernel for decode
/// steps, whose cost is reading the weights.
pub(crate) fn linear(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    if m <= FEW_ROWS {
        sgemm_nt_few_rows(m, n, k, x, &w[..n * k], out);
    } else {
        sgemm(&Gemm::nt(m, n, k), x, w, out);
    }
}

/// Keys and values of every layer for the tokens seen so far: per layer (tokens, n_kv·hd),
/// or with latent attention (tokens, kv_rank + rope_dim).
/// Cloning one shares a prompt's prefix among several continuations.
#[derive(Clone)]
pub struct KvCache {
    /// Per layer; with latent attention, each token's [latent | RoPE key], and no values.
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// Bytes held by one sequence's cache at full context.
    pub fn bytes(model: &Llama) -> usize {
        let c = &model.cfg;
        c.n_layers * c.context_len * c.kv_floats_per_token() * 4
    }

    /// An empty cache of `layers` layers, grown as tokens arrive, so that a short chat does not
    /// hold a full-context cache.
    /// Floats held per layer: (keys, values). Latent attention keeps its latent and RoPE key
    /// in the keys and no values.
    pub fn layer_floats(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.k.iter().zip(&self.v).map(|(k, v)| (k.len(), v.len()))
    }

    pub fn with_layers(layers: usize) -> Self {
        KvCache {
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            len: 0,
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts `n` tokens whose keys and values every layer has appended.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Forgets every token from position `len` on (a rejected speculative token).
    pub fn truncate(&mut self, len: usize) {
        assert!(
            len <= self.len,
            "truncate: {len} is past the cache's {}",
            self.len
        );
        for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
            let per_token = layer.len() / self.len.max(1);
            layer.truncate(len * per_token);
        }
        self.len = len;
    }
}

/// Where each of the stacked new tokens of a batch belongs: row r is sequence `seq_of[r]`'s
/// token at position `pos_of[r]`.
pub(crate) struct Rows {
    seq_of: Vec<usize>,
    pos_of: Vec<usize>,
}

impl Rows {
    pub(crate) fn new(batch: &[(&mut KvCache, &[u32])], context_len: usize) -> Self {
        let (mut seq_of, mut pos_of) = (Vec::new(), Vec::new());
        for (i, (cache, new)) in batch.iter().enumerate() {
            assert!(
                !new.is_empty() && cache.len + new.len() <= context_len,
                "forward: sequence {i} would hold {} tokens, context is {context_len}",
                cache.len + new.len(),
            );
            seq_of.extend(std::iter::repeat_n(i, new.len()));
            pos_of.extend(cache.len..cache.len + new.len());
        }
        Rows { seq_of, pos_of }
    }

    /// The stacked rows' count.
    pub fn len(&self) -> usize {
        self.seq_of.len()
    }
}

/// Turns the scores (rows, keys) of new tokens at positions pos0.. against every cached key
/// into attention weights, in place: the token at pos0 + j sees keys 0..=pos0 + j.
pub(crate) fn causal_softmax(s: &mut [f32], keys: usize, pos0: usize, scale: f32) {
    for (j, row) in s.chunks_exact_mut(keys).enumerate() {
        let seen = &mut row[..=pos0 + j];
        let m = seen.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * scale;
        seen.iter_mut().for_each(|e| *e = exp(*e * scale - m));
        let total = sum(seen);
        seen.iter_mut().for_each(|e| *e /= total);
        row[pos0 + j + 1..].fill(0.0);
    }
}

/// A cached block's buffers, reused from block to block.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) xn: Vec<f32>,
    rstd: Vec<f32>,
    pub(crate) qkv: Vec<f32>,
    pub(crate) att: Vec<f32>,
    o: Vec<f32>,
    gu: Vec<f32>,
    h: Vec<f32>,
    moe: MoeActs<tensor::Cpu>,
    lse: Vec<f32>,
    /// Latent attention's new cache rows [latent | RoPE key], the latent apart, and its norm.
    pub(crate) lat: Vec<f32>,
    pub(crate) c: Vec<f32>,
    pub(crate) cn: Vec<f32>,
    pub(crate) rstd_c: Vec<f32>,
}

impl Scratch {
    fn resize(&mut self, n: usize, d: usize, qkv_w: usize, att_w: usize) {
        self.xn.resize(n * d, 0.0);
        self.rstd.resize(n, 0.0);
        self.qkv.resize(n * qkv_w, 0.0);
        self.att.resize(n * att_w, 0.0);
        self.o.resize(n * d, 0.0);
    }
}

impl LanguageModel for Llama {
    type Cache = KvCache;

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn context_len(&self) -> usize {
        self.cfg.context_len
    }

    fn new_cache(&self) -> KvCache {
        KvCache::with_layers(self.cfg.n_layers)
    }

    fn cache_len(&self, cache: &KvCache) -> usize {
        cache.len
    }

    fn forward(&self, batch: &mut [(&mut KvCache, &[u32])], logits: &mut [f32]) {
        let d = self.cfg.d_model;
        assert_eq!(
            logits.len(),
            batch.len() * self.cfg.vocab_size,
            "forward: logits shape"
        );
        let x = self.trunk(batch);
        // Only each sequence's last new position needs logits.
        let mut last = Vec::with_capacity(batch.len() * d);
        let mut row = 0;
        for (_, new) in batch.iter() {
            row += new.len();
            last.extend_from_slice(&x[(row - 1) * d..row * d]);
        }
        self.head(&last, logits);
    }

    fn score(
        &self,
        batch: &mut [(&mut KvCache, &[u32])],
        targets: &[&[u32]],
    ) -> Vec<Vec<TokenScore>> {
        let (d, vocab) = (self.cfg.d_model, self.cfg.vocab_size);
        let x = self.trunk(batch);
        let flat: Vec<u32> = batch
            .iter()
            .zip(targets)
            .flat_map(|((_, new), t)| {
                assert_eq!(new.len(), t.len(), "score: one target per new token");
                t.iter().copied()
            })
            .collect();
        // The head in slices of rows, so that the logits of a large batch never sit in
        // memory all at once.
        const ROWS: usize = 256;
        let mut scores = Vec::with_capacity(flat.len());
        let mut logits = Vec::new();
        for (xs, ts) in x.chunks(ROWS * d).zip(flat.chunks(ROWS)) {
            logits.resize(ts.len() * vocab, 0.0);
            self.head(xs, &mut logits);
            let part: Vec<TokenScore> = logits
                .par_chunks(vocab)
                .zip(ts)
                .map(|(l, &t)| token_score(l, t))
                .collect();
            scores.extend(part);
        }
        let mut rest = scores.as_slice();
        targets
            .iter()
            .map(|t| {
                let (mine, after) = rest.split_at(t.len());
                rest = after;
                mine.to_vec()
            })
            .collect()
    }

    fn forward_all(
        &self,
        batch: &mut [(&mut KvCache, &[u32])],
        each: &mut dyn FnMut(usize, usize, &[f32]),
    ) {
        let (d, vocab) = (self.cfg.d_model, self.cfg.vocab_size);
        let x = self.trunk(batch);
        let places: Vec<(usize, usize)> = batch
            .iter()
            .enumerate()
            .flat_map(|(i, (_, new))| (0..new.len()).map(move |j| (i, j)))
            .collect();
        // The head in slices of rows, as `score` runs it.
        const ROWS: usize = 256;
        let mut logits = Vec::new();
        for (xs, at) in x.chunks(ROWS * d).zip(places.chunks(ROWS)) {
            logits.resize(at.len() * vocab, 0.0);
            self.head(xs, &mut logits);
            for (row, &(i, j)) in logits.chunks_exact(vocab).zip(at) {
                each(i, j, row);
            }
        }
    }
}

impl Llama {
    /// The final norm and the LM head for rows of hidden states x (rows, d): logits (rows, vocab).
    fn head(&self, x: &[f32], logits: &mut [f32]) {
        self.head_with(self.params.final_norm, x, logits);
    }

    /// The RMSNorm whose weight is at `norm`, then the LM head.
    pub fn head_with(&self, norm: usize, x: &[f32], logits: &mut [f32]) {
        let (d, vocab) = (self.cfg.d_model, self.cfg.vocab_size);
        let p = &self.params.data;
        let rows = x.len() / d;
        let mut xn = vec![0f32; rows * d];
        let mut rstd = vec![0f32; rows];
        let fw = &p[norm..][..d];
        rmsnorm_forward(&mut xn, &mut rstd, x, fw, d, self.cfg.norm_eps);
        linear(rows, vocab, d, &xn, &p[self.params.lm_head..], logits);
        self.head_shape().cap(logits);
    }

    /// Every layer over the new tokens of each sequence, appending their keys and values to
    /// the caches: the hidden states of all new tokens, stacked in batch order (n, d).
    pub fn trunk(&self, batch: &mut [(&mut KvCache, &[u32])]) -> Vec<f32> {
        let d = self.cfg.d_model;
        let rows = Rows::new(batch, self.cfg.context_len);
        let tokens: Vec<u32> = batch
            .iter()
            .flat_map(|(_, new)| new.iter().copied())
            .collect();
        let mut x = vec![0f32; tokens.len() * d];
        embedding_forward(&mut x, &tokens, &self.params.data[self.params.embed..], d);
        let mut s = Scratch::default();
        for (l, off) in self.params.layers.iter().enumerate() {
            self.cached_block(l, off, l, &mut x, batch, &rows, &mut s);
        }
        for (cache, new) in batch.iter_mut() {
            cache.advance(new.len());
        }
        x
    }

    /// Decoder block `l` (from n_layers on, a multi-token prediction module's) over the stacked
    /// new tokens x (n, d), in place, keeping its keys and values in each cache's layer `slot`.
    /// The caches' lengths are the callers' to advance, once every block has run.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cached_block(
        &self,
        l: usize,
        off: &LayerOffsets,
        slot: usize,
        x: &mut [f32],
        batch: &mut [(&mut KvCache, &[u32])],
        rows: &Rows,
        s: &mut Scratch,
    ) {
        let c = &self.cfg;
        let (d, hd) = (c.d_model, c.head_dim());
        let (nh, nkv) = (c.n_heads, c.n_kv_heads);
        let qkv_w = (nh + 2 * nkv) * hd;
        let att_w = nh * hd;
        let n = rows.len();
        let p = &self.params.data;
        let eps = c.norm_eps;
        s.resize(n, d, qkv_w, att_w);
        rmsnorm_forward(
            &mut s.xn,
            &mut s.rstd,
            &*x,
            &p[off.attn_norm..][..d],
            d,
            eps,
        );
        match (c.mla(), &off.mla) {
            (Some(m), Some(mla)) => self.mla_attention(m, mla, off.qkv, slot, batch, rows, s),
            _ => self.gqa_attention(l, off, slot, batch, rows, s),
        }
        let Scratch {
            xn,
            rstd,
            att,
            o,
            gu,
            h,
            moe,
            ..
        } = s;
        linear(n, d, att_w, &*att, &p[off.o..], o);
        self.side_infer(l, Proj::O, &att[..n * att_w], o, d);
        add_inplace(x, &*o);
        rmsnorm_forward(xn, rstd, &*x, &p[off.mlp_norm..][..d], d, eps);
        // The dense SwiGLU (a MoE layer's shared experts), then the routed experts.
        let hid = c.dense_hidden(l);
        if hid > 0 {
            gu.resize(n * 2 * hid, 0.0);
            h.resize(n * hid, 0.0);
            linear(n, 2 * hid, d, &*xn, &p[off.gate_up..], gu);
            self.side_infer(l, Proj::GateUp, xn, gu, 2 * hid);
            swiglu_forward(h, &*gu, hid);
            linear(n, d, hid, &*h, &p[off.down..], o);
            self.side_infer(l, Proj::Down, h, o, d);
        } else {
            o.fill(0.0);
        }
        if let (Some(m), Some(offsets)) = (c.moe_at(l), &off.moe) {
            self.moe_forward(m, offsets, (&*xn).into(), o.into(), moe);
        }
        add_inplace(x, &*o);
    }

    /// Grouped-query attention of block `l`'s stacked new rows (normed in `s.xn`) into
    /// `s.att`, appending their keys and values to each cache's layer `slot`.
    fn gqa_attention(
        &self,
        l: usize,
        off: &LayerOffsets,
        slot: usize,
        batch: &mut [(&mut KvCache, &[u32])],
        rows: &Rows,
        s: &mut Scratch,
    ) {
        let c = &self.cfg;
        let (d, hd) = (c.d_model, c.head_dim());
        let (nh, nkv) = (c.n_heads, c.n_kv_heads);
        let kvd = nkv * hd;
        let qkv_w = (nh + 2 * nkv) * hd;
        let att_w = nh * hd;
        let (seq_of, pos_of) = (&rows.seq_of, &rows.pos_of);
        let n = seq_of.len();
        let p = &self.params.data;
        let Scratch {
            xn, qkv, att, lse, ..
        } = s;
        let scale = 1.0 / (hd as f32).sqrt();
        linear(n, qkv_w, d, &*xn, &p[off.qkv..], qkv);
        if let Some(b) = off.qkv_bias {
            tensor::ops::rows::add_bias(&mut qkv[..n * qkv_w], &p[b..b + qkv_w]);
        }
        self.side_infer(l, Proj::Qkv, &xn[..n * d], &mut qkv[..n * qkv_w], qkv_w);
        // RoPE at each sequence's own positions, then append k and v to its cache.
        let mut row = 0;
        for (cache, new) in batch.iter_mut() {
            let rows = &mut qkv[row * qkv_w..(row + new.len()) * qkv_w];
            let layout = RopeLayout {
                stride: qkv_w,
                col: 0,
                n_heads: nh + nkv,
                seq_len: new.len(),
                pos0: cache.len,
            };
            rope_forward(rows, layout, &self.rope);
            for r in rows.chunks_exact(qkv_w) {
                cache.k[slot].extend_from_slice(&r[att_w..att_w + kvd]);
                cache.v[slot].extend_from_slice(&r[att_w + kvd..]);
            }
            row += new.len();
        }
        // A fresh prompt (empty cache, several tokens) is plain causal attention over itself:
        // the blocked training kernel. Other rows attend over their sequence's cache.
        let mut row = 0;
        let mut fresh = vec![false; batch.len()];
        for (i, (cache, new)) in batch.iter().enumerate() {
            let rows = row..row + new.len();
            row += new.len();
            if cache.k[slot].len() == new.len() * kvd && new.len() > 1 {
                fresh[i] = true;
                let shape = AttnShape {
                    batch: 1,
                    seq_len: new.len(),
                    n_heads: nh,
                    n_kv_heads: nkv,
                    head_dim: hd,
                };
                lse.resize(nh * new.len(), 0.0);
                attention_forward(
                    &mut att[rows.start * att_w..rows.end * att_w],
                    lse,
                    &qkv[rows.start * qkv_w..rows.end * qkv_w],
                    shape,
                );
            }
        }
        let views: Vec<(&[f32], &[f32])> = batch
            .iter()
            .map(|(cache, _)| (cache.k[slot].as_slice(), cache.v[slot].as_slice()))
            .collect();
        // Several new tokens on a cache (scoring a continuation after a shared prefix):
        // per (sequence, head) two small GEMMs, scores (rows, keys) then values.
        let mut first_row = vec![0usize; batch.len()];
        for i in 1..batch.len() {
            first_row[i] = first_row[i - 1] + batch[i - 1].1.len();
        }
        let multi: Vec<bool> = batch
            .iter()
            .enumerate()
            .map(|(i, (_, new))| !fresh[i] && new.len() > 1)
            .collect();
        let tasks: Vec<(usize, usize)> = (0..batch.len())
            .filter(|&i| multi[i])
            .flat_map(|i| (0..nh).map(move |head| (i, head)))
            .collect();
        let blocks: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(i, head)| {
                let (k, v) = views[i];
                let rows = batch[i].1.len();
                let keys = k.len() / kvd;
                let pos0 = keys - rows;
                let g = head / (nh / nkv);
                let q = &qkv[first_row[i] * qkv_w + head * hd..];
                let mut s = vec![0f32; rows * keys];
                let scores = Gemm::nt(rows, keys, hd).ld(qkv_w, kvd, keys);
                sgemm_serial(&scores, q, &k[g * hd..], &mut s);
                causal_softmax(&mut s, keys, pos0, scale);
                let mut out = vec![0f32; rows * hd];
                let values = Gemm::nn(rows, hd, keys).ld(keys, kvd, hd);
                sgemm_serial(&values, &s, &v[g * hd..], &mut out);
                out
            })
            .collect();
        for (&(i, head), out) in tasks.iter().zip(&blocks) {
            for (j, o) in out.chunks_exact(hd).enumerate() {
                att[(first_row[i] + j) * att_w + head * hd..][..hd].copy_from_slice(o);
            }
        }
        att.par_chunks_mut(hd).enumerate().for_each(|(i, out)| {
            let (r, head) = (i / nh, i % nh);
            if fresh[seq_of[r]] || multi[seq_of[r]] {
                return;
            }
            let (k, v) = views[seq_of[r]];
            let g = head / (nh / nkv);
            let q = &qkv[r * qkv_w + head * hd..][..hd];
            let keys = pos_of[r] + 1;
            let mut s: Vec<f32> = (0..keys)
                .map(|j| dot(q, &k[j * kvd + g * hd..][..hd]) * scale)
                .collect();
            let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // The exponentials apart from their sum, so that they run as vector code.
            s.iter_mut().for_each(|e| *e = exp(*e - m));
            let total = sum(&s);
            out.fill(0.0);
            for (j, &e) in s.iter().enumerate() {
                let w = e / total;
                for (a, &b) in out.iter_mut().zip(&v[j * kvd + g * hd..][..hd]) {
                    *a += w * b;
                }
            }
        });
        // The decode rows' score and value products, counted as the blocked kernel counts its own.
        let decode_pairs: u64 = (0..n)
            .filter(|&r| !fresh[seq_of[r]])
            .map(|r| pos_of[r] as u64 + 1)
            .sum();
        tensor::flops::add(4 * (hd * nh) as u64 * decode_pairs);
    }
}

impl Llama {
    /// Feeds multi-token prediction module 1 the hidden states `hidden` (n, d) of the next n
    /// main positions and the token after each, `after` (n), caching its block's keys and
    /// values; returns the module's hidden state at the last of those (d), which its norm
    /// (`params.mtp[0].norm`) and the head turn into its guess at the token after it.
    pub fn mtp_draft(&self, cache: &mut KvCache, hidden: &[f32], after: &[u32]) -> Vec<f32> {
        let (d, eps) = (self.cfg.d_model, self.cfg.norm_eps);
        let n = after.len();
        debug_assert_eq!(hidden.len(), n * d);
        let p = &self.params.data;
        let off = &self.params.mtp[0];
        let mut emb = vec![0f32; n * d];
        embedding_forward(&mut emb, after, &p[self.params.embed..], d);
        let (mut en, mut hn, mut rstd) = (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n]);
        rmsnorm_forward(&mut en, &mut rstd, &emb, &p[off.enorm..][..d], d, eps);
        rmsnorm_forward(&mut hn, &mut rstd, hidden, &p[off.hnorm..][..d], d, eps);
        let mut cat = Vec::with_capacity(n * 2 * d);
        for (e, h) in en.chunks_exact(d).zip(hn.chunks_exact(d)) {
            cat.extend_from_slice(e);
            cat.extend_from_slice(h);
        }
        let mut x = vec![0f32; n * d];
        linear(n, d, 2 * d, &cat, &p[off.eh_proj..], &mut x);
        let mut batch = [(cache, after)];
        let rows = Rows::new(&batch, self.cfg.context_len);
        let l = self.cfg.n_layers;
        self.cached_block(
            l,
            &off.block,
            0,
            &mut x,
            &mut batch,
            &rows,
            &mut Scratch::default(),
        );
        let [(cache, _)] = batch;
        cache.advance(n);
        x.split_off((n - 1) * d)
    }
}
