//! The machine's practical matrix-product peak: GEMM throughput on the shapes of a reference
//! training step. Every stage divides its achieved FLOP/s by this for its MFU, and `frugal bench
//! gemm` prints it, with bf16 products beside f32 where the CPU has them.

use crate::{sgemm, Gemm, Rng};
use std::time::Instant;

pub struct GemmBench {
    /// (m, n, k, GFLOP/s) per measured shape.
    pub shapes: Vec<(usize, usize, usize, f64)>,
    /// Best GFLOP/s over the shapes: the machine's practical f32 peak for MFU.
    pub peak_gflops: f64,
}

/// Measures f32 GEMM throughput on the shapes of a reference-preset training step (the best
/// of `reps` repetitions per shape).
pub fn bench_gemm(reps: usize) -> GemmBench {
    bench_gemm_with(reps, Gemm::nn, sgemm)
}

/// bf16 products with f32 accumulation (`tensor::bf16`) against f32 on the three layouts of a
/// training step: forward y = x·Wᵀ (nt), input gradient dy·W (nn), weight gradient dyᵀ·x (tn).
/// Per layout, (f32, bf16) GFLOP/s on the shapes of `bench_gemm`; None without AVX-512 BF16.
pub fn bench_gemm_bf16(reps: usize) -> Option<Vec<(&'static str, GemmBench, GemmBench)>> {
    if !crate::bf16::available() {
        return None;
    }
    let layouts: [(&str, Layout); 3] = [("nt", Gemm::nt), ("nn", Gemm::nn), ("tn", Gemm::tn)];
    Some(
        layouts
            .iter()
            .map(|&(name, layout)| {
                let f32 = bench_gemm_with(reps, layout, sgemm);
                let bf16 = bench_gemm_with(reps, layout, crate::bf16::gemm_bf16);
                (name, f32, bf16)
            })
            .collect(),
    )
}

/// A product's layout, from its (m, n, k).
type Layout = fn(usize, usize, usize) -> Gemm;

fn bench_gemm_with(
    reps: usize,
    layout: Layout,
    product: fn(&Gemm, &[f32], &[f32], &mut [f32]),
) -> GemmBench {
    let shapes = [
        (2048, 1152, 384),
        (2048, 2048, 384),
        (2048, 384, 1024),
        (2048, 4096, 384),
        (1024, 1024, 1024),
    ];
    let mut rng = Rng::new(0);
    let mut out = Vec::new();
    for &(m, n, k) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
        let mut c = vec![0f32; m * n];
        let g = layout(m, n, k);
        product(&g, &a, &b, &mut c); // warm-up: page faults, packing buffers
        let times: Vec<f64> = (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                product(&g, &a, &b, &mut c);
                t.elapsed().as_secs_f64()
            })
            .collect();
        // The fastest repetition: a peak is what the machine can do, and a slow repetition
        // (another process, a frequency dip) says nothing about that. MFU divides by it.
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        out.push((m, n, k, 2.0 * (m * n * k) as f64 / best / 1e9));
    }
    let peak = out.iter().map(|s| s.3).fold(0.0, f64::max);
    GemmBench {
        shapes: out,
        peak_gflops: peak,
    }
}
