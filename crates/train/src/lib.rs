//! The machinery every training stage shares, below the stages themselves.
//!
//! Owns: the run configuration (`config`: `[model]`, `[train]`, `[data]`, `[dist]`), the one
//! training loop every stage runs (`trainer`, with its clock and cadence, learning-rate
//! schedules, metrics file and cross-rank checkpoints inside) and the faults tests inject into
//! it (`faults`), the optimizers over the flat parameter buffer (`optim`), LoRA adapters and
//! their PEFT files (`lora`), validation loss
//! (`validation`), checkpoints (`checkpoint`) and the collectives of distributed training
//! (`dist`).
//!
//! Uses: `model`, `data` (the loader's cursor lives in a checkpoint), `ledger`, `base`,
//! `tensor`. Exposes: the loop (`Trainer`, `Objective` and what they exchange), the config, the
//! optimizers, checkpoints, validation and the collectives; the stages (`stages`) are
//! objectives on the loop.

pub mod checkpoint;
mod clock;
pub mod config;
pub mod dist;
pub mod faults;
pub mod lora;
pub mod optim;
mod ranks;
mod schedule;
mod step;
pub mod trainer;
pub mod validation;

pub use clock::write_report;
pub use config::Config;
pub use trainer::{At, Objective, Outcome, Report, Setup, Step, Trainer, Update};

/// The matrix-product precision `train.precision` asks for, in force while the guard lives
/// (None for f32). An error, naming the field, where the CPU cannot run the bf16 products
/// asked for by name ("auto" falls back to f32).
pub fn precision(
    t: &crate::config::TrainConfig,
) -> base::Result<Option<tensor::matmul::Bf16Products>> {
    if t.precision.on_this_cpu() != crate::config::Precision::Bf16 {
        return Ok(None);
    }
    tensor::matmul::bf16_products().map(Some).map_err(|e| {
        base::Error::config(
            "train.precision",
            format!("is \"bf16\", but {e}"),
            "set train.precision = \"f32\" or \"auto\" on this machine",
        )
    })
}
