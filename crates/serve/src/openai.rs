//! OpenAI's wire format: request bodies read strictly (a wrong type names its field), errors in
//! OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, and stop strings matched
//! on the streamed text. Fields frugal cannot honour (tools, n > 1, penalties other than its
//! own) are refused with a 400 rather than silently ignored.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use data::chat::{Conversation, Message, Role};
use engine::SamplingParams;
use serde_json::{json, Map, Value};

/// An API failure in OpenAI's error shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// "invalid_request_error", "authentication_error", "rate_limit_error", "server_error".
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 about one field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        let h = r.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// What every generating endpoint shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub model: String,
    /// None: as many as the context leaves room for.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub seed: Option<u64>,
    /// Up to four strings; the reply ends before the first one that appears.
    pub stop: Vec<String>,
    pub stream: bool,
    /// Streaming only: send a last chunk with the token counts.
    pub include_usage: bool,
    /// Generate max_tokens whatever the model says (vLLM's extension, for benchmarks).
    pub ignore_eos: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub gen: Generation,
    pub conversation: Conversation,
    /// `logprobs: true`: each reply token's log-probability, with `top_logprobs` (0 to 20) of
    /// the likeliest tokens at its place; None: none.
    pub logprobs: Option<usize>,
}

/// Most alternatives per token a chat reply's `top_logprobs` may ask for (OpenAI's limit).
pub const MAX_CHAT_LOGPROBS: usize = engine::logprobs::MAX_TOP;

#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    pub gen: Generation,
    pub prompt: Prompt,
    /// Each token's log-probability and this many of the likeliest tokens at its place (OpenAI's
    /// `logprobs`, 0 to 5); None: none.
    pub logprobs: Option<usize>,
    /// The prompt comes back before the completion, scored when `logprobs` is set: what
    /// log-likelihood evaluation (lm-evaluation-harness's `local-completions`) asks.
    pub echo: bool,
}

/// A completion's prompt: text (encoded after the model's <|bos|>), or token ids as the
/// client's own tokenizer made them (used as they are).
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// Most alternatives per token a completion's `logprobs` may ask for (OpenAI's limit).
pub const MAX_COMPLETION_LOGPROBS: usize = 5;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field of the body, None when absent or null.
fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.get(name).filter(|v| !v.is_null())
}

fn number(o: &Map<String, Value>, name: &str) -> ApiResult<Option<f64>> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v) => Err(ApiError::invalid(
            name,
            format!("{name} must be a number, not {}", type_name(v)),
        )),
    }
}

fn integer(o: &Map<String, Value>, name: &str) -> ApiResult<Option<i64>> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(_)) => Ok(Some(i64::MAX)),
            _ => Err(ApiError::invalid(
                name,
                format!("{name} must be an integer, not {n}"),
            )),
        },
        Some(v) => Err(ApiError::invalid(
            name,
            format!("{name} must be an integer, not {}", type_name(v)),
        )),
    }
}

fn boolean(o: &Map<String, Value>, name: &str) -> ApiResult<Option<bool>> {
    match field(o, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::invalid(
            name,
            format!("{name} must be a boolean, not {}", type_name(v)),
        )),
    }
}

fn unsupported(name: &str, why: &str) -> ApiError {
    ApiError::invalid(
        name,
        format!("{name} is not supported by this server: {why}"),
    )
    .code("unsupported_parameter")
}

/// The body as a JSON object.
pub fn object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(v) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the request body must be a JSON object, not {}", type_name(&v)),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the request body is not valid JSON ({e}); send UTF-8 JSON with Content-Type: application/json"),
        )),
    }
}

