//! A server over the tiny config's model (random weights, byte-level tokenizer), in-process on
//! a free port, for the API's and the chat page's tests (included by path next to `common`).

use data::chat::ChatTokens;
use serve::api::{App, Auth, RequestLimits};
use serve::http::{ConnLimits, Server};
use serve::metrics::Metrics;
use serve::scheduler::{Limits, Scheduler};
use std::sync::Arc;
use std::time::Duration;

pub const KEY: &str = "test-key-0123456789abcdef";
pub const CONTEXT: usize = 160;

pub struct Setup {
    pub limits: Limits,
    pub auth: Auth,
    pub allow_origin: Option<&'static str>,
    pub request: RequestLimits,
    pub conn: ConnLimits,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            limits: Limits::default(),
            auth: Auth::keys(&[KEY]),
            allow_origin: None,
            request: RequestLimits::default(),
            conn: ConnLimits {
                shutdown_grace: Duration::from_millis(300),
                ..ConnLimits::default()
            },
        }
    }
}

/// The model and tokenizer every server of these tests serves (the same each call).
pub fn model() -> (model::Llama, Arc<bpe::Tokenizer>) {
    let tok = Arc::new(bpe::Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap());
    let cfg = train::Config::preset(
        "tiny",
        &[
            format!("model.vocab_size={}", tok.vocab_size()),
            format!("model.context_len={CONTEXT}"),
            "model.init_std=0.3".into(),
        ],
    )
    .unwrap();
    (model::Llama::init(cfg.model, 1), tok)
}

pub fn start(s: Setup) -> Server {
    let (model, tok) = model();
    let t = ChatTokens::from_tokenizer(&tok).unwrap();
    let metrics = Arc::new(Metrics::default());
    let scheduler = Scheduler::start(
        Arc::new(model),
        Some((tok.clone(), t)),
        s.limits,
        metrics.clone(),
    );
    let app = App::new(
        scheduler,
        tok,
        data::chat::ChatStyle::Frugal(t),
        "tiny".into(),
        CONTEXT,
        s.auth,
        s.allow_origin.map(|o| o.parse().unwrap()),
        s.request,
        metrics,
    )
    .unwrap();
    Server::start(Arc::new(app), "127.0.0.1:0", s.conn).unwrap()
}
