//! Beyond one machine: the collectives data-parallel training needs, behind one trait, on the
//! engines the field trusts. `Solo` is one process (no dependency); `Mpi` is Open MPI (feature
//! `mpi`); `Nccl` is NVIDIA's library through cudarc, loaded at run time (feature `nccl`).
//! The launcher (mpirun, srun, torchrun) is read from the environment (`Launch`), and every
//! collective runs under a watchdog, so a dead or hung rank ends the job instead of hanging it.
//!
//! `replica` builds data parallelism on top: gradients all-reduced in fixed buckets in a fixed
//! order, or ZeRO-1 (reduce-scatter, a 1/world optimizer shard, all-gather).

mod bootstrap;
mod check;
mod launch;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
mod replica;
mod watchdog;

pub use bootstrap::{tcp_broadcast, TcpRendezvous};
pub use check::check;
pub use launch::{Launch, Launcher};
pub use replica::{Replica, ShardPlan};
pub use watchdog::{Watchdog, TIMEOUT_EXIT};

use crate::config::{Backend, DistConfig};
use base::{Error, Result};

/// The collectives of data-parallel (and expert-parallel) training. Every rank calls the same
/// collectives in the same order with the same sizes; sums are the only reduction.
pub trait Collective {
    /// "solo", "mpi" or "nccl".
    fn backend(&self) -> &'static str;
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Rank among the processes on this machine.
    fn local_rank(&self) -> usize;
    /// Sums `buf` over the ranks, in place; every rank receives the same sums.
    fn all_reduce(&self, buf: &mut [f32]) -> Result<()>;
    /// `all_reduce` in f64: losses, norms and counts that f32 would round.
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Sums `send` (world × recv.len()) over the ranks; rank r receives block r of the sum.
    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Concatenates every rank's `send` in rank order into `recv` (world × send.len()).
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Sends `send_counts[r]` consecutive values of `send` to rank r, and receives
    /// `recv_counts[r]` from rank r, placed in rank order in `recv` (expert dispatch).
    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()>;
    /// Copies `root`'s `buf` to every rank.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// Ends every rank of the job now with `code` (after an error on this one).
    fn abort(&self, code: i32) -> !;
}

/// One process: every collective is the identity.
pub struct Solo;

