//! Scoring given tokens instead of choosing new ones: the log-probability a model gives each
//! token of a continuation, and whether it was the model's first choice. Evaluation by
//! log-likelihood (multiple choice, LAMBADA) is built on this.

use tensor::ops::math::{exp, max};

/// A model the engine can drive: anything that turns new tokens into next-token logits while
/// keeping its own per-sequence state.
pub trait LanguageModel {
    type Cache;
    fn vocab_size(&self) -> usize;
    fn context_len(&self) -> usize;
    fn new_cache(&self) -> Self::Cache;
    fn cache_len(&self, cache: &Self::Cache) -> usize;
    /// For each (cache, new tokens) pair, appends the tokens (at least one, and the cache stays
    /// within the context) and writes the logits that follow the last of them into row i of
    /// `logits`: (batch, vocab).
    fn forward(&self, batch: &mut [(&mut Self::Cache, &[u32])], logits: &mut [f32]);
    /// Appends the new tokens like `forward`, and scores, after new token j of sequence i,
    /// the given next token `targets[i][j]` (one target per new token). The default feeds one
    /// token at a time; a model overrides it with one pass over all the new tokens.
    fn score(
        &self,
        batch: &mut [(&mut Self::Cache, &[u32])],
        targets: &[&[u32]],
    ) -> Vec<Vec<TokenScore>> {
        one_at_a_time(self, batch, targets)
    }

    /// Appends the new tokens like `forward`, and hands `each(i, j, logits)` the logits that
    /// follow new token j of sequence i, for every new token, in order (a prompt's
    /// log-probabilities and its likeliest tokens at each place). The default feeds one token
    /// at a time; a model overrides it with one pass.
    fn forward_all(
        &self,
        batch: &mut [(&mut Self::Cache, &[u32])],
        each: &mut dyn FnMut(usize, usize, &[f32]),
    ) {
        let mut logits = vec![0f32; self.vocab_size()];
        for (i, (cache, new)) in batch.iter_mut().enumerate() {
            for j in 0..new.len() {
                self.forward(&mut [(&mut **cache, &new[j..j + 1])], &mut logits);
                each(i, j, &logits);
            }
        }
    }
}

/// What the model thought of one given token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    /// ln p(token | everything before it).
    pub logprob: f64,
    /// The token is the argmax of the logits (the first one, on ties), so greedy decoding
    /// would have produced it.
    pub greedy: bool,
}

/// Scores `target` under one row of logits: a log-softmax with the vectorised exp, summed in
/// independent lanes (a scored row costs 8k exps at an 8k vocabulary; libm's would dominate).
pub fn token_score(logits: &[f32], target: u32) -> TokenScore {
    const LANES: usize = 16;
    let m = max(logits);
    let best = logits.iter().position(|&l| l == m).unwrap_or(0);
    let chunks = logits.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&l| exp(l - m)).sum();
    let mut acc = [0f32; LANES];
    for c in chunks {
        for (a, &l) in acc.iter_mut().zip(c) {
            *a += exp(l - m);
        }
    }
    let total = acc.iter().sum::<f32>() + tail;
    TokenScore {
        logprob: (logits[target as usize] - m) as f64 - (total as f64).ln(),
        greedy: best == target as usize,
    }
}

/// The reference scoring: feeds each sequence's new tokens one at a time through `forward`
/// (the path generation uses) and scores each target under the logits that follow.
pub fn one_at_a_time<M: LanguageModel + ?Sized>(
    model: &M,
    batch: &mut [(&mut M::Cache, &[u32])],
    targets: &[&[u32]],
) -> Vec<Vec<TokenScore>> {
    let vocab = model.vocab_size();
    let longest = batch.iter().map(|(_, new)| new.len()).max().unwrap_or(0);
    let mut out: Vec<Vec<TokenScore>> = batch.iter().map(|_| Vec::new()).collect();
    let mut logits = Vec::new();
    for j in 0..longest {
        let live: Vec<usize> = (0..batch.len()).filter(|&i| j < batch[i].1.len()).collect();
        logits.resize(live.len() * vocab, 0.0);
        let mut step: Vec<(&mut M::Cache, &[u32])> = batch
            .iter_mut()
            .filter(|(_, new)| j < new.len())
            .map(|(cache, new)| (&mut **cache, &new[j..j + 1]))
            .collect();
        model.forward(&mut step, &mut logits);
        for (row, &i) in live.iter().enumerate() {
            let l = &logits[row * vocab..(row + 1) * vocab];
            out[i].push(token_score(l, targets[i][j]));
        }
    }
    out
}
