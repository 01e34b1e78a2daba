//! Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus) and a
//! repetition penalty, drawn from a seeded generator so that a seed reproduces a reply.

use tensor::Rng;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches top_p (1: all).
    pub top_p: f32,
    /// CTRL's penalty (Keskar et al. 2019): the logit of a token already in the sequence is
    /// divided by this when positive, multiplied when negative (1: off).
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// `Err` names the parameter out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature {} must be ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// Applies the repetition penalty in place to the logits of every token in `seen`.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &id in seen {
        let i = id as usize;
        if i < logits.len() && !done[i] {
            done[i] = true;
            logits[i] = if logits[i] > 0.0 {
                logits[i] / penalty
            } else {
                logits[i] * penalty
            };
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
            if l > best.1 {
                (i, l)
            } else {
                best
            }
        })
        .0 as u32
}

/// Draws one token id from logits (the repetition penalty is applied by the caller, which
/// knows the sequence).
pub fn sample_logits(logits: &[f32], p: SamplingParams, rng: &mut Rng) -> u32 {
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if p.top_k > 0 && p.top_k < idx.len() {
        idx.select_nth_unstable_by(p.top_k - 1, |&a, &b| {
            logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
        });
        idx.truncate(p.top_k);
    }
    idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_topk_topp() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        let mut rng = Rng::new(0);
        assert_eq!(
            sample_logits(&logits, SamplingParams::greedy(), &mut rng),
            1
        );
        let top2 = SamplingParams {
            top_k: 2,
            ..Default::default()
        };
        let draws: Vec<u32> = (0..200)
            .map(|_| sample_logits(&logits, top2, &mut rng))
            .collect();
        assert!(
            draws.iter().all(|&d| d == 1 || d == 3) && draws.contains(&3) && draws.contains(&1)
        );
        let nucleus = SamplingParams {
            top_p: 0.3,
            ..Default::default()
        };
        assert!((0..50).all(|_| sample_logits(&logits, nucleus, &mut rng) == 1));
        let hot = SamplingParams {
            temperature: 2.0,
            ..Default::default()
        };
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        let run = |r: &mut Rng| {
            (0..20)
                .map(|_| sample_logits(&logits, hot, r))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&mut a), run(&mut b));
    }

    #[test]
    fn repetition_penalty() {
        let mut l = [2.0, -1.0, 1.9];
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, [1.0, -2.0, 1.9]);
        assert_eq!(
            sample_logits(&l, SamplingParams::greedy(), &mut Rng::new(0)),
            2
        );
        assert!(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
