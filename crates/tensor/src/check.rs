//! Numerical checks shared by the kernel tests here and the model tests in `frugal`:
//! closeness of two buffers, and finite-difference gradient checks.

/// Panics with the worst element if any |a - b| > tol · (1 + |b|).
pub fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0f32);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs() / (1.0 + y.abs());
        if err.is_nan() || err > worst.1 {
            worst = (i, if err.is_nan() { f32::INFINITY } else { err });
        }
    }
    let (i, err) = worst;
    assert!(
        err <= tol,
        "{what}: element {i} differs: {} vs {} (scaled error {err:e} > {tol:e})",
        a[i],
        b[i]
    );
}

/// Relative error ‖num − ana‖ / max(‖num‖ + ‖ana‖, tiny) between a finite-difference gradient
/// and an analytic one. Below ~1e-2 in f32 means the backward pass is right; a bug in a
/// backward pass gives errors of order one.
pub fn relative_error(numeric: &[f64], analytic: &[f64]) -> f64 {
    let diff: f64 = numeric
        .iter()
        .zip(analytic)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = numeric.iter().map(|a| a * a).sum::<f64>().sqrt()
        + analytic.iter().map(|a| a * a).sum::<f64>().sqrt();
    diff / norm.max(1e-30)
}

/// Central-difference derivative of `loss` with respect to `x[i]` for each `i` in `indices`,
/// restoring `x` afterwards.
pub fn numeric_grad(
    x: &mut [f32],
    indices: &[usize],
    eps: f32,
    mut loss: impl FnMut(&[f32]) -> f64,
) -> Vec<f64> {
    indices
        .iter()
        .map(|&i| {
            let orig = x[i];
            x[i] = orig + eps;
            let up = loss(x);
            x[i] = orig - eps;
            let down = loss(x);
            x[i] = orig;
            // Divide by the step actually taken (f32 rounding makes it differ from 2·eps).
            let step = ((orig + eps) as f64) - ((orig - eps) as f64);
            (up - down) / step
        })
        .collect()
}

/// Indices `0..n`, or an evenly spread sample of `max` of them.
pub fn sample_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        (0..n).collect()
    } else {
        (0..max)
            .map(|i| i * n / max + (i * 7919) % (n / max).max(1))
            .collect()
    }
}

/// Check `analytic` (the backward pass's gradient of `loss` w.r.t. `x`) against central
/// differences on a sample of elements; panics naming `what` when they disagree.
pub fn grad_check(what: &str, x: &mut [f32], analytic: &[f32], loss: impl FnMut(&[f32]) -> f64) {
    let idx = sample_indices(x.len(), 48);
    let numeric = numeric_grad(x, &idx, 1e-2, loss);
    let ana: Vec<f64> = idx.iter().map(|&i| analytic[i] as f64).collect();
    let err = relative_error(&numeric, &ana);
    assert!(err < 1e-2, "{what}: gradient check failed, relative error {err:e}\n numeric  {numeric:?}\n analytic {ana:?}");
}

/// Fixed random weights `w` for the scalar test loss `Σ wᵢ·yᵢ` of an op's output `y`: every output
/// element then contributes to the checked gradient, and dloss/dy = w.
pub fn projection(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}
