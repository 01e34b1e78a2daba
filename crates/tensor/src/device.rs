//! Where kernels run: the one interface between a model's layer code and a backend.
//!
//! A [`Device`] owns its memory ([`Device::Mem`], a flat f32 buffer that only it can read),
//! hands out borrowed views of it ([`Ref`], [`Mut`]: a backend address plus a length, borrowed
//! like `&[f32]` and `&mut [f32]`), and runs every kernel a transformer's training step needs
//! on such views. Layer code is written once against this trait; a backend is one `impl`.
//!
//! What the design holds for a GPU backend (only [`Cpu`] exists so far):
//! - **Buffers owned by the backend.** `Mem` is the backend's allocation (device memory on a
//!   GPU); host code reaches it only through `upload`, `download`, `write` and `to_host`.
//!   Views carry the backend's address type (`Ptr`), so sub-ranges and disjoint splits cost
//!   nothing and cross no bus.
//! - **Streams.** A `Device` value is a handle to one ordered queue of work: kernels issued
//!   through the same value run in issue order, may return before they finish, and
//!   `synchronize` (implied by `download`) waits for them. On the CPU every call is finished
//!   when it returns.
//! - **bf16 storage.** Precision is the backend's business, not the layer code's: `gemm` runs
//!   its products in whatever precision is in force (on the CPU, operands rounded to bf16
//!   while a `matmul::Bf16Products` guard lives), and a GPU backend keeps bf16 copies of the
//!   weights inside its `Mem` beside the f32 master, refreshed by its optimizer step.
//! - **Host-side integers.** Token ids, targets and document starts arrive as host slices
//!   (they come from the data loader, 4 bytes per token against kilobytes of activations);
//!   a GPU backend stages them on its stream.
//! - **Backend-owned state of fused ops**: the RoPE table (`Rope`) and a mixture-of-experts
//!   routing (`Routing`: chosen experts, gates, dispatch order) live on the device.

use crate::matmul::{sgemm, Gemm};
use crate::ops::attention::{attention_backward_docs, attention_forward_docs, AttnShape};
use crate::ops::cross_entropy::Head;
use crate::ops::experts::{experts_backward, experts_forward, Experts};
use crate::ops::rope::{RopeLayout, RopeScaling, RopeTable};
use crate::ops::rows::KvExpand;
use crate::ops::{cross_entropy, dropout, embedding, moe, rmsnorm, rope, rows, swiglu};
use std::marker::PhantomData;
use std::ops::{Bound, Range, RangeBounds};

