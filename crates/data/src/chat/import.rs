//! Conversations from the shapes instruction data comes in:
//! - `{"messages": [{"role", "content"}]}` (OpenAI; content a string or a list of
//!   `{"type": "text"|"python"|"python_output", "text"}` parts; a `"tool"` message becomes the
//!   output part of the assistant message before it; calculator `tool_calls` become calls),
//! - `{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}` (ShareGPT),
//! - `{"instruction", "input", "output"}` (Alpaca),
//! - `{"question", "answer"}` (GSM8K: `<<48/2=24>>` calculator annotations become tool calls),
//! - `{"prompt", "completion"}`,
//!
//! and from two raw formats: the chitchat dataset (one JSON object of
//! human–human conversations) and BIG-bench `task.json` files (natural_instructions).

use super::{Conversation, Message, Part, PartKind, Role};
use base::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How a source's files are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatFormatKind {
    /// By extension and content: `.jsonl` one conversation per line; `.json` chitchat or BIG-bench.
    #[default]
    Auto,
    Jsonl,
    Chitchat,
    Bigbench,
}

fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// One JSON object in any of the supported shapes.
pub fn conversation_from_json(v: &Value) -> std::result::Result<Conversation, String> {
    let mut messages = Vec::new();
    if let Some(sys) = str_field(v, "system").filter(|s| !s.trim().is_empty()) {
        messages.push(Message::text(Role::System, sys));
    }
    let conv = if let Some(list) = v.get("messages").and_then(Value::as_array) {
        from_messages(list, messages)?
    } else if let Some(list) = v.get("conversations").and_then(Value::as_array) {
        from_sharegpt(list, messages)?
    } else if let (Some(instr), Some(out)) = (str_field(v, "instruction"), str_field(v, "output")) {
        let input = str_field(v, "input").unwrap_or("").trim();
        let user = if input.is_empty() {
            instr.to_string()
        } else {
            format!("{instr}\n\n{input}")
        };
        messages.push(Message::text(Role::User, user));
        messages.push(Message::text(Role::Assistant, out));
        Conversation { messages }
    } else if let (Some(q), Some(a)) = (str_field(v, "question"), str_field(v, "answer")) {
        messages.push(Message::text(Role::User, q));
        messages.push(Message {
            role: Role::Assistant,
            parts: calculator_parts(a),
        });
        Conversation { messages }
    } else if let (Some(p), Some(c)) = (str_field(v, "prompt"), str_field(v, "completion")) {
        messages.push(Message::text(Role::User, p));
        messages.push(Message::text(Role::Assistant, c));
        Conversation { messages }
    } else {
        return Err("no known shape: expected messages, conversations, instruction/output, question/answer or prompt/completion".into());
    };
    conv.validate()?;
    if conv.exchanges() == 0 {
        return Err("the conversation has no assistant reply".into());
    }
    Ok(conv)
}

fn role_of(name: &str) -> std::result::Result<Option<Role>, String> {
    Ok(Some(match name {
        "system" => Role::System,
        "user" | "human" => Role::User,
        "assistant" | "gpt" => Role::Assistant,
        "tool" => return Ok(None),
        other => {
            return Err(format!(
                "unknown role {other:?} (known: system, user, assistant, tool; ShareGPT human, gpt)"
            ))
        }
    }))
}

fn parts_of(content: &Value) -> std::result::Result<Vec<Part>, String> {
    match content {
        Value::String(s) => Ok(vec![Part {
            kind: PartKind::Text,
            text: s.clone(),
        }]),
        Value::Array(items) => items
            .iter()
            .map(|p| {
                let kind = match str_field(p, "type") {
                    Some("text") | None => PartKind::Text,
                    Some("python") => PartKind::Python,
                    Some("python_output") => PartKind::PythonOutput,
                    Some(other) => return Err(format!("unknown content part type {other:?}")),
                };
                let text = str_field(p, "text").ok_or("a content part has no text")?;
                Ok(Part {
                    kind,
                    text: text.to_string(),
                })
            })
            .collect(),
        _ => Err("content must be a string or a list of parts".into()),
    }
}

