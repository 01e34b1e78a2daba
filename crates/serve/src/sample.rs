//! Filling the store before serving: prompts read from a file, and for every prompt without
//! responses, N replies sampled from the model (each prompt's replies and their item committed
//! together, so an interrupted fill keeps what it finished and the next one goes on).

use crate::{Error, Result};
use data::chat::import::conversation_from_json;
use data::chat::{ChatFormat, Conversation, Message, Role};
use engine::{self, LanguageModel, Request, SamplingParams, Tools};
use std::path::Path;
use store::{check_prompt, Store};

/// Prompts read from a file, and the lines that could not be used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prompts {
    pub prompts: Vec<Conversation>,
    pub skipped: usize,
    pub first_skip: Option<String>,
}

fn is_jsonl(path: &Path) -> bool {
    let name = path.to_string_lossy();
    [".jsonl", ".jsonl.gz", ".jsonl.zst", ".json"]
        .iter()
        .any(|e| name.ends_with(e))
}

/// One JSON line: `{"prompt": "text"}`, `{"messages": [...]}` or any conversation shape
/// `data::chat::import` reads; trailing assistant replies are dropped, so the prompt ends
/// with the user's turn.
fn prompt_from_json(v: &serde_json::Value) -> std::result::Result<Conversation, String> {
    let mut conv = match v.get("prompt").and_then(|p| p.as_str()) {
        Some(p) if v.get("messages").is_none() => Conversation {
            messages: vec![Message::text(Role::User, p)],
        },
        _ => conversation_from_json(v)?,
    };
    while conv.messages.last().map(|m| m.role) == Some(Role::Assistant) {
        conv.messages.pop();
    }
    if conv
        .messages
        .last()
        .is_some_and(|m| m.display().trim().is_empty())
    {
        return Err("the last user message is empty".into());
    }
    check_prompt(&conv)?;
    Ok(conv)
}

/// Reads prompts: JSON lines (`.jsonl`, also compressed, or `.json`) or plain text, one
/// prompt per line. Empty lines are ignored; bad lines are counted with the first one's reason.
pub fn read_prompts(path: &Path) -> Result<Prompts> {
    let mut out = Prompts::default();
    let json = is_jsonl(path);
    data::jsonl::for_each_line(path, |line, text| {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let conv = if json {
            serde_json::from_str(text)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| prompt_from_json(&v))
        } else {
            Ok(Conversation {
                messages: vec![Message::text(Role::User, text)],
            })
        };
        match conv {
            Ok(c) => out.prompts.push(c),
            Err(e) => {
                out.skipped += 1;
                out.first_skip
                    .get_or_insert(format!("{}, line {line}: {e}", path.display()));
            }
        }
        Ok(())
    })?;
    if out.prompts.is_empty() {
        return Err(Error::from(base::Error::input(path.display().to_string(), format!(
                "holds no usable prompt{}",
                out.first_skip
                    .as_deref()
                    .map_or(String::new(), |m| format!(" (first problem: {m})"))
            ), "pass JSONL rows {\"prompt\": \"...\"} or {\"messages\": [...]}, or a text file with one prompt per line")));
    }
    Ok(out)
}

/// How replies are sampled.
#[derive(Clone, Copy, Debug)]
pub struct SampleConfig {
    /// Replies per prompt (at least 2: an item compares them).
    pub responses: usize,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub seed: u64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            responses: 2,
            sampling: SamplingParams {
                temperature: 0.8,
                top_k: 50,
                top_p: 0.95,
                repetition_penalty: 1.0,
            },
            max_tokens: 256,
            seed: 0,
        }
    }
}

/// What a fill did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filled {
    pub items: usize,
    /// Prompts left without replies (too long for the context), with the first reason.
    pub skipped: usize,
    pub first_skip: Option<String>,
}

/// Samples `cfg.responses` replies for every prompt of the store that has none, and stores
/// each prompt's replies with one queued item. `origin` names the model ("sft:step-8").
/// `on_item(done, total)` reports progress.
pub fn fill<M: LanguageModel>(
    store: &mut Store,
    model: &M,
    format: &ChatFormat,
    origin: &str,
    cfg: &SampleConfig,
    mut on_item: impl FnMut(usize, usize),
) -> Result<Filled> {
    if cfg.responses < 2 {
        return Err(Error::from(base::Error::input(
            "--responses",
            format!("{} replies cannot be compared", cfg.responses),
            "sample at least 2 replies per prompt",
        )));
    }
    cfg.sampling.validate().map_err(|e| {
        Error::from(base::Error::input(
            "sampling",
            e,
            "fix the sampling options",
        ))
    })?;
    let ctx = model.context_len();
    let todo = store.prompts_without_responses()?;
    let tools = Tools::for_format(format);
    let mut out = Filled::default();
    for (done, (id, conv)) in todo.iter().enumerate() {
        let prompt = match format.render_prompt(conv, ctx - 1) {
            Ok(p) => p,
            Err(e) => {
                out.skipped += 1;
                out.first_skip
                    .get_or_insert(format!("prompt {id}: {}", e.to_string().replace('\n', " ")));
                continue;
            }
        };
        let requests: Vec<Request> = (0..cfg.responses)
            .map(|k| Request {
                max_tokens: cfg.max_tokens.min(ctx - prompt.len()),
                prompt: prompt.clone(),
                sampling: cfg.sampling,
                stop: format.reply_stops(),
                // Per prompt and reply, so a resumed fill samples what a whole one would.
                seed: cfg
                    .seed
                    .wrapping_add((*id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .wrapping_add(k as u64),
            })
            .collect();
        let completions = engine::generate(model, &requests, tools.as_ref(), |_| true)?;
        let replies: Vec<(String, String)> = completions
            .iter()
            .map(|c| (format.parse_reply(&c.tokens).display(), origin.to_string()))
            .collect();
        store.add_sampled(*id, &replies)?;
        out.items += 1;
        on_item(done + 1, todo.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lines_of_every_shape_are_read_and_bad_ones_counted() {
        let dir = std::env::temp_dir().join(format!("frugal-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.jsonl");
        std::fs::write(
            &f,
            concat!(
                "{\"prompt\": \"what is 2+2?\"}\n",
                "\n",
                "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n",
                "{\"messages\": [{\"role\": \"assistant\", \"content\": \"only me\"}]}\n",
                "not json\n",
                "{\"instruction\": \"Add\", \"input\": \"2 and 3\", \"output\": \"5\"}\n",
            ),
        )
        .unwrap();
        let p = read_prompts(&f).unwrap();
        let shown: Vec<String> = p
            .prompts
            .iter()
            .map(|c| c.messages.last().unwrap().display())
            .collect();
        assert_eq!(shown, vec!["what is 2+2?", "hi", "Add\n\n2 and 3"]);
        assert_eq!(p.skipped, 2);
        assert!(p.first_skip.unwrap().contains("p.jsonl, line 4"));
        let t = dir.join("p.txt");
        std::fs::write(&t, "first <b>one</b>\n\n  second  \n").unwrap();
        let p = read_prompts(&t).unwrap();
        assert_eq!(p.prompts.len(), 2);
        assert_eq!(p.prompts[1].messages[0].display(), "second");
        std::fs::write(&f, "{\"chosen\": 1}\n").unwrap();
        let e = read_prompts(&f).unwrap_err().to_string();
        assert!(
            e.contains("no usable prompt") && e.contains("line 1"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
