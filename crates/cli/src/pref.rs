//! `frugal pref dpo`: preference tuning of a run's SFT model.

use clap::{Args, Subcommand};
use frugal::pref::dpo::{train, DpoConfig};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PrefCommand {
    /// Direct Preference Optimization against the frozen SFT model; writes RUN/pref/
    /// (checkpoints, metrics.jsonl, report.json), which `frugal eval` scores as the pref stage.
    Dpo(DpoArgs),
}

#[derive(Args)]
pub struct DpoArgs {
    /// Run directory with an SFT checkpoint (RUN/sft).
    #[arg(long)]
    run: PathBuf,
    /// DPO config: [train] (batch_size = pairs per step) and [dpo] (sources, beta, ...).
    #[arg(long, default_value = "configs/dpo-speedrun.toml")]
    config: PathBuf,
    /// Override a config value, e.g. --set dpo.beta=0.2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue from the latest checkpoint in RUN/pref.
    #[arg(long)]
    resume: bool,
}

pub fn run(cmd: PrefCommand) -> anyhow::Result<()> {
    match cmd {
        PrefCommand::Dpo(a) => {
            let cfg = DpoConfig::load(&a.config, &a.overrides)?;
            let s = train(&cfg, &a.run, a.resume, |l| println!("{l}"))?;
            println!(
                "dpo summary | {} steps | {:.1}s | held-out implicit-reward accuracy {:.3} -> {:.3} ± {:.3} (95%, {} pairs) | margin {:.3}",
                s.steps, s.wall_s, s.before.accuracy, s.after.accuracy, s.after.ci95, s.after.pairs, s.after.margin
            );
            Ok(())
        }
    }
}
