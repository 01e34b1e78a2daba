//! `frugal pretrain` end to end on a tiny model: training, sampling, the loss guard, refusal
//! of mismatched runs, and kill -9 followed by --resume reproducing the uninterrupted run bit
//! for bit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{fixture, frugal, out};

#[test]
fn trains_samples_and_refuses_mismatched_runs() {
    let (dir, cfg) = fixture("basic");
    let run = dir.join("run");
    let sets = [
        "--set",
        "train.steps=40",
        "--set",
        "train.eval_every=20",
        "--set",
        "train.checkpoint_every=20",
        "--set",
        "train.sample_every=40",
        "--set",
        "train.lr=0.01",
    ];
    let o = frugal(
        &[
            &[
                "pretrain",
                "--config",
                cfg.to_str().unwrap(),
                "--run",
                run.to_str().unwrap(),
                "--threads",
                "1",
            ][..],
            &sets[..],
        ]
        .concat(),
    );
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    let losses: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split(" | loss ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(losses.len(), 40, "{text}");
    assert!(
        losses[39] < 0.6 * losses[0],
        "loss {} -> {}",
        losses[0],
        losses[39]
    );
    assert!(
        text.contains("val bpb") && text.contains("sample |") && text.contains("summary |"),
        "{text}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.contains("\"loss\"")).count(),
        40
    );
    assert!(
        run.join("checkpoints/step-40/model.safetensors").exists()
            && run.join("config.toml").exists()
    );

    let o = frugal(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--prompt",
        "the cat",
        "--tokens",
        "8",
    ]);
    assert!(
        o.status.success() && out(&o).starts_with("the cat"),
        "{}",
        out(&o)
    );
    // A second run into the same directory, or a resume under another config, is refused.
    let o = frugal(
        &[
            &[
                "pretrain",
                "--config",
                cfg.to_str().unwrap(),
                "--run",
                run.to_str().unwrap(),
            ][..],
            &sets[..],
        ]
        .concat(),
    );
    assert!(
        !o.status.success() && out(&o).contains("--resume"),
        "{}",
        out(&o)
    );
    let o = frugal(&[
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--resume",
    ]);
    assert!(
        !o.status.success() && out(&o).contains("different config"),
        "{}",
        out(&o)
    );
    // A run begun before a config field existed resumes: its saved config is resolved again,
    // and the new field's default matches.
    let saved = run.join("config.toml");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains("precision = \"f32\"\n"), "{text}");
    std::fs::write(&saved, text.replace("precision = \"f32\"\n", "")).unwrap();
    let o = frugal(
        &[
            &[
                "pretrain",
                "--config",
                cfg.to_str().unwrap(),
                "--run",
                run.to_str().unwrap(),
                "--resume",
            ][..],
            &sets[..],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", out(&o));
    // A config whose vocabulary differs from the tokenizer's is refused before training.
    let o = frugal(&[
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        dir.join("other").to_str().unwrap(),
        "--set",
        "model.vocab_size=512",
    ]);
    assert!(
        !o.status.success() && out(&o).contains("tokenizer's"),
        "{}",
        out(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn loss_guard_skips_nan_steps_and_rolls_back() {
    let (dir, cfg) = fixture("guard");
    let run = dir.join("run");
    let args = [
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--threads",
        "1",
        "--set",
        "train.steps=12",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.max_bad_steps=1",
    ];
    let o = common::frugal_with_faults("nan_steps = [6, 7, 10]", &args);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("step 6 | loss guard: loss is NaN; update skipped (1 in a row)"),
        "{text}"
    );
    assert!(
        text.contains("rolled back to") && text.contains("(step 4)"),
        "{text}"
    );
    assert!(
        text.contains("step 10 | loss guard") && text.contains("summary |"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Waits until `path` exists (or the child exits), then kills the child with SIGKILL.
fn kill_when(child: &mut std::process::Child, path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {} appeared",
            path.display()
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was killed, not finished");
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
    killed_and_resumed_matches("resume", &[]);
}

/// The same with a mixture of experts, whose balancing biases live in the checkpoint, and a
/// multi-token prediction module; their figures reach the step log.
#[test]
fn moe_and_mtp_runs_resume_bit_for_bit() {
    let log = killed_and_resumed_matches(
        "resume-moe",
        &[
            "model.mlp=moe",
            "model.moe.routed_experts=4",
            "model.moe.top_k=2",
            "model.moe.expert_hidden=32",
            "model.moe.bias_update=0.01",
            "model.mtp.depth=1",
        ],
    );
    for want in [
        "active per token",
        "load max/mean",
        "mtp loss",
        "val load max/mean",
    ] {
        assert!(log.contains(want), "{want} missing from:\n{log}");
    }
}

/// Runs 300 steps straight, and again killed twice with SIGKILL and resumed; the final weights,
/// optimizer state, metrics and ledger must agree. Returns the straight run's output.
fn killed_and_resumed_matches(name: &str, extra: &[&str]) -> String {
    let (dir, cfg) = fixture(name);
    // Wide enough that a step takes milliseconds, so the kills land mid-run.
    let sets: Vec<String> = [
        "model.d_model=64",
        "model.ffn_hidden=128",
        "train.steps=300",
        "train.checkpoint_every=25",
        "train.keep_checkpoints=2",
        "train.eval_every=100",
    ]
    .iter()
    .chain(extra)
    .flat_map(|s| ["--set".to_string(), s.to_string()])
    .collect();
    let args = |run: &Path, resume: bool| {
        let mut a: Vec<String> = vec![
            "pretrain".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--run".into(),
            run.display().to_string(),
            "--threads".into(),
            "2".into(),
        ];
        a.extend(sets.iter().cloned());
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let straight = dir.join("straight");
    let o = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args(&straight, false))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let log = out(&o);

    let killed = dir.join("killed");
    let spawn = |resume: bool| {
        Command::new(env!("CARGO_BIN_EXE_frugal"))
            .args(args(&killed, resume))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn(false);
    kill_when(&mut child, &killed.join("checkpoints/step-75"));
    let mut child = spawn(true);
    kill_when(&mut child, &killed.join("checkpoints/step-175"));
    let o = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args(&killed, true))
        .output()
        .unwrap();
    assert!(
        o.status.success() && out(&o).contains("resumed from"),
        "{}",
        out(&o)
    );

    let a = std::fs::read(straight.join("checkpoints/step-300/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("checkpoints/step-300/model.safetensors")).unwrap();
    assert!(a == b, "final weights differ after kill -9 and --resume");
    let oa = std::fs::read(straight.join("checkpoints/step-300/optim.safetensors")).unwrap();
    let ob = std::fs::read(killed.join("checkpoints/step-300/optim.safetensors")).unwrap();
    assert!(oa == ob, "optimizer state differs");
    let steps = |run: &Path| {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"loss\""))
            .count()
    };
    assert_eq!(steps(&killed), 300, "metrics hold each step once");
    // The ledger bills all three invocations, the killed ones' work up to their last
    // checkpoint included: at least the 300 steps, more where killed work was redone.
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("ledger.json")).unwrap())
            .unwrap();
    let pre = ledger["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "pretrain")
        .unwrap();
    assert_eq!(pre["sessions"], 3, "{pre}");
    assert_eq!(pre["complete"], true, "{pre}");
    let per_step = 2 * 16; // tiny: batch 2 x 16 tokens
    assert!(pre["tokens"].as_u64().unwrap() >= 300 * per_step, "{pre}");
    std::fs::remove_dir_all(&dir).ok();
    log
}
