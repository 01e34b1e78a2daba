//! Row layout ops: rows side by side and apart again (multi-token prediction's [embedding |
//! hidden] input), latent attention's per-head keys and values spread from the shared
//! latent projection, and a bias added to every row (Qwen2's q/k/v biases) with its gradient,
//! the column sums. Copies and sums; kernels so that the model's layer code never touches a
//! buffer's elements itself.

use rayon::prelude::*;

/// out (n, wa + wb) = [a (n, wa) | b (n, wb)], row by row.
pub fn concat_cols(out: &mut [f32], a: &[f32], b: &[f32], wa: usize, wb: usize) {
    out.par_chunks_exact_mut(wa + wb)
        .zip(a.par_chunks_exact(wa))
        .zip(b.par_chunks_exact(wb))
        .for_each(|((o, a), b)| {
            o[..wa].copy_from_slice(a);
            o[wa..].copy_from_slice(b);
        });
}

/// The inverse of `concat_cols`: `src` (n, wa + wb) into a (n, wa) and b (n, wb). It is also its
/// backward: the gradient of each half is its columns of the concatenation's gradient.
pub fn split_cols(a: &mut [f32], b: &mut [f32], src: &[f32], wa: usize, wb: usize) {
    src.par_chunks_exact(wa + wb)
        .zip(a.par_chunks_exact_mut(wa))
        .zip(b.par_chunks_exact_mut(wb))
        .for_each(|((s, a), b)| {
            a.copy_from_slice(&s[..wa]);
            b.copy_from_slice(&s[wa..]);
        });
}

/// x (n, w) += bias (w) on every row.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_exact_mut(bias.len()).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
}

