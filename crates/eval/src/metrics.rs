//! Multiple-choice metrics from log-likelihoods, as lm-evaluation-harness computes them.

use crate::loglik::Scored;
use crate::McItem;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct McMetrics {
    /// The gold choice has the highest summed log-likelihood (ties go to the first choice).
    pub acc: f64,
    /// The gold choice has the highest log-likelihood per character of its continuation.
    pub acc_norm: f64,
    /// The gold continuation is what greedy decoding writes (LAMBADA's accuracy).
    pub greedy: f64,
    /// Mean of 1 / choices: the accuracy of guessing.
    pub chance: f64,
}

/// The index of the best choice under `key` (the first on ties, like numpy's argmax).
fn argmax(scores: &[Scored], key: impl Fn(usize, &Scored) -> f64) -> usize {
    (0..scores.len()).fold(0, |b, j| {
        if key(j, &scores[j]) > key(b, &scores[b]) {
            j
        } else {
            b
        }
    })
}

/// Metrics over items (`items[i]` scored by `scores[k]` for the k-th of `idx`).
pub fn multiple_choice(items: &[McItem], idx: &[usize], scores: &[Vec<Scored>]) -> McMetrics {
    let mut m = McMetrics::default();
    for (&i, s) in idx.iter().zip(scores) {
        let item = &items[i];
        let chars = |j: usize| item.choices[j].1.chars().count().max(1) as f64;
        m.acc += f64::from(u8::from(argmax(s, |_, x| x.logprob) == item.gold));
        m.acc_norm += f64::from(u8::from(
            argmax(s, |j, x| x.logprob / chars(j)) == item.gold,
        ));
        m.greedy += f64::from(u8::from(s[item.gold].greedy));
        m.chance += 1.0 / item.choices.len() as f64;
    }
    let n = idx.len().max(1) as f64;
    McMetrics {
        acc: m.acc / n,
        acc_norm: m.acc_norm / n,
        greedy: m.greedy / n,
        chance: m.chance / n,
    }
}

/// (score − chance) / (1 − chance): 0 at chance, 1 when perfect (CORE's centring).
pub fn centered(score: f64, chance: f64) -> f64 {
    (score - chance) / (1.0 - chance)
}
