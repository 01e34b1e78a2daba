//! frugal's models in and out of the ecosystem.
//!
//! - `hf`: a run's stage as a Hugging Face checkpoint directory (`config.json`, safetensors,
//!   `tokenizer.json`, `tokenizer_config.json` with the chat template, `generation_config.json`)
//!   that transformers, vLLM and lm-evaluation-harness load as a Llama, Qwen2 or DeepSeek-V3;
//!   and a Llama-family checkpoint as a run (`hf::import`).
//! - `gguf`: the same as one GGUF file for llama.cpp (F32, F16, BF16, Q8_0), frugal's own writer.
//! - `peft`: a LoRA stage's adapters as a PEFT adapter directory.
//! - `outdir`: export directories appear whole or not at all.
//! - `tensors`: element types (f32, f16, bf16), sharded safetensors with their index.
//! - `check`: frugal's logits against another reader's, for `frugal bench logits` and tests.
//!
//! May use: base, bpe, model, data (the chat format and its template), train (run directories
//! and checkpoints), tensor (bf16 rounding). Used by: cli.

pub mod check;
pub mod gguf;
pub mod hf;
pub mod outdir;
pub mod peft;
pub mod tensors;

pub use tensors::Dtype;