impl Collective for Solo {
    fn backend(&self) -> &'static str {
        "solo"
    }
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn all_reduce(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_to_all_v(&self, send: &[f32], _: &[usize], recv: &mut [f32], _: &[usize]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn broadcast(&self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The collective `cfg` asks for, for the process `launch` describes.
pub fn connect(cfg: &DistConfig, launch: &Launch) -> Result<Box<dyn Collective>> {
    let backend = match cfg.backend {
        Backend::Auto if launch.world == 1 => Backend::Solo,
        Backend::Auto if launch.launcher == Launcher::Torchrun => Backend::Nccl,
        Backend::Auto => Backend::Mpi,
        b => b,
    };
    #[cfg_attr(all(feature = "mpi", feature = "nccl"), allow(unused_variables))]
    let unbuilt = |feature: &str| {
        Error::dist(
            launch.rank,
            format!(
                "started as rank {} of {} by {}, and dist.backend asks for {feature}, but this frugal was built without the `{feature}` feature",
                launch.rank,
                launch.world,
                launch.launcher.name()
            ),
            format!("build it with `cargo build --release --features {feature}`"),
        )
    };
    match backend {
        Backend::Solo if launch.world > 1 => Err(Error::config(
            "dist.backend",
            format!(
                "is \"solo\", but {} started {} ranks",
                launch.launcher.name(),
                launch.world
            ),
            "set dist.backend = \"auto\", \"mpi\" or \"nccl\", or start one process",
        )),
        Backend::Solo | Backend::Auto => Ok(Box::new(Solo)),
        #[cfg(feature = "mpi")]
        Backend::Mpi => Ok(Box::new(mpi::Mpi::init(launch, cfg.timeout_s)?)),
        #[cfg(not(feature = "mpi"))]
        Backend::Mpi => Err(unbuilt("mpi")),
        #[cfg(feature = "nccl")]
        Backend::Nccl => Ok(Box::new(nccl::Nccl::init(launch, cfg.timeout_s)?)),
        #[cfg(not(feature = "nccl"))]
        Backend::Nccl => Err(unbuilt("nccl")),
    }
}

/// FNV-1a, 64-bit: the same on every machine and build, unlike `std`'s hasher.
pub fn fnv64(bytes: &[u8]) -> u64 {
    fnv64_extend(0xcbf29ce484222325, bytes)
}

/// `fnv64` continued from the hash `h` of what came before `bytes`.
pub fn fnv64_extend(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Errors unless every rank's `hash` of its `what` equals rank 0's; every rank sees every
/// hash (summed into its own slot, in two exact halves), so all of them refuse together.
pub fn agree_hash(comm: &dyn Collective, what: &str, hash: u64, hint: &str) -> Result<()> {
    let mut halves = vec![0f64; 2 * comm.world()];
    halves[2 * comm.rank()] = (hash >> 32) as f64;
    halves[2 * comm.rank() + 1] = (hash & 0xffff_ffff) as f64;
    comm.all_reduce_f64(&mut halves)?;
    let ranks: Vec<usize> = (1..comm.world())
        .filter(|&r| halves[2 * r..2 * r + 2] != halves[..2])
        .collect();
    if ranks.is_empty() {
        return Ok(());
    }
    let root = ((halves[0] as u64) << 32) | halves[1] as u64;
    Err(Error::dist(
        comm.rank(),
        format!(
            "the {what} of rank(s) {ranks:?} differs from rank 0's (hash {hash:016x} here, {root:016x} on rank 0)"
        ),
        hint,
    ))
}

/// Refuses to start unless every rank holds the same `text` (the resolved config).
pub fn agree(comm: &dyn Collective, what: &str, text: &str) -> Result<()> {
    agree_hash(
        comm,
        what,
        fnv64(text.as_bytes()),
        "give every rank the same --config, --set overrides and input files",
    )
}

/// Sends a byte string of any length from `root` to every rank.
pub fn broadcast_blob(comm: &dyn Collective, blob: &mut Vec<u8>, root: usize) -> Result<()> {
    let mut len = (blob.len() as u64).to_le_bytes();
    comm.broadcast_bytes(&mut len, root)?;
    blob.resize(u64::from_le_bytes(len) as usize, 0);
    comm.broadcast_bytes(blob, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solo_collectives_are_the_identity() {
        let s = Solo;
        let mut a = vec![1.0f32, 2.0];
        s.all_reduce(&mut a).unwrap();
        let mut b = vec![0.0f32; 2];
        s.reduce_scatter(&a, &mut b).unwrap();
        assert_eq!(b, a);
        s.all_gather(&a, &mut b).unwrap();
        assert_eq!(b, a);
        s.all_to_all_v(&a, &[2], &mut b, &[2]).unwrap();
        assert_eq!(b, a);
        agree(&s, "config", "x").unwrap();
        let mut blob = b"abc".to_vec();
        broadcast_blob(&s, &mut blob, 0).unwrap();
        assert_eq!(blob, b"abc");
    }

    #[test]
    fn connect_refuses_what_it_cannot_do() {
        let two = Launch {
            launcher: Launcher::OpenMpi,
            rank: 1,
            world: 2,
            local_rank: 1,
            local_world: 2,
        };
        let solo = DistConfig {
            backend: Backend::Solo,
            ..DistConfig::default()
        };
        let e = connect(&solo, &two).err().unwrap().to_string();
        assert!(e.contains("dist.backend") && e.contains("2 ranks"), "{e}");
        assert_eq!(
            connect(&DistConfig::default(), &Launch::SOLO)
                .unwrap()
                .backend(),
            "solo"
        );
        #[cfg(not(feature = "mpi"))]
        {
            let e = connect(&DistConfig::default(), &two)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("rank 1") && e.contains("--features mpi"), "{e}");
        }
    }

    #[test]
    fn fnv64_is_the_published_function() {
        // Reference values of FNV-1a 64 from its authors' test suite.
        assert_eq!(fnv64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv64(b"foobar"), 0x85944171f73967e8);
    }
}
