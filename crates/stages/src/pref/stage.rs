//! What the preference stages (reward model, DPO, GRPO) share: each starts from the run's SFT
//! model, keeps its own directory (`RUN/rm`, `RUN/dpo`, `RUN/grpo`) guarded against mixing
//! configs, and resumes from its newest checkpoint.

use base::{Error, Result};
use std::path::{Path, PathBuf};
use train::checkpoint::{self, Trained};
use train::config::{DistConfig, TrainConfig};
use train::dist::Solo;
use train::Setup;

/// Loads the SFT model of `run`, checks that rows of `seq` tokens fit its context, and
/// prepares `RUN/<sub>` for `resolved` (see `checkpoint::open_stage_dir`). `what` names the
/// stage in messages.
pub(crate) fn open(
    run: &Path,
    sub: &str,
    what: &str,
    resolved: &str,
    seq: usize,
    resume: bool,
) -> Result<(Trained, PathBuf)> {
    let sft = checkpoint::load_trained(run, true)?;
    if sft.stage != "sft" {
        return Err(Error::input(
            run.display().to_string(),
            format!("has no SFT checkpoint to start {what} from"),
            "run `frugal sft --run` first",
        ));
    }
    if seq > sft.cfg.model.context_len {
        return Err(Error::config(
            "train.seq_len",
            format!("{seq} exceeds the model's context"),
            "lower train.seq_len",
        ));
    }
    let dir = run.join(sub);
    checkpoint::open_stage_dir(&dir, resolved, resume, what)?;
    Ok((sft, dir))
}

/// Where a preference stage trains: one process, checkpoints and metrics in `dir`, billed as
/// the run's "preference" stage.
pub(crate) fn setup<'a>(
    t: &'a TrainConfig,
    run: &'a Path,
    dir: &'a Path,
    prefix: &'a str,
    resume: bool,
) -> Setup<'a> {
    Setup {
        comm: &Solo,
        train: t,
        dist: DistConfig::default(),
        run,
        dir,
        stage: "preference",
        after: Vec::new(),
        prefix,
        resume,
    }
}

/// The seed of step `step`'s draws: a fixed function of the run's seed and the step, so a
/// resumed run sees what an uninterrupted one would.
pub(crate) fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
