//! The machinery every training stage shares, below the stages themselves.
//!
//! Owns: the run configuration (`config`: `[model]`, `[train]`, `[data]`, `[dist]`), the
//! optimizers over the flat parameter buffer (`optim`), learning-rate schedules (`schedule`),
//! the step's shared pieces (`step`: gradient norm, metrics file), the loop's clock and cadence
//! (`clock`), the one training loop every stage runs (`trainer`) and the faults tests inject
//! into it (`faults`), validation loss (`validation`), checkpoints (`checkpoint`, and `ranks` across
//! data-parallel ranks) and the collectives of distributed training (`dist`).
//!
//! Uses: `model`, `data` (the loader's cursor lives in a checkpoint), `ledger`, `base`,
//! `tensor`. Exposes: those modules; the stages (`stages`) build their loops from them.

pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod dist;
pub mod faults;
pub mod optim;
pub mod ranks;
pub mod schedule;
pub mod step;
pub mod trainer;
pub mod validation;

pub use clock::{due, write_report, LoopClock};
pub use config::Config;
pub use step::{grad_norm, grad_sum_sq, open_metrics};
pub use trainer::{At, Objective, Outcome, Report, Setup, Step, Trainer, Update};

/// The matrix-product precision `train.precision` asks for, in force while the guard lives
/// (None for f32). An error, naming the field, where the CPU cannot run bf16 products.
pub fn precision(
    t: &crate::config::TrainConfig,
) -> base::Result<Option<tensor::matmul::Bf16Products>> {
    match t.precision {
        crate::config::Precision::F32 => Ok(None),
        crate::config::Precision::Bf16 => tensor::matmul::bf16_products().map(Some).map_err(|e| {
            base::Error::config(
                "train.precision",
                format!("is \"bf16\", but {e}"),
                "set train.precision = \"f32\" on this machine",
            )
        }),
    }
}
