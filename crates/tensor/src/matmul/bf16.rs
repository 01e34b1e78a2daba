//! Matrix products in bf16 with f32 accumulation: C (f32) = bf16(A) · bf16(B) [+ C], the
//! mixed precision of bf16 training (f32 master weights and accumulators, bf16 operands).
//!
//! On x86 CPUs with AVX-512 BF16, VDPBF16PS multiplies 32 bf16 pairs and accumulates them into
//! 16 f32 lanes per instruction, twice the multiply-adds of an f32 FMA. The operands are rounded
//! to bf16 (nearest even) as they are packed into the kernel's panels, so callers keep f32
//! tensors throughout. Layout and blocking are those of a BLIS-style GEMM: A in panels of MR
//! rows, B in panels of NR columns, both with k in pairs (the instruction's unit), a register
//! tile of MR × NR accumulators. Elsewhere `available()` is false and callers stay in f32.
//! Where the CPU also has AMX tiles (`super::amx`), `gemm_bf16` runs the products there instead.

use super::{Blocking, Gemm, Threads};
use crate::SendPtr;

/// Rows and columns of the register tile: 8 × 32 accumulators in 16 zmm registers.
const MR: usize = 8;
const NR: usize = 32;
/// k per packed block (even), rows per parallel task, columns per parallel task.
const KC: usize = 256;
const MC: usize = 64;
const NC: usize = 512;

/// Whether this CPU runs bf16 products (AVX-512 BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 → bf16 bits, rounding to nearest even (NaN stays NaN).
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// x rounded to the nearest bf16.
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// The bf16 pair (lo, hi) as the kernels' u32 unit, lo in the low half.
pub(crate) fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// C = bf16(op(A))·bf16(op(B)) [+ C], accumulated in f32, on every thread of the rayon pool:
/// on AMX tiles where the process may use them, else on AVX-512 BF16 registers.
/// Panics if `available()` is false.
pub fn gemm_bf16(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    g.check(a, b, c);
    crate::flops::add(g.flops() as u64);
    super::run_bf16(g, a, b, c, super::Threads::Pool);
}

/// The product on AVX-512 BF16 registers. The caller has checked the bounds, counted the FLOPs
/// and handled m, n or k = 0 (`super::run_bf16`, which also prefers AMX where it can).
///
/// # Safety
/// C's m rows of n (ldc apart) lie inside one allocation, and no other thread accesses them.
pub(crate) unsafe fn run(g: &Gemm, a: &[f32], b: &[f32], c: *mut f32, threads: Threads) {
    assert!(available(), "gemm_bf16: this CPU lacks AVX-512 BF16");
    let (m, n) = (g.m, g.n);
    let ((ars, acs), (brs, bcs)) = g.strides();
    let cp = SendPtr(c);
    let blocking = Blocking {
        mr: MR,
        nr: NR,
        kc: KC,
        mc: MC,
        nc: NC,
    };
    super::blocked(
        g,
        threads,
        blocking,
        |kc| kc.div_ceil(2),
        |panel, first, p0, kc| pack(panel, a, first, m, MR, ars, acs, p0, kc),
        |panel, first, p0, kc| pack(panel, b, first, n, NR, bcs, brs, p0, kc),
        || (),
        |pairs, apanel, bpanel, i, j, overwrite| {
            let (rows, cols) = (MR.min(m - i), NR.min(n - j));
            // SAFETY: the tile (i.., j..) of C lies inside it (`check`), and tasks own disjoint
            // row and column ranges.
            unsafe {
                let out = cp.get().add(i * g.ldc + j);
                tile(pairs, apanel, bpanel, out, g.ldc, rows, cols, overwrite);
            }
        },
    )
}

