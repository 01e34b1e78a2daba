//! bf16 matrix products on Intel AMX tiles (Sapphire Rapids and later): the same product as
//! `super::bf16` (C in f32 = bf16(A) · bf16(B), accumulated in f32), several times faster.
//!
//! A tile register holds 16 rows of 64 bytes. TDPBF16PS multiplies a 16 × 32 bf16 tile of A by a
//! 32 × 16 tile of B, stored as 16 rows of 16 (k, k + 1) pairs (the "VNNI" layout `bf16::pack`
//! already writes for its B panels), and adds the 16 × 16 products into an f32 tile: 8,192
//! multiply-adds per instruction against VDPBF16PS's 32, so one core reaches ~840 GFLOP/s on
//! operands in cache (measured on the 2-core Xeon these figures come from) against ~100 for the
//! AVX-512 kernel. The register tile here is 32 × 32 (four accumulator tiles, two of A, two of
//! B); the products are then bound by packing and memory, so the panels are deep (KC = 1024).
//!
//! Rust has no stable AMX intrinsics, so detection reads CPUID and the kernel is inline
//! assembly. Linux hands the 8 KB of tile state to a process only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); `available()` asks once, and is
//! false where the CPU, the kernel or the operating system lacks AMX, or when the environment
//! sets `FRUGAL_NO_AMX=1` (to measure the AVX-512 kernel on the same machine).

use super::{Blocking, Gemm, Threads};
use crate::SendPtr;
use std::sync::OnceLock;

/// The register tile: 32 × 32 f32 accumulators in four tiles.
const MR: usize = 32;
const NR: usize = 32;
/// k per packed block (a multiple of 32, one tile's depth); rows and columns per parallel task.
const KC: usize = 1024;
const MC: usize = 64;
const NC: usize = 256;
/// Pairs of k per tile load: 64 bytes of bf16.
const CHUNK: usize = 16;

/// Whether this process may compute on AMX tiles (see the module's notes).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("FRUGAL_NO_AMX").is_none_or(|v| v == "0") && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let leaf7 = __cpuid_count(7, 0);
    let (amx_bf16, amx_tile) = ((leaf7.edx >> 22) & 1 == 1, (leaf7.edx >> 24) & 1 == 1);
    amx_bf16 && amx_tile && super::bf16::available() && request_tile_permission()
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): 0 once the kernel lets this process
/// (every thread of it) use the tile registers; an error on kernels without AMX support.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call; it reads no memory of ours and clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// C = bf16(op(A))·bf16(op(B)) [+ C] on `threads`. The caller has checked the bounds, counted
/// the FLOPs, handled m, n or k = 0, and `available()` is true.
///
/// # Safety
/// C's m rows of n (ldc apart) lie inside one allocation, and no other thread accesses them.
pub(crate) unsafe fn run(g: &Gemm, a: &[f32], b: &[f32], c: *mut f32, threads: Threads) {
    assert!(available(), "amx::run: this process cannot use AMX");
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
        padded_pairs,
        |panel, first, p0, kc| pack_a(panel, a, first, m, ars, acs, p0, kc),
        |panel, first, p0, kc| {
            let (data, pad) = panel.split_at_mut(NR * kc.div_ceil(2));
            super::bf16::pack(data, b, first, n, NR, bcs, brs, p0, kc);
            pad.fill(0);
        },
        Tiles::configure,
        |padded, apanel, bpanel, i, j, overwrite| {
            let (rows, cols) = (MR.min(m - i), NR.min(n - j));
            // SAFETY: the tile (i.., j..) of C lies inside it (`check`), tasks own disjoint row
            // and column ranges, and this thread's tiles are configured (`Tiles::configure`,
            // once per task).
            unsafe {
                let out = cp.get().add(i * g.ldc + j);
                tile(padded, apanel, bpanel, out, g.ldc, rows, cols, overwrite);
            }
        },
    )
}

/// Pairs of k in a block of `kc`, rounded up to whole tile loads (the rest are zero).
fn padded_pairs(kc: usize) -> usize {
    kc.div_ceil(2).next_multiple_of(CHUNK)
}

