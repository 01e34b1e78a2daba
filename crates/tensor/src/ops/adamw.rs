//! AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, fused into one pass over
//! parameters, gradients and both moments. The arithmetic follows PyTorch's single-tensor
//! implementation step for step, so golden runs agree to rounding.

use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled decay; callers pass 0 for parameters that are not decayed (norm weights).
    pub weight_decay: f32,
}

/// Step `t` (1-based) on one contiguous range of parameters. m, v: first and second moments.
pub fn adamw_update(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamWHyper,
    t: u64,
) {
    assert!(
        p.len() == g.len() && p.len() == m.len() && p.len() == v.len(),
        "adamw_update: length mismatch"
    );
    let bc1 = 1.0 - (h.beta1 as f64).powi(t as i32) as f32;
    let bc2_sqrt = (1.0 - (h.beta2 as f64).powi(t as i32) as f32).sqrt();
    let step = h.lr / bc1;
    let decay = 1.0 - h.lr * h.weight_decay;
    const CHUNK: usize = 1 << 14;
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                p[i] *= decay;
                m[i] += (g[i] - m[i]) * (1.0 - h.beta1);
                v[i] = v[i] * h.beta2 + (1.0 - h.beta2) * g[i] * g[i];
                let denom = v[i].sqrt() / bc2_sqrt + h.eps;
                p[i] -= step * m[i] / denom;
            }
        });
}

pub mod reference {
    use super::AdamWHyper;

    /// The textbook form in f64: θ ← θ − lr·(m̂/(√v̂ + ε) + λθ).
    pub fn adamw_update(
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        h: &AdamWHyper,
        t: u64,
    ) {
        let (b1, b2) = (h.beta1 as f64, h.beta2 as f64);
        for i in 0..p.len() {
            let (gi, pi) = (g[i] as f64, p[i] as f64);
            let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
            let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
            let (mhat, vhat) = (
                mi / (1.0 - b1.powi(t as i32)),
                vi / (1.0 - b2.powi(t as i32)),
            );
            let lr = h.lr as f64;
            p[i] = (pi - lr * h.weight_decay as f64 * pi - lr * mhat / (vhat.sqrt() + h.eps as f64))
                as f32;
            m[i] = mi as f32;
            v[i] = vi as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, projection};

    #[test]
    fn matches_reference_over_several_steps() {
        let n = 40_000; // more than one parallel chunk
        let h = AdamWHyper {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let (mut p, mut m, mut v) = (projection(n, 1), vec![0.0; n], vec![0.0; n]);
        let (mut p_ref, mut m_ref, mut v_ref) = (p.clone(), m.clone(), v.clone());
        for t in 1..=5 {
            let g = projection(n, 10 + t);
            adamw_update(&mut p, &g, &mut m, &mut v, &h, t);
            reference::adamw_update(&mut p_ref, &g, &mut m_ref, &mut v_ref, &h, t);
        }
        assert_close(&p, &p_ref, 1e-5, "adamw params");
        assert_close(&m, &m_ref, 1e-5, "adamw first moment");
        assert_close(&v, &v_ref, 1e-5, "adamw second moment");
    }
}
