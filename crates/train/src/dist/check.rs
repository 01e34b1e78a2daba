//! `frugal dist check`: can the ranks talk, and how fast? Every collective is run on values
//! whose result each rank can compute alone, then all-reduce's bandwidth is measured over a
//! range of sizes (bus bandwidth as nccl-tests reports it: 2(n-1)/n × bytes / time).

use super::{agree, broadcast_blob, Collective};
use base::{Error, Result};
use std::time::Instant;

fn expect(comm: &dyn Collective, what: &str, got: &[f32], want: &[f32]) -> Result<()> {
    match got == want {
        true => Ok(()),
        false => Err(Error::dist(
            comm.rank(),
            format!("{what} returned {got:?}, expected {want:?}"),
            "the MPI or NCCL installation is broken, or ranks run different builds",
        )),
    }
}

/// Runs every collective with known values; returns one line per result.
pub fn check(comm: &dyn Collective) -> Result<Vec<String>> {
    let (rank, world) = (comm.rank(), comm.world());
    let r = rank as f32;
    let tri = (world * (world - 1) / 2) as f32;

    let mut a = vec![r, 1.0, r * r];
    comm.all_reduce(&mut a)?;
    let squares: f32 = (0..world).map(|i| (i * i) as f32).sum();
    expect(comm, "all_reduce", &a, &[tri, world as f32, squares])?;

    let mut d = [rank as f64 + 0.5];
    comm.all_reduce_f64(&mut d)?;
    expect(
        comm,
        "all_reduce_f64",
        &[d[0] as f32],
        &[tri + 0.5 * world as f32],
    )?;

    // Block k of rank r's send is 10k + r: block `rank` of the sum is Σ_r (10·rank + r).
    let send: Vec<f32> = (0..world).flat_map(|k| [10.0 * k as f32 + r; 2]).collect();
    let mut recv = vec![0f32; 2];
    comm.reduce_scatter(&send, &mut recv)?;
    let want = 10.0 * rank as f32 * world as f32 + tri;
    expect(comm, "reduce_scatter", &recv, &[want, want])?;

    let mut all = vec![0f32; world];
    comm.all_gather(&[r], &mut all)?;
    expect(
        comm,
        "all_gather",
        &all,
        &(0..world).map(|i| i as f32).collect::<Vec<_>>(),
    )?;

    // Rank r sends j+1 copies of 100r + j to rank j.
    let counts: Vec<usize> = (0..world).map(|j| j + 1).collect();
    let send: Vec<f32> = (0..world)
        .flat_map(|j| vec![100.0 * r + j as f32; j + 1])
        .collect();
    let from = vec![rank + 1; world];
    let mut recv = vec![0f32; world * (rank + 1)];
    comm.all_to_all_v(&send, &counts, &mut recv, &from)?;
    let want: Vec<f32> = (0..world)
        .flat_map(|src| vec![100.0 * src as f32 + r; rank + 1])
        .collect();
    expect(comm, "all_to_all_v", &recv, &want)?;

    let root = world - 1;
    let mut b = vec![r; 3];
    comm.broadcast(&mut b, root)?;
    expect(comm, "broadcast", &b, &[root as f32; 3])?;
    let mut blob = format!("from rank {rank}").into_bytes();
    broadcast_blob(comm, &mut blob, 0)?;
    if blob != b"from rank 0" {
        return Err(Error::dist(
            rank,
            "broadcast_bytes lost bytes",
            "the MPI or NCCL installation is broken",
        ));
    }
    comm.barrier()?;
    agree(comm, "check", "same text on every rank")?;

    let mut lines = vec![format!(
        "{} ranks over {}: all_reduce, reduce_scatter, all_gather, all_to_all_v, broadcast, barrier agree with the expected values",
        world,
        comm.backend()
    )];
    for floats in [1usize << 10, 1 << 16, 1 << 20, 1 << 22] {
        let mut buf = vec![1f32; floats];
        comm.all_reduce(&mut buf)?; // warm-up
        let reps = (1 << 24) / floats;
        let t0 = Instant::now();
        for _ in 0..reps {
            comm.all_reduce(&mut buf)?;
        }
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        let bytes = (floats * 4) as f64;
        let bus = 2.0 * (world as f64 - 1.0) / world as f64 * bytes / s;
        lines.push(format!(
            "all_reduce {:>9} B: {:>9.1} us, bus bandwidth {:.2} GB/s",
            floats * 4,
            s * 1e6,
            bus / 1e9
        ));
    }
    Ok(lines)
}
