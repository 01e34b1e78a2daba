//! Generative scoring: greedy replies through the engine, batched, and the final answer read
//! from each. A base model continues a few-shot "Question: … Answer:" prompt and stops at the
//! blank line that would start the next question; a chat model answers in its chat format,
//! with the calculator tool.

use crate::prompt::{left_truncated, prefix};
use crate::GenItem;
use base::Result;
use data::chat::{ChatFormat, Conversation, Message, Role};
use data::gsm8k::final_answer;
use engine::{self, Request, SamplingParams, Tools};
use model::Llama;

/// What generation gave for one item.
#[derive(Clone, Debug, PartialEq)]
pub struct Answered {
    pub reply: String,
    pub correct: bool,
    pub truncated: bool,
    /// Tokens the model ran a forward pass for: prompt and reply.
    pub fed: usize,
}

/// Replies at most this long: GSM8K solutions are about a hundred tokens.
pub const MAX_REPLY: usize = 256;

/// Answers `items` (with their few-shot texts) in batches of `batch`; `chat` selects the
/// chat format. `progress(items done)` after each batch.
pub fn answer(
    model: &Llama,
    fmt: &ChatFormat,
    items: &[(&GenItem, Vec<String>)],
    chat: bool,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Answered>> {
    let ctx = model.cfg.context_len;
    let max_new = MAX_REPLY.min(ctx / 2);
    let bos = fmt.bos();
    let mut requests = Vec::new();
    let mut truncated = Vec::new();
    for (item, shots) in items {
        let (prompt, cut) = if chat {
            let conv = Conversation {
                messages: vec![Message::text(Role::User, item.question.clone())],
            };
            match fmt.render_prompt(&conv, ctx - max_new) {
                Ok(p) => (p, false),
                // Too long for the chat format: keep the tail of the question.
                Err(_) => {
                    let ids = fmt.render_prompt(&conv, usize::MAX)?;
                    let (p, _) = left_truncated(bos, &ids[1..], ctx - max_new);
                    (p, true)
                }
            }
        } else {
            let text = format!("{}Question: {}\nAnswer:", prefix("", shots), item.question);
            left_truncated(bos, &fmt.tok.encode(&text), ctx - max_new)
        };
        truncated.push(cut);
        requests.push(Request {
            max_tokens: max_new.min(ctx - prompt.len()),
            prompt,
            sampling: SamplingParams::greedy(),
            stop: fmt.reply_stops(),
            seed: 0,
        });
    }
    let tools = Tools::for_format(fmt);
    let mut out = Vec::with_capacity(items.len());
    let batch = batch.max(1);
    for (k, chunk) in requests.chunks(batch).enumerate() {
        // A base model's answer ends at the blank line before its next "Question:".
        let mut text: Vec<Vec<u32>> = vec![Vec::new(); chunk.len()];
        let done = engine::generate(model, chunk, tools.as_ref().filter(|_| chat), |e| {
            if chat {
                return true;
            }
            text[e.seq].push(e.token);
            let s = fmt.tok.decode_lossy(&text[e.seq]).unwrap_or_default();
            !(s.contains("\n\n") || s.contains("Question:"))
        })?;
        for (j, c) in done.iter().enumerate() {
            let i = k * batch + j;
            let reply = if chat {
                fmt.parse_reply(&c.tokens).display()
            } else {
                fmt.tok.decode_lossy(&c.tokens).unwrap_or_default()
            };
            let got = final_answer(&reply);
            out.push(Answered {
                correct: got.as_deref() == Some(items[i].0.answer.as_str()),
                reply,
                truncated: truncated[i],
                fed: c.prompt_tokens,
            });
        }
        progress(out.len());
    }
    Ok(out)
}
