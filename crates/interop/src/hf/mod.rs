//! Hugging Face checkpoint directories.
//!
//! `export` writes a run's stage as one; `config` maps frugal's model config onto
//! transformers' `LlamaConfig` fields.

pub mod config;
pub mod export;

pub use export::{export, ExportOptions, ExportSummary};
