//! Hugging Face checkpoint directories.
//!
//! `export` writes a run's stage as one; `import` makes a run of one; `config` maps frugal's
//! model config onto transformers' config.json fields and back.

pub mod config;
pub mod export;
pub mod import;

pub use export::{export, ExportOptions, ExportSummary};
pub use import::{import, ImportOptions, ImportSummary};
