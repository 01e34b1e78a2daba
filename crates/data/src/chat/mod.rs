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
//!
//! An imported model keeps its own format instead: [`ChatStyle`] is frugal's format or the
//! model's chat template (`template`, rendered with minijinja), and the same methods render,
//! mask and parse in either, so every consumer serves both.

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

/// How a model's conversations become tokens: frugal's own format (its special tokens, with
/// the calculator's tool parts), or an imported model's chat template.
#[derive(Clone)]
pub enum ChatStyle {
    Frugal(ChatTokens),
    Template(std::sync::Arc<TemplateStyle>),
}

/// An imported model's template, compiled, with the ids it starts and stops at.
pub struct TemplateStyle {
    pub template: template::Template,
    pub model: template::ModelTemplate,
    /// The document-start token: bos_token, else eos_token (as lm-evaluation-harness prefixes
    /// a model that has no BOS).
    pub bos: u32,
    /// The tokens that end a reply; the first is what a well-formed reply ends with.
    pub stops: Vec<u32>,
}

impl ChatStyle {
    /// frugal's format; fails, naming the missing tokens, for a tokenizer without its specials.
    pub fn frugal(tok: &Tokenizer) -> Result<Self> {
        ChatTokens::from_tokenizer(tok).map(ChatStyle::Frugal)
    }

    /// The style of the run at `run`: its own template when `frugal import` kept one
    /// (RUN/chat_template.json), else frugal's format.
    pub fn of_run(tok: &Tokenizer, run: &std::path::Path) -> Result<Self> {
        let Some(m) = template::ModelTemplate::load(run)? else {
            return Self::frugal(tok);
        };
        let origin = run.join(template::ModelTemplate::FILE);
        let origin = origin.display().to_string();
        let id = |name: &Option<String>| name.as_deref().and_then(|n| tok.special_id(n));
        let mut stops = m.stop_ids.clone();
        if let Some(eos) = id(&m.eos_token) {
            if !stops.contains(&eos) {
                stops.insert(0, eos);
            }
        }
        let bos = id(&m.bos_token).or(stops.first().copied());
        let (Some(bos), false) = (bos, stops.is_empty()) else {
            return Err(Error::input(
                origin,
                "names no stop token the tokenizer has (eos_token, stop_ids)",
                "set eos_token to the special token that ends the model's replies",
            ));
        };
        let template = template::Template::new(&m.chat_template, &origin)?;
        Ok(ChatStyle::Template(std::sync::Arc::new(TemplateStyle {
            template,
            model: m,
            bos,
            stops,
        })))
    }
}

/// Renders conversations with one tokenizer.
pub struct ChatFormat<'a> {
    pub tok: &'a Tokenizer,
    pub style: ChatStyle,
}

impl<'a> ChatFormat<'a> {
    /// frugal's chat format.
    pub fn new(tok: &'a Tokenizer) -> Result<Self> {
        Ok(ChatFormat {
            tok,
            style: ChatStyle::frugal(tok)?,
        })
    }

    /// The chat format of the run at `run` (see [`ChatStyle::of_run`]).
    pub fn for_run(tok: &'a Tokenizer, run: &std::path::Path) -> Result<Self> {
        Ok(ChatFormat {
            tok,
            style: ChatStyle::of_run(tok, run)?,
        })
    }

    pub fn with_style(tok: &'a Tokenizer, style: ChatStyle) -> Self {
        ChatFormat { tok, style }
    }

    /// frugal's special tokens, for what only its format has (the calculator's tool parts);
    /// None for an imported template.
    pub fn tokens(&self) -> Option<ChatTokens> {
        match &self.style {
            ChatStyle::Frugal(t) => Some(*t),
            ChatStyle::Template(_) => None,
        }
    }

    /// The token documents start with (and packed rows are padded with).
    pub fn bos(&self) -> u32 {
        match &self.style {
            ChatStyle::Frugal(t) => t.bos,
            ChatStyle::Template(s) => s.bos,
        }
    }

    /// The token a well-formed reply ends with.
    pub fn reply_end(&self) -> u32 {
        match &self.style {
            ChatStyle::Frugal(t) => t.assistant_end,
            ChatStyle::Template(s) => s.stops[0],
        }
    }

    /// The tokens that end a reply.
    pub fn reply_stops(&self) -> Vec<u32> {
        match &self.style {
            ChatStyle::Frugal(t) => t.reply_stops(),
            ChatStyle::Template(s) => s.stops.clone(),
        }
    }

    /// A conversation's prompt and one reply to it, as tokens: the prompt (ending where the
    /// reply starts), the reply's text, and what closes it (the reply's end token, and what
    /// the template writes after it). Preference pairs are scored on these.
    pub fn prompt_and_reply(
        &self,
        prompt: &Conversation,
        reply: &str,
    ) -> Result<(Vec<u32>, Vec<u32>, Vec<u32>)> {
        match &self.style {
            ChatStyle::Frugal(t) => {
                let mut p = self.render(prompt)?.ids;
                p.push(t.assistant_start);
                Ok((p, self.tok.encode(reply), vec![t.assistant_end]))
            }
            ChatStyle::Template(s) => {
                let p = self.render_prompt(prompt, usize::MAX)?;
                let mut whole = prompt.clone();
                whole.messages.push(Message::text(Role::Assistant, reply));
                let ids = self.template_ids(s, &whole, false)?;
                let rest = ids.strip_prefix(p.as_slice()).ok_or_else(|| {
                    template_mismatch("the prompt with a generation prompt is not a prefix of the conversation with its reply")
                })?;
                let end = rest
                    .iter()
                    .position(|id| s.stops.contains(id))
                    .unwrap_or(rest.len());
                Ok((p, rest[..end].to_vec(), rest[end..].to_vec()))
            }
        }
    }

