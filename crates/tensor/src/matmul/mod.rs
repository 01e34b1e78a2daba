//! Matrix products: C (m×n) = op(A) (m×k) · op(B) (k×n) [+ C], all row-major.
//!
//! The backend was chosen by measurement on the 2-core reference machine (f32, 2 threads, shapes
//! of the reference preset): the `gemm` crate reaches 130–204 GFLOP/s, Debian's OpenBLAS 0.3.21
//! 175–203 GFLOP/s, one core ~100. `gemm` is the default (pure Rust, nothing to install);
//! the `openblas` feature routes the large, thread-parallel products through the system library.
//! Small products inside already-parallel kernels (attention blocks, Newton–Schulz) run on the
//! calling thread, `sgemm_on_caller` (or always in f32, `sgemm_serial`): they must not spawn
//! threads of their own. Products with a few rows against a large weight (inference decode)
//! have their own kernel, `sgemm_nt_few_rows` (`few_rows`: register tiles over the vector
//! width, AVX-512 or AVX2).
//!
//! Inside `bf16_products` (a training run whose `train.precision` is bf16) large products round
//! their operands to bf16 and accumulate in f32: on AMX tiles (`amx`) where the CPU and kernel
//! allow, else on AVX-512 BF16 registers (`bf16`); `run_bf16` chooses, `Threads` says whether
//! a product's panels and tiles are spread over the pool or stay on the caller. Both kernels
//! share one blocked loop (`blocked`: pack A's and B's panels per k block, then the register
//! tiles of each task) over per-thread reused panel buffers (`with_panels`).

pub mod amx;
pub mod bf16;
mod few_rows;

pub use few_rows::{sgemm_nt_few_rows, FEW_ROWS};

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shape and layout of one product. Operands are row-major with leading dimensions `lda`, `ldb`,
/// `ldc` (the distance between rows as stored); `ta`/`tb` use the stored matrix transposed.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// C += product (true) or C = product (false).
    pub accumulate: bool,
}

