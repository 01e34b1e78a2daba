//! The time-to-quality race in a report: validation bits per byte against training seconds for
//! the run's pretraining and for a peer's run (bench/race.sh's PyTorch baseline), with the time
//! the run first reached the bits per byte the peer ended at.
//!
//! Both clocks are training seconds, the sum of the steps' own times: validation is left out on
//! both sides (the peer's log stops its clock while it validates; the run's metrics time each
//! step). The peer's file has one JSON object per line with `train_s` and `val_bpb`.

use super::svg::{line_chart, Series};
use base::{Error, Result};
use std::fmt::Write;
use std::path::Path;

pub struct Race {
    pub peer: String,
    /// (training seconds, validation bits per byte), in time order.
    pub run: Vec<(f64, f64)>,
    pub peer_curve: Vec<(f64, f64)>,
}

impl Race {
    /// The run's curve from its metrics.jsonl and the peer's from `peer_file`.
    pub fn read(run: &Path, peer_file: &Path) -> Result<Race> {
        let metrics = run.join("metrics.jsonl");
        let text = std::fs::read_to_string(&metrics).map_err(|e| {
            Error::input(
                metrics.display().to_string(),
                e.to_string(),
                "pass the directory of a pretraining run",
            )
        })?;
        let run_curve = run_curve(&text);
        let peer_text = std::fs::read_to_string(peer_file).map_err(|e| {
            Error::input(
                peer_file.display().to_string(),
                e.to_string(),
                "pass the curve bench/race.sh wrote (runs/race/pytorch.jsonl)",
            )
        })?;
        let peer_curve = peer_curve(&peer_text, peer_file)?;
        if run_curve.is_empty() {
            return Err(Error::input(
                metrics.display().to_string(),
                "has no validation bits per byte",
                "train with train.eval_every > 0 (bench/race.sh sets it)",
            ));
        }
        Ok(Race {
            peer: peer_file
                .file_stem()
                .map_or("peer".into(), |s| s.to_string_lossy().into_owned()),
            run: run_curve,
            peer_curve,
        })
    }

    /// The peer's last point: its budget and where it ended.
    pub fn peer_final(&self) -> (f64, f64) {
        *self
            .peer_curve
            .last()
            .expect("read() refuses an empty curve")
    }

    /// Training seconds at which the run first reached the peer's final bits per byte.
    pub fn run_reached(&self) -> Option<f64> {
        first_reaching(&self.run, self.peer_final().1)
    }

    pub fn markdown(&self) -> String {
        let (peer_s, peer_bpb) = self.peer_final();
        let (run_s, run_bpb) = *self.run.last().expect("read() refuses an empty curve");
        let mut o = String::from("## Time to quality\n\n");
        let _ = writeln!(
            o,
            "Validation bits per byte on the same bytes, against training seconds (validation time excluded on both sides).\n"
        );
        let _ = writeln!(o, "| run | training time | final val bpb |");
        let _ = writeln!(o, "|---|---|---|");
        let _ = writeln!(o, "| {} | {} | {peer_bpb:.4} |", self.peer, clock(peer_s));
        let _ = writeln!(o, "| this run | {} | {run_bpb:.4} |", clock(run_s));
        let _ = writeln!(o);
        match self.run_reached() {
            Some(t) => {
                let _ = writeln!(
                    o,
                    "This run reached {peer_bpb:.4} bits per byte after {}: **{:.2}x** faster to the same quality.",
                    clock(t),
                    peer_s / t
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "This run did not reach {peer_bpb:.4} bits per byte: it ended {:.4} above it.",
                    run_bpb - peer_bpb
                );
            }
        }
        // The other way round: how long the peer took to reach where this run ended.
        if let Some(t) = first_reaching(&self.peer_curve, run_bpb) {
            let _ = writeln!(
                o,
                "\n{} reached this run's final {run_bpb:.4} after {}: this run got there in {:.2}x less training time.",
                self.peer,
                clock(t),
                t / run_s
            );
        }
        o
    }

