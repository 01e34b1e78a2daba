//! From items to token requests: few-shot examples drawn with a fixed seed, the text joined as
//! lm-evaluation-harness joins it, tokenized, and cut from the left when it outgrows the
//! context.

use crate::McItem;
use bpe::Tokenizer;
use tensor::Rng;

/// Few-shot examples are separated from each other and from the question by a blank line.
pub const SHOT_SEPARATOR: &str = "\n\n";

/// The pool indices of the `k` few-shot examples of item `i`: distinct, from `group`, never
/// `exclude` (the item itself when the pool is the evaluated split). The generator is seeded by
/// (seed, i), so an item's examples do not depend on which other items are evaluated.
pub fn pick(
    pool_groups: &[u32],
    group: u32,
    k: usize,
    exclude: Option<usize>,
    seed: u64,
    i: usize,
) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    let mut cand: Vec<usize> = (0..pool_groups.len())
        .filter(|&j| pool_groups[j] == group && Some(j) != exclude)
        .collect();
    let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let k = k.min(cand.len());
    for j in 0..k {
        let r = j + rng.below((cand.len() - j) as u64) as usize;
        cand.swap(j, r);
    }
    cand.truncate(k);
    cand
}

/// The text in front of an item's own context: its preamble and the solved examples.
pub fn prefix(preamble: &str, shots: &[String]) -> String {
    let mut s = preamble.to_string();
    for shot in shots {
        s.push_str(shot);
        s.push_str(SHOT_SEPARATOR);
    }
    s
}

/// One continuation to score: `<|bos|>`, the context and the continuation, tokenized.
#[derive(Clone, Debug, PartialEq)]
pub struct LlRequest {
    pub tokens: Vec<u32>,
    /// Where the continuation starts in `tokens`.
    pub cont_start: usize,
    /// Tokens were cut from the left to fit the context.
    pub truncated: bool,
}

/// Tokenizes context + continuation. The continuation's tokens are those after the longest
/// common prefix of the context's and the whole text's tokens, so a merge across the boundary
/// is scored as part of the continuation (the whole text is tokenized as the model saw text).
pub fn ll_request(
    tok: &Tokenizer,
    bos: u32,
    context: &str,
    continuation: &str,
    ctx_len: usize,
) -> LlRequest {
    let whole = tok.encode(&format!("{context}{continuation}"));
    let ctx = tok.encode(context);
    let mut p = ctx.iter().zip(&whole).take_while(|(a, b)| a == b).count();
    if p == whole.len() {
        // An empty continuation cannot be scored; the loaders never make one, but the last
        // token then stands for it rather than nothing.
        p = p.saturating_sub(1);
    }
    let mut tokens = Vec::with_capacity(whole.len() + 1);
    tokens.push(bos);
    let keep = ctx_len.saturating_sub(1).max(1);
    let drop = whole.len().saturating_sub(keep);
    tokens.extend_from_slice(&whole[drop..]);
    LlRequest {
        cont_start: 1 + p.saturating_sub(drop),
        tokens,
        truncated: drop > 0,
    }
}

/// The requests of one multiple-choice item, one per choice, after `prefix_text`.
pub fn mc_requests(
    tok: &Tokenizer,
    bos: u32,
    item: &McItem,
    prefix_text: &str,
    ctx_len: usize,
) -> Vec<LlRequest> {
    item.choices
        .iter()
        .map(|(c, x)| ll_request(tok, bos, &format!("{prefix_text}{c}"), x, ctx_len))
        .collect()
}

/// `<|bos|>` and the prompt's tokens, cut from the left (after `<|bos|>`) to `max_len`.
/// Returns the tokens and whether anything was cut.
pub fn left_truncated(bos: u32, ids: &[u32], max_len: usize) -> (Vec<u32>, bool) {
    let keep = max_len.saturating_sub(1).max(1);
    let drop = ids.len().saturating_sub(keep);
    let mut out = vec![bos];
    out.extend_from_slice(&ids[drop..]);
    (out, drop > 0)
}
