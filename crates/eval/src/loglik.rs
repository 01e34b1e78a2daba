//! Log-likelihood scoring through the engine. The requests of one item (its choices) usually
//! share a long prefix (the few-shot examples and the question), so the prefix is prefilled
//! once into a KV cache, the cache is copied for each choice, and only what differs is fed
//! again: HellaSwag's four endings cost one context, not four. Items are batched so every
//! projection is one GEMM over a few thousand tokens.

use crate::prompt::LlRequest;
use model::LanguageModel;

/// The continuation's total log-probability, and whether greedy decoding would write it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub logprob: f64,
    pub greedy: bool,
}

/// How many tokens of a group are prefilled once: the common prefix of its requests, ending
/// before the first continuation token of any of them (whose prediction must be scored).
fn shared_prefix(group: &[LlRequest]) -> usize {
    let Some(first) = group.first() else {
        return 0;
    };
    let mut p = group.iter().map(|r| r.cont_start - 1).min().unwrap_or(0);
    for r in &group[1..] {
        p = p.min(
            first
                .tokens
                .iter()
                .zip(&r.tokens)
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    p
}

/// Tokens the model runs for `group`: the shared prefix once, then each request's rest.
pub fn fed_tokens(group: &[LlRequest]) -> u64 {
    let p = shared_prefix(group);
    (p + group.iter().map(|r| r.tokens.len() - 1 - p).sum::<usize>()) as u64
}

/// Scores every request of every group; `progress(groups done)` is called after each batch.
/// Batches hold about `batch_tokens` fed tokens.
pub fn score<M>(
    model: &M,
    groups: &[Vec<LlRequest>],
    batch_tokens: usize,
    mut progress: impl FnMut(usize),
) -> Vec<Vec<Scored>>
where
    M: LanguageModel,
    M::Cache: Clone,
{
    let mut out = Vec::with_capacity(groups.len());
    let mut start = 0;
    while start < groups.len() {
        // Whole groups, until the batch is full (at least one).
        let mut end = start;
        let mut fed = 0;
        while end < groups.len() && (end == start || fed < batch_tokens) {
            fed += groups[end].iter().map(|r| r.tokens.len()).sum::<usize>();
            end += 1;
        }
        out.extend(score_batch(model, &groups[start..end]));
        start = end;
        progress(end);
    }
    out
}

fn score_batch<M>(model: &M, groups: &[Vec<LlRequest>]) -> Vec<Vec<Scored>>
where
    M: LanguageModel,
    M::Cache: Clone,
{
    let prefix: Vec<usize> = groups.iter().map(|g| shared_prefix(g)).collect();
    let mut caches: Vec<M::Cache> = groups.iter().map(|_| model.new_cache()).collect();
    // Prefill the shared prefixes (the logits after them are not needed: the first scored
    // token is predicted from the first fed-again token).
    {
        let mut batch: Vec<(&mut M::Cache, &[u32])> = caches
            .iter_mut()
            .zip(groups.iter().zip(&prefix))
            .filter(|(_, (_, &p))| p > 0)
            .map(|(c, (g, &p))| (c, &g[0].tokens[..p]))
            .collect();
        if !batch.is_empty() {
            let mut logits = vec![0f32; batch.len() * model.vocab_size()];
            model.forward(&mut batch, &mut logits);
        }
    }
    // Each request from a copy of its group's cache: the rest of its tokens, each scored
    // against the token after it.
    let mut copies: Vec<M::Cache> = Vec::new();
    let mut spans: Vec<(&[u32], &[u32])> = Vec::new();
    for ((g, &p), cache) in groups.iter().zip(&prefix).zip(&caches) {
        for r in g {
            copies.push(cache.clone());
            let n = r.tokens.len();
            spans.push((&r.tokens[p..n - 1], &r.tokens[p + 1..n]));
        }
    }
    let targets: Vec<&[u32]> = spans.iter().map(|s| s.1).collect();
    let mut batch: Vec<(&mut M::Cache, &[u32])> = copies
        .iter_mut()
        .zip(&spans)
        .map(|(c, s)| (c, s.0))
        .collect();
    let scores = model.score(&mut batch, &targets);
    let mut scores = scores.into_iter();
    groups
        .iter()
        .zip(&prefix)
        .map(|(g, &p)| {
            g.iter()
                .map(|r| {
                    let s = scores.next().expect("one score list per request");
                    // Token j of the fed rest predicts tokens[p + 1 + j]; the continuation
                    // starts at cont_start.
                    let cont = &s[r.cont_start - 1 - p..];
                    Scored {
                        logprob: cont.iter().map(|t| t.logprob).sum(),
                        greedy: cont.iter().all(|t| t.greedy),
                    }
                })
                .collect()
        })
        .collect()
}

/// The reference: each request alone through the training forward pass (no cache, no
/// batching), log-softmax in f64.
pub fn score_reference(model: &model::Llama, r: &LlRequest) -> Scored {
    let n = r.tokens.len() - 1;
    let vocab = model.cfg.vocab_size;
    let mut ws = model.workspace(1, n);
    let logits = model.logits(&r.tokens[..n], &mut ws);
    let (mut logprob, mut greedy) = (0f64, true);
    for j in r.cont_start - 1..n {
        let row = &logits[j * vocab..(j + 1) * vocab];
        let target = r.tokens[j + 1] as usize;
        let max = row
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, |m, x| m.max(x as f64));
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        logprob += row[target] as f64 - lse;
        let argmax = row
            .iter()
            .enumerate()
            .fold(0, |b, (i, &x)| if x > row[b] { i } else { b });
        greedy &= argmax == target;
    }
    Scored { logprob, greedy }
}