impl Gemm {
    fn new(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Self {
        let lda = if ta { m } else { k };
        let ldb = if tb { k } else { n };
        Gemm {
            m,
            n,
            k,
            ta,
            tb,
            lda,
            ldb,
            ldc: n,
            accumulate: false,
        }
    }
    /// C = A·B with A (m×k), B (k×n).
    pub fn nn(m: usize, n: usize, k: usize) -> Self {
        Self::new(m, n, k, false, false)
    }
    /// C = A·Bᵀ with A (m×k), B stored (n×k): a linear layer's forward, y = x·Wᵀ.
    pub fn nt(m: usize, n: usize, k: usize) -> Self {
        Self::new(m, n, k, false, true)
    }
    /// C = Aᵀ·B with A stored (k×m), B (k×n): a weight gradient, dW = dYᵀ·X.
    pub fn tn(m: usize, n: usize, k: usize) -> Self {
        Self::new(m, n, k, true, false)
    }
    pub fn accumulate(mut self, yes: bool) -> Self {
        self.accumulate = yes;
        self
    }
    pub fn ld(mut self, lda: usize, ldb: usize, ldc: usize) -> Self {
        self.lda = lda;
        self.ldb = ldb;
        self.ldc = ldc;
        self
    }

    pub(crate) fn flops(&self) -> usize {
        2 * self.m * self.n * self.k
    }

    /// (row stride, column stride) of op(A) and op(B) as stored.
    pub(crate) fn strides(&self) -> ((isize, isize), (isize, isize)) {
        let a = if self.ta {
            (1, self.lda as isize)
        } else {
            (self.lda as isize, 1)
        };
        let b = if self.tb {
            (1, self.ldb as isize)
        } else {
            (self.ldb as isize, 1)
        };
        (a, b)
    }

    /// Panics unless the slices hold every element the product touches: callers compute
    /// shapes, so a violation is a bug in frugal, and this keeps the unsafe call sound.
    pub(crate) fn check(&self, a: &[f32], b: &[f32], c: &[f32]) {
        self.check_operands(a, b);
        assert!(
            c.len() >= need(self.m, self.n, self.ldc),
            "gemm: C has {} values, {self:?} needs more",
            c.len()
        );
    }

    /// `check` of A and B alone (for products writing C through a raw pointer).
    pub(crate) fn check_operands(&self, a: &[f32], b: &[f32]) {
        let (ar, ac) = if self.ta {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.tb {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        assert!(
            ac <= self.lda && bc <= self.ldb && self.n <= self.ldc,
            "gemm: leading dimension too small: {self:?}"
        );
        assert!(
            a.len() >= need(ar, ac, self.lda),
            "gemm: A has {} values, {self:?} needs more",
            a.len()
        );
        assert!(
            b.len() >= need(br, bc, self.ldb),
            "gemm: B has {} values, {self:?} needs more",
            b.len()
        );
    }
}

/// Elements a row-major (rows × cols) matrix with leading dimension `ld` spans.
fn need(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// Products below this many FLOPs run on one thread: splitting them costs more than it saves.
const PARALLEL_MIN_FLOPS: usize = 1 << 21;

/// Whether `sgemm` computes its large products in bf16 (see `bf16_products`).
static BF16: AtomicBool = AtomicBool::new(false);

/// While the returned guard lives, `sgemm`'s products of at least PARALLEL_MIN_FLOPS (the
/// projections, the head, the weight gradients of a training step) round their operands to
/// bf16 and accumulate in f32 (`crate::bf16`); small products, `sgemm_serial` (attention's
/// blocks, the experts') and the decode kernel stay f32. Process-wide, like an autocast
/// region: the trainer holds it for a run. Fails if the CPU lacks AVX-512 BF16.
pub fn bf16_products() -> Result<Bf16Products, &'static str> {
    if !bf16::available() {
        return Err("this CPU lacks AVX-512 BF16");
    }
    Ok(Bf16Products {
        was: BF16.swap(true, Ordering::SeqCst),
    })
}

/// Restores f32 products (or what was in force before) when dropped.
pub struct Bf16Products {
    was: bool,
}

impl Drop for Bf16Products {
    fn drop(&mut self) {
        BF16.store(self.was, Ordering::SeqCst);
    }
}

/// Which threads a bf16 kernel's packing and tiles run on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Threads {
    /// Every thread of the current rayon pool.
    Pool,
    /// The calling thread only: for products inside an already-parallel loop, where splitting
    /// each small product again costs more in wake-ups than it gains.
    Caller,
}

impl Threads {
    /// f(i, chunk) for the first `count` chunks of `size` elements of `buf`.
    fn chunks<T: Send>(
        self,
        buf: &mut [T],
        size: usize,
        count: usize,
        f: impl Fn(usize, &mut [T]) + Send + Sync,
    ) {
        match self {
            Threads::Pool => buf
                .par_chunks_mut(size)
                .take(count)
                .enumerate()
                .for_each(|(i, c)| f(i, c)),
            Threads::Caller => buf
                .chunks_mut(size)
                .take(count)
                .enumerate()
                .for_each(|(i, c)| f(i, c)),
        }
    }

    /// f(item) for every item.
    fn each<T: Sync>(self, items: &[T], f: impl Fn(&T) + Send + Sync) {
        match self {
            Threads::Pool => items.par_iter().for_each(f),
            Threads::Caller => items.iter().for_each(f),
        }
    }
}

thread_local! {
    /// This thread's A and B panels (`with_panels`).
    static PANELS: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = Default::default();
}

/// Fills this thread's panels, `len` elements each, with NaN bf16 pairs (tests: a kernel that
/// reads an element its packer did not write shows it).
#[cfg(test)]
fn poison_panels(len: usize) {
    PANELS.with(|cell| {
        let (ap, bp) = &mut *cell.borrow_mut();
        for buf in [ap, bp] {
            buf.clear();
            buf.resize(len, 0x7fc0_7fc0);
        }
    });
}

/// How a bf16 kernel blocks a product: register tiles of `mr` × `nr`, panels `kc` deep, parallel
/// tasks of `mc` rows by `nc` columns.
#[derive(Clone, Copy)]
pub(crate) struct Blocking {
    pub mr: usize,
    pub nr: usize,
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

/// The loop both bf16 kernels share: k in blocks of `kc`; for each block, A's panels
/// (`pack_a(panel, first_row, p0, kc)`) and B's (`pack_b(panel, first_col, p0, kc)`) packed on
/// `threads`, `depth(kc)` u32 pairs a row or column, then every task's register tiles,
/// `tile(depth, a_panel, b_panel, i, j, overwrite)`, after `per_task()` (whose value lives for
/// the task: AMX configures its tile registers there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn blocked<G>(
    g: &Gemm,
    threads: Threads,
    bl: Blocking,
    depth: fn(usize) -> usize,
    pack_a: impl Fn(&mut [u32], usize, usize, usize) + Send + Sync,
    pack_b: impl Fn(&mut [u32], usize, usize, usize) + Send + Sync,
    per_task: impl Fn() -> G + Send + Sync,
    tile: impl Fn(usize, &[u32], &[u32], usize, usize, bool) + Send + Sync,
) {
    let (m, n, k) = (g.m, g.n, g.k);
    let Blocking { mr, nr, kc, mc, nc } = bl;
    let (m_panels, n_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    let tasks: Vec<(usize, usize)> = (0..m.div_ceil(mc))
        .flat_map(|i| (0..n.div_ceil(nc)).map(move |j| (i * mc, j * nc)))
        .collect();
    let deepest = depth(kc.min(k));
    with_panels(
        m_panels * mr * deepest,
        n_panels * nr * deepest,
        |ap, bp| {
            for blk in 0..k.div_ceil(kc) {
                let (p0, kb) = (blk * kc, kc.min(k - blk * kc));
                let d = depth(kb);
                threads.chunks(ap, mr * d, m_panels, |i, panel| {
                    pack_a(panel, i * mr, p0, kb)
                });
                threads.chunks(bp, nr * d, n_panels, |j, panel| {
                    pack_b(panel, j * nr, p0, kb)
                });
                let overwrite = blk == 0 && !g.accumulate;
                let (ap, bp) = (&*ap, &*bp);
                threads.each(&tasks, |&(i0, j0)| {
                    let _task = per_task();
                    for j in (j0..n.min(j0 + nc)).step_by(nr) {
                        let bpanel = &bp[j / nr * nr * d..][..nr * d];
                        for i in (i0..m.min(i0 + mc)).step_by(mr) {
                            let apanel = &ap[i / mr * mr * d..][..mr * d];
                            tile(d, apanel, bpanel, i, j, overwrite);
                        }
                    }
                });
            }
        },
    )
}

/// Runs `f` on this thread's packed-panel buffers, of at least `a_len` and `b_len` elements.
/// A fresh zeroed allocation per product paid its page faults and zeroing on every call (a few
/// percent of a training step); the packers write every element the kernels read, so reused
/// buffers need no clearing. A product nested inside another on the same thread (rayon may run
/// a stolen task while the outer one waits) gets fresh buffers instead.
fn with_panels<R>(a_len: usize, b_len: usize, f: impl FnOnce(&mut [u32], &mut [u32]) -> R) -> R {
    /// Buffers larger than this are freed after the product rather than kept for the next.
    const KEEP_ELEMS: usize = 16 << 20;
    PANELS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (ap, bp) = &mut *bufs;
            for (buf, len) in [(&mut *ap, a_len), (&mut *bp, b_len)] {
                if buf.len() < len {
                    buf.resize(len, 0);
                }
            }
            let out = f(&mut ap[..a_len], &mut bp[..b_len]);
            for buf in [ap, bp] {
                if buf.len() > KEEP_ELEMS {
                    *buf = Vec::new();
                }
            }
            out
        }
        Err(_) => f(&mut vec![0; a_len], &mut vec![0; b_len]),
    })
}

