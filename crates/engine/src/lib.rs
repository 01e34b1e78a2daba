//! The inference engine: token ids in, token ids out. Each sequence keeps a KV cache; the
//! prompts of a batch are prefilled together, then every step feeds each live sequence its one
//! new token. Sampling is per sequence (its own parameters and seeded generator), generation
//! ends at a stop token, at max_tokens, at the context limit, or when the caller cancels.
//!
//! Tool use, as in nanochat: when the model writes `<|python_start|> expr <|python_end|>`, the
//! engine evaluates `expr` with the calculator (parsed, never executed) and forces
//! `<|output_start|> result <|output_end|>` into the sequence; the model goes on from there.
//!
//! A sequence may also report log-probabilities (`logprobs`): each new token's, and its
//! prompt's, with the likeliest tokens at each place, for the server's `logprobs` and `echo`.

pub mod batcher;
pub mod calculator;
pub mod logprobs;
pub mod sampling;
pub mod speculative;

pub use batcher::Batcher;
pub use logprobs::{Report, TokenLogprob};
pub use model::{KvCache, LanguageModel, TokenScore};
pub use sampling::{apply_repetition_penalty, sample_logits, SamplingParams};
pub use speculative::{greedy_speculative, SpecStats};

use base::{Error, Result};
use bpe::Tokenizer;
use data::chat::ChatTokens;
use tensor::Rng;

/// One sequence to generate.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// New tokens at most, tool output included.
    pub max_tokens: usize,
    /// Tokens that end the reply (not included in it).
    pub stop: Vec<u32>,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// A stop token was produced.
    Stop,
    /// max_tokens or the context was reached.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Generated tokens, forced tool output included, the stop token excluded.
    pub tokens: Vec<u32>,
    pub finish: Finish,
    pub stop_token: Option<u32>,
    /// Tokens the model computed a forward pass for (prompt + fed tokens).
    pub prompt_tokens: usize,
    /// The prompt's tokens after the first, scored, when the [`Report`] asked for them and no
    /// [`TokenEvent`] carried them (nothing was generated).
    pub prompt_logprobs: Vec<TokenLogprob>,
}

/// What the engine needs for the calculator tool: the chat tokens and a tokenizer to read the
/// expression and write the result.
pub struct Tools<'a> {
    pub tok: &'a Tokenizer,
    pub t: ChatTokens,
}

impl<'a> Tools<'a> {
    /// The calculator for a chat format that has it: frugal's own (an imported model's
    /// template has no tool parts).
    pub fn for_format(f: &'a data::chat::ChatFormat<'a>) -> Option<Self> {
        f.tokens().map(|t| Tools { tok: f.tok, t })
    }

    /// The forced tokens answering a finished call whose expression tokens are `expr`.
    fn answer(&self, expr: &[u32]) -> Vec<u32> {
        let text = self.tok.decode_lossy(expr).unwrap_or_default();
        let result = calculator::evaluate(text.trim()).unwrap_or_else(|e| format!("error: {e}"));
        let mut out = vec![self.t.output_start];
        out.extend(self.tok.encode(&result));
        out.push(self.t.output_end);
        out
    }
}

/// An event reported while generating: a token of sequence `seq`, whether the engine forced
/// it (tool output) rather than the model choosing it, and its log-probability when the
/// sequence's [`Report`] asks for them (none for a forced token: the model did not choose it).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    pub seq: usize,
    pub token: u32,
    pub forced: bool,
    pub logprob: Option<TokenLogprob>,
    /// With a sequence's first token, the prompt's scores when the report asks for them (a
    /// sequence that generates nothing has them in its [`Completion`]).
    pub prompt_logprobs: Vec<TokenLogprob>,
}

/// Checks a request against the model before any work is done.
fn check(model: &impl LanguageModel, i: usize, r: &Request) -> Result<()> {
    let bad = |msg: String, hint: &str| Err(Error::input(format!("request {i}"), msg, hint));
    if r.prompt.is_empty() {
        return bad(
            "the prompt is empty".into(),
            "start the prompt with <|bos|>",
        );
    }
    if r.prompt.len() >= model.context_len() {
        return bad(
            format!(
                "the prompt is {} tokens; the context is {}",
                r.prompt.len(),
                model.context_len()
            ),
            "shorten the prompt to leave room for the reply",
        );
    }
    if let Some(&id) = r.prompt.iter().find(|&&t| t as usize >= model.vocab_size()) {
        return bad(
            format!(
                "token {id} is outside the vocabulary of {}",
                model.vocab_size()
            ),
            "encode the prompt with the model's own tokenizer",
        );
    }
    r.sampling
        .validate()
        .or_else(|e| bad(e, "fix the sampling parameters"))
}

/// Generates a completion for every request, batched. `on_token` sees each token as it is made
/// and returns false to stop that sequence (Ctrl-C, a closed connection).
pub fn generate<M: LanguageModel>(
    model: &M,
    requests: &[Request],
    tools: Option<&Tools>,
    mut on_token: impl FnMut(TokenEvent) -> bool,
) -> Result<Vec<Completion>> {
    // Admitting checks each request and does no work yet, so a bad one fails the call
    // before any forward pass.
    let mut batch = Batcher::new(model, tools);
    for (i, r) in requests.iter().enumerate() {
        batch.admit(i, r.clone())?;
    }
    let mut out: Vec<Option<Completion>> = vec![None; requests.len()];
    while !batch.is_empty() {
        for (i, c) in batch.step(&mut on_token) {
            out[i] = Some(c);
        }
    }
    Ok(out
        .into_iter()
        .map(|c| c.expect("every admitted sequence finishes"))
        .collect())
}

/// The reference the cached engine is tested against: greedy decoding that recomputes the
/// whole sequence with the training forward pass for every token.
pub fn greedy_uncached(
    model: &model::Llama,
    prompt: &[u32],
    max_tokens: usize,
    stop: &[u32],
) -> Vec<u32> {
    let vocab = model.cfg.vocab_size;
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_tokens && seq.len() < model.cfg.context_len {
        let mut ws = model.workspace(1, seq.len());
        let logits = model.logits(&seq, &mut ws);
        let next = sample_logits(
            &logits[(seq.len() - 1) * vocab..],
            SamplingParams::greedy(),
            &mut Rng::new(0),
        );
        if stop.contains(&next) {
            break;
        }
        seq.push(next);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests;
