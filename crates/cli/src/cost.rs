//! `frugal cost estimate` and `frugal report`.

use app::estimate::{estimate, estimate_preset, render, Cluster};
use app::presets::{self, Basis};
use app::report::{write_report, ReportOptions};
use clap::{Args, Subcommand};
use ledger::tables::gpu;
use ledger::CostConfig;
use model::Arch;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CostCommand {
    /// What training a model costs on a GPU cluster: FLOPs, GPU-hours at a stated MFU, days,
    /// energy, dollars and CO2, with every assumption printed. Either a frugal config
    /// (--config) or a published run (--preset deepseek-v3|llama3-70b|gpt2|nanochat-d20|nanochat-d24|deepseek-r1-rl|all),
    /// which is estimated from its authors' stated assumptions and shown beside their figures.
    Estimate(EstimateArgs),
}

#[derive(Args)]
pub struct EstimateArgs {
    /// A frugal run config (its [model] and train.seq_len are used).
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// A published run, or "all".
    #[arg(long)]
    preset: Option<String>,
    /// Training tokens [default: 20 per parameter, Chinchilla's compute-optimal ratio].
    #[arg(long)]
    tokens: Option<f64>,
    /// GPU type (h100, h800, h200, a100, b200, l4, rtx4090, mi300x).
    #[arg(long, default_value = "h100")]
    gpu: String,
    #[arg(long, default_value_t = 8)]
    gpus: usize,
    /// Model FLOPs utilisation [default: 0.4 for --config; a preset's stated basis otherwise].
    #[arg(long)]
    mfu: Option<f64>,
    /// Dollars per GPU-hour [default: the cost table's price for the GPU].
    #[arg(long)]
    price: Option<f64>,
    /// Measure utilisation against the FP8 peak instead of BF16.
    #[arg(long)]
    fp8: bool,
    /// Price, power and grid table [default: configs/cost.toml if present, else built in].
    #[arg(long)]
    cost_config: Option<PathBuf>,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Run directory.
    #[arg(long)]
    run: PathBuf,
    /// Price, power and grid table [default: configs/cost.toml if present, else built in].
    #[arg(long)]
    cost_config: Option<PathBuf>,
    /// GPU the projection prices.
    #[arg(long, default_value = "h100")]
    gpu: String,
    /// Utilisation assumed for that GPU.
    #[arg(long, default_value_t = 0.4)]
    mfu: f64,
    /// Other finished run directories for the scaling-law fit (5 runs of 3+ sizes fit all
    /// five constants; fewer keep Chinchilla's exponents).
    #[arg(long = "with-run")]
    with_runs: Vec<PathBuf>,
    /// Also save the fitted law as TOML (what `frugal plan --law` and the speedrun read).
    #[arg(long)]
    law_out: Option<PathBuf>,
    /// A peer's validation curve (JSON lines with train_s and val_bpb, as bench/race.sh's
    /// PyTorch baseline writes) to race this run's pretraining against: both curves against
    /// training seconds, and the time this run took to reach the peer's final bits per byte.
    /// Also writes RUN/race.svg.
    #[arg(long)]
    race: Option<PathBuf>,
}

fn check_mfu(mfu: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        mfu > 0.0 && mfu <= 1.0,
        "--mfu {mfu}: a utilisation is a fraction in (0, 1], e.g. 0.4"
    );
    Ok(mfu)
}

pub fn run(cmd: CostCommand) -> anyhow::Result<()> {
    let CostCommand::Estimate(a) = cmd;
    let cost = CostConfig::load(a.cost_config.as_deref())?;
    let mfu = a.mfu.map(check_mfu).transpose()?;
    if let Some(name) = &a.preset {
        let names: Vec<&str> = if name == "all" {
            presets::NAMES.to_vec()
        } else {
            vec![name.as_str()]
        };
        for (i, n) in names.iter().enumerate() {
            let p = presets::preset(n).ok_or_else(|| {
                anyhow::anyhow!(
                    "--preset {n}: unknown; use one of {} or all",
                    presets::NAMES.join(", ")
                )
            })?;
            let e = estimate_preset(&p, &cost, mfu.map(Basis::Mfu));
            let cluster = Cluster {
                gpu: gpu(p.gpu)?,
                gpus: p.gpus,
                price: p.price,
                fp8: false,
            };
            if i > 0 {
                println!();
            }
            print!(
                "{}",
                render(p.title, &e, &cluster, &cost, &p.published, Some(p.source))
            );
        }
        return Ok(());
    }
    let Some(path) = &a.config else {
        anyhow::bail!("give --config FILE.toml or --preset NAME (see --help)");
    };
    let cfg = train::Config::load(path, &a.overrides)?;
    let arch = Arch::from_model(&cfg.model, cfg.train.seq_len);
    let g = gpu(&a.gpu)?;
    anyhow::ensure!(a.gpus > 0, "--gpus must be at least 1");
    let price = match a.price {
        Some(p) => {
            anyhow::ensure!(p.is_finite() && p >= 0.0, "--price {p}: must be ≥ 0");
            p
        }
        None => cost.gpu_hour_price(g.name)?,
    };
    let tokens = match a.tokens {
        Some(t) => {
            anyhow::ensure!(t > 0.0 && t.is_finite(), "--tokens {t}: must be positive");
            t
        }
        None => 20.0 * arch.params().total,
    };
    let cluster = Cluster {
        gpu: g,
        gpus: a.gpus,
        price,
        fp8: a.fp8,
    };
    let e = estimate(
        &arch,
        tokens,
        &cluster,
        Basis::Mfu(mfu.unwrap_or(0.4)),
        &cost,
    );
    let title = format!(
        "{} on {} tokens{}",
        path.display(),
        ledger::si(tokens),
        if a.tokens.is_none() {
            " (20 per parameter)"
        } else {
            ""
        }
    );
    print!(
        "{}",
        render(&title, &e, &cluster, &cost, &Default::default(), None)
    );
    Ok(())
}

pub fn report(a: ReportArgs) -> anyhow::Result<()> {
    if let Some(out) = &a.law_out {
        let law = app::report::fitted_law(&a.run, &a.with_runs)?;
        let text = format!(
            "# L(N, D) = e + a/N^alpha + b/D^beta in nats per token, fitted by `frugal report --run {} {}--law-out`.\n{}",
            a.run.display(),
            a.with_runs
                .iter()
                .map(|r| format!("--with-run {} ", r.display()))
                .collect::<String>(),
            law.to_toml()
        );
        base::fs::write_atomic(out, text.as_bytes())?;
        println!("wrote {}", out.display());
    }
    let opts = ReportOptions {
        cost: CostConfig::load(a.cost_config.as_deref())?,
        gpu: gpu(&a.gpu)?,
        gpu_mfu: check_mfu(a.mfu)?,
        other_runs: a.with_runs,
        race: a.race,
    };
    let w = write_report(&a.run, &opts)?;
    print!("{}", std::fs::read_to_string(&w.markdown)?);
    println!("\nwrote {} and {}", w.markdown.display(), w.html.display());
    Ok(())
}

/// The report's defaults (what `frugal report` uses without flags): the cost table of
/// configs/cost.toml or the built-in one, projected on H100s at 40% MFU.
pub fn default_report_options() -> anyhow::Result<ReportOptions> {
    Ok(ReportOptions {
        cost: CostConfig::load(None)?,
        gpu: gpu("h100")?,
        gpu_mfu: 0.4,
        other_runs: Vec::new(),
        race: None,
    })
}
