//! Where kernels run. Only the CPU exists so far; a CUDA device will join as a variant whose
//! kernels sit behind the same per-op functions, so model code never branches on it.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
}

impl Device {
    /// One line for logs and benchmark reports: the processor, thread count and GEMM backend.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => {
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
        }
    }
}
