//! The server's state: the model's scheduler, its chat style, request limits, the API keys
//! (kept as SHA-256 digests, compared in full) and the metrics; what every handler reads.

use crate::metrics::Metrics;
use crate::openai::{ApiError, ApiResult};
use crate::scheduler::Scheduler;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use data::chat::{ChatFormat, ChatStyle};
use sha2::{Digest, Sha256};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The chat page: HTML, CSS and vanilla JS in one file, no outside resources.
pub const PAGE: &str = include_str!("chat.html");

/// `localhost` or an IP address, with or without a port: names a request may use to reach a
/// server without keys (any other name may be an attacker's, resolving here).
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Prompts encoded at once, off the async workers; more wait their turn.
const TOKENIZING: usize = 2;

/// How requests are bounded.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Largest request body accepted (413 beyond). The time it may take to arrive is the
    /// listener's (`http::ConnLimits::body_timeout`).
    pub max_body: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_body: 1 << 20 }
    }
}

/// Who may call the API.
#[derive(Clone)]
pub enum Auth {
    /// SHA-256 digests of the accepted keys.
    Keys(Vec<[u8; 32]>),
    /// No key needed: chosen explicitly (`--no-auth`).
    Open,
}

impl Auth {
    pub fn keys<S: AsRef<str>>(keys: &[S]) -> Auth {
        Auth::Keys(
            keys.iter()
                .map(|k| Sha256::digest(k.as_ref().as_bytes()).into())
                .collect(),
        )
    }

    /// Reads keys from a file: one per line; blank lines and `#` comments are skipped.
    pub fn from_file(path: &std::path::Path) -> crate::Result<Auth> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| crate::Error::from(base::Error::io(path.to_path_buf(), source)))?;
        let keys: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if keys.is_empty() {
            return Err(crate::Error::from(base::Error::input(
                path.display().to_string(),
                "holds no API key",
                "write one key per line (for example the output of `openssl rand -hex 24`)",
            )));
        }
        if let Some(k) = keys.iter().find(|k| k.len() < 16) {
            return Err(crate::Error::from(base::Error::input(
                path.display().to_string(),
                format!("a key is {} characters; keys need at least 16", k.len()),
                "use long random keys (for example `openssl rand -hex 24`)",
            )));
        }
        Ok(Auth::keys(&keys))
    }

    /// Whether `presented` is one of the keys, in time that depends only on the number of keys.
    pub(crate) fn accepts(&self, presented: &str) -> bool {
        match self {
            Auth::Open => true,
            Auth::Keys(keys) => {
                let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                keys.iter().fold(false, |found, k| {
                    let diff = k.iter().zip(&d).fold(0u8, |acc, (a, b)| acc | (a ^ b));
                    found | (diff == 0)
                })
            }
        }
    }
}

pub struct App {
    pub scheduler: Scheduler,
    pub tok: Arc<bpe::Tokenizer>,
    /// How conversations become prompts: frugal's format, or an imported model's template.
    pub chat: ChatStyle,
    pub model_name: String,
    pub context_len: usize,
    pub auth: Auth,
    pub allow_origin: Option<HeaderValue>,
    pub limits: RequestLimits,
    pub metrics: Arc<Metrics>,
    /// Unix time the server started: the model's `created`.
    pub created: u64,
    /// Numbers response ids and seeds requests that bring none.
    pub counter: AtomicU64,
    pub(crate) csp: String,
    /// Places for prompts being rendered and encoded off the async workers.
    tokenizing: tokio::sync::Semaphore,
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scheduler: Scheduler,
        tok: Arc<bpe::Tokenizer>,
        chat: ChatStyle,
        model_name: String,
        context_len: usize,
        auth: Auth,
        allow_origin: Option<HeaderValue>,
        limits: RequestLimits,
        metrics: Arc<Metrics>,
    ) -> crate::Result<App> {
        let created = unix_now();
        Ok(App {
            scheduler,
            chat,
            tok,
            model_name,
            context_len,
            auth,
            allow_origin,
            limits,
            metrics,
            created,
            counter: AtomicU64::new(created << 16),
            csp: crate::page::content_security_policy(PAGE),
            tokenizing: tokio::sync::Semaphore::new(TOKENIZING),
        })
    }

    /// Runs `f` (rendering or encoding a prompt: time in the text's length) on the blocking
    /// pool, at most `TOKENIZING` at once, so that the async worker keeps answering others —
    /// `/health` included — while a large prompt is encoded.
    pub async fn tokenize<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&App) -> T + Send + 'static,
    ) -> ApiResult<T> {
        let failed =
            |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e);
        let _place = self
            .tokenizing
            .acquire()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let app = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&app))
            .await
            .map_err(|e| failed(format!("encoding the prompt failed: {e}")))
    }

    /// Without keys, a browser is the risk: a page elsewhere could post to the server
    /// (CSRF) or reach it under a name of its own that resolves to this machine (DNS
    /// rebinding). So the Host must be an IP address or `localhost`, and an Origin, when sent,
    /// this server's own or the allowed one.
    fn check_local(&self, headers: &HeaderMap) -> ApiResult<()> {
        let forbidden = |msg: String| ApiError::new(StatusCode::FORBIDDEN, "permission_error", msg);
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_local_host(host) {
            return Err(forbidden(format!(
                "the Host header {host:?} is not an IP address or localhost; without API keys the server answers only those (start it with --api-keys to serve a name)"
            )));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let same = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .map(|(_, h)| h);
            if same != Some(host) && self.allow_origin.as_ref() != Some(origin) {
                return Err(forbidden(format!(
                    "requests from the page at {origin:?} are not allowed; without API keys only this server's own page may call it (or the origin given to --allow-origin)"
                )));
            }
        }
        Ok(())
    }

    /// Without keys, a body must say it is JSON: a form or `text/plain` post is what a page
    /// elsewhere can send without asking (a CORS "simple request").
    pub(crate) fn check_json(&self, headers: &HeaderMap) -> ApiResult<()> {
        if !matches!(self.auth, Auth::Open) {
            return Ok(());
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if json {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "send the body with Content-Type: application/json",
            ))
        }
    }

    /// The chat format over the served tokenizer.
    pub fn format(&self) -> ChatFormat<'_> {
        ChatFormat::with_style(&self.tok, self.chat.clone())
    }

    /// Checks the bearer key.
    pub fn authorize(&self, headers: &HeaderMap) -> ApiResult<()> {
        if matches!(self.auth, Auth::Open) {
            return self.check_local(headers);
        }
        let unauthorized = |msg: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", msg)
                .code("invalid_api_key")
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                unauthorized("no API key: send the header Authorization: Bearer YOUR_KEY")
            })?;
        // The scheme is case-insensitive (RFC 9110 §11.1): `bearer KEY` is as good.
        let key = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| &value[7..])
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer YOUR_KEY`"))?;
        if self.auth.accepts(key.trim()) {
            Ok(())
        } else {
            Err(unauthorized("the API key is not valid"))
        }
    }
}

/// Seconds since the Unix epoch: OpenAI's `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
