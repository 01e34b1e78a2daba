//! frugal: build a chat language model from raw text, and account for what it costs.
//!
//! Modules in data-flow order. So far: configuration, the Llama-style model with its explicit
//! forward and backward passes, weights in safetensors, the optimizers, and the training step
//! benchmark that measures all of it.

pub mod bench;
pub mod chat;
pub mod config;
pub mod cost;
pub mod data;
pub mod dist;
pub mod engine;
pub mod error;
pub mod eval;
pub mod loader;
pub mod model;
pub mod optim;
pub mod pref;
pub mod progress;
pub mod sft;
pub mod shards;
pub mod tokenizer;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
