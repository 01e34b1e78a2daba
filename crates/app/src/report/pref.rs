//! The preference stages' rows in the run's report: each method's headline measurement before
//! and after (from `RUN/{rm,dpo,grpo}/report.json`) and its curves (from `metrics.jsonl`).

use crate::report::svg::Series;
use base::{Error, Result};
use std::fmt::Write;
use std::path::Path;

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::input(
            path.display().to_string(),
            e.to_string(),
            "the stage's report is damaged; rerun the stage with --resume",
        )
    })
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or("-".into(), |x| format!("{:.1}", 100.0 * x))
}

/// "58.3 ± 4.8" from an evaluation object with `accuracy` and `ci95`.
fn with_ci(e: &serde_json::Value) -> String {
    match e["ci95"].as_f64() {
        Some(ci) if ci > 0.0 => format!("{} ± {:.1}", pct(&e["accuracy"]), 100.0 * ci),
        _ => pct(&e["accuracy"]),
    }
}

/// The table of preference stages, or None when the run has none.
pub fn markdown(run: &Path) -> Result<Option<String>> {
    let mut rows = Vec::new();
    if let Some(r) = read_json(&run.join("rm/report.json"))? {
        rows.push(format!(
            "| reward model | held-out pairwise accuracy (chance 50) | {} | {} | {} pairs | {} | {:.0} s |",
            pct(&r["before"]["accuracy"]),
            with_ci(&r["after"]),
            r["after"]["pairs"],
            r["steps"],
            r["wall_s"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(r) = read_json(&run.join("dpo/report.json"))? {
        rows.push(format!(
            "| DPO (β {}) | held-out implicit-reward accuracy | {} | {} | {} pairs | {} | {:.0} s |",
            r["beta"],
            pct(&r["before"]["accuracy"]),
            with_ci(&r["after"]),
            r["after"]["pairs"],
            r["steps"],
            r["wall_s"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(r) = read_json(&run.join("grpo/report.json"))? {
        let kind = r["reward"].as_str().unwrap_or("?");
        // The paired change on the same prompts (absent from reports of older runs).
        let change =
            |scale: f64, digits: usize| match (r["change"].as_f64(), r["change_ci95"].as_f64()) {
                (Some(c), Some(ci)) => format!(
                    "; change {:+.digits$} ± {:.digits$} paired",
                    scale * c,
                    scale * ci
                ),
                _ => String::new(),
            };
        let (measure, before, after) = if kind == "reward_model" {
            let f = |e: &serde_json::Value| {
                e["mean_reward"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.3}"))
            };
            (
                "held-out mean reward-model score".to_string(),
                f(&r["before"]),
                f(&r["after"]) + &change(1.0, 3),
            )
        } else {
            let right = |e: &serde_json::Value| format!(" ({} right)", e["correct"]);
            (
                format!("held-out greedy accuracy, {kind}"),
                pct(&r["before"]["accuracy"]) + &right(&r["before"]),
                with_ci(&r["after"]) + &right(&r["after"]) + &change(100.0, 1),
            )
        };
        rows.push(format!(
            "| GRPO (G {}) | {measure} | {before} | {after} | {} prompts | {} | {:.0} s |",
            r["group_size"],
            r["after"]["n"],
            r["steps"],
            r["wall_s"].as_f64().unwrap_or(0.0)
        ));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let mut o = String::from(
        "| method | measure | before | after | held out | steps | wall |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(o, "{r}");
    }
    o.push_str("\nPercent unless noted; ± is a 95% confidence interval. \"Before\" is the SFT model (for the reward model, its untrained head).\n");
    Ok(Some(o))
}

/// `key` against `step` from a stage's metrics.jsonl (lines without the key are skipped).
fn curve(path: &Path, key: &str) -> Vec<(f64, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
        .collect()
}

/// Curves for the report's plots: (title, y label, series), only those with data.
pub fn curves(run: &Path) -> Vec<(String, String, Vec<Series>)> {
    let mut out = Vec::new();
    let held_out: Vec<Series> = [("reward model", "rm"), ("DPO", "dpo"), ("GRPO", "grpo")]
        .iter()
        .map(|(name, sub)| Series {
            name: (*name).into(),
            points: curve(&run.join(sub).join("metrics.jsonl"), "val_accuracy"),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !held_out.is_empty() {
        out.push((
            "Preference stages: held-out accuracy by step".into(),
            "accuracy".into(),
            held_out,
        ));
    }
    let grpo = run.join("grpo/metrics.jsonl");
    let train: Vec<Series> = [("mean reward", "reward"), ("right answers", "correct")]
        .iter()
        .map(|(name, key)| Series {
            name: (*name).into(),
            points: curve(&grpo, key),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !train.is_empty() {
        out.push((
            "GRPO: sampled replies by step".into(),
            "per reply".into(),
            train,
        ));
    }
    out
}