/// Packs `w` rows or columns (`first`.. of `len`, zero past it) of a matrix whose element
/// (x, p) is at src[x·xs + p·ps], for p in p0..p0 + kc, as u32 bf16 pairs of consecutive p:
/// panel[q·w + r] = (x = first + r, p = p0 + 2q, 2q + 1), zero past kc.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack(
    panel: &mut [u32],
    src: &[f32],
    first: usize,
    len: usize,
    w: usize,
    xs: isize,
    ps: isize,
    p0: usize,
    kc: usize,
) {
    let pairs = kc.div_ceil(2);
    let at = |x: usize, p: usize| src[(x as isize * xs + p as isize * ps) as usize];
    let rows = w.min(len - first);
    if rows < w {
        panel.fill(0);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let base = first as isize * xs + p0 as isize * ps;
        let need = |rows: usize, along: usize, stride: isize| {
            base as usize + (rows - 1) * stride as usize + along
        };
        if rows == w && ps == 1 && need(w, kc, xs) <= src.len() {
            // SAFETY: rows first.. and columns p0..p0 + kc lie inside src (checked above).
            unsafe { pack_k_contiguous(panel, src.as_ptr().offset(base), xs as usize, w, kc) };
            return;
        }
        if rows == w && xs == 1 && (w == 8 || w == 32) && need(kc, w, ps) <= src.len() {
            // SAFETY: as above, with k along the rows of src.
            unsafe { pack_x_contiguous(panel, src.as_ptr().offset(base), ps as usize, w, kc) };
            return;
        }
    }
    for r in 0..rows {
        let x = first + r;
        for q in 0..kc / 2 {
            let p = p0 + 2 * q;
            panel[q * w + r] = pair(at(x, p), at(x, p + 1));
        }
        if kc % 2 == 1 {
            panel[(pairs - 1) * w + r] = pair(at(x, p0 + kc - 1), 0.0);
        }
    }
}

/// `pack` where k is contiguous (A as stored for x·Wᵀ, B = Wᵀ): each row's pairs are
/// consecutive floats, converted 32 at a time. Sixteen rows at a time, the 16 × 16 block of
/// pairs is transposed in registers so that the panel is written in whole vectors; narrower
/// panels (w = 8) spread each vector's pairs into the panel `w` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn pack_k_contiguous(
    panel: &mut [u32],
    src: *const f32,
    stride: usize,
    w: usize,
    kc: usize,
) {
    use std::arch::x86_64::*;
    let whole = kc / 32 * 16; // pairs converted by vectors
    let convert = |row: *const f32, q: usize| -> __m512i {
        let (lo, hi) = (
            _mm512_loadu_ps(row.add(2 * q)),
            _mm512_loadu_ps(row.add(2 * q + 16)),
        );
        std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo))
    };
    let mut r = 0;
    if w.is_multiple_of(16) {
        while r < w {
            for q in (0..whole).step_by(16) {
                let mut v = [_mm512_setzero_si512(); 16];
                for (i, v) in v.iter_mut().enumerate() {
                    *v = convert(src.add((r + i) * stride), q);
                }
                for (t, col) in transpose_16x16(v).iter().enumerate() {
                    _mm512_storeu_si512(panel.as_mut_ptr().add((q + t) * w + r) as *mut _, *col);
                }
            }
            r += 16;
        }
    } else {
        let mut lanes = [0u32; 16];
        for r in 0..w {
            for q in (0..whole).step_by(16) {
                _mm512_storeu_si512(
                    lanes.as_mut_ptr() as *mut _,
                    convert(src.add(r * stride), q),
                );
                for (t, &l) in lanes.iter().enumerate() {
                    *panel.get_unchecked_mut((q + t) * w + r) = l;
                }
            }
        }
    }
    // The pairs past the last whole vector, one at a time.
    for r in 0..w {
        let row = src.add(r * stride);
        let mut q = whole;
        while 2 * q + 1 < kc {
            panel[q * w + r] = pair(*row.add(2 * q), *row.add(2 * q + 1));
            q += 1;
        }
        if kc % 2 == 1 {
            panel[q * w + r] = pair(*row.add(kc - 1), 0.0);
        }
    }
}

/// The transpose of a 16 × 16 block of u32 (row i in v[i]): out[j] lane i = v[i] lane j. Pairs
/// of rows interleave their 32-bit lanes, then pairs of those their 64-bit lanes, which leaves
/// u[4g + c] holding, in each 128-bit block b, rows 4g..4g + 4 of column 4b + c; two rounds of
/// 128-bit shuffles gather each column's four blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_16x16(
    v: [std::arch::x86_64::__m512i; 16],
) -> [std::arch::x86_64::__m512i; 16] {
    use std::arch::x86_64::*;
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let t = &t[4 * g..4 * g + 4];
        u[4 * g] = _mm512_unpacklo_epi64(t[0], t[2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[0], t[2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[1], t[3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[1], t[3]);
    }
    let mut out = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let (x, y) = (
            _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]),
            _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]),
        );
        out[c] = _mm512_shuffle_i32x4::<0x88>(x, y);
        out[4 + c] = _mm512_shuffle_i32x4::<0xDD>(x, y);
        let (x, y) = (
            _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]),
            _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]),
        );
        out[8 + c] = _mm512_shuffle_i32x4::<0x88>(x, y);
        out[12 + c] = _mm512_shuffle_i32x4::<0xDD>(x, y);
    }
    out
}

