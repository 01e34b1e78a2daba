//! The chat format: conversations rendered to token ids with special tokens, and the loss mask
//! that trains only what the assistant says. One renderer serves SFT, RL, evaluation, the chat
//! command and the server, so a model is always shown conversations the way it was trained on them.
//!
//! ```text
//! <|bos|> [<|system_start|> … <|system_end|>]
//! <|user_start|> … <|user_end|> <|assistant_start|> … <|assistant_end|>   (repeated)
//! ```
//! An assistant message is a list of parts: text, a calculator call
//! (`<|python_start|> 48/2 <|python_end|>`) and the tool's answer
//! (`<|output_start|> 24 <|output_end|>`), as in nanochat. The mask is 1 on assistant text, on
//! tool calls with their delimiters, and on `<|assistant_end|>`; it is 0 on everything the model
//! is given: the prompt, `<|assistant_start|>`, and tool output (the engine forces it).

pub mod import;
pub mod stream;
pub mod template;

use base::{Error, Result};
use bpe::Tokenizer;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// What a part of an assistant message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    Text,
    /// A calculator expression the model wrote.
    Python,
    /// The calculator's answer, forced into the stream by the engine.
    PythonOutput,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: PartKind,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            parts: vec![Part {
                kind: PartKind::Text,
                text: text.into(),
            }],
        }
    }

    /// The message as plain text, tool calls shown inline as `[calc: 48/2 = 24]`.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for p in &self.parts {
            match p.kind {
                PartKind::Text => s.push_str(&p.text),
                PartKind::Python => s.push_str(&format!("[calc: {}", p.text)),
                PartKind::PythonOutput => s.push_str(&format!(" = {}]", p.text)),
            }
        }
        s
    }
}

/// An optional system message, then user and assistant messages alternating, starting with the
/// user. Only assistant messages may hold tool parts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
}

impl Conversation {
    /// Checks the turn structure; `Err` says which message is wrong and why.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut expect = Role::User;
        for (i, m) in self.messages.iter().enumerate() {
            if m.role == Role::System {
                if i != 0 {
                    return Err(format!("message {i}: a system message may only come first"));
                }
                continue;
            }
            if m.role != expect {
                return Err(format!(
                    "message {i}: expected a {expect:?} message, found {:?} (turns must alternate, starting with the user)",
                    m.role
                ));
            }
            if m.role != Role::Assistant && m.parts.iter().any(|p| p.kind != PartKind::Text) {
                return Err(format!(
                    "message {i}: only assistant messages may hold tool calls"
                ));
            }
            expect = match expect {
                Role::User => Role::Assistant,
                _ => Role::User,
            };
        }
        Ok(())
    }

    /// Drops trailing messages until the conversation ends with an assistant reply.
    pub fn trim_to_last_reply(&mut self) {
        while self
            .messages
            .last()
            .is_some_and(|m| m.role != Role::Assistant)
        {
            self.messages.pop();
        }
    }

    /// Number of user/assistant exchanges.
    pub fn exchanges(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count()
    }
}

/// Token ids and loss mask of a rendered conversation: mask[i] = 1 when ids[i] is something
/// the model is trained to produce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
    /// Where each message starts in `ids` (for truncation at turn boundaries).
    pub message_starts: Vec<usize>,
}

/// The special-token ids of the chat format, looked up once from a tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatTokens {
    pub bos: u32,
    pub system_start: u32,
    pub system_end: u32,
    pub user_start: u32,
    pub user_end: u32,
    pub assistant_start: u32,
    pub assistant_end: u32,
    pub python_start: u32,
    pub python_end: u32,
    pub output_start: u32,
    pub output_end: u32,
}

impl ChatTokens {
    /// The tokens that end an assistant reply: its own end, and any token that could only
    /// start another turn or document.
    pub fn reply_stops(&self) -> Vec<u32> {
        vec![
            self.assistant_end,
            self.bos,
            self.user_start,
            self.assistant_start,
        ]
    }

    /// Fails, naming every missing token, when the tokenizer was not trained with the chat
    /// specials (frugal's tokenizers always are).
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self> {
        let mut missing = Vec::new();
        let mut id = |name: &str| {
            tok.special_id(name).unwrap_or_else(|| {
                missing.push(name.to_string());
                u32::MAX
            })
        };
        let t = ChatTokens {
            bos: id("<|bos|>"),
            system_start: id("<|system_start|>"),
            system_end: id("<|system_end|>"),
            user_start: id("<|user_start|>"),
            user_end: id("<|user_end|>"),
            assistant_start: id("<|assistant_start|>"),
            assistant_end: id("<|assistant_end|>"),
            python_start: id("<|python_start|>"),
            python_end: id("<|python_end|>"),
            output_start: id("<|output_start|>"),
            output_end: id("<|output_end|>"),
        };
        if missing.is_empty() {
            Ok(t)
        } else {
            Err(Error::input(
                "tokenizer",
                format!("lacks the chat special tokens {}", missing.join(" ")),
                "use a tokenizer trained by `frugal tokenizer train` (it adds them), and pretrain with it",
            ))
        }
    }
}

/// Renders conversations with one tokenizer.
pub struct ChatFormat<'a> {
    pub tok: &'a Tokenizer,
    pub t: ChatTokens,
}

impl<'a> ChatFormat<'a> {
    pub fn new(tok: &'a Tokenizer) -> Result<Self> {
        Ok(ChatFormat {
            tok,
            t: ChatTokens::from_tokenizer(tok)?,
        })
    }

    fn push(&self, r: &mut Rendered, ids: &[u32], train: bool) {
        r.ids.extend_from_slice(ids);
        r.mask.extend(std::iter::repeat_n(train as u8, ids.len()));
    }

