//! frugal's HTTP side, the only async crate.
//!
//! Serving: an OpenAI-compatible API and a web chat page ([`api`], [`generate`], [`openai`])
//! over continuous batching on an engine thread ([`scheduler`]), with Prometheus metrics
//! ([`metrics`]) and a listener that bounds slow clients and shuts down gracefully ([`http`],
//! with request bodies read under its limits by [`body`]).
//!
//! The human-preference annotation stage: the annotation server and its page ([`annotate`])
//! over the preference store (crate `store`), and the model samples that fill the store before
//! serving ([`sample`]).
//!
//! Uses: `engine` (generation), `store`, `train` (checkpoints), `model`, `data` (the chat
//! format), `base`. Exposes: the servers' entry points and their building blocks.

pub mod annotate;
pub mod api;
pub mod body;
pub mod generate;
pub mod http;
pub mod metrics;
pub mod openai;
mod page;
pub mod sample;
pub mod scheduler;
pub mod state;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the servers; each names the file at fault and ends with what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),

    #[error(transparent)]
    Base(#[from] base::Error),
}
