//! The `frugal` binary end to end: benchmarks on the tiny preset, and bad input.

use std::process::{Command, Output};

fn frugal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .output()
        .expect("the frugal binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bench_train_reports_the_documented_lines_last() {
    let o = frugal(&[
        "bench",
        "train",
        "--preset",
        "tiny",
        "--steps",
        "5",
        "--threads",
        "1",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let last: Vec<&str> = out.lines().rev().take(3).collect();
    assert!(last[2].starts_with("step_ms_median: "), "{out}");
    assert!(last[1].starts_with("tokens_per_s: "), "{out}");
    assert!(last[0].starts_with("peak_rss_mb: "), "{out}");
    let tps: f64 = last[1]["tokens_per_s: ".len()..].parse().unwrap();
    assert!(tps > 0.0 && tps.is_finite());
    assert!(out.contains("mfu: "), "{out}");
}

#[test]
fn bench_gemm_reports_a_peak() {
    let o = frugal(&["bench", "gemm", "--reps", "1"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let peak: f64 = out
        .lines()
        .last()
        .unwrap()
        .strip_prefix("gemm_gflops_peak: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(peak > 0.0);
}

#[test]
fn bad_configs_fail_cleanly_naming_the_problem() {
    let dir = std::env::temp_dir().join(format!("frugal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = include_str!("../../../configs/tiny.toml");
    let cases = [
        (
            "typo.toml",
            tiny.replace("ffn_hidden", "ffn_hiden"),
            "ffn_hiden",
        ),
        (
            "heads.toml",
            tiny.replace("n_kv_heads = 2", "n_kv_heads = 3"),
            "model.n_kv_heads",
        ),
        (
            "syntax.toml",
            tiny.replace("d_model = 32", "d_model = = 32"),
            "syntax.toml",
        ),
        (
            "seq.toml",
            tiny.replace("seq_len = 16", "seq_len = 64"),
            "train.seq_len",
        ),
    ];
    for (name, body, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let o = frugal(&[
            "bench",
            "train",
            "--config",
            path.to_str().unwrap(),
            "--steps",
            "4",
        ]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(needle) && err.contains("HINT") && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    let o = frugal(&[
        "bench",
        "train",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert!(text(&o).1.contains("missing.toml"), "{}", text(&o).1);
    let o = frugal(&["bench", "train", "--preset", "huge"]);
    assert!(text(&o).1.contains("no such preset"), "{}", text(&o).1);
    let o = frugal(&["bench", "train", "--preset", "tiny", "--set", "train.lr=-1"]);
    assert!(text(&o).1.contains("train.lr"), "{}", text(&o).1);
    std::fs::remove_dir_all(&dir).ok();
}
