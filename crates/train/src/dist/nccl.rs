//! The `Collective` on NCCL (through cudarc, which loads libcuda and libnccl at run time, so
//! this builds on machines without CUDA). One GPU per rank, chosen by the local rank. The
//! unique id that joins the ranks travels over MPI when the launcher speaks it and frugal has
//! the `mpi` feature, else over TCP from MASTER_ADDR/MASTER_PORT (torchrun).
//!
//! Training buffers are host memory today, so each call stages them through the GPU: copy in,
//! reduce on NVLink/InfiniBand, copy out. When the model's tensors live on the device, the
//! same calls take device buffers and the copies go away.

use super::{Collective, Launch, Watchdog};
use base::{Error, Result};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr};
use cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp};
use std::sync::Arc;
use std::time::Duration;

pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    local_rank: usize,
    watchdog: Watchdog,
    /// MPI, when it carried the id: finalised when this drops, after NCCL's communicator.
    #[cfg(feature = "mpi")]
    _mpi: Option<super::mpi::Mpi>,
}

impl Nccl {
    pub fn init(launch: &Launch, timeout_s: f64) -> Result<Nccl> {
        let rank = launch.rank;
        let cuda = |what: &str, e: &dyn std::fmt::Debug| {
            Error::dist(
                rank,
                format!("{what}: {e:?}"),
                "the nccl backend needs an NVIDIA driver, libnccl.so.2 on the library path, and one GPU per rank on each machine",
            )
        };
        let ctx = CudaContext::new(launch.local_rank)
            .map_err(|e| cuda(&format!("GPU {}", launch.local_rank), &e))?;
        let stream = ctx.default_stream();
        let timeout = Duration::from_secs_f64(timeout_s);
        // The id: made by rank 0, carried to the others before any NCCL call can.
        let mut blob = match rank {
            0 => Id::new()
                .map_err(|e| cuda("ncclGetUniqueId", &e))?
                .internal()
                .iter()
                .map(|&c| c as u8)
                .collect(),
            _ => vec![0u8; 128],
        };
        #[allow(clippy::let_unit_value)] // () without the mpi feature
        let _mpi = share_id(launch, &mut blob, timeout)?;
        let internal: [std::ffi::c_char; 128] =
            std::array::from_fn(|i| blob[i] as std::ffi::c_char);
        let comm = Comm::from_rank(stream.clone(), rank, launch.world, Id::uninit(internal))
            .map_err(|e| cuda("ncclCommInitRank", &e))?;
        Ok(Nccl {
            comm,
            stream,
            rank,
            world: launch.world,
            local_rank: launch.local_rank,
            watchdog: Watchdog::start(rank, launch.world, timeout),
            #[cfg(feature = "mpi")]
            _mpi,
        })
    }

    fn err(&self, what: &str, e: impl std::fmt::Debug) -> Error {
        Error::dist(
            self.rank,
            format!("NCCL {what}: {e:?}"),
            "see NCCL_DEBUG=INFO output for the failing link",
        )
    }

    fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(host)
            .map_err(|e| self.err("copy in", e))
    }

    fn download<T: DeviceRepr>(
        &self,
        dev: &impl cudarc::driver::DevicePtr<T>,
        host: &mut [T],
    ) -> Result<()> {
        self.stream
            .memcpy_dtoh(dev, host)
            .and_then(|_| self.stream.synchronize())
            .map_err(|e| self.err("copy out", e))
    }
}

impl Nccl {
    fn sum_in_place<T: DeviceRepr + NcclType>(&self, buf: &mut [T]) -> Result<()> {
        let mut dev = self.upload(buf)?;
        let _t = self.watchdog.time("all_reduce");
        self.comm
            .all_reduce_in_place(&mut dev, &ReduceOp::Sum)
            .map_err(|e| self.err("all_reduce", e))?;
        self.download(&dev, buf)
    }