/// dbias (w) += Σ over rows of dy (n, w): the gradient of `add_bias`. Rows are summed in
/// blocks in parallel, then the blocks in order, so the result does not depend on the threads.
pub fn bias_backward(dbias: &mut [f32], dy: &[f32]) {
    let w = dbias.len();
    let block = (crate::ROW_CHUNK * 4).max(1) * w;
    let partial: Vec<Vec<f32>> = dy
        .par_chunks(block)
        .map(|rows| {
            let mut acc = vec![0f32; w];
            for row in rows.chunks_exact(w) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    for p in partial {
        for (d, v) in dbias.iter_mut().zip(p) {
            *d += v;
        }
    }
}

/// The shapes of latent attention's key/value expansion: `heads` heads of `head_dim`, each key
/// `nope` position-free channels then the `rope` channels every head shares.
#[derive(Clone, Copy, Debug)]
pub struct KvExpand {
    pub heads: usize,
    pub head_dim: usize,
    pub nope: usize,
    pub rope: usize,
}

impl KvExpand {
    /// Width of a row of the latent projection's output: per head, nope key channels and a
    /// head_dim value.
    pub fn kv(&self) -> usize {
        self.heads * (self.nope + self.head_dim)
    }

    /// Width of a row of [q | k | v].
    pub fn qkv(&self) -> usize {
        3 * self.heads * self.head_dim
    }
}

/// Fills the k and v parts of each [q | k | v] row of `qkv`: head h's key is its nope channels
/// of `kv` then the row's shared rotated `kpe`; its value is its head_dim channels of `kv`.
pub fn expand_kv(qkv: &mut [f32], kv: &[f32], kpe: &[f32], s: KvExpand) {
    let (att, hd, nope) = (s.heads * s.head_dim, s.head_dim, s.nope);
    qkv.par_chunks_exact_mut(s.qkv())
        .zip(kv.par_chunks_exact(s.kv()))
        .zip(kpe.par_chunks_exact(s.rope))
        .for_each(|((row, kv), kpe)| {
            let (k, v) = row[att..].split_at_mut(att);
            for h in 0..s.heads {
                let src = &kv[h * (nope + hd)..][..nope + hd];
                let k = &mut k[h * hd..][..hd];
                k[..nope].copy_from_slice(&src[..nope]);
                k[nope..].copy_from_slice(kpe);
                v[h * hd..][..hd].copy_from_slice(&src[nope..]);
            }
        });
}

/// The backward of `expand_kv`: the k and v gradients of `dqkv` back into the latent
/// projection's layout `dkv`, and the heads' shared-key gradients summed into `dkpe`.
pub fn expand_kv_backward(dkv: &mut [f32], dkpe: &mut [f32], dqkv: &[f32], s: KvExpand) {
    let (att, hd, nope) = (s.heads * s.head_dim, s.head_dim, s.nope);
    dqkv.par_chunks_exact(s.qkv())
        .zip(dkv.par_chunks_exact_mut(s.kv()))
        .zip(dkpe.par_chunks_exact_mut(s.rope))
        .for_each(|((row, dkv), dkpe)| {
            let (k, v) = row[att..].split_at(att);
            dkpe.fill(0.0);
            for h in 0..s.heads {
                let dst = &mut dkv[h * (nope + hd)..][..nope + hd];
                let k = &k[h * hd..][..hd];
                dst[..nope].copy_from_slice(&k[..nope]);
                dst[nope..].copy_from_slice(&v[h * hd..][..hd]);
                for (a, &b) in dkpe.iter_mut().zip(&k[nope..]) {
                    *a += b;
                }
            }
        });
}

/// Plain specifications, for the tests.
pub mod reference {
    use super::KvExpand;

    /// (k, v) of head `h` in row `t`, from the definitions.
    pub fn head_kv(
        kv: &[f32],
        kpe: &[f32],
        s: KvExpand,
        t: usize,
        h: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let row = &kv[t * s.kv()..][..s.kv()];
        let per = s.nope + s.head_dim;
        let mut k = row[h * per..h * per + s.nope].to_vec();
        k.extend_from_slice(&kpe[t * s.rope..][..s.rope]);
        let v = row[h * per + s.nope..(h + 1) * per].to_vec();
        (k, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{dot, projection};

    #[test]
    fn bias_gradient_is_the_column_sums_and_checks_against_finite_differences() {
        let (n, w) = (37, 5);
        let mut rng = crate::Rng::new(3);
        let mut dy = vec![0f32; n * w];
        rng.fill_normal(&mut dy, 1.0);
        let mut db = vec![1f32; w];
        bias_backward(&mut db, &dy);
        for j in 0..w {
            let sum: f64 = (0..n).map(|i| dy[i * w + j] as f64).sum();
            assert!((db[j] as f64 - 1.0 - sum).abs() < 1e-4, "column {j}");
        }
        // L = Σ dy · (x + b): dL/db_j by central differences equals the column sum.
        let x = vec![0.5f32; n * w];
        let loss = |b: &[f32]| {
            let mut y = x.clone();
            add_bias(&mut y, b);
            y.iter()
                .zip(&dy)
                .map(|(a, g)| (*a as f64) * (*g as f64))
                .sum::<f64>()
        };
        let b = vec![0.1f32; w];
        for j in 0..w {
            let (mut up, mut down) = (b.clone(), b.clone());
            up[j] += 1e-2;
            down[j] -= 1e-2;
            let fd = (loss(&up) - loss(&down)) / 2e-2;
            assert!((fd - (db[j] as f64 - 1.0)).abs() < 1e-3, "column {j}: {fd}");
        }
    }

    const S: KvExpand = KvExpand {
        heads: 3,
        head_dim: 6,
        nope: 4,
        rope: 2,
    };

    #[test]
    fn concat_then_split_gives_back_the_halves() {
        let (a, b) = (projection(5 * 3, 1), projection(5 * 4, 2));
        let mut cat = vec![0f32; 5 * 7];
        concat_cols(&mut cat, &a, &b, 3, 4);
        assert_eq!(&cat[7..10], &a[3..6]);
        assert_eq!(&cat[10..14], &b[4..8]);
        let (mut a2, mut b2) = (vec![0f32; 15], vec![0f32; 20]);
        split_cols(&mut a2, &mut b2, &cat, 3, 4);
        assert_eq!((a2, b2), (a, b));
    }

    #[test]
    fn expansion_matches_the_definition_and_its_backward_is_its_adjoint() {
        let n = 5;
        let (kv, kpe) = (projection(n * S.kv(), 3), projection(n * S.rope, 4));
        let mut qkv = projection(n * S.qkv(), 5);
        let q_before: Vec<f32> = qkv.chunks(S.qkv()).flat_map(|r| r[..18].to_vec()).collect();
        expand_kv(&mut qkv, &kv, &kpe, S);
        let att = S.heads * S.head_dim;
        for t in 0..n {
            let row = &qkv[t * S.qkv()..][..S.qkv()];
            assert_eq!(
                &row[..att],
                &q_before[t * att..][..att],
                "queries untouched"
            );
            for h in 0..S.heads {
                let (k, v) = reference::head_kv(&kv, &kpe, S, t, h);
                assert_eq!(&row[att + h * 6..][..6], &k[..]);
                assert_eq!(&row[2 * att + h * 6..][..6], &v[..]);
            }
        }
        // ⟨expand(kv, kpe), g⟩ = ⟨(kv, kpe), expandᵀ(g)⟩ on the k and v columns.
        let mut g = projection(n * S.qkv(), 6);
        g.chunks_mut(S.qkv()).for_each(|r| r[..att].fill(0.0));
        let (mut dkv, mut dkpe) = (vec![0f32; kv.len()], vec![0f32; kpe.len()]);
        expand_kv_backward(&mut dkv, &mut dkpe, &g, S);
        let lhs = dot(&qkv, &g);
        let rhs = dot(&kv, &dkv) + dot(&kpe, &dkpe);
        assert!(
            (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }
}
