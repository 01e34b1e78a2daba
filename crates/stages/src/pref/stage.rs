//! What the preference stages (reward model, DPO, GRPO) share: each starts from the run's SFT
//! model, keeps its own directory (`RUN/rm`, `RUN/dpo`, `RUN/grpo`) guarded against mixing
//! configs, and resumes from its newest checkpoint.

use base::{Error, Result};
use data::pairs::{read_sources, shuffle, Pair};
use serde::Serialize;
use std::path::{Path, PathBuf};
use train::checkpoint::{self, Trained};
use train::config::{DistConfig, TrainConfig};
use train::dist::Solo;
use train::lora::LoraConfig;
use train::{Report, Setup};

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
/// With `lora`, adapters on the SFT checkpoint `base` are tuned instead of its weights.
pub(crate) fn setup<'a>(
    t: &'a TrainConfig,
    run: &'a Path,
    dir: &'a Path,
    prefix: &'a str,
    resume: bool,
    lora: Option<(&'a LoraConfig, &'a Path)>,
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
        lora,
    }
}

/// The seed of step `step`'s draws: a fixed function of the run's seed and the step, so a
/// resumed run sees what an uninterrupted one would.
pub(crate) fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A stage's preference pairs, encoded: training and held-out parts, and what encoding did.
pub(crate) struct PairSplit<T> {
    pub train: Vec<T>,
    pub val: Vec<T>,
    pub prompts_cut: usize,
    pub skipped_rows: usize,
}

/// The pairs of `sources` (named by `field` in messages), shuffled with `seed`, each encoded by
/// `encode` (which says whether it cut the prompt to fit `seq` tokens); the last `val_pairs` (at
/// most a fifth) held out. Logs the split.
pub(crate) fn split_pairs<T>(
    sources: &[PathBuf],
    field: &str,
    (seed, val_pairs, seq): (u64, usize, usize),
    log: &mut impl FnMut(&str),
    mut encode: impl FnMut(&Pair) -> Result<(T, bool)>,
) -> Result<PairSplit<T>> {
    let (mut pairs, skipped_rows) = read_sources(sources, log)?;
    shuffle(&mut pairs, seed);
    let n_val = val_pairs.min(pairs.len() / 5);
    let mut prompts_cut = 0;
    let mut train = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let (item, cut) = encode(p)?;
        prompts_cut += usize::from(cut);
        train.push(item);
    }
    let val = train.split_off(train.len() - n_val);
    if train.is_empty() {
        return Err(Error::input(
            field,
            "hold no pairs to train on",
            "add preference files",
        ));
    }
    log(&format!(
        "{} train pairs, {} held out, {prompts_cut} prompts cut from the left to fit {seq} tokens",
        train.len(),
        val.len()
    ));
    Ok(PairSplit {
        train,
        val,
        prompts_cut,
        skipped_rows,
    })
}

/// Held-out measures of a pairwise preference (the reward model's rewards, DPO's implicit
/// reward β·(π − π_ref)): how often, and by how much, the chosen reply scores higher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PairEval {
    /// Pairs whose chosen reply gets the higher score.
    pub accuracy: f64,
    /// Half-width of the accuracy's 95% confidence interval (normal approximation).
    pub ci95: f64,
    pub margin: f64,
    pub loss: f64,
    pub pairs: usize,
}

impl PairEval {
    /// From each held-out pair's (score margin chosen − rejected, loss).
    pub(crate) fn of(pairs: impl ExactSizeIterator<Item = (f64, f64)>) -> Self {
        let count = pairs.len();
        let (mut right, mut margin, mut loss) = (0f64, 0f64, 0f64);
        for (m, l) in pairs {
            right += f64::from(u8::from(m > 0.0));
            margin += m;
            loss += l;
        }
        let n = count.max(1) as f64;
        let acc = right / n;
        PairEval {
            accuracy: acc,
            ci95: 1.96 * (acc * (1.0 - acc) / n).sqrt(),
            margin: margin / n,
            loss: loss / n,
            pairs: count,
        }
    }

    /// The loop's periodic report of it; `what` names the accuracy ("pairwise", ...).
    pub(crate) fn report(&self, what: &str) -> Report {
        Report {
            line: format!(
                "held-out {what} accuracy {:.3} ± {:.3} | margin {:.3} | loss {:.4}",
                self.accuracy, self.ci95, self.margin, self.loss
            ),
            fields: serde_json::json!({"val_accuracy": self.accuracy, "val_margin": self.margin, "val_loss": self.loss}),
            ..Report::default()
        }
    }
}
