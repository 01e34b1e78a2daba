//! Evaluation: standard benchmarks scored the way the field scores them, for every stage of a
//! run (base, SFT, preference-tuned), and the report card that compares them.
//!
//! - Multiple choice by continuation log-likelihood, as lm-evaluation-harness does: each choice
//!   is a continuation of the prompt; `acc` picks the highest summed log-probability, `acc_norm`
//!   the highest per character of the continuation.
//! - LAMBADA: the last word counts as right when greedy decoding would produce every one of its
//!   tokens.
//! - Generative exact match (GSM8K): greedy decoding, the number after `####` against the gold.
//! - Bits per byte on held-out text (the pretraining validation split).
//!
//! Prompts are built from the benchmark files (Arrow IPC streams, request JSONL, JSON) by one
//! small file per task in `tasks/`; few-shot examples are drawn with a fixed seed per item, so
//! an item's prompt does not depend on `--limit`. Every request starts with `<|bos|>`, as every
//! pretraining document does; a request longer than the context loses tokens from the left,
//! and the card counts how many did.

//!
//! Uses: `engine` (generation and scoring), `train` (checkpoints, validation loss), `model`,
//! `data` (chat format, shards, benchmark files), `ledger`, `base`. Exposes: the entry point
//! [`evaluate`], the card, and the scoring modules the tests and benchmarks call.

pub mod card;
mod docs;
mod generate;
pub mod loglik;
pub mod metrics;
pub mod prompt;
mod run;
pub mod tasks;

pub use run::{
    evaluate, items_for_half_width, stages, EvalOptions, Stage, StageResults, TaskResult, TaskSpec,
};

use base::Result;
use std::path::PathBuf;

/// A multiple-choice item: each choice is a (context, continuation) pair. Most tasks share one
/// context; WinoGrande varies the context and keeps the continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct McItem {
    /// Text before the few-shot examples (MMLU's "The following are … about anatomy.").
    pub preamble: String,
    pub choices: Vec<(String, String)>,
    pub gold: usize,
    /// Few-shot examples come from the same group (MMLU's subject); 0 for most tasks.
    pub group: u32,
}

impl McItem {
    /// A question whose choices all continue the same context.
    pub fn shared(context: String, continuations: Vec<String>, gold: usize) -> Self {
        McItem {
            preamble: String::new(),
            choices: continuations
                .into_iter()
                .map(|c| (context.clone(), c))
                .collect(),
            gold,
            group: 0,
        }
    }

    /// The item solved, as a few-shot example.
    pub fn solved(&self) -> String {
        let (c, x) = &self.choices[self.gold];
        format!("{c}{x}")
    }
}

/// A generative item: a question, its reference answer, and its solved text for few-shot
/// prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct GenItem {
    pub question: String,
    pub answer: String,
    pub solution: String,
}

#[derive(Clone, Debug)]
pub enum Items {
    Mc(Vec<McItem>),
    Gen(Vec<GenItem>),
    /// Tokenized held-out text: a shard directory made by `frugal data tokenize`.
    Heldout(PathBuf),
}

impl Items {
    pub fn len(&self) -> usize {
        match self {
            Items::Mc(v) => v.len(),
            Items::Gen(v) => v.len(),
            Items::Heldout(_) => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a task's files gave: the items to score, where few-shot examples come from (None: the
/// items themselves, each item never its own example), and the rows that were malformed.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub items: Items,
    pub shots_from: Option<Items>,
    pub skipped: Skipped,
}

/// Malformed rows, left out and counted; the first one's message is kept for the card.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Skipped {
    pub count: usize,
    pub first: Option<String>,
}

impl Skipped {
    pub fn add(&mut self, msg: String) {
        self.count += 1;
        self.first.get_or_insert(msg);
    }
}

/// How a task is scored, and which number is its headline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Multiple choice, summed log-likelihood.
    Acc,
    /// Multiple choice, log-likelihood per character of the continuation.
    AccNorm,
    /// The single continuation is what greedy decoding produces (LAMBADA).
    Greedy,
    /// Generated answer equals the reference (GSM8K).
    ExactMatch,
    /// Bits per byte of held-out text (lower is better).
    Bpb,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
            Metric::Greedy => "acc",
            Metric::ExactMatch => "exact_match",
            Metric::Bpb => "bits_per_byte",
        }
    }
}

/// Where the benchmark files are: `data/raw` as scripts/fetch-data.sh lays it out, and the run
/// (for its held-out pretraining text).
pub struct Sources {
    pub raw: PathBuf,
    pub run: PathBuf,
}

impl Sources {
    /// The path of a fetched file, or an error naming it and the fetch command.
    pub fn file(&self, rel: &str, group: &str) -> Result<PathBuf> {
        let p = self.raw.join(rel);
        if p.exists() {
            return Ok(p);
        }
        Err(base::Error::input(
            p.display().to_string(),
            "is missing",
            format!("fetch it: scripts/fetch-data.sh --group {group} (--data-dir names another data directory)"),
        ))
    }
}

/// A benchmark: its name, its files and how it is scored. One small file per task in `tasks/`.
pub trait Task: Sync {
    /// Short name used on the command line: "hellaswag".
    fn name(&self) -> &'static str;
    /// Dataset and split, for the card: "HellaSwag validation".
    fn source(&self) -> &'static str;
    fn metric(&self) -> Metric;
    /// Few-shot examples in the prompt unless `--shots` says otherwise (lm-evaluation-harness's
    /// defaults).
    fn shots(&self) -> usize {
        0
    }
    fn load(&self, src: &Sources) -> Result<Loaded>;
}

#[cfg(test)]
mod tests;
