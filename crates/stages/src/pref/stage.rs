//! What the preference stages (reward model, DPO, GRPO) share: each starts from the run's SFT
//! model, keeps its own directory (`RUN/rm`, `RUN/dpo`, `RUN/grpo`) guarded against mixing
//! configs, and resumes from its newest checkpoint.

use base::config::parse_toml;
use base::{Error, Result};
use data::loader::Cursor;
use model::Llama;
use std::path::{Path, PathBuf};
use tensor::Rng;
use train::checkpoint::{self, TrainState, Trained};
use train::config::TrainConfig;
use train::optim::Optimizer;

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

/// The state to train from: a fresh one, or with `resume` the newest checkpoint of `dir`
/// loaded into `model` and `opt` (its path returned, for stage-specific tensors).
pub(crate) fn start_state(
    dir: &Path,
    resume: bool,
    seed: u64,
    model: &mut Llama,
    opt: &mut Optimizer,
    log: &mut impl FnMut(&str),
) -> Result<(TrainState, Option<PathBuf>)> {
    if resume {
        if let Some((_, ck)) = checkpoint::list(dir)?.pop() {
            let state = checkpoint::load(&ck, model, opt)?;
            log(&format!(
                "resumed from {} (step {})",
                ck.display(),
                state.step
            ));
            return Ok((state, Some(ck)));
        }
    }
    let fresh = TrainState {
        step: 0,
        cursor: Cursor::default(),
        loss_ema: None,
        sample_rng: Rng::new(seed).state(),
        tokens_seen: 0,
        elapsed_s: 0.0,
    };
    Ok((fresh, None))
}

/// The seed of step `step`'s draws: a fixed function of the run's seed and the step, so a
/// resumed run sees what an uninterrupted one would.
pub(crate) fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A stage's config from `path` with `overrides`: parsed, its `[train]` validated, then the
/// stage's own section by `check`, which names the offending field.
pub(crate) fn load_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    overrides: &[String],
    train: impl Fn(&T) -> &TrainConfig,
    check: impl FnOnce(&T) -> std::result::Result<(), (&'static str, String)>,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let cfg: T = parse_toml(&text, &path.display().to_string(), overrides)?;
    train(&cfg)
        .validate()
        .and_then(|_| check(&cfg))
        .map_err(|(field, msg)| {
            Error::config(
                path.display().to_string(),
                format!("{field}: {msg}"),
                "adjust that field",
            )
        })?;
    Ok(cfg)
}
