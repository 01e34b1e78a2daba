//! SwiGLU activation (Llama's MLP): h = silu(gate) · up, with gate and up produced by one fused
//! GEMM, so each row of the input holds [gate (hidden) | up (hidden)].

use super::math::sigmoid;
use crate::ROW_CHUNK;
use rayon::prelude::*;

/// # Shapes
/// gu: (n, 2·hidden) = [gate | up] per row; h (out): (n, hidden).
pub fn swiglu_forward(h: &mut [f32], gu: &[f32], hidden: usize) {
    assert_eq!(gu.len(), 2 * h.len(), "swiglu_forward: shape mismatch");
    h.par_chunks_mut(ROW_CHUNK * hidden)
        .zip(gu.par_chunks(ROW_CHUNK * 2 * hidden))
        .for_each(|(h, gu)| {
            for (h, gu) in h.chunks_exact_mut(hidden).zip(gu.chunks_exact(2 * hidden)) {
                let (g, u) = gu.split_at(hidden);
                for ((o, &g), &u) in h.iter_mut().zip(g).zip(u) {
                    *o = g * sigmoid(g) * u;
                }
            }
        });
}

/// Writes dgu = [dgate | dup] (overwrites). silu'(g) = s·(1 + g·(1 − s)) with s = sigmoid(g).
pub fn swiglu_backward(dgu: &mut [f32], dh: &[f32], gu: &[f32], hidden: usize) {
    assert!(
        dgu.len() == gu.len() && gu.len() == 2 * dh.len(),
        "swiglu_backward: shape mismatch"
    );
    dgu.par_chunks_mut(ROW_CHUNK * 2 * hidden)
        .zip(
            dh.par_chunks(ROW_CHUNK * hidden)
                .zip(gu.par_chunks(ROW_CHUNK * 2 * hidden)),
        )
        .for_each(|(dgu, (dh, gu))| {
            for ((dgu, dh), gu) in dgu
                .chunks_exact_mut(2 * hidden)
                .zip(dh.chunks_exact(hidden))
                .zip(gu.chunks_exact(2 * hidden))
            {
                let (dg, du) = dgu.split_at_mut(hidden);
                let (g, u) = gu.split_at(hidden);
                for i in 0..hidden {
                    let s = sigmoid(g[i]);
                    let silu = g[i] * s;
                    dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    du[i] = dh[i] * silu;
                }
            }
        });
}

pub mod reference {
    pub fn swiglu_forward(h: &mut [f32], gu: &[f32], hidden: usize) {
        for (h, gu) in h.chunks_exact_mut(hidden).zip(gu.chunks_exact(2 * hidden)) {
            for i in 0..hidden {
                let g = gu[i] as f64;
                h[i] = (g / (1.0 + (-g).exp()) * gu[hidden + i] as f64) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, dot, grad_check, projection};

    #[test]
    fn forward_matches_reference_and_gradient_checks() {
        let (n, hidden) = (40, 12);
        let gu: Vec<f32> = projection(n * 2 * hidden, 1)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        let (mut h, mut h_ref) = (vec![0.0; n * hidden], vec![0.0; n * hidden]);
        swiglu_forward(&mut h, &gu, hidden);
        reference::swiglu_forward(&mut h_ref, &gu, hidden);
        assert_close(&h, &h_ref, 1e-5, "swiglu forward");
        let proj = projection(n * hidden, 2);
        let mut dgu = vec![0.0; gu.len()];
        swiglu_backward(&mut dgu, &proj, &gu, hidden);
        grad_check("swiglu dgu", &mut gu.clone(), &dgu, |gu| {
            let mut h = vec![0.0; n * hidden];
            reference::swiglu_forward(&mut h, gu, hidden);
            dot(&h, &proj)
        });
    }
}
