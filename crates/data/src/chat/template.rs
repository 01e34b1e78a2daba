//! Chat templates, the Jinja programs that Hugging Face tokenizers carry in
//! `tokenizer_config.json` to turn a list of messages into a model's prompt text.
//!
//! - [`FRUGAL_TEMPLATE`] renders frugal's own chat format: exported models carry it, so
//!   `tokenizer.apply_chat_template` in transformers gives the ids frugal trained on.
//! - [`to_messages`] writes a conversation as the messages such templates take (OpenAI's shape:
//!   a calculator call is an assistant message with `tool_calls`, its answer a `tool` message,
//!   and the reply after it a further assistant message).
//! - [`Template`] renders any model's template with minijinja under a fuel limit, configured as
//!   transformers configures Jinja2 (trim_blocks, lstrip_blocks, `raise_exception`, Python's
//!   string methods), so an imported model is prompted the way it was trained.

use super::{Conversation, PartKind, Role};
use base::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

/// The calculator as a tool: its name and the one argument its calls carry.
pub const CALCULATOR: &str = "calculator";
pub const CALCULATOR_ARG: &str = "expression";

/// frugal's chat format (see the module docs of `chat`) as a chat template. A message's
/// `content` is a string or a list of `{"type": "text", "text"}` parts; a calculator call's
/// `arguments` is an object with an `expression`. An assistant message after a `tool` message
/// continues the same turn, so it opens no new `<|assistant_start|>`; one with `tool_calls`
/// leaves the turn open for the tool's answer.
pub const FRUGAL_TEMPLATE: &str = r#"<|bos|>
{%- for message in messages %}
    {%- if message.content is string %}{% set content = message.content %}
    {%- else %}{% set content = (message.content or []) | map(attribute='text') | join('') %}
    {%- endif %}
    {%- if message.role == 'system' %}<|system_start|>{{ content }}<|system_end|>
    {%- elif message.role == 'user' %}<|user_start|>{{ content }}<|user_end|>
    {%- elif message.role == 'assistant' %}
        {%- if loop.previtem is not defined or loop.previtem.role != 'tool' %}<|assistant_start|>{% endif %}
        {{- content }}
        {%- for call in message.tool_calls or [] %}
            {%- if call.function.arguments is not mapping %}{{ raise_exception('tool call arguments must be an object such as {"expression": "48/2"}') }}{% endif %}
            {{- '<|python_start|>' ~ call.function.arguments.expression ~ '<|python_end|>' }}
        {%- endfor %}
        {%- if not message.tool_calls %}<|assistant_end|>{% endif %}
    {%- elif message.role == 'tool' %}<|output_start|>{{ content }}<|output_end|>
    {%- else %}{{ raise_exception('unknown role ' ~ message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|assistant_start|>{% endif %}"#;

/// The conversation as chat-template messages (see the module docs).
pub fn to_messages(conv: &Conversation) -> Value {
    let mut out = Vec::new();
    for m in &conv.messages {
        let text = |m: &super::Message| m.parts.iter().map(|p| p.text.as_str()).collect::<String>();
        match m.role {
            Role::System => out.push(json!({"role": "system", "content": text(m)})),
            Role::User => out.push(json!({"role": "user", "content": text(m)})),
            Role::Assistant => assistant_messages(m, &mut out),
        }
    }
    Value::Array(out)
}

/// One assistant message of frugal's as one or more template messages: text up to each
/// calculator call, the call, the tool's answer, and the text after it.
fn assistant_messages(m: &super::Message, out: &mut Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let flush = |text: &mut String, calls: &mut Vec<Value>, out: &mut Vec<Value>| {
        let mut msg = json!({"role": "assistant", "content": std::mem::take(text)});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(std::mem::take(calls));
        }
        out.push(msg);
    };
    for p in &m.parts {
        match p.kind {
            PartKind::Text => {
                if !calls.is_empty() {
                    flush(&mut text, &mut calls, out);
                }
                text.push_str(&p.text);
            }
            PartKind::Python => {
                if !calls.is_empty() {
                    flush(&mut text, &mut calls, out);
                }
                calls.push(json!({"type": "function", "function": {
                    "name": CALCULATOR, "arguments": {CALCULATOR_ARG: p.text}}}));
            }
            PartKind::PythonOutput => {
                flush(&mut text, &mut calls, out);
                out.push(json!({"role": "tool", "name": CALCULATOR, "content": p.text}));
            }
        }
    }
    // A turn that ends on the tool's answer still closes with an (empty) assistant message.
    flush(&mut text, &mut calls, out);
}

/// Instructions a template may spend on one rendering: far beyond any real template on a long
/// conversation, and a bound on one that loops.
const FUEL: u64 = 50_000_000;

/// A model's chat template, compiled once.
pub struct Template {
    env: minijinja::Environment<'static>,
}

/// What a template is rendered with besides the messages.
#[derive(Clone, Debug, Default)]
pub struct TemplateContext {
    pub add_generation_prompt: bool,
    /// `bos_token` and `eos_token` as tokenizer_config.json names them.
    pub bos_token: String,
    pub eos_token: String,
    /// Tool definitions (OpenAI's `tools`), when the request has any.
    pub tools: Option<Value>,
}

impl Template {
    /// Compiles `source`; `origin` names the file it came from in errors.
    pub fn new(source: &str, origin: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(origin, &e))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, _> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat_template", source.to_string())
            .map_err(|e| template_error(origin, &e))?;
        Ok(Template { env })
    }

    /// The prompt text of `messages` (a JSON array of chat-template messages).
    pub fn render(&self, messages: &Value, ctx: &TemplateContext) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat_template")
            .map_err(|e| template_error("chat_template", &e))?;
        tmpl.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => ctx.add_generation_prompt,
            bos_token => &ctx.bos_token,
            eos_token => &ctx.eos_token,
            tools => ctx.tools.as_ref().map(|t| minijinja::Value::from(minijinja::value::Serde(t))),
        })
        .map_err(|e| template_error("chat_template", &e))
    }
}

fn template_error(origin: &str, e: &minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::input(
        origin,
        format!("chat template: {msg}"),
        "fix the template (tokenizer_config.json's chat_template) or the messages it was given",
    )
}

/// An imported model's own chat format, kept in its run as `chat_template.json`: the template,
/// the names its `bos_token` and `eos_token` variables take, and the ids that end a reply
/// (generation_config.json's eos_token_id).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelTemplate {
    pub chat_template: String,
    #[serde(default)]
    pub bos_token: Option<String>,
    #[serde(default)]
    pub eos_token: Option<String>,
    #[serde(default)]
    pub stop_ids: Vec<u32>,
}

impl ModelTemplate {
    pub const FILE: &'static str = "chat_template.json";

    /// The run's own template, or None for a run in frugal's format.
    pub fn load(run: &Path) -> Result<Option<Self>> {
        let path = run.join(Self::FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("is not a chat template file: {e}"),
                "import the model again, or delete the file to use frugal's chat format",
            )
        })
    }

    /// What rendering takes besides the messages.
    pub fn context(&self, add_generation_prompt: bool) -> TemplateContext {
        TemplateContext {
            add_generation_prompt,
            bos_token: self.bos_token.clone().unwrap_or_default(),
            eos_token: self.eos_token.clone().unwrap_or_default(),
            tools: None,
        }
    }
}
