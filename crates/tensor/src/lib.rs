//! frugal's compute core: matrix products and the fused kernels a Llama-style transformer
//! needs, each with a forward, a backward and a plain reference, and the seam they are reached
//! through (`device`: the `Device` trait, views of a backend's memory, the `Cpu` backend).
//!
//! Why hand-written kernels: on the 2-core reference machine candle and burn run one training
//! step of the reference GPT at 0.28x–0.42x of PyTorch's speed, and the gap is not the GEMM but
//! element-wise ops, copies and autodiff overhead. So, like llm.c, frugal keeps activations in
//! plain row-major slices, calls a tuned GEMM for the matrix products and fuses everything else
//! into one pass per op. Kernels take slices plus dimensions; callers own the buffers, so a
//! training step allocates nothing after its first call.
//!
//! Every fast kernel has a reference implementation beside it (`reference` submodules) and a
//! test comparing the two; every differentiable op has a finite-difference gradient check.

#![allow(clippy::too_many_arguments)] // kernels take buffers + dimensions, as in llm.c

pub mod check;
pub mod device;
pub mod flops;
pub mod matmul;
pub mod ops;
pub mod peak;
pub mod rng;

pub use device::{Cpu, Device, Memory, Mut, Ref};
pub use matmul::bf16;
pub use matmul::{sgemm, sgemm_serial, Gemm};
pub use rng::Rng;

/// A raw pointer that may cross threads. Kernels use it to let parallel tasks write disjoint
/// parts of one buffer (different heads of the same rows, say), which safe slices cannot express.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Use this, not `.0`, inside closures: a method call captures the whole (Send) wrapper,
    /// a field access would capture the bare pointer.
    #[inline]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows per task for row-parallel kernels: enough work per task to amortise scheduling, few
/// enough tasks to balance. Fixed (not derived from the thread count) so that reductions over
/// row chunks sum in the same order whatever the thread count.
pub(crate) const ROW_CHUNK: usize = 32;
