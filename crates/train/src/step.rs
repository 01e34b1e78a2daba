//! Pieces of the training step: the gradient's sum of squares (for the global norm that clips
//! and is logged), and the metrics file a resumed run appends to.

use base::fs::write_atomic;
use base::{Error, Result};
use rayon::prelude::*;
use std::path::Path;

/// Σ g², in f64. Fixed chunks summed in order: the same value for any thread count.
pub fn grad_sum_sq(g: &[f32]) -> f64 {
    let parts: Vec<f64> = g
        .par_chunks(1 << 16)
        .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum())
        .collect();
    parts.iter().sum::<f64>()
}

/// Opens a run's metrics.jsonl for appending, first dropping what a killed run logged after its
/// last checkpoint (step > `step`): those steps are about to be redone.
pub fn open_metrics(path: &Path, step: usize) -> Result<std::fs::File> {
    let kept: String = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| (s as usize) <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}
