//! C (m, n) = A (m, k) · B (n, k)ᵀ for a few rows of A: the decode step of inference, where m
//! is the batch and B a weight matrix streamed from memory (or L3) once per step.
//!
//! A packed GEMM copies B before using it, tripling its memory traffic; here every row of B is
//! read once. The work is register tiles: up to `Lanes::ROWS` rows of A against four rows of B,
//! each pair its own vector accumulator, so every vector loaded feeds several fused
//! multiply-adds and four independent accumulation chains hide the FMA's latency. A dot
//! product of one row against one row, as a plain loop does, waits on its single chain and on
//! two loads per multiply-add. The tile loop is written once (`columns`) over the vector width
//! (`Lanes`: AVX-512's 16 lanes or AVX2's 8); other targets take a portable loop.

use rayon::prelude::*;

/// Rows of A up to which `sgemm_nt_few_rows` is the better kernel. Measured on the speedrun
/// model's decode step (2 cores, `frugal bench infer`): with AVX-512 registers it takes 3.2 ms
/// at 16 rows against 5.5 ms packed, and ties at 32; the portable loop takes 3.7 ms at 8 rows
/// against 4.8 ms packed, but 6.5 ms at 16 against 5.5.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
pub const FEW_ROWS: usize = 16;
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
pub const FEW_ROWS: usize = 8;

/// Rows of B per parallel task.
const COLS: usize = 32;

/// C (m, n) = A (m, k) · B (n, k)ᵀ, m up to a few (see [`FEW_ROWS`]), on the rayon pool.
/// Measured against the gemm crate on the reference model's shapes with weights out of cache:
/// 1.3–2.5x at m = 4..8.
pub fn sgemm_nt_few_rows(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() == m * k && b.len() >= n * k && c.len() == m * n,
        "sgemm_nt_few_rows: shapes"
    );
    crate::flops::add(2 * (m * n * k) as u64);
    if m == 1 {
        // One row: C's row is Cᵀ, so each task writes its part of C directly.
        return c
            .par_chunks_mut(COLS)
            .enumerate()
            .for_each(|(chunk, out)| columns(1, k, a, &b[chunk * COLS * k..], out));
    }
    // Cᵀ (n, m), so that each task owns whole rows of its output.
    let mut ct = vec![0f32; n * m];
    ct.par_chunks_mut(COLS * m)
        .enumerate()
        .for_each(|(chunk, out)| columns(m, k, a, &b[chunk * COLS * k..], out));
    for (j, col) in ct.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            c[i * n + j] = v;
        }
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    any(
        target_feature = "avx512f",
        all(target_feature = "avx2", target_feature = "fma")
    )
)))]
use portable::columns;
#[cfg(all(
    target_arch = "x86_64",
    any(
        target_feature = "avx512f",
        all(target_feature = "avx2", target_feature = "fma")
    )
))]
use tiled::columns;

/// The register tiles, on x86-64 with AVX-512 or AVX2 + FMA.
#[cfg(all(
    target_arch = "x86_64",
    any(
        target_feature = "avx512f",
        all(target_feature = "avx2", target_feature = "fma")
    )
))]
mod tiled {
    /// A vector register of f32 lanes and the few operations the tiles need.
    trait Lanes {
        type V: Copy;
        /// f32s per register.
        const L: usize;
        /// Rows of A per tile: with four rows of B, ROWS · 4 accumulators and the loads' registers
        /// must fit the register file (32 registers with AVX-512, 16 with AVX2).
        const ROWS: usize;
        unsafe fn zero() -> Self::V;
        unsafe fn load(p: *const f32) -> Self::V;
        /// The first `n` < L floats at p, zeros after them; nothing past them is read.
        unsafe fn load_first(p: *const f32, n: usize) -> Self::V;
        /// a · b + c.
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        unsafe fn sum(v: Self::V) -> f32;
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    mod simd {
        use std::arch::x86_64::*;

        pub struct Avx512;

        impl super::Lanes for Avx512 {
            type V = __m512;
            const L: usize = 16;
            const ROWS: usize = 4;
            #[inline(always)]
            unsafe fn zero() -> __m512 {
                _mm512_setzero_ps()
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> __m512 {
                _mm512_loadu_ps(p)
            }
            #[inline(always)]
            unsafe fn load_first(p: *const f32, n: usize) -> __m512 {
                _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p)
            }
            #[inline(always)]
            unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
                _mm512_fmadd_ps(a, b, c)
            }
            #[inline(always)]
            unsafe fn sum(v: __m512) -> f32 {
                _mm512_reduce_add_ps(v)
            }
        }

