//! Text samples during pretraining and from `frugal sample`: a document continued from a
//! prompt by the inference engine (KV cache), stopping at the next `<|bos|>`.

pub use engine::SamplingParams;
use engine::{generate as engine_generate, Request};
use model::Llama;
use tensor::Rng;

/// Continues `prompt` (which should start with `<|bos|>`) by up to `n` tokens, stopping early
/// at `stop` or the context's end. Returns only the new ids; `rng` advances, so successive
/// samples differ and a checkpointed state reproduces them.
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    p: SamplingParams,
    stop: Option<u32>,
    rng: &mut Rng,
) -> Vec<u32> {
    let keep = model.cfg.context_len.saturating_sub(1).max(1);
    let request = Request {
        prompt: prompt[prompt.len().saturating_sub(keep)..].to_vec(),
        sampling: p,
        max_tokens: n,
        stop: stop.into_iter().collect(),
        seed: rng.next_u64(),
    };
    // Prompts come from the tokenizer of the model, so the request is valid; an empty prompt
    // gives an empty sample.
    engine_generate(model, &[request], None, |_| true)
        .map(|mut c| c.remove(0).tokens)
        .unwrap_or_default()
}

/// `prompt` continued by up to `n` tokens as text: the prompt is encoded after `<|bos|>` (when
/// the tokenizer has one), generation stops at the next `<|bos|>`, and the result starts with
/// the prompt. What `frugal sample` prints and the speedrun's fixed-seed samples are. The ids
/// come from the model over the tokenizer's own vocabulary, so they always decode (lossily).
pub fn continue_text(
    model: &Llama,
    tok: &bpe::Tokenizer,
    prompt: &str,
    n: usize,
    p: SamplingParams,
    rng: &mut Rng,
) -> String {
    let bos = tok.special_id("<|bos|>");
    let ids = [bos.into_iter().collect(), tok.encode(prompt)].concat();
    let new = generate(model, &ids, n, p, bos, rng);
    format!("{prompt}{}", tok.decode_lossy(&new).unwrap_or_default())
}