fn generation(o: &Map<String, Value>) -> ApiResult<Generation> {
    let model = match field(o, "model") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(ApiError::invalid(
                "model",
                format!("model must be a string, not {}", type_name(v)),
            ))
        }
        None => {
            return Err(ApiError::invalid(
                "model",
                "model is required (GET /v1/models lists the one this server has)",
            ))
        }
    };
    // max_completion_tokens is the newer name of max_tokens.
    let max = match integer(o, "max_completion_tokens")? {
        Some(m) => Some(("max_completion_tokens", m)),
        None => integer(o, "max_tokens")?.map(|m| ("max_tokens", m)),
    };
    // 0 generates nothing: what a completion that echoes its prompt to score it asks
    // (`completion_request` refuses it otherwise).
    let max_tokens = match max {
        None => None,
        Some((name, m)) if m < 0 => {
            return Err(ApiError::invalid(
                name,
                format!("{name} is {m}; it must be at least 0 (0 with echo: score the prompt)"),
            ))
        }
        Some((_, m)) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
    };
    let temperature = number(o, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature is {temperature}; it must be between 0 and 2"),
        ));
    }
    let top_p = number(o, "top_p")?.unwrap_or(1.0);
    // The engine samples in f32: a value that rounds to 0 there is out of range too.
    if !(top_p as f32 > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p is {top_p}; it must be in (0, 1], and at least 1e-38"),
        ));
    }
    let top_k = match integer(o, "top_k")? {
        None => 0,
        Some(k) if k >= 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k is {k}; it must be 0 (off) or more"),
            ))
        }
    };
    let repetition_penalty = number(o, "repetition_penalty")?.unwrap_or(1.0);
    if !(repetition_penalty as f32 > 0.0 && repetition_penalty <= 10.0) {
        return Err(ApiError::invalid(
            "repetition_penalty",
            format!(
                "repetition_penalty is {repetition_penalty}; it must be in (0, 10], and at least 1e-38 (1: off)"
            ),
        ));
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if number(o, name)?.is_some_and(|p| p != 0.0) {
            return Err(unsupported(name, "use repetition_penalty (1: off)"));
        }
    }
    if let Some(n) = integer(o, "n")? {
        if n != 1 {
            return Err(unsupported("n", "one choice per request; send n requests"));
        }
    }
    for name in ["tools", "functions", "logit_bias"] {
        if field(o, name).is_some() {
            return Err(unsupported(
                name,
                "the model's only tool is its built-in calculator",
            ));
        }
    }
    if let Some(f) = field(o, "response_format") {
        if f.get("type").and_then(Value::as_str) != Some("text") {
            return Err(unsupported("response_format", "replies are plain text"));
        }
    }
    let seed = integer(o, "seed")?.map(|s| s as u64);
    let stop = match field(o, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid("stop", "stop must be a string or an array of strings")
            })?,
        Some(v) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "stop must be a string or an array of strings, not {}",
                    type_name(v)
                ),
            ))
        }
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::invalid(
            "stop",
            "stop takes up to 4 non-empty strings of at most 256 bytes",
        ));
    }
    let stream = boolean(o, "stream")?.unwrap_or(false);
    let include_usage = match field(o, "stream_options") {
        None => false,
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ))
        }
        Some(Value::Object(so)) => boolean(so, "include_usage")
            .map_err(|_| {
                ApiError::invalid(
                    "stream_options.include_usage",
                    "stream_options.include_usage must be a boolean",
                )
            })?
            .unwrap_or(false),
        Some(v) => {
            return Err(ApiError::invalid(
                "stream_options",
                format!("stream_options must be an object, not {}", type_name(v)),
            ))
        }
    };
    Ok(Generation {
        model,
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_k,
            top_p: top_p as f32,
            repetition_penalty: repetition_penalty as f32,
        },
        seed,
        stop,
        stream,
        include_usage,
        ignore_eos: boolean(o, "ignore_eos")?.unwrap_or(false),
    })
}

/// A message's text: a string, or an array of `{"type": "text", "text": ...}` parts.
fn content(i: usize, v: Option<&Value>) -> ApiResult<String> {
    let param = format!("messages[{i}].content");
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            &param,
                            format!("{param}: only text parts ({{\"type\": \"text\", \"text\": \"...\"}}) are supported"),
                        ))
                    }
                }
            }
            Ok(s)
        }
        Some(v) => Err(ApiError::invalid(
            &param,
            format!(
                "{param} must be a string or an array of text parts, not {}",
                type_name(v)
            ),
        )),
        None => Err(ApiError::invalid(&param, format!("{param} is required"))),
    }
}

/// `POST /v1/chat/completions`.
pub fn chat_request(body: &[u8]) -> ApiResult<ChatRequest> {
    let o = object(body)?;
    let gen = generation(&o)?;
    nothing_to_do(&gen, false)?;
    let logprobs = chat_logprobs(&o)?;
    let list = match field(&o, "messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "messages is empty; send at least one user message",
            ))
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "messages",
                format!("messages must be an array, not {}", type_name(v)),
            ))
        }
        None => return Err(ApiError::invalid("messages", "messages is required")),
    };
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].role"),
                    format!(
                    "messages[{i}].role {other:?} is not one of system, developer, user, assistant"
                ),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].role"),
                    format!("messages[{i}] needs a role (a string)"),
                ))
            }
        };
        messages.push(Message::text(role, content(i, m.get("content"))?));
    }
    let conversation = Conversation { messages };
    conversation
        .validate()
        .map_err(|e| ApiError::invalid("messages", e))?;
    if conversation.messages.last().map(|m| m.role) != Some(Role::User) {
        return Err(ApiError::invalid(
            "messages",
            "the last message must be the user's: the reply answers it",
        ));
    }
    Ok(ChatRequest {
        gen,
        conversation,
        logprobs,
    })
}

