//! Self-speculative greedy decoding with the model's first multi-token prediction module
//! (DeepSeek-V3 §5.4.3). The main model's last hidden state h_m and the token it chose, t_{m+1},
//! give the module what it was trained on, so it drafts t_{m+2} for the cost of one block and
//! the head. One main pass then feeds [t_{m+1}, draft]: its first row checks the draft, and
//! when the draft is right its second row gives t_{m+3} too, so that pass yields two tokens.
//! A wrong draft's key and value are cut from the cache. The reply is the main model's own
//! greedy reply: the draft only decides how many of its tokens one pass produces.

use crate::{check, sample_logits, Completion, Finish, LanguageModel, Request, SamplingParams};
use base::{Error, Result};
use model::KvCache;
use model::Llama;
use tensor::Rng;

/// How the drafts fared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Passes of the main model after the prompt's.
    pub passes: usize,
    /// Drafts checked, and those the main model agreed with.
    pub drafted: usize,
    pub accepted: usize,
    /// Time spent drafting (the module's block and the head).
    pub draft_time: std::time::Duration,
}

impl SpecStats {
    /// The share of drafts accepted.
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }
}

/// The greedy reply to `prompt` (the same tokens as [`crate::generate`] with greedy sampling
/// and no tools), decoded with the model's first multi-token prediction module drafting.
pub fn greedy_speculative(
    model: &Llama,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
) -> Result<(Completion, SpecStats)> {
    if model.params.mtp.is_empty() {
        return Err(Error::input(
            "model",
            "it has no multi-token prediction module to draft with",
            "train a model with [model.mtp] depth ≥ 1, or decode without --speculative",
        ));
    }
    let request = Request {
        prompt: prompt.to_vec(),
        sampling: SamplingParams::greedy(),
        max_tokens,
        stop: stop.to_vec(),
        seed: 0,
    };
    check(model, 0, &request)?;
    let (d, ctx) = (model.cfg.d_model, model.cfg.context_len);
    // The reply never outgrows max_tokens or the context.
    let limit = max_tokens.min(ctx - prompt.len());
    let mut stats = SpecStats::default();
    let mut main = model.new_cache();
    let mut mtp = KvCache::with_layers(1);
    let mut out = Vec::new();
    let finish = |out: Vec<u32>, finish, stop_token, main: &KvCache| Completion {
        tokens: out,
        finish,
        stop_token,
        prompt_tokens: model.cache_len(main),
        prompt_logprobs: Vec::new(),
    };
    if limit == 0 {
        return Ok((finish(out, Finish::Length, None, &main), stats));
    }
    // Hidden states of main positions the module has not seen, and the token after each.
    let mut hidden = model.trunk(&mut [(&mut main, prompt)]);
    let mut next = greedy(model, &hidden[hidden.len() - d..], model.params.final_norm);
    let mut after: Vec<u32> = prompt[1..].to_vec();
    loop {
        // `next`, the main model's choice, is the reply's next token.
        if stop.contains(&next) {
            return Ok((finish(out, Finish::Stop, Some(next), &main), stats));
        }
        out.push(next);
        after.push(next);
        if out.len() == limit {
            return Ok((finish(out, Finish::Length, None, &main), stats));
        }
        let t0 = std::time::Instant::now();
        let drafted = model.mtp_draft(&mut mtp, &hidden, &after);
        let draft = greedy(model, &drafted, model.params.mtp[0].norm);
        stats.draft_time += t0.elapsed();
        // One pass over [next, draft]; the context has room, as the reply's next token does.
        let m = main.len();
        hidden = model.trunk(&mut [(&mut main, &[next, draft])]);
        stats.passes += 1;
        stats.drafted += 1;
        // Both rows through the head at once: one read of its weights, the step's largest.
        let [checked, after_draft] = greedy2(model, &hidden);
        if checked != draft {
            main.truncate(m + 1);
            hidden.truncate(d);
            after = Vec::new();
            next = checked;
            continue;
        }
        stats.accepted += 1;
        if stop.contains(&draft) {
            return Ok((finish(out, Finish::Stop, Some(draft), &main), stats));
        }
        out.push(draft);
        if out.len() == limit {
            return Ok((finish(out, Finish::Length, None, &main), stats));
        }
        next = after_draft;
        after = vec![draft];
    }
}

/// The greedy token after a hidden state x (d), through the RMSNorm at `norm` and the head,
/// chosen as the engine's greedy sampling chooses.
fn greedy(model: &Llama, x: &[f32], norm: usize) -> u32 {
    let mut logits = vec![0f32; model.cfg.vocab_size];
    model.head_with(norm, x, &mut logits);
    sample_logits(&logits, SamplingParams::greedy(), &mut Rng::new(0))
}

/// The main model's greedy tokens after each of two hidden states x (2, d).
fn greedy2(model: &Llama, x: &[f32]) -> [u32; 2] {
    let v = model.cfg.vocab_size;
    let mut logits = vec![0f32; 2 * v];
    model.head_with(model.params.final_norm, x, &mut logits);
    let pick = |row: &[f32]| sample_logits(row, SamplingParams::greedy(), &mut Rng::new(0));
    [pick(&logits[..v]), pick(&logits[v..])]
}
