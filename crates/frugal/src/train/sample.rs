//! Sampling text from a model: temperature, top-k, top-p (nucleus), with a seeded generator.
//! Recomputes the whole prefix per token — fine for the samples printed during training; the
//! inference engine with a KV cache serves chat.

use crate::model::Llama;
use tensor::Rng;

#[derive(Clone, Copy, Debug)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches top_p (1: all).
    pub top_p: f32,
}

/// Draws one token id from logits.
pub fn sample_logits(logits: &[f32], p: SamplingParams, rng: &mut Rng) -> u32 {
    if p.temperature <= 0.0 {
        return logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 {
                    (i, l)
                } else {
                    best
                }
            })
            .0 as u32;
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if p.top_k > 0 {
        idx.truncate(p.top_k);
    }
    let max = logits[idx[0]];
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / p.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= total);
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs.iter().position(|&q| {
            acc += q;
            acc >= p.top_p as f64
        });
        let keep = keep.map_or(probs.len(), |k| k + 1);
        probs.truncate(keep);
        idx.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.uniform() * total;
    for (k, &q) in probs.iter().enumerate() {
        if u < q {
            return idx[k] as u32;
        }
        u -= q;
    }
    idx[probs.len() - 1] as u32
}

/// Continues `prompt` by up to `n` tokens, stopping early at `stop`. Returns only the new ids.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    p: SamplingParams,
    stop: Option<u32>,
    rng: &mut Rng,
) -> Vec<u32> {
    let ctx = model.cfg.context_len;
    let vocab = model.cfg.vocab_size;
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let window = &seq[seq.len().saturating_sub(ctx)..];
        let mut ws = model.workspace(1, window.len());
        let logits = model.logits(window, &mut ws);
        let next = sample_logits(&logits[(window.len() - 1) * vocab..], p, rng);
        if Some(next) == stop {
            break;
        }
        seq.push(next);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_topk_topp() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut rng = Rng::new(0);
        let greedy = SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        };
        assert_eq!(sample_logits(&logits, greedy, &mut rng), 1);
        let top2 = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
        };
        let draws: Vec<u32> = (0..200)
            .map(|_| sample_logits(&logits, top2, &mut rng))
            .collect();
        assert!(
            draws.iter().all(|&d| d == 1 || d == 3) && draws.contains(&3) && draws.contains(&1)
        );
        let nucleus = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
        };
        assert!((0..50).all(|_| sample_logits(&logits, nucleus, &mut rng) == 1));
        let mut a = Rng::new(5);
        let mut b = Rng::new(5);
        let hot = SamplingParams {
            temperature: 2.0,
            top_k: 0,
            top_p: 1.0,
        };
        assert_eq!(
            (0..20)
                .map(|_| sample_logits(&logits, hot, &mut a))
                .collect::<Vec<_>>(),
            (0..20)
                .map(|_| sample_logits(&logits, hot, &mut b))
                .collect::<Vec<_>>()
        );
    }
}
