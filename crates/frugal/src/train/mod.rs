//! `frugal pretrain`: next-token prediction on tokenized shards, resumable and measured.

pub mod checkpoint;
mod clock;
mod pretrain;
pub mod sample;
pub mod schedule;

pub(crate) use clock::{due, write_report, LoopClock};
pub use pretrain::{evaluate, pretrain, Summary};
pub(crate) use pretrain::{grad_norm, open_metrics, write_atomic};
