//! Bits per byte on held-out text: the run's own pretraining validation split, so every stage
//! of the run is measured on the same text (a tuned model that forgets shows it here).
//! Independent of the tokenizer, unlike loss per token.

use crate::{Items, Loaded, Metric, Skipped, Sources, Task};
use base::{Error, Result};

pub struct Bpb;

impl Task for Bpb {
    fn name(&self) -> &'static str {
        "bpb"
    }
    fn source(&self) -> &'static str {
        "the run's held-out pretraining text"
    }
    fn metric(&self) -> Metric {
        Metric::Bpb
    }
    fn load(&self, src: &Sources) -> Result<Loaded> {
        let cfg = train::Config::load(&src.run.join("config.toml"), &[])?;
        let data = cfg.data.ok_or_else(|| {
            Error::input(
                src.run.join("config.toml").display().to_string(),
                "has no [data] table naming the tokenized shards",
                "evaluate a run made by `frugal pretrain` or leave out the bpb task",
            )
        })?;
        if !data.shards.join(data::tokenize::MANIFEST).exists() {
            return Err(Error::input(
                data.shards.display().to_string(),
                "holds no tokenized shards",
                "run `frugal data tokenize` (or the speedrun) to make them",
            ));
        }
        Ok(Loaded {
            items: Items::Heldout(data.shards),
            shots_from: None,
            skipped: Skipped::default(),
        })
    }
}
