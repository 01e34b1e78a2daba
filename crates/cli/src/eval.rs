//! `frugal eval`: score a run's stages on the standard benchmarks and update its report card.

use clap::Args;
use eval::{evaluate, EvalOptions, TaskSpec};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// Run directory; every stage with a checkpoint (base, sft, dpo, grpo) is evaluated.
    #[arg(long)]
    pub run: PathBuf,
    /// Tasks, comma-separated, each optionally with its own item limit: hellaswag,mmlu:500.
    /// "all" for every task. Tasks: bpb, hellaswag, arc_easy, arc_challenge, piqa,
    /// winogrande, boolq, openbookqa, copa, commonsense_qa, lambada, mmlu, gsm8k,
    /// bbh_navigate, bbh_sports, bbh_causal_judgment, bbh_date_understanding.
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Items per task (a seeded random subset) when the task names no limit [default: all].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Few-shot examples for every task [default: each task's lm-evaluation-harness default].
    #[arg(long)]
    pub shots: Option<usize>,
    /// Stages to evaluate, comma-separated (base, sft, dpo, grpo) [default: all that exist].
    #[arg(long, value_delimiter = ',')]
    pub stage: Vec<String>,
    /// Data directory of scripts/fetch-data.sh; the benchmarks are under DIR/raw.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Seed of the few-shot draws and the limited subsets.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Recompute results already in RUN/eval/.
    #[arg(long)]
    pub force: bool,
    /// Write every scored request (tokens and log-likelihood) as JSONL into this directory.
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

impl EvalArgs {
    pub fn options(&self) -> anyhow::Result<EvalOptions> {
        Ok(EvalOptions {
            tasks: TaskSpec::parse_list(&self.tasks)?,
            limit: self.limit,
            shots: self.shots,
            stages: self.stage.clone(),
            data: self.data.clone(),
            seed: self.seed,
            force: self.force,
            dump: self.dump.clone(),
            ..Default::default()
        })
    }
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let opts = a.options()?;
    let results = evaluate(&a.run, &opts, |line| println!("{line}"))?;
    let failed: Vec<String> = results
        .iter()
        .flat_map(|s| {
            s.tasks
                .iter()
                .filter(|t| t.error.is_some())
                .map(move |t| format!("{} {}", s.stage, t.task))
        })
        .collect();
    if let Some(card) = eval::card::markdown(&a.run)? {
        println!("\n{card}");
    }
    let w = app::report::write_report(&a.run, &crate::cost::default_report_options()?)?;
    println!(
        "report card in {} and {}",
        w.markdown.display(),
        w.html.display()
    );
    anyhow::ensure!(
        failed.is_empty(),
        "{} task(s) failed: {} (the others are scored; see the messages above)",
        failed.len(),
        failed.join(", ")
    );
    Ok(())
}
