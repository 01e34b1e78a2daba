//! The generating endpoints: a request is checked, rendered to tokens, queued on the engine
//! thread, and its tokens turned back into text — all at once for a plain response, or chunk
//! by chunk as server-sent events. Both paths build the text the same way ([`Reply`]), so a
//! streamed answer is the whole answer cut in pieces.
//!
//! A stream's frames go through a small bounded channel to the response body; when the client
//! disconnects, the body is dropped, the channel closes, and the engine thread sees the job's
//! receiver gone and ends the sequence at its next step.

use crate::openai::{self, ApiError, ApiResult, Generation, Prompt, StopMatcher};
use crate::scheduler::{Job, Out, Submit};
use crate::state::{unix_now, App};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use data::chat::stream::TextStream;
use data::chat::ChatFormat;
use engine::{Finish, Report, Request, TokenLogprob};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        }
    }
}

/// One queued generation, before its reply is built.
struct Started {
    kind: Kind,
    gen: Generation,
    prompt_tokens: usize,
    rx: mpsc::UnboundedReceiver<Out>,
    arrived: Instant,
    id: String,
    /// A token has arrived (the time to the first one is measured).
    began: bool,
    report: Report,
    /// A completion's prompt as the client sent it (no <|bos|> of the server's), to come back
    /// before the reply (`echo`).
    echo: Option<Vec<u32>>,
}

pub async fn chat(app: Arc<App>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let arrived = Instant::now();
    app.authorize(&headers)?;
    let body = app.read_body(&headers, body).await?;
    let req = openai::chat_request(&body)?;
    app.check_model(&req.gen.model)?;
    let conversation = req.conversation;
    let prompt = app
        .tokenize(move |app| {
            app.format()
                .render_prompt(&conversation, app.context_len - 1)
        })
        .await?
        .map_err(|e| {
            ApiError::invalid("messages", one_line(&e.to_string())).code("context_length_exceeded")
        })?;
    let stop = app.format().reply_stops();
    let started = start(
        &app,
        Kind::Chat,
        req.gen,
        prompt,
        stop,
        arrived,
        Report {
            top: req.logprobs,
            prompt: false,
        },
    )?;
    Ok(respond(app, started).await)
}

pub async fn completion(app: Arc<App>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let arrived = Instant::now();
    app.authorize(&headers)?;
    let body = app.read_body(&headers, body).await?;
    let req = openai::completion_request(&body)?;
    app.check_model(&req.gen.model)?;
    // A text prompt follows the model's <|bos|>; token ids are the client's as they are.
    let (prompt, shown) = match req.prompt {
        Prompt::Text(text) => {
            let ids = encode_completion(&app, text).await?;
            (ids, 1)
        }
        Prompt::Ids(ids) => {
            let vocab = app.tok.vocab_size();
            if let Some(i) = ids.iter().position(|&id| id as usize >= vocab) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!(
                        "prompt[{i}] is token {}, outside the vocabulary of {vocab}",
                        ids[i]
                    ),
                ));
            }
            (ids, 0)
        }
    };
    if prompt.len() >= app.context_len {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "the prompt is {} tokens; the context is {}, and the reply needs room",
                prompt.len(),
                app.context_len
            ),
        )
        .code("context_length_exceeded"));
    }
    let report = Report {
        top: req.logprobs,
        prompt: req.echo && req.logprobs.is_some(),
    };
    let echo = req.echo.then(|| prompt[shown..].to_vec());
    let mut started = start(
        &app,
        Kind::Completion,
        req.gen,
        prompt,
        vec![app.format().bos()],
        arrived,
        report,
    )?;
    started.echo = echo;
    Ok(respond(app, started).await)
}

/// A completion's text prompt as tokens after <|bos|>. Text that cannot fit is refused before
/// it is encoded (see `ChatFormat::render_prompt`).
async fn encode_completion(app: &Arc<App>, text: String) -> ApiResult<Vec<u32>> {
    let most = (app.context_len - 1).saturating_mul(app.tok.max_token_bytes());
    if text.len() > most {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "the prompt is {} bytes, over the limit of {most} bytes that the context of {} tokens can cover",
                text.len(),
                app.context_len
            ),
        )
        .code("context_length_exceeded"));
    }
    let mut prompt = vec![app.format().bos()];
    prompt.extend(app.tokenize(move |app| app.tok.encode(&text)).await?);
    Ok(prompt)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        one_line(&e.to_string()),
    )
}

fn one_line(s: &str) -> String {
    s.replace("\nHINT: ", " — ").replace('\n', " ")
}