        pub type Native = Avx512;
    }

    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        not(target_feature = "avx512f")
    ))]
    mod simd {
        use std::arch::x86_64::*;

        pub struct Avx2;

        impl super::Lanes for Avx2 {
            type V = __m256;
            const L: usize = 8;
            const ROWS: usize = 2;
            #[inline(always)]
            unsafe fn zero() -> __m256 {
                _mm256_setzero_ps()
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> __m256 {
                _mm256_loadu_ps(p)
            }
            #[inline(always)]
            unsafe fn load_first(p: *const f32, n: usize) -> __m256 {
                // Lanes below n get a mask with the sign bit set: only those are read.
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
                _mm256_maskload_ps(p, mask)
            }
            #[inline(always)]
            unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
                _mm256_fmadd_ps(a, b, c)
            }
            #[inline(always)]
            unsafe fn sum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
            }
        }

        pub type Native = Avx2;
    }

    /// out (cols, m) = rows of B (cols of them, each k long) · Aᵀ (m rows of k), in tiles.
    pub fn columns(m: usize, k: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
        type S = simd::Native;
        let cols = out.len() / m;
        assert!(a.len() >= m * k && b.len() >= cols * k);
        let mut j = 0;
        while j < cols {
            let nj = (cols - j).min(4);
            let mut i = 0;
            while i < m {
                let mi = (m - i).min(<S as Lanes>::ROWS);
                let mut t = [[0f32; 4]; 4];
                // SAFETY: rows i..i+mi of A and j..j+nj of B lie inside the slices (asserted
                // above); the instructions are enabled at compile time (the cfg on `simd`).
                unsafe {
                    let (x, w) = (a.as_ptr().add(i * k), b.as_ptr().add(j * k));
                    match (mi, nj) {
                        (4, 4) => tile::<S, 4, 4>(x, w, k, &mut t),
                        (3, 4) => tile::<S, 3, 4>(x, w, k, &mut t),
                        (2, 4) => tile::<S, 2, 4>(x, w, k, &mut t),
                        (1, 4) => tile::<S, 1, 4>(x, w, k, &mut t),
                        _ => {
                            for (r, row) in t.iter_mut().enumerate().take(mi) {
                                for (q, v) in row.iter_mut().enumerate().take(nj) {
                                    let mut one = [[0f32; 4]; 4];
                                    tile::<S, 1, 1>(x.add(r * k), w.add(q * k), k, &mut one);
                                    *v = one[0][0];
                                }
                            }
                        }
                    }
                }
                for (r, row) in t.iter().enumerate().take(mi) {
                    for (q, &v) in row.iter().enumerate().take(nj) {
                        out[(j + q) * m + i + r] = v;
                    }
                }
                i += mi;
            }
            j += nj;
        }
    }

    /// t[r][q] = x_r · w_q for M rows x_r and N rows w_q (each k long, consecutive).
    #[inline(always)]
    unsafe fn tile<S: Lanes, const M: usize, const N: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        t: &mut [[f32; 4]; 4],
    ) {
        let mut acc = [[S::zero(); N]; M];
        let full = k / S::L * S::L;
        let mut c = 0;
        while c < full {
            let wv: [S::V; N] = std::array::from_fn(|q| S::load(w.add(q * k + c)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = S::load(x.add(r * k + c));
                for (a, &wq) in acc.iter_mut().zip(&wv) {
                    *a = S::fma(xv, wq, *a);
                }
            }
            c += S::L;
        }
        if full < k {
            // The tail, with masked loads that read nothing past the row.
            let wv: [S::V; N] =
                std::array::from_fn(|q| S::load_first(w.add(q * k + full), k - full));
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = S::load_first(x.add(r * k + full), k - full);
                for (a, &wq) in acc.iter_mut().zip(&wv) {
                    *a = S::fma(xv, wq, *a);
                }
            }
        }
        for r in 0..M {
            for q in 0..N {
                t[r][q] = S::sum(acc[r][q]);
            }
        }
    }
}

/// Elsewhere: a portable loop the compiler vectorises.
#[cfg(not(all(
    target_arch = "x86_64",
    any(
        target_feature = "avx512f",
        all(target_feature = "avx2", target_feature = "fma")
    )
)))]
mod portable {
    /// out (cols, m) = rows of B (cols of them, each k long) · Aᵀ (m rows of k): four rows of A
    /// at a time against one row of B.
    pub fn columns(m: usize, k: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
        for (j, col) in out.chunks_exact_mut(m).enumerate() {
            let w = &b[j * k..(j + 1) * k];
            let mut i = 0;
            while i + 4 <= m {
                col[i..i + 4].copy_from_slice(&dots::<4>(&a[i * k..(i + 4) * k], k, w));
                i += 4;
            }
            for (r, o) in col.iter_mut().enumerate().skip(i) {
                *o = dots::<1>(&a[r * k..(r + 1) * k], k, w)[0];
            }
        }
    }

    /// The dot products of M consecutive rows of x (each k long) with w, in one pass over w.
    #[inline]
    fn dots<const M: usize>(x: &[f32], k: usize, w: &[f32]) -> [f32; M] {
        const L: usize = 16;
        let mut acc = [[0f32; L]; M];
        let full = k / L * L;
        for c in (0..full).step_by(L) {
            // Fixed-size views: no bounds checks inside, so the lane loop becomes one vector op.
            let wc: &[f32; L] = w[c..c + L].try_into().expect("L elements");
            for (r, acc) in acc.iter_mut().enumerate() {
                let xc: &[f32; L] = x[r * k + c..r * k + c + L].try_into().expect("L elements");
                for l in 0..L {
                    acc[l] += xc[l] * wc[l];
                }
            }
        }
        let mut out = [0f32; M];
        for (r, o) in out.iter_mut().enumerate() {
            let tail: f32 = (full..k).map(|i| x[r * k + i] * w[i]).sum();
            *o = acc[r].iter().sum::<f32>() + tail;
        }
        out
    }
}