    fn broadcast_any<T: DeviceRepr + NcclType>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let mut dev = self.upload(buf)?;
        let _t = self.watchdog.time("broadcast");
        self.comm
            .broadcast_in_place(&mut dev, root as i32)
            .map_err(|e| self.err("broadcast", e))?;
        self.download(&dev, buf)
    }
}

/// Rank 0's 128-byte id to every rank: over MPI when the launcher speaks it (MPI is then
/// returned, to live as long as NCCL: finalising it early would end it for the process), else
/// over TCP.
#[cfg(feature = "mpi")]
fn share_id(
    launch: &Launch,
    blob: &mut Vec<u8>,
    timeout: Duration,
) -> Result<Option<super::mpi::Mpi>> {
    if launch.launcher.speaks_mpi() {
        let mpi = super::mpi::Mpi::init(launch, timeout.as_secs_f64())?;
        mpi.broadcast_bytes(blob, 0)?;
        return Ok(Some(mpi));
    }
    share_id_tcp(launch, blob, timeout).map(|_| None)
}

#[cfg(not(feature = "mpi"))]
fn share_id(launch: &Launch, blob: &mut Vec<u8>, timeout: Duration) -> Result<()> {
    share_id_tcp(launch, blob, timeout)
}

fn share_id_tcp(launch: &Launch, blob: &mut Vec<u8>, timeout: Duration) -> Result<()> {
    let at = super::TcpRendezvous::from_env(launch.rank)?;
    super::tcp_broadcast(&at, launch.rank, launch.world, blob, timeout)
}

impl Collective for Nccl {
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_reduce(&self, buf: &mut [f32]) -> Result<()> {
        self.sum_in_place(buf)
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum_in_place(buf)
    }

    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let src = self.upload(send)?;
        let mut dst = self.upload(recv)?;
        let _t = self.watchdog.time("reduce_scatter");
        self.comm
            .reduce_scatter(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| self.err("reduce_scatter", e))?;
        self.download(&dst, recv)
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let src = self.upload(send)?;
        let mut dst = self.upload(recv)?;
        let _t = self.watchdog.time("all_gather");
        self.comm
            .all_gather(&src, &mut dst)
            .map_err(|e| self.err("all_gather", e))?;
        self.download(&dst, recv)
    }

    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        // NCCL has no all-to-all: grouped point-to-point sends and receives, one pair per peer.
        let src = self.upload(send)?;
        let mut parts: Vec<CudaSlice<f32>> = recv_counts
            .iter()
            .map(|&n| self.stream.alloc_zeros(n.max(1)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err("alloc", e))?;
        let mut starts = vec![0usize; send_counts.len()];
        for r in 1..starts.len() {
            starts[r] = starts[r - 1] + send_counts[r - 1];
        }
        let _t = self.watchdog.time("all_to_all_v");
        {
            let views: Vec<_> = parts
                .iter_mut()
                .zip(recv_counts)
                .map(|(p, &n)| p.slice_mut(..n))
                .collect();
            let sends: Vec<_> = (0..self.world)
                .map(|r| src.slice(starts[r]..starts[r] + send_counts[r]))
                .collect();
            let mut group = self.comm.group();
            for (peer, (out, inp)) in sends.into_iter().zip(views).enumerate() {
                group
                    .send(out, peer as i32)
                    .map_err(|e| self.err("send", e))?;
                group
                    .recv(inp, peer as i32)
                    .map_err(|e| self.err("recv", e))?;
            }
        }
        let mut at = 0;
        for (p, &n) in parts.iter().zip(recv_counts) {
            self.download(&p.slice(..n), &mut recv[at..at + n])?;
            at += n;
        }
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.broadcast_any(buf, root)
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.broadcast_any(buf, root)
    }

    fn barrier(&self) -> Result<()> {
        // NCCL has no barrier: a one-value all-reduce is one.
        self.all_reduce(&mut [0.0])
    }

    fn abort(&self, code: i32) -> ! {
        // The launcher (torchrun, srun) stops the other ranks when one exits non-zero.
        std::process::exit(code)
    }
}