/// Checks the token budget and queues the job.
fn start(
    app: &App,
    kind: Kind,
    gen: Generation,
    prompt: Vec<u32>,
    stop: Vec<u32>,
    arrived: Instant,
    report: Report,
) -> ApiResult<Started> {
    let room = app.context_len - prompt.len();
    let max_tokens = match gen.max_tokens {
        None => room,
        Some(m) if m <= room => m,
        Some(m) => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "the prompt is {} tokens and max_tokens is {m}: together over the context of {} (at most {room} here)",
                    prompt.len(),
                    app.context_len
                ),
            )
            .code("context_length_exceeded"));
        }
    };
    let stop = if gen.ignore_eos { Vec::new() } else { stop };
    let n = app.counter.fetch_add(1, Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let prompt_tokens = prompt.len();
    let job = Job {
        request: Request {
            prompt,
            sampling: gen.sampling,
            max_tokens,
            stop,
            seed: gen.seed.unwrap_or(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        },
        report,
        tx,
    };
    match app.scheduler.submit(job) {
        Submit::Queued => Ok(Started {
            kind,
            gen,
            prompt_tokens,
            rx,
            arrived,
            id: format!("{}-{n:x}", kind.id_prefix()),
            began: false,
            report,
            echo: None,
        }),
        Submit::Full => {
            app.metrics.rejected.fetch_add(1, Relaxed);
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "the server is at capacity (its queue is full); retry after a moment",
            )
            .retry_after(1))
        }
        Submit::Closed => Err(shutting_down()),
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "the server is shutting down; retry on another replica or after it restarts",
    )
    .retry_after(5)
}

/// Text of a reply as it grows: tokens to UTF-8, then stop strings.
struct Reply<'a> {
    text: TextStream<'a>,
    stops: StopMatcher,
    tokens: usize,
    /// A stop string was seen: the reply is over.
    stopped: bool,
}

impl<'a> Reply<'a> {
    fn new(f: &'a ChatFormat<'a>, stops: Vec<String>) -> Self {
        Reply {
            text: TextStream::new(f),
            stops: StopMatcher::new(stops),
            tokens: 0,
            stopped: false,
        }
    }

    /// The text one token adds.
    fn token(&mut self, id: u32) -> String {
        self.tokens += 1;
        let piece = self.text.push(id);
        let (out, hit) = self.stops.push(&piece);
        self.stopped |= hit;
        out
    }

    /// What is left when the engine ends the reply.
    fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let piece = self.text.finish();
        let (mut out, hit) = self.stops.push(&piece);
        self.stopped |= hit;
        if !hit {
            out.push_str(&self.stops.finish());
        }
        out
    }
}

/// How a reply ended.
enum End {
    Finished(&'static str),
    Shutdown,
    Failed(String),
}

/// OpenAI's finish reason: a stop token is "stop"; max_tokens or the context is "length".
fn reason(finish: Finish) -> &'static str {
    if finish == Finish::Stop {
        "stop"
    } else {
        "length"
    }
}

/// What the engine's next message adds to a reply: text, and the log-probabilities of the
/// token behind it and of the prompt (those come with the first token, or with the end when
/// nothing was generated), as the request asked.
struct Piece {
    text: String,
    /// The token, and its log-probability (none for a forced one, or when not asked for).
    token: Option<(u32, Option<TokenLogprob>)>,
    prompt: Vec<TokenLogprob>,
    /// How the reply ended, with its last piece.
    end: Option<End>,
}

impl Piece {
    fn last(text: String, end: End, prompt: Vec<TokenLogprob>) -> Self {
        Piece {
            text,
            token: None,
            prompt,
            end: Some(end),
        }
    }
}

async fn next_piece(app: &App, s: &mut Started, reply: &mut Reply<'_>) -> Piece {
    match s.rx.recv().await {
        Some(Out::Token {
            token,
            logprob,
            prompt_logprobs,
            ..
        }) => {
            if !std::mem::replace(&mut s.began, true) {
                app.metrics.ttft.observe(s.arrived.elapsed());
            }
            Piece {
                text: reply.token(token),
                token: Some((token, logprob)),
                prompt: prompt_logprobs,
                end: reply.stopped.then_some(End::Finished("stop")),
            }
        }
        Some(Out::Done { shutdown: true, .. }) => {
            Piece::last(String::new(), End::Shutdown, Vec::new())
        }
        Some(Out::Done { completion, .. }) => {
            let rest = reply.finish();
            let why = if reply.stopped {
                "stop"
            } else {
                reason(completion.finish)
            };
            Piece::last(rest, End::Finished(why), completion.prompt_logprobs)
        }
        Some(Out::Failed(e)) => Piece::last(String::new(), End::Failed(e), Vec::new()),
        None => Piece::last(
            String::new(),
            End::Failed("the engine thread ended".into()),
            Vec::new(),
        ),
    }
}

