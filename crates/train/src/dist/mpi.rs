//! The `Collective` on MPI (rsmpi over the system's Open MPI): CPU clusters, and CI with
//! `mpirun -np 2`. Buffers are host memory, so calls go straight to the library.

use super::{Collective, Launch, Watchdog};
use base::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Threading;
use std::cell::RefCell;
use std::time::Duration;

pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    watchdog: Watchdog,
    /// MPI's reductions read one buffer and write another: the input's copy.
    scratch: RefCell<Vec<f32>>,
    scratch64: RefCell<Vec<f64>>,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

fn counts(c: &[usize]) -> (Vec<i32>, Vec<i32>) {
    let counts: Vec<i32> = c.iter().map(|&n| n as i32).collect();
    let displs = counts
        .iter()
        .scan(0, |acc, &n| {
            let d = *acc;
            *acc += n;
            Some(d)
        })
        .collect();
    (counts, displs)
}

impl Mpi {
    /// Initialises MPI. The ranks it reports must be the launcher's.
    pub fn init(launch: &Launch, timeout_s: f64) -> Result<Mpi> {
        // Collectives are issued from one thread (a compute pool's worker, not necessarily the
        // one that initialised MPI), never two at once: SERIALIZED is enough.
        let (universe, level) =
            mpi::initialize_with_threading(Threading::Serialized).ok_or_else(|| {
                Error::dist(
                    launch.rank,
                    "MPI was initialised twice",
                    "start one frugal per rank",
                )
            })?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if level < Threading::Serialized {
            return Err(Error::dist(
                rank,
                format!("this MPI offers thread level {level:?}, frugal needs Serialized"),
                "use an MPI built with thread support (Debian's Open MPI has it)",
            ));
        }
        if launch.world > 1 && (rank, size) != (launch.rank, launch.world) {
            return Err(Error::dist(
                rank,
                format!(
                    "MPI says rank {rank} of {size}, {} said rank {} of {}",
                    launch.launcher.name(),
                    launch.rank,
                    launch.world
                ),
                "start the job with the MPI's own mpirun or srun --mpi=pmix",
            ));
        }
        Ok(Mpi {
            rank,
            size,
            local_rank: launch.local_rank,
            watchdog: Watchdog::start(rank, size, Duration::from_secs_f64(timeout_s)),
            world,
            scratch: RefCell::new(Vec::new()),
            scratch64: RefCell::new(Vec::new()),
            _universe: universe,
        })
    }
}

impl Mpi {
    /// All-reduce (sum) of `buf` in place, through a copy of it in `scratch`.
    fn sum_into<T: Equivalence + Copy>(
        &self,
        scratch: &RefCell<Vec<T>>,
        buf: &mut [T],
    ) -> Result<()> {
        let mut send = scratch.borrow_mut();
        send.clear();
        send.extend_from_slice(buf);
        let _t = self.watchdog.time("all_reduce");
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_any<T: Equivalence>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let _t = self.watchdog.time("broadcast");
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }
}

impl Collective for Mpi {
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_reduce(&self, buf: &mut [f32]) -> Result<()> {
        self.sum_into(&self.scratch, buf)
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum_into(&self.scratch64, buf)
    }

    fn reduce_scatter(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        assert_eq!(send.len(), recv.len() * self.size, "reduce_scatter sizes");
        let _t = self.watchdog.time("reduce_scatter");
        self.world
            .reduce_scatter_block_into(send, recv, SystemOperation::sum());
        Ok(())
    }

    fn all_gather(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        assert_eq!(recv.len(), send.len() * self.size, "all_gather sizes");
        let _t = self.watchdog.time("all_gather");
        self.world.all_gather_into(send, recv);
        Ok(())
    }

    fn all_to_all_v(
        &self,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut [f32],
        recv_counts: &[usize],
    ) -> Result<()> {
        let (sc, sd) = counts(send_counts);
        let (rc, rd) = counts(recv_counts);
        let _t = self.watchdog.time("all_to_all_v");
        let out = Partition::new(send, sc, sd);
        let mut inp = PartitionMut::new(recv, rc, rd);
        self.world.all_to_all_varcount_into(&out, &mut inp);
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.broadcast_any(buf, root)
    }

    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.broadcast_any(buf, root)
    }

    fn barrier(&self) -> Result<()> {
        let _t = self.watchdog.time("barrier");
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