/// The bf16 product after the caller's bounds check and FLOP count: on AMX tiles where this
/// process may use them, else on AVX-512 BF16 registers (panics without those).
fn run_bf16(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], threads: Threads) {
    // SAFETY: `c` is borrowed mutably for the call and holds C (the caller's `check`).
    unsafe { run_bf16_raw(g, a, b, c.as_mut_ptr(), threads) }
}

/// `run_bf16` writing C through a raw pointer.
///
/// # Safety
/// C's m rows of n (ldc apart) lie inside one allocation, and no other thread accesses them.
unsafe fn run_bf16_raw(g: &Gemm, a: &[f32], b: &[f32], c: *mut f32, threads: Threads) {
    let (m, n, k) = (g.m, g.n, g.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !g.accumulate {
            for i in 0..m {
                std::ptr::write_bytes(c.add(i * g.ldc), 0, n);
            }
        }
        return;
    }
    if amx::available() {
        amx::run(g, a, b, c, threads)
    } else {
        bf16::run(g, a, b, c, threads)
    }
}

/// C = op(A)·op(B) [+ C] using every thread of the current rayon pool.
pub fn sgemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    g.check(a, b, c);
    crate::flops::add(g.flops() as u64);
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.flops() >= PARALLEL_MIN_FLOPS && BF16.load(Ordering::Relaxed) {
        return run_bf16(g, a, b, c, Threads::Pool);
    }
    let threads = rayon::current_num_threads();
    if threads <= 1 || g.flops() < PARALLEL_MIN_FLOPS {
        return run_gemm_crate(g, a, b, c, gemm::Parallelism::None);
    }
    #[cfg(feature = "openblas")]
    {
        openblas::sgemm(g, a, b, c, threads);
    }
    #[cfg(not(feature = "openblas"))]
    run_gemm_crate(g, a, b, c, gemm::Parallelism::Rayon(threads));
}