async fn respond(app: Arc<App>, s: Started) -> Response {
    if s.gen.stream {
        stream(app, s)
    } else {
        whole(app, s).await
    }
}

async fn whole(app: Arc<App>, mut s: Started) -> Response {
    let f = app.format();
    let mut reply = Reply::new(&f, s.gen.stop.clone());
    let mut text = String::new();
    // The generated tokens' log-probabilities, and the prompt's.
    let (mut generated, mut prompt) = (Vec::new(), Vec::new());
    let end = loop {
        let p = next_piece(&app, &mut s, &mut reply).await;
        text.push_str(&p.text);
        generated.extend(p.token);
        prompt.extend(p.prompt);
        if let Some(end) = p.end {
            break end;
        }
    };
    // Dropping the receiver ends the sequence if it is still running (a stop string).
    drop(s.rx);
    app.metrics.latency.observe(s.arrived.elapsed());
    let finish = match end {
        End::Finished(r) => r,
        End::Shutdown => return shutting_down().into_response(),
        End::Failed(e) => return internal(e).into_response(),
    };
    let choice = match s.kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": s.report.top.map(|_| chat_logprobs(&app.tok, &generated)),
            "finish_reason": finish,
        }),
        Kind::Completion => {
            let echoed = s.echo.as_deref().unwrap_or_default();
            let shown = match echoed.is_empty() {
                true => String::new(),
                false => app.tok.decode_lossy(echoed).unwrap_or_default(),
            };
            let logprobs = match s.report.top {
                Some(_) => completion_logprobs(&app.tok, echoed, &prompt, &generated),
                None => Value::Null,
            };
            json!({
                "index": 0,
                "text": shown + &text,
                "logprobs": logprobs,
                "finish_reason": finish,
            })
        }
    };
    Json(json!({
        "id": s.id,
        "object": s.kind.object(false),
        "created": unix_now(),
        "model": s.gen.model,
        "choices": [choice],
        "usage": openai::usage(s.prompt_tokens, reply.tokens),
    }))
    .into_response()
}

/// A chat reply's `logprobs` object: `content`, one entry per token the model chose (the
/// calculator's forced output has none), each with its text, log-probability, UTF-8 bytes and
/// likeliest alternatives.
fn chat_logprobs(tok: &bpe::Tokenizer, generated: &[(u32, Option<TokenLogprob>)]) -> Value {
    let entry = |id: u32, logprob: f64| {
        let bytes = tok.decode(&[id]).unwrap_or_default();
        json!({"token": String::from_utf8_lossy(&bytes), "logprob": logprob, "bytes": bytes})
    };
    let content: Vec<Value> = generated
        .iter()
        .filter_map(|(_, t)| t.as_ref())
        .map(|t| {
            let mut e = entry(t.token, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|&(i, lp)| entry(i, lp)).collect();
            e
        })
        .collect();
    json!({"content": content})
}