/// `POST /v1/completions`: a plain continuation of `prompt` (a string, an array of token ids,
/// or an array of one of either).
pub fn completion_request(body: &[u8]) -> ApiResult<CompletionRequest> {
    let o = object(body)?;
    let gen = generation(&o)?;
    let echo = boolean(&o, "echo")?.unwrap_or(false);
    if integer(&o, "best_of")?.is_some_and(|b| b != 1) {
        return Err(unsupported("best_of", "one sample per request"));
    }
    if field(&o, "suffix").is_some() {
        return Err(unsupported("suffix", "no fill-in-the-middle"));
    }
    let logprobs = match integer(&o, "logprobs")? {
        None => None,
        Some(k) if (0..=MAX_COMPLETION_LOGPROBS as i64).contains(&k) => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("logprobs is {k}; it must be 0 to {MAX_COMPLETION_LOGPROBS} (the likeliest tokens returned per token)"),
            ))
        }
    };
    if gen.stream && echo {
        return Err(unsupported(
            "echo",
            "not with stream; send the request with stream false",
        ));
    }
    nothing_to_do(&gen, echo)?;
    let prompt = prompt(field(&o, "prompt"))?;
    Ok(CompletionRequest {
        gen,
        prompt,
        logprobs,
        echo,
    })
}

/// A chat request's `logprobs` (a boolean) and `top_logprobs` (0 to 20, only with logprobs).
fn chat_logprobs(o: &Map<String, Value>) -> ApiResult<Option<usize>> {
    let on = boolean(o, "logprobs")?.unwrap_or(false);
    match (on, integer(o, "top_logprobs")?) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        )),
        (true, None) => Ok(Some(0)),
        (true, Some(k)) if (0..=MAX_CHAT_LOGPROBS as i64).contains(&k) => Ok(Some(k as usize)),
        (true, Some(k)) => Err(ApiError::invalid(
            "top_logprobs",
            format!("top_logprobs is {k}; it must be 0 to {MAX_CHAT_LOGPROBS}"),
        )),
    }
}

/// Refuses max_tokens 0 unless the prompt comes back (echo): a request that neither
/// generates nor returns anything is a mistake.
fn nothing_to_do(gen: &Generation, echo: bool) -> ApiResult<()> {
    match gen.max_tokens {
        Some(0) if !echo => Err(ApiError::invalid(
            "max_tokens",
            "max_tokens is 0; it must be at least 1 (0 only with echo, to score the prompt)",
        )),
        _ => Ok(()),
    }
}

/// A completion's `prompt`: a string, an array of token ids, or an array holding one of those.
fn prompt(v: Option<&Value>) -> ApiResult<Prompt> {
    let ids = |a: &[Value]| -> ApiResult<Prompt> {
        let ids = a.iter().enumerate().map(|(i, v)| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "prompt",
                        format!("prompt[{i}] is {v}; token ids are integers from 0"),
                    )
                })
        });
        Ok(Prompt::Ids(ids.collect::<ApiResult<Vec<u32>>>()?))
    };
    match v {
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => {
            ids(a[0].as_array().map_or(&[], Vec::as_slice))
        }
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => ids(a),
        Some(Value::Array(a)) if a.is_empty() => {
            Err(ApiError::invalid("prompt", "prompt is empty"))
        }
        Some(Value::Array(_)) => Err(unsupported(
            "prompt",
            "one prompt per request (a string or an array of token ids); send several requests",
        )),
        Some(v) => Err(ApiError::invalid(
            "prompt",
            format!(
                "prompt must be a string or an array of token ids, not {}",
                type_name(v)
            ),
        )),
        None => Err(ApiError::invalid("prompt", "prompt is required")),
    }
}

/// Finds stop strings in text that arrives in pieces. Text that could still be the start of a
/// stop string is held back, so a client never sees part of one.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops,
            held: String::new(),
        }
    }

    /// Adds text; returns what may be sent now and whether a stop string ended the reply
    /// (the text before it is returned; nothing after it ever is).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (text.to_string(), false);
        }
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&k| s.is_char_boundary(k))
                    .filter(|&k| self.held.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// What is still held when the reply ends without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

#[cfg(test)]
mod tests;
