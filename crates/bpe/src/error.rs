use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    #[error("token id {0} is outside the vocabulary of {1}")]
    UnknownId(u32, usize),
    #[error("{path}: {msg}\nHINT: {hint}")]
    File {
        path: PathBuf,
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
    pub(crate) fn file(
        path: impl Into<PathBuf>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
            hint: hint.into(),
        }
    }
}
