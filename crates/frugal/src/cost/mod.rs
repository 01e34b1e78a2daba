//! The cost calculus: what a run spends and what the recipe would cost at larger scale.
//!
//! - `arch`: parameters and FLOPs per token of any transformer shape (dense, GQA, MoE, MLA,
//!   multi-token prediction), checked against the kernels' own count;
//! - `tables`: GPU datasheets and the price, power and grid assumptions;
//! - `ledger`: the measured per-stage spend of a run (`ledger.json`);
//! - `estimate` and `presets`: cluster-scale estimates, reproducing published runs;
//! - `scaling`: a Chinchilla-form loss fit and the cost of reaching a target loss;
//! - `report`: `report.md` and `report.html` with SVG plots drawn here.

pub mod arch;
pub mod estimate;
pub mod ledger;
pub mod presets;
pub mod report;
pub mod scaling;
pub mod svg;
pub mod tables;

pub use arch::{Arch, AttnConvention};
pub use ledger::{Ledger, Meter};
pub use tables::CostConfig;
