//! The data stage: raw text in many formats → clean, deduplicated, mixed documents in JSONL
//! (zstd), split into train and validation sets (`prepare`), then token shards (`tokenize`).

pub mod clean;
pub mod columnar;
pub mod dedup;
pub mod filters;
pub mod html;
pub mod ingest;
pub mod jsonl;
pub mod prepare;
pub mod tokenize;
pub mod warc;

use serde::{Deserialize, Serialize};

/// One document as it flows through the pipeline and is stored in the prepared JSONL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// Stable identifier: `<source>/<file>#<record or line>`.
    pub id: String,
    /// Name of the source in the prepare config.
    pub source: String,
    pub text: String,
}