fn from_messages(
    list: &[Value],
    mut messages: Vec<Message>,
) -> std::result::Result<Conversation, String> {
    // After a tool message, the next assistant message continues the same assistant turn.
    let mut continuing = false;
    for (i, m) in list.iter().enumerate() {
        let role = str_field(m, "role").ok_or(format!("message {i} has no role"))?;
        let mut parts = parts_of(m.get("content").unwrap_or(&Value::Null))
            .map_err(|e| format!("message {i}: {e}"))?;
        if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
            if role != "assistant" {
                return Err(format!(
                    "message {i}: only assistant messages may hold tool_calls"
                ));
            }
            parts.extend(tool_call_parts(calls).map_err(|e| format!("message {i}: {e}"))?);
        }
        // Template messages carry empty content beside tool calls and after a tool's answer.
        if parts.len() > 1 || continuing {
            parts.retain(|p| p.kind != PartKind::Text || !p.text.is_empty());
        }
        match role_of(role).map_err(|e| format!("message {i}: {e}"))? {
            None => {
                let last = messages
                    .last_mut()
                    .filter(|l| l.role == Role::Assistant)
                    .ok_or(format!(
                        "message {i}: a tool message must follow an assistant message"
                    ))?;
                last.parts.extend(parts.into_iter().map(|p| Part {
                    kind: PartKind::PythonOutput,
                    text: p.text,
                }));
                continuing = true;
            }
            Some(Role::Assistant) if continuing => {
                if let Some(last) = messages.last_mut() {
                    last.parts.extend(parts);
                }
                continuing = false;
            }
            Some(role) => {
                messages.push(Message { role, parts });
                continuing = false;
            }
        }
    }
    Ok(Conversation { messages })
}

/// OpenAI's `tool_calls` as calculator calls: each names the calculator and carries its
/// expression in `arguments`, an object or the JSON text of one.
fn tool_call_parts(calls: &Value) -> std::result::Result<Vec<Part>, String> {
    use super::template::{CALCULATOR, CALCULATOR_ARG};
    let calls = calls.as_array().ok_or("tool_calls must be a list")?;
    calls
        .iter()
        .map(|c| {
            let f = &c["function"];
            if f["name"] != CALCULATOR {
                return Err(format!(
                    "tool call to {}: the only tool is {CALCULATOR:?}",
                    f["name"]
                ));
            }
            let args = match &f["arguments"] {
                Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| format!("tool call arguments are not JSON: {e}"))?,
                v => v.clone(),
            };
            let expr = args[CALCULATOR_ARG].as_str().ok_or(format!(
                "tool call arguments need a string {CALCULATOR_ARG:?}"
            ))?;
            Ok(Part {
                kind: PartKind::Python,
                text: expr.to_string(),
            })
        })
        .collect()
}

fn from_sharegpt(
    list: &[Value],
    mut messages: Vec<Message>,
) -> std::result::Result<Conversation, String> {
    for (i, m) in list.iter().enumerate() {
        let from = str_field(m, "from").ok_or(format!("turn {i} has no \"from\""))?;
        let value = str_field(m, "value").ok_or(format!("turn {i} has no \"value\""))?;
        let role = role_of(from)
            .map_err(|e| format!("turn {i}: {e}"))?
            .ok_or(format!(
                "turn {i}: tool turns are not supported in ShareGPT data"
            ))?;
        messages.push(Message::text(role, value));
    }
    Ok(Conversation { messages })
}

/// GSM8K's worked answers mark each calculation as `<<48/2=24>>`; they become a calculator call
/// and its output, so the model learns to use the tool (nanochat does the same).
pub fn calculator_parts(answer: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = answer;
    while let Some(open) = rest.find("<<") {
        let Some(close) = rest[open..].find(">>").map(|c| open + c) else {
            break;
        };
        let inner = &rest[open + 2..close];
        text.push_str(&rest[..open]);
        match inner.rsplit_once('=') {
            Some((expr, result)) => {
                if !text.is_empty() {
                    parts.push(Part {
                        kind: PartKind::Text,
                        text: std::mem::take(&mut text),
                    });
                }
                parts.push(Part {
                    kind: PartKind::Python,
                    text: expr.to_string(),
                });
                parts.push(Part {
                    kind: PartKind::PythonOutput,
                    text: result.to_string(),
                });
            }
            None => text.push_str(inner),
        }
        rest = &rest[close + 2..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part {
            kind: PartKind::Text,
            text,
        });
    }
    parts
}

