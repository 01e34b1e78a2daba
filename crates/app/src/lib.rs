//! The top of frugal's library: what reads a whole run, or the whole recipe, at once.
//!
//! Owns: the run report (`report`: `report.md` and `report.html` with SVG plots drawn here,
//! `report::pref` for the preference stages' rows), cost estimates on GPU clusters
//! (`estimate`, with published runs as `presets`), Chinchilla-form scaling fits (`scaling`),
//! the compute-core benchmarks (`bench`: training step, inference, speculative decoding), the
//! speedrun's budget plan (`plan`: a wall-clock budget split into stage shares and steps), and
//! the data a run went without (`gaps`).
//!
//! Uses: every library crate below it (`stages`, `eval`, `train`, `engine`, `model`, `data`,
//! `ledger`, `base`). Exposes: those modules; the `frugal` binary (crate `cli`) calls them.

pub mod bench;
pub mod estimate;
pub mod gaps;
pub mod plan;
pub mod presets;
pub mod report;
pub mod scaling;