    /// Renders a whole conversation for training. Message text is encoded as plain text: a
    /// special token's name typed by a user is just characters.
    pub fn render(&self, conv: &Conversation) -> Result<Rendered> {
        conv.validate()
            .map_err(|e| Error::input("conversation", e, "fix the conversation's roles"))?;
        let t = &self.t;
        let mut r = Rendered::default();
        self.push(&mut r, &[t.bos], false);
        for m in &conv.messages {
            r.message_starts.push(r.ids.len());
            match m.role {
                Role::System | Role::User => {
                    let (start, end) = if m.role == Role::System {
                        (t.system_start, t.system_end)
                    } else {
                        (t.user_start, t.user_end)
                    };
                    let text: String = m.parts.iter().map(|p| p.text.as_str()).collect();
                    self.push(&mut r, &[start], false);
                    self.push(&mut r, &self.tok.encode(&text), false);
                    self.push(&mut r, &[end], false);
                }
                Role::Assistant => {
                    self.push(&mut r, &[t.assistant_start], false);
                    for p in &m.parts {
                        let ids = self.tok.encode(&p.text);
                        match p.kind {
                            PartKind::Text => self.push(&mut r, &ids, true),
                            PartKind::Python => {
                                self.push(&mut r, &[t.python_start], true);
                                self.push(&mut r, &ids, true);
                                self.push(&mut r, &[t.python_end], true);
                            }
                            PartKind::PythonOutput => {
                                self.push(&mut r, &[t.output_start], false);
                                self.push(&mut r, &ids, false);
                                self.push(&mut r, &[t.output_end], false);
                            }
                        }
                    }
                    self.push(&mut r, &[t.assistant_end], true);
                }
            }
        }
        Ok(r)
    }

    /// Renders a conversation for training within `max_len` tokens: whole exchanges are dropped
    /// from the end until it fits. `None` when not even the first exchange fits.
    pub fn render_fitted(&self, conv: &Conversation, max_len: usize) -> Result<Option<Rendered>> {
        let mut r = self.render(conv)?;
        if r.ids.len() <= max_len {
            return Ok(Some(r));
        }
        // Cut before the user message that starts the first exchange which does not fit.
        let cut = conv
            .messages
            .iter()
            .zip(&r.message_starts)
            .filter(|(m, _)| m.role == Role::User)
            .map(|(_, &s)| s)
            .rfind(|&s| s <= max_len)
            .filter(|&s| r.mask[..s].contains(&1));
        Ok(cut.map(|s| {
            r.ids.truncate(s);
            r.mask.truncate(s);
            r.message_starts.retain(|&m| m < s);
            r
        }))
    }

    /// The prompt for the assistant's next reply: the conversation (which must end with a user
    /// message) followed by `<|assistant_start|>`. Fails when it does not fit in `max_len`.
    pub fn render_prompt(&self, conv: &Conversation, max_len: usize) -> Result<Vec<u32>> {
        if conv.messages.last().map(|m| m.role) != Some(Role::User) {
            return Err(Error::input(
                "conversation",
                "a prompt must end with a user message",
                "append the user's message before asking for a reply",
            ));
        }
        // Text that cannot fit is refused before it is encoded: encoding costs time in its
        // length, and a network request may carry a megabyte.
        let bytes: usize = conv
            .messages
            .iter()
            .flat_map(|m| &m.parts)
            .map(|p| p.text.len())
            .sum();
        let most = max_len.saturating_mul(self.tok.max_token_bytes());
        if bytes > most {
            let last = conv.messages.len() - 1;
            return Err(Error::input(
                format!("conversation message {last}"),
                format!(
                    "the conversation's text is {bytes} bytes, over the limit of {most} bytes that {max_len} tokens (the model's context less room for a reply) can cover"
                ),
                "shorten the message or start a new conversation",
            ));
        }
        let mut r = self.render(conv)?;
        r.ids.push(self.t.assistant_start);
        if r.ids.len() > max_len {
            let last = conv.messages.len() - 1;
            return Err(Error::input(
                format!("conversation message {last}"),
                format!(
                    "the prompt is {} tokens, over the limit of {max_len} (the model's context less room for a reply)",
                    r.ids.len()
                ),
                "shorten the message or start a new conversation",
            ));
        }
        Ok(r.ids)
    }

    /// Parses the tokens of one assistant reply (what follows `<|assistant_start|>`, with or
    /// without the closing `<|assistant_end|>`) back into a message.
    pub fn parse_reply(&self, ids: &[u32]) -> Message {
        let t = &self.t;
        let mut parts: Vec<Part> = Vec::new();
        let mut kind = PartKind::Text;
        let mut run: Vec<u32> = Vec::new();
        let flush = |kind: PartKind, run: &mut Vec<u32>, parts: &mut Vec<Part>| {
            if !run.is_empty() || kind != PartKind::Text {
                let text = self.tok.decode_lossy(run).unwrap_or_default();
                parts.push(Part { kind, text });
            }
            run.clear();
        };
        for &id in ids {
            let next = match id {
                x if x == t.python_start => Some(PartKind::Python),
                x if x == t.output_start => Some(PartKind::PythonOutput),
                x if x == t.python_end || x == t.output_end => Some(PartKind::Text),
                x if x == t.assistant_end => break,
                _ => None,
            };
            match next {
                Some(k) => {
                    flush(kind, &mut run, &mut parts);
                    kind = k;
                }
                // Other special tokens in a reply are malformed output: drop them.
                None if (id as usize) < self.tok.n_ordinary() => run.push(id),
                None => {}
            }
        }
        flush(kind, &mut run, &mut parts);
        parts.retain(|p| p.kind != PartKind::Text || !p.text.is_empty());
        Message {
            role: Role::Assistant,
            parts,
        }
    }
}

#[cfg(test)]
mod tests;
