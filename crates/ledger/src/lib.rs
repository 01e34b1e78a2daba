//! What a run spends, as measured: the leaf every stage bills to.
//!
//! Owns: the per-run ledger `ledger.json` and the [`Meter`] each stage runs while it works
//! (wall time, CPU time, tokens, FLOPs, energy where the machine has a meter) (`ledger`), and
//! the numbers it multiplies by: the user's prices, power and grid assumptions and the GPU
//! datasheets (`tables`, `configs/cost.toml`).
//!
//! Uses: `base`, and `tensor`'s kernel FLOP counter. Exposes: both modules, and the types
//! every stage names at the root.

pub mod ledger;
pub mod tables;

pub use ledger::{count, dir_of, duration, si, Ledger, Meter};
pub use tables::CostConfig;
