//! frugal's data, from raw text to the rows a trainer reads.
//!
//! Owns: the data stage, raw text in many formats (`ingest`: text, JSONL, Parquet and Arrow
//! (`columnar`), WARC/WET crawls (`warc`, `html`)) to clean (`clean`, `filters`), deduplicated
//! (`dedup`), mixed documents in JSONL (`jsonl`), split into train and validation sets
//! (`prepare`), then token shards (`tokenize`, `shards`) read by the pretraining loader
//! (`loader`, whose epoch shuffle `Shuffled` orders every trainer's data); tokenizer training on files (`tokenizer`); the chat format every later stage
//! renders conversations with (`chat`); the SFT mixture packed into rows (`sft_mix`);
//! preference pairs (`pairs`); and GSM8K's answer format (`gsm8k`).
//!
//! Uses: `bpe` (the tokenizer), `base`, `ledger` (the data stages bill their time), `tensor`'s
//! seeded generator. Exposes: the modules above and [`Doc`].

pub mod chat;
pub mod clean;
pub mod columnar;
pub mod dedup;
pub mod filters;
pub mod gsm8k;
pub mod html;
pub mod ingest;
pub mod jsonl;
pub mod loader;
pub mod pairs;
pub mod prepare;
pub mod sft_mix;
pub mod shards;
pub mod tokenize;
pub mod tokenizer;
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
