//! frugal's HTTP side, the only async crate.
//!
//! Serving: an OpenAI-compatible API and a web chat page ([`api`], [`generate`], [`openai`])
//! over continuous batching on an engine thread ([`scheduler`]), with Prometheus metrics
//! ([`metrics`]) and a listener that bounds slow clients and shuts down gracefully ([`http`]).
//!
//! The human-preference annotation stage: a SQLite store of prompts, sampled responses,
//! comparison items and votes ([`store`]), the annotation server and its page ([`annotate`]),
//! inter-annotator agreement ([`agreement`]), and the model samples that fill the store before
//! serving ([`sample`]).

pub mod agreement;
pub mod annotate;
pub mod api;
pub mod generate;
pub mod http;
pub mod metrics;
pub mod openai;
mod page;
pub mod sample;
pub mod scheduler;
pub mod store;

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the store and the server; each names the file at fault and ends with what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("preference store {path}: {source}\nHINT: {hint}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
        hint: &'static str,
    },

    #[error("preference store {path}: {msg}\nHINT: {hint}")]
    Schema {
        path: PathBuf,
        msg: String,
        hint: String,
    },

    #[error("{origin}: {msg}\nHINT: {hint}")]
    Input {
        origin: String,
        msg: String,
        hint: String,
    },

    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Frugal(#[from] frugal::Error),
}
