//! The report card: every evaluated stage of a run side by side, each task's chance level
//! beside its scores, and the centred mean (CORE-style: each accuracy rescaled so that chance
//! is 0 and perfect is 1, then averaged). Read from `RUN/eval/<stage>.json`.

use crate::run::{StageResults, TaskResult};
use base::Result;
use std::fmt::Write;
use std::path::Path;

/// The evaluated stages of `run`, in recipe order.
pub fn read_all(run: &Path) -> Result<Vec<StageResults>> {
    let mut out = Vec::new();
    for stage in ["base", "sft", "dpo", "grpo"] {
        if let Some(r) = StageResults::read(&StageResults::path(run, stage))? {
            out.push(r);
        }
    }
    Ok(out)
}

fn cell(t: Option<&TaskResult>) -> String {
    match t {
        None => "-".into(),
        Some(t) if t.error.is_some() => "failed".into(),
        Some(t) => t.score.map_or("-".into(), |s| match t.ci95() {
            Some(ci) => format!("{:.1} ± {:.1}", 100.0 * s, 100.0 * ci),
            None => format!("{s:.4}"),
        }),
    }
}

/// The card as markdown (a table and notes), or None when nothing was evaluated.
pub fn markdown(run: &Path) -> Result<Option<String>> {
    let stages = read_all(run)?;
    if stages.is_empty() {
        return Ok(None);
    }
    let mut names: Vec<&str> = Vec::new();
    for s in &stages {
        for t in &s.tasks {
            if !names.contains(&t.task.as_str()) {
                names.push(&t.task);
            }
        }
    }
    let find = |s: &StageResults, name: &str| s.tasks.iter().find(|t| t.task == name).cloned();
    let mut o = String::from("| task | data | metric | shots | items | chance |");
    for s in &stages {
        let _ = write!(o, " {} |", s.stage);
    }
    o.push_str("\n|---|---|---|---|---|---|");
    o.push_str(&"---|".repeat(stages.len()));
    o.push('\n');
    for name in &names {
        let any = stages
            .iter()
            .find_map(|s| find(s, name))
            .expect("named by a stage");
        // The distinct values of one field across the stages, in stage order.
        let distinct = |field: fn(&TaskResult) -> usize| {
            let mut out: Vec<String> = Vec::new();
            for t in stages.iter().filter_map(|s| find(s, name)) {
                if !out.contains(&field(&t).to_string()) {
                    out.push(field(&t).to_string());
                }
            }
            out
        };
        // A chat model answers generative tasks 0-shot: "5/0" then.
        let shots = distinct(|t| t.shots);
        // Stages may have scored different subsets (a `--limit` on one of them): every
        // count is shown, so an unpaired comparison is visible in the table itself.
        let counts = distinct(|t| t.n);
        let items = if counts.len() > 1 || any.n < any.of {
            format!("{} of {}", counts.join("/"), any.of)
        } else {
            any.n.to_string()
        };
        let _ = write!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            name,
            any.source,
            any.metric,
            shots.join("/"),
            items,
            any.chance
                .map_or("-".into(), |c| format!("{:.1}", 100.0 * c)),
        );
        for s in &stages {
            let _ = write!(o, " {} |", cell(find(s, name).as_ref()));
        }
        o.push('\n');
    }
    o.push_str("| centred mean | (score - chance) / (1 - chance) | | | | 0.0 |");
    for s in &stages {
        let _ = write!(
            o,
            " {} |",
            s.centered_mean
                .map_or("-".into(), |m| format!("{:.1}", 100.0 * m))
        );
    }
    o.push_str("\n\nAccuracies in percent, ± the half-width of their 95% interval over the items scored; bits per byte as is (lower is better). ");
    o.push_str("Multiple choice is scored by continuation log-likelihood (acc: summed; acc_norm: per character), LAMBADA by greedy match of the last word, GSM8K by the number after ####. ");
    o.push_str("The centred mean averages each task's headline score rescaled so that chance is 0 and perfect is 100, over the tasks evaluated.\n");
    let mut notes = Vec::new();
    for s in &stages {
        for t in &s.tasks {
            if let Some(e) = &t.error {
                notes.push(format!(
                    "- {} {}: failed: {}",
                    s.stage,
                    t.task,
                    e.lines().next().unwrap_or("")
                ));
                continue;
            }
            if t.truncated > 0 {
                notes.push(format!(
                    "- {} {}: {} of {} prompts were cut from the left to fit the context",
                    s.stage, t.task, t.truncated, t.n
                ));
            }
            if t.skipped > 0 {
                notes.push(format!(
                    "- {} {}: {} malformed rows left out ({})",
                    s.stage,
                    t.task,
                    t.skipped,
                    t.skipped_example.as_deref().unwrap_or("")
                ));
            }
        }
    }
    if !notes.is_empty() {
        o.push('\n');
        o.push_str(&notes.join("\n"));
        o.push('\n');
    }
    let seconds: f64 = stages
        .iter()
        .flat_map(|s| &s.tasks)
        .map(|t| t.seconds)
        .sum();
    let _ = writeln!(
        o,
        "\nEvaluation time: {} over {} stage(s). Few-shot seed {}.",
        ledger::duration(seconds),
        stages.len(),
        stages[0].seed
    );
    Ok(Some(o))
}
