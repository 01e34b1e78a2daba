//! RMSNorm with a learnable weight (Llama): y = x / sqrt(mean(x²) + eps) · w.

use super::math::dot;
use super::reduce_parts_into;
use crate::ROW_CHUNK;
use rayon::prelude::*;

/// # Shapes
/// x, y: (n, d); w: (d); rstd (out): (n), the 1/rms of each row kept for the backward pass.
pub fn rmsnorm_forward(y: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], d: usize, eps: f32) {
    let n = rstd.len();
    assert!(
        x.len() == n * d && y.len() == n * d && w.len() == d,
        "rmsnorm_forward: shape mismatch"
    );
    y.par_chunks_mut(ROW_CHUNK * d)
        .zip(rstd.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(ROW_CHUNK * d))
        .for_each(|((y, rstd), x)| {
            for ((y, r), x) in y
                .chunks_exact_mut(d)
                .zip(rstd.iter_mut())
                .zip(x.chunks_exact(d))
            {
                let ms = dot(x, x) / d as f32;
                *r = 1.0 / (ms + eps).sqrt();
                for ((o, &v), &g) in y.iter_mut().zip(x).zip(w) {
                    *o = v * *r * g;
                }
            }
        });
}

/// Accumulates: dx += ∂L/∂x, dw += ∂L/∂w.
/// With x̂ = x·rstd and g = dy·w: dx = rstd · (g − x̂ · mean(g·x̂)), dw = Σ_rows dy·x̂.
pub fn rmsnorm_backward(
    dx: &mut [f32],
    dw: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    d: usize,
) {
    let n = rstd.len();
    assert!(
        dx.len() == n * d && dy.len() == n * d && x.len() == n * d && dw.len() == d,
        "rmsnorm_backward: shape"
    );
    let chunks = n.div_ceil(ROW_CHUNK);
    let mut parts = vec![0f32; chunks * d];
    parts
        .par_chunks_mut(d)
        .zip(dx.par_chunks_mut(ROW_CHUNK * d))
        .zip(
            dy.par_chunks(ROW_CHUNK * d)
                .zip(x.par_chunks(ROW_CHUNK * d))
                .zip(rstd.par_chunks(ROW_CHUNK)),
        )
        .for_each(|((dw_part, dx), ((dy, x), rstd))| {
            for (((dx, dy), x), &r) in dx
                .chunks_exact_mut(d)
                .zip(dy.chunks_exact(d))
                .zip(x.chunks_exact(d))
                .zip(rstd)
            {
                // mean(g·x̂) with g = dy·w, x̂ = x·r
                let mean = r * sum_of_products(dy, w, x) / d as f32;
                for i in 0..d {
                    let xhat = x[i] * r;
                    dw_part[i] += dy[i] * xhat;
                    dx[i] += r * (dy[i] * w[i] - xhat * mean);
                }
            }
        });
    reduce_parts_into(dw, &parts);
}

/// Σ aᵢ·bᵢ·cᵢ with 16 independent accumulators, so the loop vectorises.
#[inline]
fn sum_of_products(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let n = a.len() / 16 * 16;
    for i in (0..n).step_by(16) {
        for l in 0..16 {
            acc[l] += a[i + l] * b[i + l] * c[i + l];
        }
    }
    let tail: f32 = (n..a.len()).map(|i| a[i] * b[i] * c[i]).sum();
    acc.iter().sum::<f32>() + tail
}

pub mod reference {
    pub fn rmsnorm_forward(y: &mut [f32], x: &[f32], w: &[f32], d: usize, eps: f32) {
        for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
            let r = 1.0 / (ms + eps as f64).sqrt();
            for i in 0..d {
                y[i] = (x[i] as f64 * r * w[i] as f64) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, dot, grad_check, projection};

    #[test]
    fn forward_matches_reference_and_gradients_check() {
        let (n, d, eps) = (70, 24, 1e-5);
        let x = projection(n * d, 1);
        let w: Vec<f32> = projection(d, 2).iter().map(|v| 1.0 + 0.3 * v).collect();
        let (mut y, mut rstd, mut y_ref) = (vec![0.0; n * d], vec![0.0; n], vec![0.0; n * d]);
        rmsnorm_forward(&mut y, &mut rstd, &x, &w, d, eps);
        reference::rmsnorm_forward(&mut y_ref, &x, &w, d, eps);
        assert_close(&y, &y_ref, 1e-5, "rmsnorm forward");

        let proj = projection(n * d, 3);
        let (mut dx, mut dw) = (vec![0.0; n * d], vec![0.0; d]);
        rmsnorm_backward(&mut dx, &mut dw, &proj, &x, &w, &rstd, d);
        let loss = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; n * d];
            reference::rmsnorm_forward(&mut y, x, w, d, eps);
            dot(&y, &proj)
        };
        grad_check("rmsnorm dx", &mut x.clone(), &dx, |x| loss(x, &w));
        grad_check("rmsnorm dw", &mut w.clone(), &dw, |w| loss(&x, w));
    }
}