/// A backend: its memory, and the kernels of a transformer's forward and backward over views
/// of that memory. Every kernel has the semantics of the CPU function of the same name in
/// `tensor::ops` (which is its reference); shapes are checked as there.
pub trait Device: Clone + Send + Sync + 'static {
    /// An owned f32 buffer in the backend's memory.
    type Mem: Memory<Self> + Clone + std::fmt::Debug + Send + Sync;
    /// The address of one element of `Mem`.
    type Ptr: Copy + Send + Sync;
    /// cos/sin of every (position, frequency) pair, where the rotary kernels read them.
    type Rope: Send + Sync;
    /// Where a mixture-of-experts layer sent each token, kept for its backward.
    type Routing: Send + Sync;

    /// One line for logs and benchmark reports: the processor and its compute library.
    fn describe(&self) -> String;

    // ----- memory -----

    /// A buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Self::Mem;
    /// A buffer holding `host`.
    fn upload(&self, host: &[f32]) -> Self::Mem;
    /// Copies `src` into `dst` (same length) once the work issued before has finished.
    fn download(&self, src: Ref<Self>, dst: &mut [f32]);
    /// Copies host values into a view (same length).
    fn write(&self, dst: Mut<Self>, src: &[f32]);
    /// The buffer's values on the host (free on the CPU).
    fn to_host(&self, mem: Self::Mem) -> Vec<f32>;
    /// Grows or shrinks a buffer to `len`; new elements are zero.
    fn resize(&self, mem: &mut Self::Mem, len: usize);
    /// Waits until every kernel issued on this handle has finished.
    fn synchronize(&self);
    /// `ptr` advanced by `i` elements.
    fn offset(ptr: Self::Ptr, i: usize) -> Self::Ptr;

    // ----- dense kernels -----

    /// C = op(A)·op(B) [+ C]: `matmul::sgemm`.
    fn gemm(&self, g: &Gemm, a: Ref<Self>, b: Ref<Self>, c: Mut<Self>);
    /// y += x.
    fn add(&self, y: Mut<Self>, x: Ref<Self>);
    /// x (n, w) += bias (w) on every row: `ops::rows::add_bias`.
    fn add_bias(&self, x: Mut<Self>, bias: Ref<Self>);
    /// dbias (w) += the column sums of dy (n, w): `ops::rows::bias_backward`.
    fn bias_backward(&self, dbias: Mut<Self>, dy: Ref<Self>);
    /// x *= k.
    fn scale(&self, x: Mut<Self>, k: f32);
    /// x = v everywhere.
    fn fill(&self, x: Mut<Self>, v: f32);
    /// out = [out +] x ⊙ mask / (1 − p), the mask a hash of `key`: `ops::dropout`.
    fn dropout(&self, out: Mut<Self>, x: Ref<Self>, p: f32, key: u64, accumulate: bool);
    /// dst = src (same length).
    fn copy(&self, dst: Mut<Self>, src: Ref<Self>);
    fn embedding_forward(&self, out: Mut<Self>, tokens: &[u32], table: Ref<Self>, d: usize);
    fn embedding_backward(&self, dtable: Mut<Self>, dout: Ref<Self>, tokens: &[u32], d: usize);
    fn rmsnorm_forward(
        &self,
        y: Mut<Self>,
        rstd: Mut<Self>,
        x: Ref<Self>,
        w: Ref<Self>,
        d: usize,
        eps: f32,
    );
    fn rmsnorm_backward(
        &self,
        dx: Mut<Self>,
        dw: Mut<Self>,
        dy: Ref<Self>,
        x: Ref<Self>,
        w: Ref<Self>,
        rstd: Ref<Self>,
        d: usize,
    );
    fn rope_table(
        &self,
        context: usize,
        head_dim: usize,
        theta: f32,
        scaling: RopeScaling,
    ) -> Self::Rope;
    fn rope_forward(&self, x: Mut<Self>, layout: RopeLayout, table: &Self::Rope);
    fn rope_backward(&self, dx: Mut<Self>, layout: RopeLayout, table: &Self::Rope);
    /// Causal grouped-query attention over packed [q | k | v] rows, within documents when
    /// `starts` is given: `ops::attention::attention_forward_docs`.
    fn attention_forward(
        &self,
        out: Mut<Self>,
        lse: Mut<Self>,
        qkv: Ref<Self>,
        s: AttnShape,
        starts: Option<&[u32]>,
    );
    fn attention_backward(
        &self,
        dqkv: Mut<Self>,
        dout: Ref<Self>,
        qkv: Ref<Self>,
        out: Ref<Self>,
        lse: Ref<Self>,
        s: AttnShape,
        starts: Option<&[u32]>,
    );
    fn swiglu_forward(&self, h: Mut<Self>, gu: Ref<Self>, hidden: usize);
    fn swiglu_backward(&self, dgu: Mut<Self>, dh: Ref<Self>, gu: Ref<Self>, hidden: usize);
    /// The LM head fused with cross-entropy, chunked so no full logits are kept: returns the
    /// summed loss over targets that are not IGNORE, and their count.
    fn lm_head_loss(
        &self,
        x: Ref<Self>,
        w: Ref<Self>,
        targets: &[u32],
        head: Head,
        grads: Option<HeadGrads<Self>>,
        scratch: &mut Self::Mem,
    ) -> (f64, usize);
    /// Each row's −ln p(target) (0 at IGNORE) into the host slice `out`.
    fn lm_head_token_losses(
        &self,
        x: Ref<Self>,
        w: Ref<Self>,
        targets: &[u32],
        head: Head,
        scratch: &mut Self::Mem,
        out: &mut [f64],
    );
    fn concat_cols(&self, out: Mut<Self>, a: Ref<Self>, b: Ref<Self>, wa: usize, wb: usize);
    fn split_cols(&self, a: Mut<Self>, b: Mut<Self>, src: Ref<Self>, wa: usize, wb: usize);
    fn expand_kv(&self, qkv: Mut<Self>, kv: Ref<Self>, kpe: Ref<Self>, s: KvExpand);
    fn expand_kv_backward(&self, dkv: Mut<Self>, dkpe: Mut<Self>, dqkv: Ref<Self>, s: KvExpand);

    // ----- mixture of experts -----

    /// An empty routing, filled by `moe_route`.
    fn routing(&self) -> Self::Routing;
    fn moe_route(
        &self,
        logits: Ref<Self>,
        bias: Ref<Self>,
        top_k: usize,
        scale: f32,
        r: &mut Self::Routing,
    );
    /// Tokens each expert received in `r`, on the host.
    fn moe_load(&self, r: &Self::Routing) -> Vec<usize>;
    fn moe_dispatch(&self, xd: Mut<Self>, x: Ref<Self>, r: &Self::Routing, d: usize);
    fn moe_dispatch_backward(&self, dx: Mut<Self>, dxd: Ref<Self>, r: &Self::Routing, d: usize);
    fn moe_combine(&self, out: Mut<Self>, yd: Ref<Self>, r: &Self::Routing, d: usize);
    fn moe_combine_backward(
        &self,
        dyd: Mut<Self>,
        dgates: Mut<Self>,
        dout: Ref<Self>,
        yd: Ref<Self>,
        r: &Self::Routing,
        d: usize,
    );
    fn moe_route_backward(
        &self,
        dlogits: Mut<Self>,
        dgates: Ref<Self>,
        r: &Self::Routing,
        scale: f32,
    );
    /// The sequence-wise balance loss (returned, summed over sequences); accumulates
    /// `weight` · its gradient into `dlogits` when given.
    fn moe_balance_loss(
        &self,
        dlogits: Option<Mut<Self>>,
        r: &Self::Routing,
        seq_len: usize,
        alpha: f32,
        weight: f32,
    ) -> f64;
    /// Every routed expert's SwiGLU over its block of dispatched rows, as one grouped kernel:
    /// `widths` = (d, expert hidden); keeps [gate | up] in `gud` and the activations in `hd`.
    fn experts_forward(
        &self,
        r: &Self::Routing,
        widths: (usize, usize),
        weights: Ref<Self>,
        xd: Ref<Self>,
        gud: Mut<Self>,
        hd: Mut<Self>,
        yd: Mut<Self>,
    );
    /// The backward of `experts_forward`: `params` = (weights, their gradient, accumulated),
    /// `acts` = (xd, gud, hd) as the forward left them; writes dL/dxd into the last of
    /// `scratch` = (dgud, dhd, dxd).
    fn experts_backward(
        &self,
        r: &Self::Routing,
        widths: (usize, usize),
        params: (Ref<Self>, Mut<Self>),
        acts: (Ref<Self>, Ref<Self>, Ref<Self>),
        dyd: Ref<Self>,
        scratch: (Mut<Self>, Mut<Self>, Mut<Self>),
    );
}