/// Packs rows `first`.. (of `len`) of op(A), k in p0..p0 + kc, into the layout A's tiles load:
/// row r's pairs contiguous, panel[r·padded + q] = (k = p0 + 2q, 2q + 1), zero past kc and past
/// the last row. Where k is contiguous in A (activations times a weight) each row is converted
/// in place; otherwise `bf16::pack` writes the pairs by k first (its kernel's order) and they
/// are transposed.
#[allow(clippy::too_many_arguments)]
fn pack_a(
    panel: &mut [u32],
    a: &[f32],
    first: usize,
    len: usize,
    rs: isize,
    cs: isize,
    p0: usize,
    kc: usize,
) {
    let (pairs, padded) = (kc.div_ceil(2), panel.len() / MR);
    let rows = MR.min(len - first);
    if cs == 1 {
        for (r, row) in panel.chunks_exact_mut(padded).enumerate() {
            if r < rows {
                let start = ((first + r) as isize * rs) as usize + p0;
                convert_pairs(&mut row[..pairs], &a[start..start + kc]);
                row[pairs..].fill(0);
            } else {
                row.fill(0);
            }
        }
        return;
    }
    let mut by_k = vec![0u32; MR * pairs];
    super::bf16::pack(&mut by_k, a, first, len, MR, rs, cs, p0, kc);
    // by_k[q·MR + r] → panel[r·padded + q]: 16 × 16 blocks in registers, the rest one by one.
    let whole = pairs / 16 * 16;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` implies AVX-512; every block read lies in by_k (q + 16 ≤ pairs,
    // r + 16 ≤ MR) and every block written in the panel (q + 16 ≤ padded).
    unsafe {
        transpose_blocks(panel, &by_k, padded, whole)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let whole = 0;
    for (r, row) in panel.chunks_exact_mut(padded).enumerate() {
        for (q, slot) in row.iter_mut().enumerate().take(pairs).skip(whole) {
            *slot = by_k[q * MR + r];
        }
        row[pairs..].fill(0);
    }
}

/// panel[r·padded + q] = by_k[q·MR + r] for q < `whole` (a multiple of 16), every r < MR.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_blocks(panel: &mut [u32], by_k: &[u32], padded: usize, whole: usize) {
    use std::arch::x86_64::*;
    for q in (0..whole).step_by(16) {
        for r in (0..MR).step_by(16) {
            let mut v = [_mm512_setzero_si512(); 16];
            for (t, v) in v.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(by_k.as_ptr().add((q + t) * MR + r) as *const _);
            }
            for (s, row) in super::bf16::transpose_16x16(v).iter().enumerate() {
                _mm512_storeu_si512(panel.as_mut_ptr().add((r + s) * padded + q) as *mut _, *row);
            }
        }
    }
}

/// out[q] = bf16 pair (src[2q], src[2q + 1]), the last one zero-padded when src is odd.
fn convert_pairs(out: &mut [u32], src: &[f32]) {
    debug_assert_eq!(out.len(), src.len().div_ceil(2));
    // SAFETY: `available()` implies AVX-512 BF16; 32 floats are read and 16 pairs written
    // only while both fit.
    #[cfg(target_arch = "x86_64")]
    let mut q = unsafe { convert_pairs_avx512(out, src) };
    #[cfg(not(target_arch = "x86_64"))]
    let mut q = 0;
    let pair = super::bf16::pair;
    while 2 * q + 1 < src.len() {
        out[q] = pair(src[2 * q], src[2 * q + 1]);
        q += 1;
    }
    if src.len() % 2 == 1 {
        out[q] = pair(src[src.len() - 1], 0.0);
    }
}

/// The whole 32-float groups of `convert_pairs`; returns how many pairs it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn convert_pairs_avx512(out: &mut [u32], src: &[f32]) -> usize {
    use std::arch::x86_64::*;
    let mut q = 0;
    while 2 * q + 32 <= src.len() {
        let lo = _mm512_loadu_ps(src.as_ptr().add(2 * q));
        let hi = _mm512_loadu_ps(src.as_ptr().add(2 * q + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr().add(q) as *mut _, v);
        q += 16;
    }
    q
}

/// The tile configuration for as long as it lives: all eight tiles 16 rows × 64 bytes. Tile
/// state is per thread; releasing it lets the kernel skip saving 8 KB on context switches.
struct Tiles;

impl Tiles {
    fn configure() -> Self {
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut cfg = [0u8; 64];
        cfg[0] = 1; // palette 1
        for t in 0..8 {
            cfg[16 + 2 * t] = 64; // bytes per row
            cfg[48 + t] = 16; // rows
        }
        let cfg = Config(cfg);
        // SAFETY: `available()` holds (the only caller is `run`), so LDTILECFG exists and the
        // process may use tiles; the configuration is valid for palette 1.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
        }
        let _ = cfg;
        Tiles
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: as in `configure`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("tilerelease", options(nostack));
        }
    }
}

/// One 32 × 32 tile of C from `padded` pairs of k of an A and a B panel: written (overwrite) or
/// added, only its first rows × cols. A whole tile is loaded from and stored to C in place; an
/// edge tile goes through a buffer.
///
/// # Safety
/// `out` must address a rows × cols block of C with row stride ldc that no other thread
/// touches, and the thread's tiles must be configured (`Tiles`).
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    padded: usize,
    a: &[u32],
    b: &[u32],
    out: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    overwrite: bool,
) {
    debug_assert!(a.len() == MR * padded && b.len() == NR * padded);
    if rows == MR && cols == NR {
        kernel(
            padded / CHUNK,
            a.as_ptr(),
            padded * 4,
            b.as_ptr(),
            out,
            ldc * 4,
            !overwrite,
        );
        return;
    }
    let mut acc = [0f32; MR * NR];
    kernel(
        padded / CHUNK,
        a.as_ptr(),
        padded * 4,
        b.as_ptr(),
        acc.as_mut_ptr(),
        NR * 4,
        false,
    );
    super::bf16::store_tile(&acc, NR, out, ldc, rows, cols, overwrite);
}

/// C (32 × 32 f32 at `c`, rows `c_stride` bytes apart) = [C +] Σ over `chunks` tile loads of
/// A (32 rows `a_stride` bytes apart, 64 bytes of pairs per chunk) times B (16 pair-rows of 128
/// bytes per chunk: the panel of NR = 32 columns). tmm0..3: C's four quarters; tmm4/5: A's upper
/// and lower 16 rows; tmm6/7: B's left and right 16 columns.
///
/// # Safety
/// The panels must hold `chunks` whole loads, C a 32 × 32 block, and the tiles be configured.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel(
    chunks: usize,
    a: *const u32,
    a_stride: usize,
    b: *const u32,
    c: *mut f32,
    c_stride: usize,
    load: bool,
) {
    let lower = (a as *const u8).add(16 * a_stride);
    let (c_right, c_lower) = ((c as *mut u8).add(64), (c as *mut u8).add(16 * c_stride));
    std::arch::asm!(
        "test {load}, {load}",
        "jz 3f",
        "tileloadd tmm0, [{c} + {cs}*1]",
        "tileloadd tmm1, [{cr} + {cs}*1]",
        "tileloadd tmm2, [{cl} + {cs}*1]",
        "tileloadd tmm3, [{cl} + {cs}*1 + 64]",
        "jmp 2f",
        "3:",
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "2:",
        "tileloadd tmm4, [{a} + {as}*1]",
        "tileloadd tmm6, [{b} + {bs}*1]",
        "tileloadd tmm7, [{b} + {bs}*1 + 64]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{al} + {as}*1]",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, 64",
        "add {al}, 64",
        "add {b}, 2048",
        "dec {n}",
        "jnz 2b",
        "tilestored [{c} + {cs}*1], tmm0",
        "tilestored [{cr} + {cs}*1], tmm1",
        "tilestored [{cl} + {cs}*1], tmm2",
        "tilestored [{cl} + {cs}*1 + 64], tmm3",
        load = in(reg) load as usize,
        a = inout(reg) a => _,
        al = inout(reg) lower => _,
        as = in(reg) a_stride,
        b = inout(reg) b => _,
        bs = in(reg) NR * 4,
        n = inout(reg) chunks => _,
        c = in(reg) c,
        cr = in(reg) c_right,
        cl = in(reg) c_lower,
        cs = in(reg) c_stride,
        options(nostack),
    );
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: usize, _: *const u32, _: usize, _: *const u32, _: *mut f32, _: usize, _: bool) {
    unreachable!("AMX is an x86-64 extension")
}

#[cfg(test)]
mod tests {
    use super::super::bf16::tests::assert_matches_rounded_product;
    use super::*;

    /// Every layout, ragged sizes (tile, task and k-block edges, odd k, k past one block),
    /// overwrite and accumulate, against an f64 product of the bf16-rounded operands. Where AMX
    /// is absent the test says so; the AVX-512 kernel then computes the products (`bf16`'s own
    /// test covers it).
    #[test]
    fn matches_the_product_of_rounded_operands() {
        if !available() {
            eprintln!("no AMX here (CPU, kernel or FRUGAL_NO_AMX): AMX kernel not exercised");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (33, 31, 7),
            (32, 32, 64),
            (70, 300, 65),
            (64, 256, 1024),
            (40, 70, 1100),
        ];
        assert_matches_rounded_product(run, &shapes, 5);
    }
}
