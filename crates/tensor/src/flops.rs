//! A running count of the model FLOPs the kernels perform, kept by the kernels themselves, so
//! that the analytic count of `frugal::cost::flops` can be checked against what a step really
//! multiplies, and the cost ledger can report the work of stages (evaluation, sampling) that
//! have no simple formula.
//!
//! Counted: every matrix product at its public entry (2·m·n·k for `sgemm` and
//! `sgemm_nt_few_rows`), and attention's score and value products over the keys each query
//! may see (causal and document masks applied), in the convention of model FLOPs: the
//! backward pass's recomputation of the probabilities is not counted, nor are element-wise
//! ops (norms, softmax, activations), which are a few percent at most.
//!
//! One relaxed atomic add per kernel call; a process-wide total, so readers take differences
//! around the work they measure and must not run other counted work beside it.

use std::sync::atomic::{AtomicU64, Ordering};

static TOTAL: AtomicU64 = AtomicU64::new(0);

/// Adds `n` FLOPs to the count (for kernels outside this crate, such as a decode loop).
#[inline]
pub fn add(n: u64) {
    TOTAL.fetch_add(n, Ordering::Relaxed);
}

/// FLOPs counted since the process started.
pub fn total() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}
