//! `frugal pref rm|dpo|grpo`: preference tuning of a run's SFT model.

use clap::{Args, Subcommand};
use stages::pref::{dpo, grpo, rm};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PrefCommand {
    /// Train a reward model (the SFT transformer with a scalar head, Bradley–Terry loss) on
    /// preference pairs; writes RUN/rm/ (checkpoints, metrics.jsonl, report.json).
    Rm(StageArgs),
    /// Direct Preference Optimization against the frozen SFT model; writes RUN/dpo/
    /// (checkpoints, metrics.jsonl, report.json), which `frugal eval` scores as the dpo stage.
    Dpo(StageArgs),
    /// Group Relative Policy Optimization with verifiable rewards (arithmetic, GSM8K) or the
    /// reward model; writes RUN/grpo/, which `frugal eval` scores as the grpo stage.
    Grpo(StageArgs),
    /// Write cold-start SFT data for a GRPO task: worked answers (with calculator calls) of its
    /// training problems only, as JSONL for a `[[sft.sources]]` entry.
    ColdStart(ColdStartArgs),
}

#[derive(Args)]
pub struct ColdStartArgs {
    /// The GRPO config whose task and split to use.
    #[arg(long, default_value = "configs/grpo-arithmetic.toml")]
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
    /// Rows at most.
    #[arg(long, default_value_t = 1000)]
    count: usize,
}

#[derive(Args)]
pub struct StageArgs {
    /// Run directory with an SFT checkpoint (RUN/sft).
    #[arg(long)]
    run: PathBuf,
    /// The stage's config: [train] and its own section. Defaults: configs/rm-speedrun.toml,
    /// configs/dpo-speedrun.toml, configs/grpo-arithmetic.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. --set dpo.beta=0.2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue from the stage's latest checkpoint.
    #[arg(long)]
    resume: bool,
}

impl StageArgs {
    fn config(&self, default: &str) -> PathBuf {
        self.config.clone().unwrap_or_else(|| default.into())
    }
}

pub fn run(cmd: PrefCommand) -> anyhow::Result<()> {
    let log = |l: &str| println!("{l}");
    match cmd {
        PrefCommand::Rm(a) => {
            let cfg = rm::RmConfig::load(&a.config("configs/rm-speedrun.toml"), &a.overrides)?;
            let s = rm::train(&cfg, &a.run, a.resume, log)?;
            println!(
                "rm summary | {} steps | {:.1}s | held-out pairwise accuracy {:.3} -> {:.3} ± {:.3} (95%, {} pairs) | margin {:.3}",
                s.steps, s.wall_s, s.before.accuracy, s.after.accuracy, s.after.ci95, s.after.pairs, s.after.margin
            );
        }
        PrefCommand::Dpo(a) => {
            let cfg = dpo::DpoConfig::load(&a.config("configs/dpo-speedrun.toml"), &a.overrides)?;
            let s = dpo::train(&cfg, &a.run, a.resume, log)?;
            println!(
                "dpo summary | {} steps | {:.1}s | held-out implicit-reward accuracy {:.3} -> {:.3} ± {:.3} (95%, {} pairs) | margin {:.3}",
                s.steps, s.wall_s, s.before.accuracy, s.after.accuracy, s.after.ci95, s.after.pairs, s.after.margin
            );
        }
        PrefCommand::Grpo(a) => {
            let cfg =
                grpo::GrpoConfig::load(&a.config("configs/grpo-arithmetic.toml"), &a.overrides)?;
            let s = grpo::train(&cfg, &a.run, a.resume, log)?;
            println!(
                "grpo summary | {} steps | {:.1}s | held-out accuracy {:.3} ± {:.3} -> {:.3} ± {:.3} ({} -> {} of {} right) | mean reward {:.3} -> {:.3} | change {:+.3} ± {:.3} (paired 95%)",
                s.steps, s.wall_s, s.before.accuracy, s.before.ci95, s.after.accuracy, s.after.ci95,
                s.before.correct, s.after.correct, s.after.n, s.before.mean_reward, s.after.mean_reward,
                s.change, s.change_ci95
            );
        }
        PrefCommand::ColdStart(a) => {
            let cfg = grpo::GrpoConfig::load(&a.config, &a.overrides)?;
            let (rows, held_out) = grpo::cold_start(&cfg, a.count)?;
            let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
            if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&a.out, text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
            println!(
                "{}: {} cold-start conversations from the training split ({held_out} problems held out, never written)",
                a.out.display(),
                rows.len()
            );
        }
    }
    Ok(())
}