/// `pack` where the panel's rows or columns are contiguous and k strides (B as stored for
/// dy·W, A as stored for dyᵀ·x): two k-rows at a time are converted and interleaved.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
unsafe fn pack_x_contiguous(
    panel: &mut [u32],
    src: *const f32,
    stride: usize,
    w: usize,
    kc: usize,
) {
    use std::arch::x86_64::*;
    let out = panel.as_mut_ptr();
    // Output lane 2t takes row 0's element t, lane 2t + 1 row 1's (index 32 + t).
    let mut lo_idx = [0i16; 32];
    let mut hi_idx = [0i16; 32];
    for t in 0..16 {
        lo_idx[2 * t] = t as i16;
        lo_idx[2 * t + 1] = 32 + t as i16;
        hi_idx[2 * t] = 16 + t as i16;
        hi_idx[2 * t + 1] = 48 + t as i16;
    }
    let lo_idx = _mm512_loadu_si512(lo_idx.as_ptr() as *const _);
    let hi_idx = _mm512_loadu_si512(hi_idx.as_ptr() as *const _);
    for q in 0..kc / 2 {
        let (r0, r1) = (src.add(2 * q * stride), src.add((2 * q + 1) * stride));
        let dst = out.add(q * w);
        if w == 32 {
            let a: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(
                _mm512_loadu_ps(r0.add(16)),
                _mm512_loadu_ps(r0),
            ));
            let b: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(
                _mm512_loadu_ps(r1.add(16)),
                _mm512_loadu_ps(r1),
            ));
            _mm512_storeu_si512(dst as *mut _, _mm512_permutex2var_epi16(a, lo_idx, b));
            _mm512_storeu_si512(
                dst.add(16) as *mut _,
                _mm512_permutex2var_epi16(a, hi_idx, b),
            );
        } else {
            // w == 8: both rows' 8 values in one conversion, [row 0 | row 1], then interleaved.
            let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_insertf32x8::<1>(
                _mm512_castps256_ps512(_mm256_loadu_ps(r0)),
                _mm256_loadu_ps(r1),
            )));
            let (a, b) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            _mm_storeu_si128(dst as *mut _, _mm_unpacklo_epi16(a, b));
            _mm_storeu_si128(dst.add(4) as *mut _, _mm_unpackhi_epi16(a, b));
        }
    }
    if kc % 2 == 1 {
        let r0 = src.add((kc - 1) * stride);
        for r in 0..w {
            panel[(kc / 2) * w + r] = pair(*r0.add(r), 0.0);
        }
    }
}

/// One MR × NR tile of C from `pairs` k-pairs of an A panel and a B panel: written (overwrite)
/// or added, only its first rows × cols.
///
/// # Safety
/// `out` must address a rows × cols block of C with row stride ldc that no other thread touches.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    pairs: usize,
    a: &[u32],
    b: &[u32],
    out: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    overwrite: bool,
) {
    let mut acc = [0f32; MR * NR];
    #[cfg(target_arch = "x86_64")]
    kernel(pairs, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr());
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "gemm_bf16 needs AVX-512 BF16 ({pairs} {} {})",
        a.len(),
        b.len()
    );
    store_tile(&acc, NR, out, ldc, rows, cols, overwrite);
}

/// Writes (overwrite) or adds the first rows × cols of a register tile `acc` (rows `width`
/// apart) into C.
///
/// # Safety
/// `out` must address a rows × cols block of C with row stride ldc that no other thread touches.
pub(crate) unsafe fn store_tile(
    acc: &[f32],
    width: usize,
    out: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    overwrite: bool,
) {
    for r in 0..rows {
        let dst = std::slice::from_raw_parts_mut(out.add(r * ldc), cols);
        let src = &acc[r * width..][..cols];
        if overwrite {
            dst.copy_from_slice(src);
        } else {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        }
    }
}