/// The gradient outputs of [`Device::lm_head_loss`] (see `ops::cross_entropy::LossGrads`).
pub struct HeadGrads<'a, D: Device> {
    /// dL/dx, (n, d), overwritten.
    pub dx: Mut<'a, D>,
    /// dL/dW, (vocab, d), accumulated; None when the head is frozen.
    pub dw: Option<Mut<'a, D>>,
    pub scale: f32,
    /// Per-row multipliers on the host, (n).
    pub weights: Option<&'a [f32]>,
}

/// A backend's owned buffer, seen by generic code: its length, and views of it.
///
/// # Safety
/// `base`/`base_mut` must address `numel` valid elements for as long as the buffer is
/// borrowed, and `base_mut` must come from a unique borrow, as `Vec::as_mut_ptr` does.
pub unsafe trait Memory<D: Device> {
    fn numel(&self) -> usize;
    fn base(&self) -> D::Ptr;
    fn base_mut(&mut self) -> D::Ptr;

    /// The whole buffer, read-only.
    fn all(&self) -> Ref<'_, D> {
        Ref {
            ptr: self.base(),
            len: self.numel(),
            _borrow: PhantomData,
        }
    }
    /// Elements `r`, read-only.
    fn at(&self, r: impl RangeBounds<usize>) -> Ref<'_, D> {
        self.all().at(r)
    }
    /// The whole buffer, writable.
    fn all_mut(&mut self) -> Mut<'_, D> {
        Mut {
            ptr: self.base_mut(),
            len: self.numel(),
            _borrow: PhantomData,
        }
    }
    /// Elements `r`, writable.
    fn at_mut(&mut self, r: impl RangeBounds<usize>) -> Mut<'_, D> {
        self.all_mut().into_at(r)
    }
}