/// Products at least this large run in bf16 on the calling thread inside `bf16_products`
/// (`sgemm_on_caller`): AMX tiles pay for their packing from about here (attention's 64-query
/// blocks against a few hundred keys are 1–2 MFLOP).
const CALLER_BF16_MIN_FLOPS: usize = 1 << 18;

/// `sgemm` on the calling thread only, for many independent products run in parallel by the
/// caller (attention's blocks, Muon's Newton–Schulz over every hidden matrix at once). Inside
/// `bf16_products` those of at least CALLER_BF16_MIN_FLOPS round their operands to bf16 and
/// accumulate in f32, as PyTorch's CPU autocast does for matmul and attention. Like
/// `sgemm_serial` it counts no FLOPs: the kernels that call it count their own.
pub fn sgemm_on_caller(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    g.check(a, b, c);
    // SAFETY: `c` is borrowed mutably for the call and holds C (checked above).
    unsafe { on_caller(g, a, b, c.as_mut_ptr()) }
}

/// `sgemm_on_caller` writing C through a raw pointer, for kernels whose parallel tasks write
/// disjoint columns of shared rows (attention heads), which `&mut` slices cannot express.
///
/// # Safety
/// C's m rows of n (ldc apart) lie inside one allocation, and no other thread accesses them.
pub(crate) unsafe fn sgemm_on_caller_raw(g: &Gemm, a: &[f32], b: &[f32], c: *mut f32) {
    g.check_operands(a, b);
    on_caller(g, a, b, c)
}

/// The product of `sgemm_on_caller`, after the bounds check.
unsafe fn on_caller(g: &Gemm, a: &[f32], b: &[f32], c: *mut f32) {
    if g.flops() >= CALLER_BF16_MIN_FLOPS && BF16.load(Ordering::Relaxed) {
        return run_bf16_raw(g, a, b, c, Threads::Caller);
    }
    gemm_crate_raw(g, a.as_ptr(), b.as_ptr(), c, gemm::Parallelism::None)
}

/// C = op(A)·op(B) [+ C] on the calling thread only, always in f32: for use inside parallel
/// kernels.
pub fn sgemm_serial(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    g.check(a, b, c);
    if g.m == 0 || g.n == 0 {
        return;
    }
    run_gemm_crate(g, a, b, c, gemm::Parallelism::None);
}

/// Name of the backend large products use, for benchmark reports.
pub fn backend() -> &'static str {
    if cfg!(feature = "openblas") {
        "openblas"
    } else {
        "gemm-crate"
    }
}

fn run_gemm_crate(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], par: gemm::Parallelism) {
    // SAFETY: `check` proved every index in bounds; `c` is exclusively borrowed.
    unsafe { gemm_crate_raw(g, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), par) }
}