/// A completion's `logprobs` object, OpenAI's legacy shape: each token's text, log-probability
/// and likeliest alternatives ({text: logprob}), and where its text starts (in characters).
/// A token the calculator forced into the reply has no score (null): the model did not choose
/// it.
/// With `echo` the prompt's tokens come first; the engine scored each after the ones before
/// it, so only a prompt that began with the client's own first token (ids, not text after
/// the server's <|bos|>) has a first token without a score (null).
fn completion_logprobs(
    tok: &bpe::Tokenizer,
    echoed: &[u32],
    prompt: &[TokenLogprob],
    generated: &[(u32, Option<TokenLogprob>)],
) -> Value {
    let piece = |id: u32| tok.decode_lossy(&[id]).unwrap_or_default();
    // The scores cover the echoed prompt's last tokens: all of them after <|bos|>, all but
    // the first for ids.
    let unscored = echoed.len().saturating_sub(prompt.len());
    let echo = echoed[..unscored].iter().map(|&id| (id, None));
    let scored = prompt.iter().map(|t| (t.token, Some(t)));
    let generated = generated.iter().map(|(id, t)| (*id, t.as_ref()));
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    let mut at = 0usize;
    for (id, t) in echo.chain(scored).chain(generated) {
        let text = piece(id);
        offsets.push(at);
        at += text.chars().count();
        tokens.push(Value::String(text));
        lps.push(t.map_or(Value::Null, |t| json!(t.logprob)));
        tops.push(t.map_or(Value::Null, |t| {
            let top: serde_json::Map<String, Value> =
                t.top.iter().map(|&(i, lp)| (piece(i), json!(lp))).collect();
            Value::Object(top)
        }));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// A response body fed by a channel of ready frames.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// One server-sent event. JSON may hold U+0085, U+2028 and U+2029 raw, but line readers that
/// follow Unicode rather than the SSE spec (Python's `str.splitlines`, used by httpx) end a line
/// there and cut the event in two; escaped, they read the same to every JSON parser.
fn event(v: &Value) -> Bytes {
    let json = v.to_string();
    let mut out = String::with_capacity(json.len() + 8);
    out.push_str("data: ");
    // One pass, and only for the rare event that holds one of them.
    if json.contains(['\u{85}', '\u{2028}', '\u{2029}']) {
        for c in json.chars() {
            match c {
                '\u{85}' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(&json);
    }
    out.push_str("\n\n");
    Bytes::from(out)
}

fn stream(app: Arc<App>, s: Started) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(stream_events(app, s, tx));
    let mut r = Response::new(Body::new(ChannelBody(rx)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Writes a job's reply as server-sent events; returns when the reply ends or the client
/// has gone (a send fails), dropping the job's receiver either way.
async fn stream_events(app: Arc<App>, mut s: Started, tx: mpsc::Sender<Bytes>) {
    let f = app.format();
    let mut reply = Reply::new(&f, s.gen.stop.clone());
    let created = unix_now();
    let (kind, id, model) = (s.kind, s.id.clone(), s.gen.model.clone());
    let tok = app.tok.clone();
    let report = s.report;
    // A chunk's text, its tokens' log-probabilities (when asked for), how the reply ended.
    let chunk = |delta: Option<&str>,
                 scored: &[(u32, Option<TokenLogprob>)],
                 finish: Option<&str>,
                 first: bool|
     -> Value {
        let choice = match kind {
            Kind::Chat => {
                let mut d = json!({});
                if first {
                    d["role"] = json!("assistant");
                }
                if let Some(t) = delta {
                    d["content"] = json!(t);
                }
                let lp = report.top.map(|_| chat_logprobs(&tok, scored));
                json!({"index": 0, "delta": d, "logprobs": lp, "finish_reason": finish})
            }
            Kind::Completion => {
                let lp = report
                    .top
                    .map(|_| completion_logprobs(&tok, &[], &[], scored));
                json!({"index": 0, "text": delta.unwrap_or(""), "logprobs": lp, "finish_reason": finish})
            }
        };
        json!({
            "id": id,
            "object": kind.object(true),
            "created": created,
            "model": model,
            "choices": [choice],
        })
    };
    let first = chunk(Some(""), &[], None, true);
    if s.kind == Kind::Chat && tx.send(event(&first)).await.is_err() {
        return;
    }
    // Tokens whose text the stop matcher still holds wait for the chunk that sends it.
    let mut scored = Vec::new();
    let end = loop {
        let Piece {
            text, token, end, ..
        } = next_piece(&app, &mut s, &mut reply).await;
        scored.extend(token.filter(|_| report.top.is_some()));
        if !text.is_empty() {
            let c = chunk(Some(&text), &scored, None, false);
            if tx.send(event(&c)).await.is_err() {
                return; // the client went away; dropping s.rx tells the engine
            }
            scored.clear();
        }
        if let Some(end) = end {
            break end;
        }
    };
    drop(s.rx);
    app.metrics.latency.observe(s.arrived.elapsed());
    let mut frames = Vec::new();
    match end {
        End::Finished(r) => {
            frames.push(event(&chunk(None, &scored, Some(r), false)));
            if s.gen.include_usage {
                let mut u = chunk(None, &[], None, false);
                u["choices"] = json!([]);
                u["usage"] = openai::usage(s.prompt_tokens, reply.tokens);
                frames.push(event(&u));
            }
        }
        // The stream ends cleanly with an error event a client can show.
        End::Shutdown => frames.push(event(&shutting_down().body())),
        End::Failed(e) => frames.push(event(&internal(e).body())),
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    for f in frames {
        if tx.send(f).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_hold_no_unicode_line_breaks() {
        let v = json!({"content": "a\u{85}b\u{2028}c\u{2029}d\ne"});
        let e = String::from_utf8(event(&v).to_vec()).unwrap();
        assert!(!e.contains(['\u{85}', '\u{2028}', '\u{2029}']), "{e:?}");
        assert_eq!(
            e.matches('\n').count(),
            2,
            "only the event's own end: {e:?}"
        );
        let back: Value = serde_json::from_str(e.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(back, v);
    }
}
