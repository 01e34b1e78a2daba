//! Typed errors. Each names the file, field or tensor at fault and ends with what to do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {origin}: {msg}\nHINT: {hint}")]
    Config {
        origin: String,
        msg: String,
        hint: String,
    },

    #[error("weights {path}: {msg}\nHINT: {hint}")]
    Weights {
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

    /// A distributed run's failure, named by the rank that saw it.
    #[error("rank {rank}: {msg}\nHINT: {hint}")]
    Dist {
        rank: usize,
        msg: String,
        hint: String,
    },

    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn config(
        origin: impl Into<String>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Config {
            origin: origin.into(),
            msg: msg.into(),
            hint: hint.into(),
        }
    }
    pub fn input(
        origin: impl Into<String>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Input {
            origin: origin.into(),
            msg: msg.into(),
            hint: hint.into(),
        }
    }
    pub fn weights(
        path: impl Into<PathBuf>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Weights {
            path: path.into(),
            msg: msg.into(),
            hint: hint.into(),
        }
    }
    pub fn dist(rank: usize, msg: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Dist {
            rank,
            msg: msg.into(),
            hint: hint.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
