//! Fused transformer kernels. Each file holds one op: `*_forward`, `*_backward` (gradients are
//! accumulated into `d*` buffers where the op feeds a residual or shared weight, as documented
//! per function), a `reference` module with the plain specification, and tests comparing the
//! two plus a finite-difference gradient check.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod experts;
pub mod math;
pub mod moe;
pub mod muon;
pub mod rmsnorm;
pub mod rope;
pub mod rows;
pub mod swiglu;

use rayon::prelude::*;

/// `y += x`, in parallel.
pub fn add_inplace(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "add_inplace: length mismatch");
    y.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(y, x)| {
            for (a, b) in y.iter_mut().zip(x) {
                *a += b;
            }
        });
}

/// Sum of per-chunk partial vectors `parts` (n_chunks × d) into `out` (d), in chunk order, so the
/// result does not depend on how many threads produced the parts.
pub(crate) fn reduce_parts_into(out: &mut [f32], parts: &[f32]) {
    for part in parts.chunks_exact(out.len()) {
        for (o, p) in out.iter_mut().zip(part) {
            *o += p;
        }
    }
}