/// A read-only view of a device buffer: `&'a [f32]` of the backend.
pub struct Ref<'a, D: Device> {
    ptr: D::Ptr,
    len: usize,
    _borrow: PhantomData<&'a [f32]>,
}

impl<D: Device> Clone for Ref<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<D: Device> Copy for Ref<'_, D> {}

/// A writable view of a device buffer: `&'a mut [f32]` of the backend.
pub struct Mut<'a, D: Device> {
    ptr: D::Ptr,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

/// `r` as a range within 0..len; panics past the end, as slice indexing does.
fn bounds(r: impl RangeBounds<usize>, len: usize) -> Range<usize> {
    let start = match r.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match r.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    assert!(
        start <= end && end <= len,
        "view range {start}..{end} out of bounds for length {len}"
    );
    start..end
}

impl<'a, D: Device> Ref<'a, D> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The backend address of the first element.
    pub fn ptr(&self) -> D::Ptr {
        self.ptr
    }
    /// Elements `r` of this view.
    pub fn at(self, r: impl RangeBounds<usize>) -> Ref<'a, D> {
        let r = bounds(r, self.len);
        Ref {
            ptr: D::offset(self.ptr, r.start),
            len: r.len(),
            _borrow: PhantomData,
        }
    }
    /// The first `mid` elements and the rest.
    pub fn split_at(self, mid: usize) -> (Ref<'a, D>, Ref<'a, D>) {
        (self.at(..mid), self.at(mid..))
    }
}

impl<'a, D: Device> Mut<'a, D> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The backend address of the first element.
    pub fn ptr(&self) -> D::Ptr {
        self.ptr
    }
    /// Elements `r`, borrowed from this view for a shorter while (as `&mut v[r]`).
    pub fn at(&mut self, r: impl RangeBounds<usize>) -> Mut<'_, D> {
        self.rb().into_at(r)
    }
    /// The whole view, borrowed for a shorter while (as `&mut *v`).
    pub fn rb(&mut self) -> Mut<'_, D> {
        Mut {
            ptr: self.ptr,
            len: self.len,
            _borrow: PhantomData,
        }
    }
    /// Elements `r`, for the whole borrow.
    pub fn into_at(self, r: impl RangeBounds<usize>) -> Mut<'a, D> {
        let r = bounds(r, self.len);
        Mut {
            ptr: D::offset(self.ptr, r.start),
            len: r.len(),
            _borrow: PhantomData,
        }
    }
    /// The first `mid` elements and the rest, both writable.
    pub fn split_at(self, mid: usize) -> (Mut<'a, D>, Mut<'a, D>) {
        assert!(mid <= self.len, "split_at {mid} past length {}", self.len);
        let tail = Mut {
            ptr: D::offset(self.ptr, mid),
            len: self.len - mid,
            _borrow: PhantomData,
        };
        let head = Mut {
            ptr: self.ptr,
            len: mid,
            _borrow: PhantomData,
        };
        (head, tail)
    }
    /// This view read-only, for a shorter while.
    pub fn view(&self) -> Ref<'_, D> {
        Ref {
            ptr: self.ptr,
            len: self.len,
            _borrow: PhantomData,
        }
    }
}

