//! The Llama-style decoder, from its config to its logits.
//!
//! Owns: the model's shape and presets (`config`), all parameters in one flat buffer with HF
//! names (`params`), activation buffers (`workspace`), the explicit forward and backward
//! passes of the model (`llama`), of one block (`block`), of LoRA adapters beside its frozen
//! projections (`lora`, their types in `adapters`), of the routed experts of a
//! mixture-of-experts MLP (`moe`), of latent attention's projections (`mla`) and of the
//! multi-token prediction modules (`mtp`); the forward through a KV cache (`kv_cache`, and
//! `kv_mla` for latent attention in its absorbed form) behind the engine's
//! [`LanguageModel`] trait (`language_model`); weights in safetensors (`weights`); and the
//! parameter and FLOP counts of any transformer shape (`arch`).
//!
//! The training forward and backward (`llama`, `block`, `mla`, `moe`, `mtp`) are generic over
//! the device they run on (`Llama<D>`, `Params<D>`, `Workspace<D>`, the CPU by default) and
//! reach every kernel and buffer through `tensor::Device`: they never index an element, so a
//! new backend needs no edit here. The KV-cache forward runs on the CPU (`Llama<Cpu>`).
//!
//! Uses: `tensor` (kernels and the device seam), `base` (errors, config parsing). Exposes: the modules above that
//! callers name (`config`, `arch`, `language_model`) and the model's types at the root.

mod adapters;
pub mod arch;
mod block;
pub mod config;
mod kv_cache;
mod kv_mla;
pub mod language_model;
mod llama;
pub mod lora;
mod mla;
mod moe;
mod mtp;
mod params;
mod weights;
mod workspace;

pub use arch::{Arch, AttnConvention};
pub use config::ModelConfig;
pub use kv_cache::KvCache;
pub use language_model::{LanguageModel, TokenScore};
pub use llama::Llama;
pub use moe::load_imbalance;
pub use params::{LayerOffsets, MlaOffsets, MoeOffsets, MtpOffsets, ParamSpec, Params};
pub use weights::{load_flat, load_safetensors, save_flat, save_safetensors};
pub use workspace::Workspace;