unsafe fn gemm_crate_raw(
    g: &Gemm,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    par: gemm::Parallelism,
) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.k == 0 {
        if !g.accumulate {
            for i in 0..g.m {
                std::ptr::write_bytes(c.add(i * g.ldc), 0, g.n);
            }
        }
        return;
    }
    let ((ars, acs), (brs, bcs)) = g.strides();
    gemm::gemm(
        g.m,
        g.n,
        g.k,
        c,
        1,
        g.ldc as isize,
        g.accumulate,
        a,
        acs,
        ars,
        b,
        bcs,
        brs,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

#[cfg(feature = "openblas")]
mod openblas {
    use super::Gemm;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[link(name = "openblas")]
    extern "C" {
        fn cblas_sgemm(
            order: i32,
            ta: i32,
            tb: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
        fn openblas_set_num_threads(n: i32);
    }

    static THREADS: AtomicUsize = AtomicUsize::new(0);

    pub fn sgemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
        if THREADS.swap(threads, Ordering::Relaxed) != threads {
            // SAFETY: plain setter of the library's thread count.
            unsafe { openblas_set_num_threads(threads as i32) };
        }
        const ROW_MAJOR: i32 = 101;
        let t = |yes: bool| if yes { 112 } else { 111 };
        let beta = if g.accumulate { 1.0 } else { 0.0 };
        // SAFETY: bounds were checked by the caller (`Gemm::check`).
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                t(g.ta),
                t(g.tb),
                g.m as i32,
                g.n as i32,
                g.k as i32,
                1.0,
                a.as_ptr(),
                g.lda as i32,
                b.as_ptr(),
                g.ldb as i32,
                beta,
                c.as_mut_ptr(),
                g.ldc as i32,
            )
        };
    }
}

pub mod reference {
    use super::Gemm;

    /// The specification: a triple loop accumulating in f64.
    pub fn sgemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        for i in 0..g.m {
            for j in 0..g.n {
                let mut acc = 0f64;
                for p in 0..g.k {
                    let x = if g.ta {
                        a[p * g.lda + i]
                    } else {
                        a[i * g.lda + p]
                    };
                    let y = if g.tb {
                        b[j * g.ldb + p]
                    } else {
                        b[p * g.ldb + j]
                    };
                    acc += x as f64 * y as f64;
                }
                let out = &mut c[i * g.ldc + j];
                *out = if g.accumulate {
                    *out + acc as f32
                } else {
                    acc as f32
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::assert_close;
    use crate::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn all_layouts_match_reference() {
        let mut rng = Rng::new(1);
        // Small and large enough to take the parallel path; odd sizes catch edge handling.
        for &(m, n, k) in &[(3, 5, 7), (37, 29, 64), (130, 257, 96)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                for acc in [false, true] {
                    let mut g = Gemm::new(m, n, k, ta, tb).accumulate(acc);
                    g.ldc = n + 3; // a strided output, as attention writes into wide rows
                    let a = random(m * k, &mut rng);
                    let b = random(k * n, &mut rng);
                    let c0 = random(m * g.ldc, &mut rng);
                    let (mut fast, mut slow, mut serial) = (c0.clone(), c0.clone(), c0.clone());
                    sgemm(&g, &a, &b, &mut fast);
                    sgemm_serial(&g, &a, &b, &mut serial);
                    reference::sgemm(&g, &a, &b, &mut slow);
                    assert_close(&fast, &slow, 1e-4, &format!("sgemm {g:?}"));
                    assert_close(&serial, &slow, 1e-4, &format!("sgemm_serial {g:?}"));
                }
            }
        }
    }

    #[test]
    fn few_rows_matches_reference() {
        let mut rng = Rng::new(2);
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 300, 96),
            (3, 129, 17),
            (5, 40, 33),
            (8, 1000, 384),
            (16, 70, 64),
            (2, 67, 200),
            (7, 33, 9),
            (1, 8192, 192),
        ] {
            let g = Gemm::nt(m, n, k);
            let a = random(m * k, &mut rng);
            let b = random(n * k, &mut rng);
            let (mut fast, mut slow) = (vec![1.0; m * n], vec![0.0; m * n]);
            sgemm_nt_few_rows(m, n, k, &a, &b, &mut fast);
            reference::sgemm(&g, &a, &b, &mut slow);
            assert_close(&fast, &slow, 1e-4, &format!("few rows {m}x{n}x{k}"));
        }
    }

    #[test]
    #[should_panic(expected = "gemm: B has")]
    fn short_operand_is_caught() {
        let g = Gemm::nn(2, 2, 2);
        sgemm(&g, &[0.0; 4], &[0.0; 3], &mut [0.0; 4]);
    }
}
