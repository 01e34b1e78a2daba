//! Runs written by an earlier frugal still resume: `fixtures/run-v1` is a run directory that the
//! binary of commit 148b67d left when killed mid-pretraining and mid-SFT (see its README). Today's
//! binary resumes both stages from their checkpoints, ends where an uninterrupted run of today's
//! binary ends, bit for bit, and near where the old binary's uninterrupted runs ended (training
//! losses; pretraining's validation windows have moved since).

mod common;

use common::{copy_dir, out};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture, copied to a fresh directory (tests never write into the repository).
fn fixture_copy(name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-v1");
    let to = std::env::temp_dir().join(format!("frugal-fixture-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    copy_dir(&from, &to);
    to
}

/// `frugal ARGS` with the fixture as the working directory (its configs use relative paths).
fn frugal_in(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the frugal binary runs");
    let log = out(&o);
    assert!(o.status.success(), "frugal {args:?} failed:\n{log}");
    log
}

/// The last value of `key` in a metrics file.
fn last(metrics: &Path, key: &str) -> f64 {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v[key].as_f64())
        .unwrap_or_else(|| panic!("{} has no {key}", metrics.display()))
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-3 * b.abs(), "{what}: {a} vs {b}");
}

#[test]
fn a_run_killed_under_an_earlier_frugal_resumes_pretraining_and_sft() {
    let dir = fixture_copy("resume");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();

    let log = frugal_in(
        &dir,
        &[
            "pretrain",
            "--config",
            "pretrain.toml",
            "--run",
            "run",
            "--resume",
        ],
    );
    assert!(
        log.contains("(step 3)"),
        "pretraining did not resume at step 3:\n{log}"
    );
    let log = frugal_in(
        &dir,
        &["sft", "--config", "sft.toml", "--run", "run", "--resume"],
    );
    assert!(
        log.contains("(step 2)"),
        "SFT did not resume at step 2:\n{log}"
    );
    assert!(dir.join("run/checkpoints/step-6").is_dir());
    assert!(dir.join("run/sft/checkpoints/step-4").is_dir());

    // Today's binary, uninterrupted, on the same data and configs.
    frugal_in(
        &dir,
        &["pretrain", "--config", "pretrain.toml", "--run", "fresh"],
    );
    frugal_in(&dir, &["sft", "--config", "sft.toml", "--run", "fresh"]);
    for key in ["loss", "val_loss", "val_bpb"] {
        let (resumed, fresh) = (
            last(&dir.join("run/metrics.jsonl"), key),
            last(&dir.join("fresh/metrics.jsonl"), key),
        );
        assert_eq!(
            resumed.to_bits(),
            fresh.to_bits(),
            "pretraining {key}: resumed {resumed} vs uninterrupted {fresh}"
        );
        // The old binary's figure: the same arithmetic, so equal up to the CPU's instruction set.
        // Its validation figures measured the split's first windows; today's validation spreads
        // its windows over the whole split, so they measure other bytes and are not compared.
        if key == "loss" {
            let old = expected["pretrain"]["final_loss"].as_f64().unwrap();
            close(resumed, old, "pretraining loss against the old binary's");
        }
    }
    for key in ["loss", "val_loss"] {
        let (resumed, fresh) = (
            last(&dir.join("run/sft/metrics.jsonl"), key),
            last(&dir.join("fresh/sft/metrics.jsonl"), key),
        );
        assert_eq!(
            resumed.to_bits(),
            fresh.to_bits(),
            "SFT {key}: resumed {resumed} vs uninterrupted {fresh}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/sft/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["steps"], 4);
    let _ = std::fs::remove_dir_all(&dir);
}
