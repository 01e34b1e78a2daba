//! `frugal pretrain`: next-token prediction on tokenized shards, resumable and measured.

pub mod checkpoint;
mod clock;
mod pretrain;
mod ranks;
pub mod sample;
pub mod schedule;

pub(crate) use clock::{due, write_report, LoopClock};
pub use pretrain::{evaluate, pretrain, pretrain_on, Summary};
pub(crate) use pretrain::{grad_norm, grad_sum_sq, open_metrics, write_atomic};

/// The matrix-product precision `train.precision` asks for, in force while the guard lives
/// (None for f32). An error, naming the field, where the CPU cannot run bf16 products.
pub fn precision(
    t: &crate::config::TrainConfig,
) -> crate::error::Result<Option<tensor::matmul::Bf16Products>> {
    match t.precision {
        crate::config::Precision::F32 => Ok(None),
        crate::config::Precision::Bf16 => tensor::matmul::bf16_products().map(Some).map_err(|e| {
            crate::error::Error::config(
                "train.precision",
                format!("is \"bf16\", but {e}"),
                "set train.precision = \"f32\" on this machine",
            )
        }),
    }
}
