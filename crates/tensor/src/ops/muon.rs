//! Newton–Schulz orthogonalisation for Muon (Jordan et al., modded-nanogpt): five iterations of
//! the quintic X ← aX + b(XXᵀ)X + c(XXᵀ)²X map a matrix's singular values towards 1, giving
//! (approximately) U·Vᵀ of its SVD without computing one.

use crate::matmul::{sgemm_on_caller, Gemm};

const COEFFS: (f32, f32, f32) = (3.4445, -4.7750, 2.0315);
pub const NS_STEPS: usize = 5;

/// Writes into `x` the orthogonalised `g`, on the calling thread (an optimizer runs one matrix
/// per thread: each product is too small to split well). # Shapes: g, x: (rows, cols).
pub fn newton_schulz(x: &mut [f32], g: &[f32], rows: usize, cols: usize) {
    assert!(
        g.len() == rows * cols && x.len() == g.len(),
        "newton_schulz: shape mismatch"
    );
    let s = rows.min(cols);
    // Per iteration: the Gram matrix and its square (2s²·long + 2s³), then B·X (2s²·long).
    crate::flops::add((NS_STEPS * (4 * s * s * rows.max(cols) + 2 * s * s * s)) as u64);
    let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-7;
    x.iter_mut().zip(g).for_each(|(x, g)| *x = g / norm);
    let (a, b, c) = COEFFS;
    // Work in the small Gram dimension: XXᵀ for wide matrices, XᵀX for tall ones.
    let (mut gram, mut poly, mut next) = (
        vec![0f32; s * s],
        vec![0f32; s * s],
        vec![0f32; rows * cols],
    );
    for _ in 0..NS_STEPS {
        if rows <= cols {
            sgemm_on_caller(&Gemm::nt(s, s, cols), x, x, &mut gram); // A = XXᵀ
        } else {
            sgemm_on_caller(&Gemm::tn(s, s, rows), x, x, &mut gram); // A = XᵀX
        }
        sgemm_on_caller(&Gemm::nn(s, s, s), &gram, &gram, &mut poly); // A²
        poly.iter_mut()
            .zip(&gram)
            .for_each(|(p, a)| *p = b * a + c * *p); // B = bA + cA²
        next.iter_mut().zip(x.iter()).for_each(|(n, x)| *n = a * x);
        if rows <= cols {
            sgemm_on_caller(
                &Gemm::nn(rows, cols, s).accumulate(true),
                &poly,
                x,
                &mut next,
            ); // aX + BX
        } else {
            sgemm_on_caller(
                &Gemm::nn(rows, cols, s).accumulate(true),
                x,
                &poly,
                &mut next,
            ); // aX + XB
        }
        x.copy_from_slice(&next);
    }
}

pub mod reference {
    use super::{COEFFS, NS_STEPS};

    fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        c
    }

    fn transpose(a: &[f64], m: usize, n: usize) -> Vec<f64> {
        (0..n * m).map(|i| a[(i % m) * n + i / m]).collect()
    }

    /// The textbook iteration in f64 on the wide orientation (transposing tall inputs).
    pub fn newton_schulz(g: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let tall = rows > cols;
        let (r, c) = if tall { (cols, rows) } else { (rows, cols) };
        let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let mut x = if tall {
            transpose(&g64, rows, cols)
        } else {
            g64
        };
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt() + 1e-7;
        x.iter_mut().for_each(|v| *v /= norm);
        let (a, b, cc) = (COEFFS.0 as f64, COEFFS.1 as f64, COEFFS.2 as f64);
        for _ in 0..NS_STEPS {
            let gram = matmul(&x, &transpose(&x, r, c), r, c, r);
            let sq = matmul(&gram, &gram, r, r, r);
            let poly: Vec<f64> = gram.iter().zip(&sq).map(|(g, s)| b * g + cc * s).collect();
            let bx = matmul(&poly, &x, r, r, c);
            x = x.iter().zip(&bx).map(|(x, y)| a * x + y).collect();
        }
        let out = if tall { transpose(&x, r, c) } else { x };
        out.iter().map(|&v| v as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, projection};

    #[test]
    fn matches_reference_and_orthogonalises() {
        for (rows, cols) in [(8, 20), (20, 8), (16, 16)] {
            let g = projection(rows * cols, 5);
            let mut x = vec![0.0; g.len()];
            newton_schulz(&mut x, &g, rows, cols);
            assert_close(
                &x,
                &reference::newton_schulz(&g, rows, cols),
                1e-4,
                &format!("newton_schulz {rows}x{cols}"),
            );
            // Singular values land in roughly [0.5, 1.2] (the quintic trades exactness for speed),
            // so the short side's Gram matrix has diagonal in [σ²min, σ²max] and small off-diagonal.
            let s = rows.min(cols);
            for i in 0..s {
                for j in 0..s {
                    let dot: f32 = if rows <= cols {
                        (0..cols).map(|k| x[i * cols + k] * x[j * cols + k]).sum()
                    } else {
                        (0..rows).map(|k| x[k * cols + i] * x[k * cols + j]).sum()
                    };
                    let ok = if i == j {
                        (0.25..1.5).contains(&dot)
                    } else {
                        dot.abs() < 0.35
                    };
                    assert!(ok, "{rows}x{cols}: gram[{i}][{j}] = {dot}");
                }
            }
        }
    }
}
