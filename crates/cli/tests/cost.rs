//! The cost ledger and report end to end: a tiny `frugal speedrun` (raw text through SFT and GRPO) writes a
//! ledger entry for every stage and prints its summary; `frugal report` renders well-formed
//! HTML whose plots carry the run's series; `frugal cost estimate` reproduces a published run
//! and refuses bad input by name.

use std::path::Path;
use std::process::Command;

mod common;

use common::{conversations, frugal, out, prose, sft_config};

fn speedrun_in(dir: &Path) -> std::process::Output {
    let raw = dir.join("raw/books");
    std::fs::create_dir_all(&raw).unwrap();
    // Documents split by a hash of their path, which holds the process id: with 30 of them
    // and half held out, both splits are non-empty whatever the id (1 in 10⁹ otherwise).
    for b in 0..30 {
        let text: String = (0..20).map(|i| prose(b * 100 + i)).collect();
        std::fs::write(raw.join(format!("book{b}.txt")), text).unwrap();
    }
    let prepared = dir.join("prepared");
    let data_cfg = dir.join("data.toml");
    std::fs::write(
        &data_cfg,
        format!(
            "out_dir = {:?}\nval_fraction = 0.5\n[[source]]\nname = \"books\"\npaths = [{:?}]\n",
            prepared, raw
        ),
    )
    .unwrap();
    let tiny = include_str!("../../../configs/tiny.toml")
        .replace("vocab_size = 128", "vocab_size = 300")
        .replace("context_len = 32", "context_len = 64");
    let cfg = dir.join("pretrain.toml");
    std::fs::write(
        &cfg,
        format!(
            "{tiny}steps = 20\ncheckpoint_every = 10\neval_every = 10\n\n[data]\nshards = {:?}\ntokenizer = {:?}\n",
            prepared.join("shards"),
            prepared.join("tokenizer.json")
        ),
    )
    .unwrap();
    let sft = sft_config(dir, &conversations(dir, 8));
    // A source that cannot be had: the speedrun goes on without it and says so at the end.
    let mut text = std::fs::read_to_string(&sft).unwrap();
    text.push_str(
        "\n[[sft.sources]]\nname = \"unobtainable\"\npath = \"nowhere/instructions.jsonl\"\n",
    );
    std::fs::write(&sft, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .current_dir(dir)
        .args(["speedrun", "--config"])
        .arg(&cfg)
        .arg("--data-config")
        .arg(&data_cfg)
        .arg("--sft-config")
        .arg(&sft)
        .arg("--run")
        .arg(dir.join("run"))
        // The steps of pretraining and SFT are the test's; GRPO's are planned into its share
        // of a 6-second budget.
        .args(["--set", "train.steps=20", "--sft-set", "train.steps=8"])
        // The tiny model keeps its size (no --law): the law's sizes start at d_model 128.
        .args(["--budget", "6s", "--cold-start", "40"])
        .arg("--grpo-config")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/grpo-speedrun.toml"
        ))
        .args(GRPO_SETS.iter().flat_map(|s| ["--grpo-set", s]))
        // Held-out text only: the benchmark files are not fetched in tests (tests/eval.rs in
        // the library scores hand-made ones).
        .args(["--eval-tasks", "bpb"])
        .output()
        .unwrap()
}

/// GRPO on the tiny model: small groups, short replies, few held-out problems.
const GRPO_SETS: [&str; 5] = [
    "train.batch_size=2",
    "grpo.group_size=4",
    "grpo.max_reply_tokens=12",
    "grpo.val_prompts=16",
    "train.checkpoint_every=5",
];

