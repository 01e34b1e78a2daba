//! Checkpoints across ranks. Only rank 0 touches the run directory: it writes checkpoints in
//! the one-process format (whole parameters, whole optimizer moments), and on resume or
//! rollback it reads one and broadcasts it, each rank keeping the optimizer state of its own
//! shard. So a checkpoint resumes at any world size, with or without ZeRO, and the other
//! ranks need not see the run directory at all.

use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::dist::{agree_hash, broadcast_blob, fnv64, fnv64_extend, Collective, Replica};
use crate::optim::Optimizer;
use base::{Error, Result};
use model::Llama;
use std::path::{Path, PathBuf};

/// Broadcasts `buf` from rank 0 in pieces MPI's int counts can carry.
fn broadcast(comm: &dyn Collective, buf: &mut [f32]) -> Result<()> {
    for piece in buf.chunks_mut(1 << 26) {
        comm.broadcast(piece, 0)?;
    }
    Ok(())
}

/// Loads the newest checkpoint of `run` (rank 0 reads it) into every rank's `model` and
/// `opt` (its shard of the moments). None when there is no checkpoint yet.
pub fn restore(
    replica: &Replica,
    run: &Path,
    t: &TrainConfig,
    model: &mut Llama,
    opt: &mut Optimizer,
) -> Result<Option<(PathBuf, TrainState)>> {
    let comm = replica.comm();
    let lead = comm.rank() == 0;
    let newest = match lead {
        true => checkpoint::list(run)?.pop(),
        false => None,
    };
    let mut found = [newest.is_some() as u8];
    comm.broadcast_bytes(&mut found, 0)?;
    if found[0] == 0 {
        return Ok(None);
    }
    // The whole optimizer, as a checkpoint holds it; kept only until the shards are cut.
    let mut full = Optimizer::new(t, &model.params);
    let mut blob = Vec::new();
    if let Some((_, dir)) = &newest {
        let state = checkpoint::load(dir, model, &mut full)?;
        let json = serde_json::json!({"state": state, "dir": dir, "optimizer_step": full.step});
        blob = serde_json::to_vec(&json).unwrap_or_default();
    }
    broadcast_blob(comm, &mut blob, 0)?;
    broadcast(comm, &mut model.params.data)?;
    broadcast(comm, &mut full.m)?;
    broadcast(comm, &mut full.v)?;
    let garbled = |e: serde_json::Error| {
        Error::dist(
            comm.rank(),
            format!("checkpoint state from rank 0: {e}"),
            "report this: ranks run different frugal builds?",
        )
    };
    let json: serde_json::Value = serde_json::from_slice(&blob).map_err(garbled)?;
    let state: TrainState = serde_json::from_value(json["state"].clone()).map_err(garbled)?;
    let own = replica.owned();
    opt.m.copy_from_slice(&full.m[own.clone()]);
    opt.v.copy_from_slice(&full.v[own]);
    opt.step = json["optimizer_step"].as_u64().unwrap_or(0);
    let dir = PathBuf::from(json["dir"].as_str().unwrap_or_default());
    Ok(Some((dir, state)))
}

/// Writes a checkpoint of the ranks' common state, with `extra` tensors (rank 0's); rank 0
/// returns its directory. Under ZeRO-1 the moments' shards are gathered first, so the file
/// holds them whole.
pub fn save(
    replica: &mut Replica,
    run: &Path,
    t: &TrainConfig,
    model: &Llama,
    opt: &Optimizer,
    state: &TrainState,
    extra: &[(&str, &[f32])],
) -> Result<Option<PathBuf>> {
    let gathered;
    let whole = match replica.zero() {
        None => opt,
        Some(_) => {
            let mut full = Optimizer::new(t, &model.params);
            replica.all_gather(&mut full.m, Some(&opt.m))?;
            replica.all_gather(&mut full.v, Some(&opt.v))?;
            full.step = opt.step;
            gathered = full;
            &gathered
        }
    };
    match replica.comm().rank() {
        0 => checkpoint::save_with(run, model, whole, state, t.keep_checkpoints, extra).map(Some),
        _ => Ok(None),
    }
}

/// Checks that every rank holds bit-identical parameters; returns their hash.
pub fn check_identical(comm: &dyn Collective, params: &[f32]) -> Result<u64> {
    let hash = params
        .iter()
        .fold(fnv64(&[]), |h, x| fnv64_extend(h, &x.to_le_bytes()));
    agree_hash(
        comm,
        "parameters",
        hash,
        "the ranks diverged: report this, with the config and the launch command",
    )?;
    Ok(hash)
}