// ----- the CPU backend -----

/// The CPU: memory is a `Vec<f32>`, kernels are `tensor::ops` on rayon's pool, and every
/// call has finished when it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu;

/// A CPU address that may cross threads (the views it sits in are borrowed like slices).
#[derive(Clone, Copy, Debug)]
pub struct CpuPtr(*mut f32);
// SAFETY: a CpuPtr is only dereferenced through a Ref/Mut, which borrow like &[f32]/&mut [f32].
unsafe impl Send for CpuPtr {}
unsafe impl Sync for CpuPtr {}

// SAFETY: a Vec's pointer addresses its len elements while it is borrowed.
unsafe impl Memory<Cpu> for Vec<f32> {
    fn numel(&self) -> usize {
        self.len()
    }
    fn base(&self) -> CpuPtr {
        CpuPtr(self.as_ptr() as *mut f32)
    }
    fn base_mut(&mut self) -> CpuPtr {
        CpuPtr(self.as_mut_ptr())
    }
}

impl<'a> Ref<'a, Cpu> {
    /// The view as the slice it is.
    pub fn slice(self) -> &'a [f32] {
        // SAFETY: the view was made from a borrow of `len` elements that lives for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr.0, self.len) }
    }
}

impl<'a> Mut<'a, Cpu> {
    /// The view as the slice it is.
    pub fn slice(self) -> &'a mut [f32] {
        // SAFETY: the view was made from a unique borrow of `len` elements that lives for 'a,
        // and views split from it never overlap.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.0, self.len) }
    }
}

impl<'a> From<&'a [f32]> for Ref<'a, Cpu> {
    fn from(s: &'a [f32]) -> Self {
        Ref {
            ptr: CpuPtr(s.as_ptr() as *mut f32),
            len: s.len(),
            _borrow: PhantomData,
        }
    }
}

impl<'a> From<&'a Vec<f32>> for Ref<'a, Cpu> {
    fn from(s: &'a Vec<f32>) -> Self {
        s.all()
    }
}

impl<'a> From<&'a mut [f32]> for Mut<'a, Cpu> {
    fn from(s: &'a mut [f32]) -> Self {
        Mut {
            ptr: CpuPtr(s.as_mut_ptr()),
            len: s.len(),
            _borrow: PhantomData,
        }
    }
}

impl<'a> From<&'a mut Vec<f32>> for Mut<'a, Cpu> {
    fn from(s: &'a mut Vec<f32>) -> Self {
        s.all_mut()
    }
}

impl Device for Cpu {
    type Mem = Vec<f32>;
    type Ptr = CpuPtr;
    type Rope = RopeTable;
    type Routing = moe::Routing;