    /// The ids of a conversation through an imported template.
    fn template_ids(
        &self,
        s: &TemplateStyle,
        conv: &Conversation,
        prompt: bool,
    ) -> Result<Vec<u32>> {
        let msgs = template::to_messages(conv);
        let text = s.template.render(&msgs, &s.model.context(prompt))?;
        Ok(self.tok.encode_with_specials(&text))
    }

    /// A conversation through an imported template, with its loss mask: each assistant
    /// message's span is where the conversation up to it goes beyond the same conversation
    /// prompted for it (rendered with the generation prompt), up to and including its stop
    /// token. Templates that render earlier turns differently once later ones follow cannot
    /// be masked this way and are refused.
    fn render_template(&self, s: &TemplateStyle, conv: &Conversation) -> Result<Rendered> {
        let conv = &inline_calculations(conv);
        let full = self.template_ids(s, conv, false)?;
        let mut r = Rendered {
            mask: vec![0; full.len()],
            ids: full,
            message_starts: Vec::new(),
        };
        // The conversation up to message i, rendered once each: its length is where message
        // i + 1 starts.
        let mut start = 0;
        for i in 0..conv.messages.len() {
            r.message_starts.push(start);
            let before = Conversation {
                messages: conv.messages[..i].to_vec(),
            };
            let upto = Conversation {
                messages: conv.messages[..=i].to_vec(),
            };
            let through = self.template_ids(s, &upto, false)?;
            if conv.messages[i].role == Role::Assistant {
                let prompt = self.template_ids(s, &before, true)?;
                if !through.starts_with(&prompt) || !r.ids.starts_with(&through) {
                    return Err(template_mismatch(&format!(
                        "message {i}: the conversation's tokens up to it are not a prefix of the whole conversation's"
                    )));
                }
                let span = &through[prompt.len()..];
                let end = span
                    .iter()
                    .position(|id| s.stops.contains(id))
                    .map_or(span.len(), |e| e + 1);
                r.mask[prompt.len()..prompt.len() + end].fill(1);
            }
            start = through.len();
        }
        Ok(r)
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
        let t = match &self.style {
            ChatStyle::Frugal(t) => t,
            ChatStyle::Template(s) => return self.render_template(s, conv),
        };
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
        let ids = match &self.style {
            ChatStyle::Frugal(t) => {
                let mut ids = self.render(conv)?.ids;
                ids.push(t.assistant_start);
                ids
            }
            ChatStyle::Template(s) => {
                conv.validate()
                    .map_err(|e| Error::input("conversation", e, "fix the conversation's roles"))?;
                self.template_ids(s, conv, true)?
            }
        };
        if ids.len() > max_len {
            let last = conv.messages.len() - 1;
            return Err(Error::input(
                format!("conversation message {last}"),
                format!(
                    "the prompt is {} tokens, over the limit of {max_len} (the model's context less room for a reply)",
                    ids.len()
                ),
                "shorten the message or start a new conversation",
            ));
        }
        Ok(ids)
    }

    /// Parses the tokens of one assistant reply (what follows `<|assistant_start|>`, with or
    /// without the closing `<|assistant_end|>`) back into a message.
    pub fn parse_reply(&self, ids: &[u32]) -> Message {
        let t = match &self.style {
            ChatStyle::Frugal(t) => t,
            ChatStyle::Template(s) => {
                // An imported model's reply is text up to its stop token.
                let end = ids
                    .iter()
                    .position(|id| s.stops.contains(id))
                    .unwrap_or(ids.len());
                let text: Vec<u32> = ids[..end]
                    .iter()
                    .copied()
                    .filter(|&id| (id as usize) < self.tok.n_ordinary())
                    .collect();
                let text = self.tok.decode_lossy(&text).unwrap_or_default();
                return Message::text(Role::Assistant, text);
            }
        };
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

/// The conversation with calculator calls written into the text as GSM8K writes them
/// (`<<48/2=24>>`): an imported model's template has no tool parts, and the model is then
/// taught to do the arithmetic itself.
fn inline_calculations(conv: &Conversation) -> Conversation {
    let mut out = conv.clone();
    for m in &mut out.messages {
        if m.parts.iter().all(|p| p.kind == PartKind::Text) {
            continue;
        }
        let text: String = m
            .parts
            .iter()
            .map(|p| match p.kind {
                PartKind::Text => p.text.clone(),
                PartKind::Python => format!("<<{}=", p.text),
                PartKind::PythonOutput => format!("{}>>", p.text),
            })
            .collect();
        *m = Message::text(m.role, text);
    }
    out
}

fn template_mismatch(what: &str) -> Error {
    Error::input(
        "chat template",
        format!("{what}, so the assistant's tokens cannot be told apart"),
        "this model's template renders earlier turns differently when more follow; tune it on single-turn data",
    )
}

#[cfg(test)]
mod tests;
