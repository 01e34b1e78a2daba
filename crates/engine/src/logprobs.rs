//! What a sequence reports beside its tokens, for OpenAI's `logprobs`, `top_logprobs` and
//! `echo`: each token's log-probability and the likeliest tokens at its place.
//!
//! Log-probabilities are the model's own distribution, before temperature, the repetition
//! penalty or top-k/top-p truncation (as vLLM reports them by default): a reply's numbers then
//! equal what evaluation scores for the same tokens, whatever the sampling parameters were.

use model::language_model::token_score;

/// What to report for one sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Each new token's log-probability, with this many of the likeliest tokens at its place;
    /// None reports none.
    pub top: Option<usize>,
    /// The prompt's log-probabilities too: each prompt token's given those before it (the
    /// first has none). With `max_tokens` 0 the prompt is scored and nothing generated, as
    /// log-likelihood evaluation asks of a server.
    pub prompt: bool,
}

/// Most alternatives a report may ask for per token (OpenAI's limit for chat completions).
pub const MAX_TOP: usize = 20;

/// One token's log-probability, and the likeliest tokens at its place, most likely first.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f64,
    pub top: Vec<(u32, f64)>,
}

impl TokenLogprob {
    /// `token` scored under a row of logits, with the `top` likeliest tokens (ties to the
    /// lower id).
    pub fn of(logits: &[f32], token: u32, top: usize) -> Self {
        let s = token_score(logits, token);
        // ln Σ exp(l): the log-probability of any token is its logit less this.
        let lse = logits[token as usize] as f64 - s.logprob;
        TokenLogprob {
            token,
            logprob: s.logprob,
            top: likeliest(logits, top)
                .into_iter()
                // The token itself with the very number reported for it.
                .map(|i| match i == token {
                    true => (i, s.logprob),
                    false => (i, logits[i as usize] as f64 - lse),
                })
                .collect(),
        }
    }
}

/// The ids of the k largest logits, largest first (ties to the lower id): one pass keeping a
/// sorted list of k, since k is at most MAX_TOP and the vocabulary large.
fn likeliest(logits: &[f32], k: usize) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if best.len() == k && best.last().is_none_or(|&(m, _)| l <= m) {
            continue;
        }
        let at = best.partition_point(|&(m, _)| m >= l);
        best.insert(at, (l, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_and_the_top_are_the_largest() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let lse = logits.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln();
        let t = TokenLogprob::of(&logits, 4, 3);
        assert!((t.logprob - (0.5 - lse)).abs() < 1e-6, "{t:?}");
        let ids: Vec<u32> = t.top.iter().map(|&(i, _)| i).collect();
        assert_eq!(ids, [1, 3, 0], "largest first, ties to the lower id");
        for &(i, lp) in &t.top {
            assert!((lp - (logits[i as usize] as f64 - lse)).abs() < 1e-6);
        }
        assert!(TokenLogprob::of(&logits, 0, 0).top.is_empty());
        assert_eq!(
            TokenLogprob::of(&logits, 0, 9).top.len(),
            5,
            "at most the vocabulary"
        );
    }
}
