//! `frugal plan`: a budget turned into the run that minimises predicted loss. On this machine
//! it is the speedrun's own plan (the model size weighed by the law at measured speeds, then
//! each stage's steps); on a catalogued GPU cluster, the size and tokens the law picks for
//! the FLOPs the budget buys at a stated utilisation.

use crate::speedrun::plan as sr;
use app::plan::{self, SHARES};
use app::scaling::LossLaw;
use clap::Args;
use ledger::tables::gpu;
use ledger::CostConfig;
use std::path::PathBuf;

#[derive(Args)]
pub struct PlanArgs {
    /// Wall-clock time (30m, 1h30m, 90s) or, with --gpu, dollars ('$100').
    #[arg(long)]
    budget: String,
    /// Pretraining config whose vocabulary, context, batch and optimizer are kept.
    #[arg(long, default_value = "configs/cpu-speedrun.toml")]
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// The scaling law (TOML, as `frugal report --law-out` and bench/sweep.sh write it);
    /// "chinchilla" for the published one (Besiroglu et al.'s refit, in MassiveText's units).
    #[arg(long, default_value = "chinchilla")]
    law: String,
    /// Plan for a GPU cluster of the cost table instead of this machine (h100, h800, a100, …).
    #[arg(long)]
    gpu: Option<String>,
    #[arg(long, default_value_t = 8)]
    gpus: usize,
    /// Model FLOPs utilisation assumed on the GPUs.
    #[arg(long, default_value_t = 0.4)]
    mfu: f64,
    /// Price, power and grid table [default: configs/cost.toml if present, else built in].
    #[arg(long)]
    cost_config: Option<PathBuf>,
    /// SFT and GRPO configs, for their steps on this machine.
    #[arg(long, default_value = "configs/sft-speedrun.toml")]
    sft_config: PathBuf,
    #[arg(long, default_value = "configs/grpo-speedrun.toml")]
    grpo_config: PathBuf,
}

fn law(name: &str) -> anyhow::Result<LossLaw> {
    if name == "chinchilla" {
        return Ok(LossLaw::chinchilla());
    }
    Ok(LossLaw::load(std::path::Path::new(name))?)
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let law = law(&a.law)?;
    let mut cfg = train::Config::load(&a.config, &a.overrides)?;
    match &a.gpu {
        None => on_this_machine(&a, law, &mut cfg),
        Some(name) => on_gpus(&a, law, &cfg, name),
    }
}

/// The speedrun's plan for this machine, printed (nothing is written).
fn on_this_machine(a: &PlanArgs, law: LossLaw, cfg: &mut train::Config) -> anyhow::Result<()> {
    let budget_s = plan::parse_duration(&a.budget)?;
    let mut sft = stages::sft::SftConfig::load(&a.sft_config, &[])?;
    let mut grpo = stages::pref::grpo::GrpoConfig::load(&a.grpo_config, &[])?;
    let mut c = sr::Configs {
        pretrain: cfg,
        sft: &mut sft,
        grpo: &mut grpo,
    };
    let fixed = sr::Fixed::from_overrides(&a.overrides, &[], &[]);
    let p = sr::make(budget_s, Some(&law), &mut c, &fixed)?;
    print!("{}", p.table());
    println!(
        "frugal speedrun --budget {} plans the same (it saves its plan in RUN/plan.json)",
        a.budget
    );
    Ok(())
}

/// Parses `$100` (or `100`) as dollars.
fn dollars(text: &str) -> anyhow::Result<f64> {
    let d: f64 =
        text.trim().trim_start_matches('$').parse().map_err(|_| {
            anyhow::anyhow!("--budget {text}: with --gpu, give dollars, e.g. '$100'")
        })?;
    anyhow::ensure!(
        d > 0.0 && d.is_finite(),
        "--budget {text}: must be positive"
    );
    Ok(d)
}

/// The pretraining share of a dollar (or time) budget on `gpus` catalogued GPUs.
fn on_gpus(a: &PlanArgs, law: LossLaw, cfg: &train::Config, name: &str) -> anyhow::Result<()> {
    let g = gpu(name)?;
    anyhow::ensure!(a.gpus > 0, "--gpus must be at least 1");
    anyhow::ensure!(
        a.mfu > 0.0 && a.mfu <= 1.0,
        "--mfu {}: a utilisation is a fraction in (0, 1], e.g. 0.4",
        a.mfu
    );
    let cost = CostConfig::load(a.cost_config.as_deref())?;
    let per_hour = cost.gpu_hour_price(g.name)? * a.gpus as f64;
    let (seconds, spend) = match plan::parse_duration(&a.budget) {
        Ok(s) => (s, s / 3600.0 * per_hour),
        Err(_) => {
            let d = dollars(&a.budget)?;
            (d / per_hour * 3600.0, d)
        }
    };
    let pretrain_s = seconds * SHARES[0].1;
    let flops_per_s = g.bf16_tflops * 1e12 * a.mfu * a.gpus as f64;
    let shapes = plan::family(&cfg.model, 4096);
    let rate = |m: &model::ModelConfig| {
        Ok(flops_per_s / model::arch::flops_per_token(m, cfg.train.seq_len))
    };
    let (sizes, best) = plan::weigh_sizes(&law, &shapes, cfg.train.seq_len, pretrain_s, rate)?;
    println!(
        "budget {} = {} on {} x {} (${:.2}/h) at {:.0}% MFU; pretraining gets {:.0}% of it ({})",
        plan::duration(seconds),
        format_args!("${spend:.2}"),
        a.gpus,
        g.full_name,
        per_hour,
        100.0 * a.mfu,
        100.0 * SHARES[0].1,
        plan::duration(pretrain_s)
    );
    print!("{}", plan::sizes_table(&law, &sizes, &sizes[best]));
    let b = &sizes[best];
    let tokens_per_step = (cfg.train.batch_size * cfg.train.seq_len) as f64;
    println!(
        "chosen: d_model {} x {} layers, {} params, {} tokens ({:.0} steps of {} x {} tokens), predicted loss {:.4}",
        b.d_model,
        b.n_layers,
        ledger::si(b.params),
        ledger::si(b.tokens),
        b.tokens / tokens_per_step,
        cfg.train.batch_size,
        cfg.train.seq_len,
        b.predicted_loss
    );
    // The other stages at the speedrun's shares (a GPU run may well want less of them).
    for (stage, share) in SHARES.iter().skip(1) {
        println!(
            "{stage:<9} {} of the budget",
            plan::duration(seconds * share)
        );
    }
    Ok(())
}