/// acc (MR × NR, row-major) = Σ_q a[q] ⊗ b[q] over bf16 pairs, with VDPBF16PS.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn kernel(pairs: usize, a: *const u32, b: *const u32, acc: *mut f32) {
    use std::arch::x86_64::*;
    let mut c = [[_mm512_setzero_ps(); 2]; MR];
    for q in 0..pairs {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
        for (r, c) in c.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(q * MR + r) as i32));
            c[0] = _mm512_dpbf16_ps(c[0], av, b0);
            c[1] = _mm512_dpbf16_ps(c[1], av, b1);
        }
    }
    for (r, c) in c.iter().enumerate() {
        _mm512_storeu_ps(acc.add(r * NR), c[0]);
        _mm512_storeu_ps(acc.add(r * NR + 16), c[1]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Rng;

    /// A bf16 product kernel (`run` of this module or of `amx`): C = bf16(op(A))·bf16(op(B))
    /// [+ C] in f32, on the given threads.
    pub(crate) type Kernel = unsafe fn(&Gemm, &[f32], &[f32], *mut f32, Threads);

    /// Checks `kernel` on every layout of each (m, n, k), overwriting and accumulating, on the
    /// pool and on the calling thread alone (the same tiles, another schedule), against an f64
    /// product of the bf16-rounded operands, with this thread's reused panels full of NaNs.
    pub(crate) fn assert_matches_rounded_product(
        kernel: Kernel,
        shapes: &[(usize, usize, usize)],
        seed: u64,
    ) {
        let mut rng = Rng::new(seed);
        for &(m, n, k) in shapes {
            for (ta, tb) in [(false, false), (false, true), (true, false)] {
                for acc in [false, true] {
                    let g = match (ta, tb) {
                        (false, false) => Gemm::nn(m, n, k),
                        (false, true) => Gemm::nt(m, n, k),
                        _ => Gemm::tn(m, n, k),
                    }
                    .accumulate(acc);
                    let mut a = vec![0f32; m * k];
                    let mut b = vec![0f32; k * n];
                    rng.fill_normal(&mut a, 1.0);
                    rng.fill_normal(&mut b, 1.0);
                    let outs = [Threads::Pool, Threads::Caller].map(|threads| {
                        let mut c = vec![0.5f32; m * n];
                        // Reused panels must be rewritten wherever read: NaN pairs left over
                        // in them would show in C.
                        super::super::poison_panels(1 << 20);
                        // SAFETY: c holds the m × n product and no other thread touches it.
                        unsafe { kernel(&g, &a, &b, c.as_mut_ptr(), threads) };
                        (threads, c)
                    });
                    let ((ars, acs), (brs, bcs)) = g.strides();
                    for i in 0..m {
                        for j in 0..n {
                            let mut want = if acc { 0.5f64 } else { 0.0 };
                            let mut mag = 0f64;
                            for p in 0..k {
                                let x = a[(i as isize * ars + p as isize * acs) as usize];
                                let y = b[(p as isize * brs + j as isize * bcs) as usize];
                                let t = round_bf16(x) as f64 * round_bf16(y) as f64;
                                want += t;
                                mag += t.abs();
                            }
                            for (threads, c) in &outs {
                                let got = c[i * n + j] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-5 * (mag + 1.0),
                                    "{g:?} on {threads:?} at ({i}, {j}): {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every layout, ragged sizes (tile, panel and k-block edges, odd k), overwrite and
    /// accumulate, against an f64 product of the bf16-rounded operands: the AVX-512 kernel
    /// itself, even where `gemm_bf16` picks AMX tiles. A CPU without AVX-512 BF16 must refuse
    /// the product instead.
    #[test]
    fn matches_the_product_of_rounded_operands() {
        if !available() {
            let refused = std::panic::catch_unwind(|| {
                gemm_bf16(&Gemm::nn(1, 1, 1), &[1.0], &[1.0], &mut [0.0]);
            });
            assert!(refused.is_err(), "gemm_bf16 ran without AVX-512 BF16");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (9, 33, 7),
            (70, 65, 300),
            (8, 32, 512),
            (70, 100, 257),
        ];
        assert_matches_rounded_product(run, &shapes, 3);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose_16x16_transposes() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("transpose_16x16_transposes: this CPU lacks AVX-512F; nothing uses it here");
            return;
        }
        let block: Vec<u32> = (0..256).collect();
        // SAFETY: AVX-512F is present (checked above).
        let out = unsafe {
            use std::arch::x86_64::*;
            let mut v = [_mm512_setzero_si512(); 16];
            for (i, v) in v.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(block[16 * i..].as_ptr() as *const _);
            }
            std::mem::transmute::<[__m512i; 16], [u32; 256]>(transpose_16x16(v))
        };
        for (i, j) in (0..16).flat_map(|i| (0..16).map(move |j| (i, j))) {
            assert_eq!(out[16 * j + i], block[16 * i + j], "({i}, {j})");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa, 1.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
    }
}