#[test]
fn speedrun_ledgers_every_stage_and_the_report_renders() {
    let dir = std::env::temp_dir().join(format!("frugal-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let o = speedrun_in(&dir);
    let log = out(&o);
    assert!(o.status.success(), "{log}");
    let run = dir.join("run");
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("ledger.json")).unwrap()).unwrap();
    let stages: Vec<&str> = ledger["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "data",
            "tokenizer",
            "tokenize",
            "pretrain",
            "sft",
            "preference",
            "eval"
        ],
        "{ledger}"
    );
    for s in ledger["stages"].as_array().unwrap() {
        assert_eq!(s["complete"], true, "{s}");
        assert!(s["wall_s"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["dollars"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["energy_kwh"].as_f64().unwrap() > 0.0, "{s}");
    }
    let stage = |name: &str| {
        ledger["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap()
    };
    // 20 steps of 2 x 16 tokens; model and kernel FLOPs both counted.
    assert_eq!(stage("pretrain")["tokens"], 640);
    for name in ["pretrain", "sft", "preference", "eval"] {
        let s = stage(name);
        assert!(
            s["kernel_flops"].as_f64().unwrap() > 0.0 && s["mfu"].as_f64().unwrap() > 0.0,
            "{s}"
        );
    }
    assert!(
        stage("data")["inherited_from"]
            .as_str()
            .unwrap()
            .ends_with("prepared/ledger.json"),
        "{ledger}"
    );
    assert!(stage("tokenize")["tokens"].as_u64().unwrap() > 0);
    // The plan: printed first, saved, and its GRPO steps are the ones trained; the users'
    // steps are left alone.
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("plan.json")).unwrap()).unwrap();
    let planned = |stage: &str| {
        plan["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap()["steps"]
            .clone()
    };
    assert_eq!(planned("pretrain"), serde_json::Value::Null, "{plan}");
    assert_eq!(planned("sft"), serde_json::Value::Null, "{plan}");
    let grpo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("grpo/report.json")).unwrap())
            .unwrap();
    assert!(planned("grpo").as_u64().unwrap() >= 1, "{plan}");
    assert_eq!(grpo["steps"], planned("grpo"), "{grpo}");
    assert!(
        log.starts_with("\n== plan") && log.contains("budget 6 s on cpu"),
        "{log}"
    );
    // The SFT mixture took the cold start; GRPO's result and the stage table are in the summary.
    let sft_cfg = std::fs::read_to_string(run.join("sft/config.toml")).unwrap();
    assert!(sft_cfg.contains("arithmetic_cold_start"), "{sft_cfg}");
    assert!(
        log.contains("grpo          ") && log.contains("(paired 95%)"),
        "{log}"
    );
    let table = &log[log.find("== wall time per stage").expect("the stage table")..];
    for s in ["fetch", "pretrain", "sft", "grpo", "eval", "total"] {
        assert!(table.lines().any(|l| l.starts_with(s)), "{s}: {table}");
    }
    assert!(
        log.contains("== samples") && log.contains("3. \"She opened the door"),
        "{log}"
    );
    // The one-screen summary at the end of the speedrun.
    assert!(log.contains("== cost: what each stage spent"), "{log}");
    let summary = &log[log.find("== cost").unwrap()..];
    for s in ["data", "tokenizer", "pretrain", "sft", "total", "estimated"] {
        assert!(summary.contains(s), "{summary}");
    }

    assert!(
        run.join("report.html").is_file(),
        "the speedrun writes the report: {log}"
    );
    assert!(
        log.contains("| $0.0"),
        "step lines carry the spend so far: {log}"
    );
    let r = run.to_str().unwrap();
    let o = frugal(&["report", "--run", r]);
    assert!(o.status.success(), "{}", out(&o));
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    // What the run went without is in its summary and its report, not only in a warning.
    let gap = "unobtainable (nowhere/instructions.jsonl)";
    assert!(
        log.contains(&format!(
            "went without  sft: {gap} — left out of the SFT mixture"
        )),
        "{log}"
    );
    assert!(
        md.contains("## Data this run went without") && md.contains(&format!("**sft**: {gap}")),
        "{md}"
    );
    assert!(
        md.contains("| pretrain | 1 |") && md.contains("| sft | 1 |"),
        "{md}"
    );
    // The speedrun ends with the report card: both stages on held-out text.
    assert!(log.contains("== report card"), "{log}");
    assert!(
        md.contains("## Report card")
            && md.contains("| bpb | the run's held-out pretraining text | bits_per_byte | 0 |"),
        "{md}"
    );
    for stage in ["base", "sft", "grpo"] {
        assert!(run.join(format!("eval/{stage}.json")).is_file(), "{stage}");
    }
    // A task whose files are missing fails by name, after the others are scored, and the
    // command exits non-zero.
    let nodata = dir.join("nodata");
    let o = frugal(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--tasks",
        "lambada,bpb",
        "--stage",
        "base",
        "--data",
        nodata.to_str().unwrap(),
    ]);
    let text = out(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("base | bpb | present")
            && text.contains("lambada/bpb_0shot/requests.jsonl.gz: is missing")
            && text.contains("1 task(s) failed: base lambada"),
        "{text}"
    );
    assert!(
        md.contains("## Projection") && md.contains("scaled x"),
        "{md}"
    );
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    // Well-formed throughout: every tag closed, every attribute quoted, text escaped.
    let mut reader = quick_xml::Reader::from_str(&html);
    let (mut svgs, mut polylines, mut bars) = (0, Vec::new(), Vec::new());
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                let attr = |name: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .map(|a| a.value.to_string())
                };
                match e.name().as_ref() {
                    "svg" => svgs += 1,
                    "polyline" => {
                        polylines.push((attr("data-series").unwrap(), attr("data-points").unwrap()))
                    }
                    "rect" => bars.extend(attr("data-bar")),
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => panic!(
                "report.html is not well-formed at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    // Loss vs tokens, SFT loss, GRPO's two curves, loss vs dollars, two bar charts, the
    // projection.
    assert_eq!(svgs, 8, "{html}");
    assert!(
        polylines.contains(&("train".into(), "20".into())),
        "{polylines:?}"
    );
    assert!(
        polylines.contains(&("validation".into(), "2".into())),
        "{polylines:?}"
    );
    assert!(
        polylines
            .iter()
            .any(|(s, n)| s.contains("this machine") && n != "0"),
        "{polylines:?}"
    );
    for s in ["data", "tokenizer", "tokenize", "pretrain", "sft"] {
        assert!(
            bars.iter().filter(|b| *b == s).count() == 2,
            "{s}: {bars:?}"
        );
    }

    // An older run without a ledger: said so, not priced at zero.
    std::fs::remove_file(run.join("ledger.json")).unwrap();
    let o = frugal(&["report", "--run", r]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("costs are unknown (not zero)"),
        "{}",
        out(&o)
    );
    let o = frugal(&["report", "--run", dir.join("raw").to_str().unwrap()]);
    assert!(
        !o.status.success() && out(&o).contains("not a frugal run directory"),
        "{}",
        out(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cost_estimate_reproduces_published_runs_and_names_bad_input() {
    let o = frugal(&["cost", "estimate", "--preset", "deepseek-v3"]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("published $5.58M") && text.contains("$5.58M"),
        "{text}"
    );
    assert!(
        text.contains("671.03B") && text.contains("MFU (implied)"),
        "{text}"
    );
    let o = frugal(&["cost", "estimate", "--preset", "all"]);
    assert_eq!(
        out(&o).matches("assumptions").count(),
        app::presets::NAMES.len(),
        "{}",
        out(&o)
    );

    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/tiny.toml");
    let o = frugal(&[
        "cost", "estimate", "--config", tiny, "--gpu", "h100", "--gpus", "2048", "--tokens", "1e9",
    ]);
    assert!(
        o.status.success() && out(&o).contains("2048 x NVIDIA H100"),
        "{}",
        out(&o)
    );
    let bad = [
        (vec!["--preset", "gpt5"], "unknown; use one of"),
        (
            vec!["--config", tiny, "--gpu", "tpu-v5"],
            "use one of: h100",
        ),
        (vec!["--config", tiny, "--mfu", "1.5"], "--mfu 1.5"),
        (vec!["--config", tiny, "--tokens=-3"], "--tokens -3"),
        (vec![], "give --config"),
    ];
    for (args, want) in bad {
        let o = frugal(&[&["cost", "estimate"][..], &args].concat());
        assert!(
            !o.status.success() && out(&o).contains(want),
            "{args:?}: {}",
            out(&o)
        );
    }
    let dir = std::env::temp_dir().join(format!("frugal-cost-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let table = include_str!("../../../configs/cost.toml").replace("h100 = 3.00", "h100 = -3.00");
    let path = dir.join("cost.toml");
    std::fs::write(&path, table).unwrap();
    let o = frugal(&[
        "cost",
        "estimate",
        "--preset",
        "gpt2",
        "--cost-config",
        path.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && out(&o).contains("prices.gpu_hour.h100"),
        "{}",
        out(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plan_turns_a_budget_into_the_size_the_law_prefers_and_names_bad_input() {
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs");
    let tiny = format!("{configs}/tiny.toml");
    let gpu = |budget: &str, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--budget",
            budget,
            "--config",
            &tiny,
            "--law",
            "chinchilla",
            "--gpu",
            "h100",
        ];
        args.extend(extra);
        frugal(&args)
    };
    // A dollar budget on 8 H100s: the size with the lowest predicted loss, marked.
    let o = gpu("$100", &[]);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("8 x NVIDIA H100") && text.contains("<- chosen"),
        "{text}"
    );
    let chosen: Vec<&str> = text.lines().filter(|l| l.ends_with("<- chosen")).collect();
    assert_eq!(chosen.len(), 1, "{text}");
    // Ten times the money buys a size at least as large.
    let width = |text: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.starts_with("chosen: d_model "))
            .unwrap();
        line["chosen: d_model ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let more = out(&gpu("$1000", &[]));
    assert!(width(&more) >= width(&text), "{text}\n{more}");
    // A time budget on the GPUs is priced.
    let o = gpu("2h", &["--gpus", "64"]);
    assert!(
        o.status.success() && out(&o).contains("64 x NVIDIA H100"),
        "{}",
        out(&o)
    );

    // On this machine: the sizes are timed here and every stage gets its steps. The shipped
    // SFT config trains on 256 tokens, longer than the tiny model's context: refused by name.
    let plan_here = |sft: &str| {
        frugal(&[
            "plan",
            "--budget",
            "10m",
            "--config",
            &tiny,
            "--law",
            "chinchilla",
            "--sft-config",
            sft,
            "--grpo-config",
            &format!("{configs}/grpo-speedrun.toml"),
            "--set",
            "model.context_len=64",
        ])
    };
    let o = plan_here(&format!("{configs}/sft-speedrun.toml"));
    assert!(
        !o.status.success() && out(&o).contains("SFT config's train.seq_len 256 exceeds"),
        "{}",
        out(&o)
    );
    let dir = std::env::temp_dir().join(format!("frugal-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sft = sft_config(&dir, &conversations(&dir, 1));
    let o = plan_here(sft.to_str().unwrap());
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    for s in [
        "<- chosen",
        "pretrain",
        "sft",
        "grpo",
        "eval",
        "budget 10m00s on cpu",
    ] {
        assert!(text.contains(s), "{s}: {text}");
    }
    std::fs::remove_dir_all(&dir).ok();

    let law = ["--law", "chinchilla"];
    let bad = [
        (
            vec!["--budget", "lots", law[0], law[1]],
            "is not a duration",
        ),
        (
            vec!["--budget", "$-5", "--gpu", "h100", law[0], law[1]],
            "must be positive",
        ),
        (
            vec!["--budget", "$5", "--gpu", "tpu", law[0], law[1]],
            "use one of: h100",
        ),
        (
            vec![
                "--budget", "$5", "--gpu", "h100", "--mfu", "2", law[0], law[1],
            ],
            "--mfu 2",
        ),
        (
            vec!["--budget", "1h", "--law", "nowhere.toml"],
            "nowhere.toml",
        ),
    ];
    for (args, want) in bad {
        let mut all = vec!["plan", "--config", &tiny];
        all.extend(args.iter().copied());
        let o = frugal(&all);
        assert!(
            !o.status.success() && out(&o).contains(want),
            "{all:?}: {}",
            out(&o)
        );
    }
}