/// The chitchat dataset: `{id: {"messages": [[{"text", "sender"}, …], …]}}`, each inner list
/// the consecutive lines of one speaker. The first speaker is the user.
pub fn chitchat(v: &Value) -> std::result::Result<Vec<Conversation>, String> {
    let obj = v
        .as_object()
        .ok_or("expected one JSON object of conversations")?;
    let mut out = Vec::new();
    for (id, c) in obj {
        let groups = c
            .get("messages")
            .and_then(Value::as_array)
            .ok_or(format!("conversation {id} has no messages list"))?;
        let mut messages: Vec<Message> = Vec::new();
        let mut speakers: Vec<&str> = Vec::new();
        for g in groups {
            let lines = g.as_array().map(Vec::as_slice).unwrap_or_default();
            let sender = lines.first().and_then(|l| str_field(l, "sender"));
            let text: Vec<&str> = lines
                .iter()
                .filter_map(|l| str_field(l, "text"))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            let Some(sender) = sender.filter(|_| !text.is_empty()) else {
                continue;
            };
            if !speakers.contains(&sender) {
                speakers.push(sender);
            }
            let role = if sender == speakers[0] {
                Role::User
            } else {
                Role::Assistant
            };
            let text = text.join("\n");
            match messages.last_mut() {
                // Two groups by one speaker in a row: one message.
                Some(last) if last.role == role => {
                    last.parts[0].text.push('\n');
                    last.parts[0].text.push_str(&text);
                }
                _ => messages.push(Message::text(role, text)),
            }
        }
        let mut conv = Conversation { messages };
        conv.trim_to_last_reply();
        if speakers.len() <= 2 && conv.exchanges() > 0 {
            out.push(conv);
        }
    }
    Ok(out)
}

/// A BIG-bench `task.json`: the instruction (the "Prompt:" line of natural_instructions' task
/// prefix when there is one, else the whole prefix) and each example's input are the user
/// message, the (first) target the reply.
pub fn bigbench(v: &Value) -> std::result::Result<Vec<Conversation>, String> {
    let examples = v
        .get("examples")
        .and_then(Value::as_array)
        .ok_or("no examples list")?;
    let prefix = str_field(v, "task_prefix").unwrap_or("").trim();
    let instruction = match prefix.rfind("Prompt:") {
        Some(i) => prefix[i + "Prompt:".len()..].trim(),
        None => prefix,
    };
    let mut out = Vec::new();
    for e in examples {
        let input = str_field(e, "input").unwrap_or("").trim();
        let target = match e.get("target") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or(""),
            _ => "",
        }
        .trim();
        if input.is_empty() || target.is_empty() {
            continue;
        }
        let user = if instruction.is_empty() {
            input.to_string()
        } else {
            format!("{instruction}\n\n{input}")
        };
        out.push(Conversation {
            messages: vec![
                Message::text(Role::User, user),
                Message::text(Role::Assistant, target),
            ],
        });
    }
    Ok(out)
}

/// Files under `path`: itself, or for a directory every `.jsonl`/`.json` file beneath it, sorted.
fn files_of(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.exists() {
        return Err(Error::input(
            path.display().to_string(),
            "does not exist",
            "run scripts/fetch-data.sh --group chat, or fix the path",
        ));
    }
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    // Each directory once, by its real path: a symlink back up the tree is not a new one.
    let mut seen = std::collections::HashSet::new();
    while let Some(dir) = stack.pop() {
        let real = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?;
        if !seen.insert(real) {
            continue;
        }
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let p = e.map_err(|e| Error::io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("jsonl" | "json")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every conversation under `path`. A malformed line or file is an error naming it.
pub fn read_conversations(path: &Path, format: ChatFormatKind) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for file in files_of(path)? {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let kind = match format {
            ChatFormatKind::Auto if name.ends_with(".jsonl") => ChatFormatKind::Jsonl,
            other => other,
        };
        if kind == ChatFormatKind::Jsonl {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let conv = serde_json::from_str::<Value>(line)
                    .map_err(|e| e.to_string())
                    .and_then(|v| conversation_from_json(&v));
                out.push(conv.map_err(|e| {
                    Error::input(
                        format!("{name}, line {}", i + 1),
                        e,
                        "fix or remove that line (formats: see `frugal sft --help`)",
                    )
                })?);
            }
            continue;
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(&name, e.to_string(), "the file must be one JSON document")
        })?;
        let kind = match kind {
            ChatFormatKind::Auto if v.get("examples").is_some() => ChatFormatKind::Bigbench,
            ChatFormatKind::Auto => ChatFormatKind::Chitchat,
            k => k,
        };
        // A BIG-bench task with subtasks has a task.json of its own that only describes them.
        if kind == ChatFormatKind::Bigbench && path.is_dir() && v.get("examples").is_none() {
            continue;
        }
        let convs = if kind == ChatFormatKind::Bigbench {
            bigbench(&v)
        } else {
            chitchat(&v)
        };
        out.extend(
            convs
                .map_err(|e| Error::input(&name, e, "set the source's format to match the file"))?,
        );
    }
    Ok(out)
}