    pub fn chart(&self) -> String {
        line_chart(
            "Validation bits per byte against training time",
            "training seconds",
            "val bits per byte",
            &[
                Series {
                    name: "frugal".into(),
                    points: self.run.clone(),
                },
                Series {
                    name: self.peer.clone(),
                    points: self.peer_curve.clone(),
                },
            ],
            false,
        )
    }
}

fn clock(s: f64) -> String {
    format!(
        "{}m{:02}s",
        (s / 60.0).floor(),
        (s % 60.0).round() as u64 % 60
    )
}

/// (training seconds, val bpb) at each validation of a metrics.jsonl: the seconds are the sum of
/// the `ms` of every step up to it. A resumed run repeats steps; the last record of a step wins.
fn run_curve(text: &str) -> Vec<(f64, f64)> {
    let mut step_ms: Vec<f64> = Vec::new();
    let mut vals: Vec<(usize, f64)> = Vec::new();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(step) = v["step"].as_u64().map(|s| s as usize) else {
            continue;
        };
        if let Some(ms) = v["ms"].as_f64() {
            if step_ms.len() < step {
                step_ms.resize(step, 0.0);
            }
            step_ms[step - 1] = ms;
        }
        if let Some(bpb) = v["val_bpb"].as_f64() {
            vals.retain(|&(s, _)| s != step);
            vals.push((step, bpb));
        }
    }
    vals.sort_by_key(|&(s, _)| s);
    vals.iter()
        .map(|&(step, bpb)| {
            let s: f64 = step_ms[..step.min(step_ms.len())].iter().sum();
            (s / 1e3, bpb)
        })
        .collect()
}

fn peer_curve(text: &str, path: &Path) -> Result<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::input(
                format!("{}:{}", path.display(), i + 1),
                e.to_string(),
                "each line must be a JSON object",
            )
        })?;
        match (v["train_s"].as_f64(), v["val_bpb"].as_f64()) {
            (Some(s), Some(b)) => out.push((s, b)),
            _ => {
                return Err(Error::input(
                    format!("{}:{}", path.display(), i + 1),
                    "lacks train_s or val_bpb",
                    "write one {\"train_s\": …, \"val_bpb\": …} per validation",
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::input(
            path.display().to_string(),
            "holds no validation points",
            "rerun bench/race.sh",
        ));
    }
    Ok(out)
}

/// The first time `curve` is at or below `target`, interpolated linearly between validations.
pub fn first_reaching(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    let mut prev: Option<(f64, f64)> = None;
    for &(t, b) in curve {
        if b <= target {
            return Some(match prev {
                Some((t0, b0)) if b0 > b => t0 + (b0 - target) / (b0 - b) * (t - t0),
                _ => t,
            });
        }
        prev = Some((t, b));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crossing_is_interpolated_between_validations() {
        let curve = [(100.0, 3.0), (200.0, 2.0), (300.0, 1.5)];
        assert_eq!(first_reaching(&curve, 2.5), Some(150.0));
        assert_eq!(first_reaching(&curve, 3.5), Some(100.0));
        assert_eq!(first_reaching(&curve, 1.5), Some(300.0));
        assert_eq!(first_reaching(&curve, 1.0), None);
    }

    #[test]
    fn run_seconds_sum_the_steps_before_each_validation() {
        let text = [
            r#"{"step":1,"ms":1000}"#,
            r#"{"step":2,"ms":2000}"#,
            r#"{"step":2,"val_bpb":2.5}"#,
            r#"{"step":3,"ms":500}"#,
            r#"{"step":3,"val_bpb":2.0}"#,
        ]
        .join("\n");
        assert_eq!(run_curve(&text), vec![(3.0, 2.5), (3.5, 2.0)]);
    }

    #[test]
    fn a_peer_line_without_its_fields_is_refused_by_line() {
        let err = peer_curve(
            "{\"train_s\": 1, \"val_bpb\": 2}\n{\"x\": 1}\n",
            Path::new("p.jsonl"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p.jsonl:2") && err.contains("train_s"),
            "{err}"
        );
    }
}