    fn describe(&self) -> String {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split(':').nth(1))
            })
            .map_or("unknown processor", str::trim)
            .to_string();
        let threads = rayon::current_num_threads();
        format!(
            "cpu ({model}, {threads} threads, gemm backend {})",
            crate::matmul::backend()
        )
    }

    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download(&self, src: Ref<Self>, dst: &mut [f32]) {
        dst.copy_from_slice(src.slice());
    }
    fn write(&self, dst: Mut<Self>, src: &[f32]) {
        dst.slice().copy_from_slice(src);
    }
    fn to_host(&self, mem: Vec<f32>) -> Vec<f32> {
        mem
    }
    fn resize(&self, mem: &mut Vec<f32>, len: usize) {
        mem.resize(len, 0.0);
    }
    fn synchronize(&self) {}
    fn offset(ptr: CpuPtr, i: usize) -> CpuPtr {
        // wrapping_add: computing an address is safe; views check bounds before making one.
        CpuPtr(ptr.0.wrapping_add(i))
    }

    fn gemm(&self, g: &Gemm, a: Ref<Self>, b: Ref<Self>, c: Mut<Self>) {
        sgemm(g, a.slice(), b.slice(), c.slice());
    }
    fn add(&self, y: Mut<Self>, x: Ref<Self>) {
        crate::ops::add_inplace(y.slice(), x.slice());
    }
    fn add_bias(&self, x: Mut<Self>, bias: Ref<Self>) {
        rows::add_bias(x.slice(), bias.slice());
    }
    fn bias_backward(&self, dbias: Mut<Self>, dy: Ref<Self>) {
        rows::bias_backward(dbias.slice(), dy.slice());
    }
    fn scale(&self, x: Mut<Self>, k: f32) {
        if k != 1.0 {
            x.slice().iter_mut().for_each(|v| *v *= k);
        }
    }
    fn fill(&self, x: Mut<Self>, v: f32) {
        x.slice().fill(v);
    }
    fn dropout(&self, out: Mut<Self>, x: Ref<Self>, p: f32, key: u64, accumulate: bool) {
        dropout::dropout(out.slice(), x.slice(), p, key, accumulate);
    }
    fn copy(&self, dst: Mut<Self>, src: Ref<Self>) {
        dst.slice().copy_from_slice(src.slice());
    }
    fn embedding_forward(&self, out: Mut<Self>, tokens: &[u32], table: Ref<Self>, d: usize) {
        embedding::embedding_forward(out.slice(), tokens, table.slice(), d);
    }
    fn embedding_backward(&self, dtable: Mut<Self>, dout: Ref<Self>, tokens: &[u32], d: usize) {
        embedding::embedding_backward(dtable.slice(), dout.slice(), tokens, d);
    }
    fn rmsnorm_forward(
        &self,
        y: Mut<Self>,
        rstd: Mut<Self>,
        x: Ref<Self>,
        w: Ref<Self>,
        d: usize,
        eps: f32,
    ) {
        rmsnorm::rmsnorm_forward(y.slice(), rstd.slice(), x.slice(), w.slice(), d, eps);
    }
    fn rmsnorm_backward(
        &self,
        dx: Mut<Self>,
        dw: Mut<Self>,
        dy: Ref<Self>,
        x: Ref<Self>,
        w: Ref<Self>,
        rstd: Ref<Self>,
        d: usize,
    ) {
        let (dy, x, w, rstd) = (dy.slice(), x.slice(), w.slice(), rstd.slice());
        rmsnorm::rmsnorm_backward(dx.slice(), dw.slice(), dy, x, w, rstd, d);
    }
    fn rope_table(
        &self,
        context: usize,
        head_dim: usize,
        theta: f32,
        scaling: RopeScaling,
    ) -> RopeTable {
        RopeTable::new(context, head_dim, theta, scaling)
    }
    fn rope_forward(&self, x: Mut<Self>, layout: RopeLayout, table: &RopeTable) {
        rope::rope_forward(x.slice(), layout, table);
    }
    fn rope_backward(&self, dx: Mut<Self>, layout: RopeLayout, table: &RopeTable) {
        rope::rope_backward(dx.slice(), layout, table);
    }
    fn attention_forward(
        &self,
        out: Mut<Self>,
        lse: Mut<Self>,
        qkv: Ref<Self>,
        s: AttnShape,
        starts: Option<&[u32]>,
    ) {
        attention_forward_docs(out.slice(), lse.slice(), qkv.slice(), s, starts);
    }
    fn attention_backward(
        &self,
        dqkv: Mut<Self>,
        dout: Ref<Self>,
        qkv: Ref<Self>,
        out: Ref<Self>,
        lse: Ref<Self>,
        s: AttnShape,
        starts: Option<&[u32]>,
    ) {
        let (dout, qkv, out, lse) = (dout.slice(), qkv.slice(), out.slice(), lse.slice());
        attention_backward_docs(dqkv.slice(), dout, qkv, out, lse, s, starts);
    }
    fn swiglu_forward(&self, h: Mut<Self>, gu: Ref<Self>, hidden: usize) {
        swiglu::swiglu_forward(h.slice(), gu.slice(), hidden);
    }
    fn swiglu_backward(&self, dgu: Mut<Self>, dh: Ref<Self>, gu: Ref<Self>, hidden: usize) {
        swiglu::swiglu_backward(dgu.slice(), dh.slice(), gu.slice(), hidden);
    }
    fn lm_head_loss(
        &self,
        x: Ref<Self>,
        w: Ref<Self>,
        targets: &[u32],
        head: Head,
        grads: Option<HeadGrads<Self>>,
        scratch: &mut Vec<f32>,
    ) -> (f64, usize) {
        let grads = grads.map(|g| cross_entropy::LossGrads {
            dx: g.dx.slice(),
            dw: g.dw.map(|w| w.slice()),
            scale: g.scale,
            weights: g.weights,
        });
        cross_entropy::lm_head_cross_entropy(x.slice(), w.slice(), targets, head, grads, scratch)
    }
    fn lm_head_token_losses(
        &self,
        x: Ref<Self>,
        w: Ref<Self>,
        targets: &[u32],
        head: Head,
        scratch: &mut Vec<f32>,
        out: &mut [f64],
    ) {
        let (x, w) = (x.slice(), w.slice());
        cross_entropy::lm_head_token_losses(x, w, targets, head, scratch, out);
    }
    fn concat_cols(&self, out: Mut<Self>, a: Ref<Self>, b: Ref<Self>, wa: usize, wb: usize) {
        rows::concat_cols(out.slice(), a.slice(), b.slice(), wa, wb);
    }
    fn split_cols(&self, a: Mut<Self>, b: Mut<Self>, src: Ref<Self>, wa: usize, wb: usize) {
        rows::split_cols(a.slice(), b.slice(), src.slice(), wa, wb);
    }
    fn expand_kv(&self, qkv: Mut<Self>, kv: Ref<Self>, kpe: Ref<Self>, s: KvExpand) {
        rows::expand_kv(qkv.slice(), kv.slice(), kpe.slice(), s);
    }
    fn expand_kv_backward(&self, dkv: Mut<Self>, dkpe: Mut<Self>, dqkv: Ref<Self>, s: KvExpand) {
        rows::expand_kv_backward(dkv.slice(), dkpe.slice(), dqkv.slice(), s);
    }

    fn routing(&self) -> moe::Routing {
        moe::Routing::default()
    }
    fn moe_route(
        &self,
        logits: Ref<Self>,
        bias: Ref<Self>,
        top_k: usize,
        scale: f32,
        r: &mut moe::Routing,
    ) {
        moe::route(logits.slice(), bias.slice(), top_k, scale, r);
    }
    fn moe_load(&self, r: &moe::Routing) -> Vec<usize> {
        r.load()
    }
    fn moe_dispatch(&self, xd: Mut<Self>, x: Ref<Self>, r: &moe::Routing, d: usize) {
        moe::dispatch(xd.slice(), x.slice(), r, d);
    }
    fn moe_dispatch_backward(&self, dx: Mut<Self>, dxd: Ref<Self>, r: &moe::Routing, d: usize) {
        moe::dispatch_backward(dx.slice(), dxd.slice(), r, d);
    }
    fn moe_combine(&self, out: Mut<Self>, yd: Ref<Self>, r: &moe::Routing, d: usize) {
        moe::combine(out.slice(), yd.slice(), r, d);
    }
    fn moe_combine_backward(
        &self,
        dyd: Mut<Self>,
        dgates: Mut<Self>,
        dout: Ref<Self>,
        yd: Ref<Self>,
        r: &moe::Routing,
        d: usize,
    ) {
        let (dout, yd) = (dout.slice(), yd.slice());
        moe::combine_backward(dyd.slice(), dgates.slice(), dout, yd, r, d);
    }
    fn moe_route_backward(
        &self,
        dlogits: Mut<Self>,
        dgates: Ref<Self>,
        r: &moe::Routing,
        scale: f32,
    ) {
        moe::route_backward(dlogits.slice(), dgates.slice(), r, scale);
    }
    fn moe_balance_loss(
        &self,
        dlogits: Option<Mut<Self>>,
        r: &moe::Routing,
        seq_len: usize,
        alpha: f32,
        weight: f32,
    ) -> f64 {
        moe::balance_loss(dlogits.map(Mut::slice), r, seq_len, alpha, weight)
    }
    fn experts_forward(
        &self,
        r: &moe::Routing,
        (d, eh): (usize, usize),
        weights: Ref<Self>,
        xd: Ref<Self>,
        gud: Mut<Self>,
        hd: Mut<Self>,
        yd: Mut<Self>,
    ) {
        let group = Experts {
            offsets: &r.offsets,
            d,
            eh,
        };
        let (w, xd) = (weights.slice(), xd.slice());
        experts_forward(group, w, xd, gud.slice(), hd.slice(), yd.slice());
    }
    fn experts_backward(
        &self,
        r: &moe::Routing,
        (d, eh): (usize, usize),
        (weights, gweights): (Ref<Self>, Mut<Self>),
        (xd, gud, hd): (Ref<Self>, Ref<Self>, Ref<Self>),
        dyd: Ref<Self>,
        (dgud, dhd, dxd): (Mut<Self>, Mut<Self>, Mut<Self>),
    ) {
        let group = Experts {
            offsets: &r.offsets,
            d,
            eh,
        };
        experts_backward(
            group,
            weights.slice(),
            gweights.slice(),
            (xd.slice(), gud.slice(), hd.slice()),
            dyd.slice(),
            dgud.slice(),
            dhd.slice(),
            dxd.slice(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_borrow_like_slices() {
        let mut v: Vec<f32> = (0..10).map(|i| i as f32).collect();
        assert_eq!(v.at(2..5).slice(), &[2.0, 3.0, 4.0]);
        assert_eq!(v.at(..).at(7..).slice(), &[7.0, 8.0, 9.0]);
        let (a, mut b) = v.all_mut().split_at(4);
        Cpu.fill(a, -1.0);
        Cpu.fill(b.at(1..=2), 5.0);
        assert_eq!(b.view().len(), 6);
        assert_eq!(v[..7], [-1.0, -1.0, -1.0, -1.0, 4.0, 5.0, 5.0]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_past_the_end_panics() {
        let v = vec![0f32; 4];
        let _ = v.at(2..5);
    }

    #[test]
    fn host_round_trip() {
        let host = [1.0f32, 2.0, 3.0];
        let mut m = Cpu.upload(&host);
        Cpu.write(m.at_mut(1..2), &[7.0]);
        let mut back = [0f32; 3];
        Cpu.download(m.all(), &mut back);
        assert_eq!(back, [1.0, 7.0, 3.0]);
        Cpu.resize(&mut m, 5);
        assert_eq!(Cpu.to_host(m), vec![1.0, 7.0, 3.0, 0.0, 0.0]);
    }
}
