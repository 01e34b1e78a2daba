//! `frugal sft`: instruction-tune a run's pretrained model.

use clap::Args;
use stages::sft::SftConfig;
use std::path::PathBuf;

#[derive(Args)]
pub struct SftArgs {
    /// The run directory of the pretrained model; SFT writes into RUN/sft/.
    #[arg(long)]
    run: PathBuf,
    /// SFT config ([train] and [sft] with its sources). Conversation files may be JSONL in
    /// the shapes {"messages": [{"role", "content"}]}, {"conversations": [{"from", "value"}]},
    /// {"instruction", "input", "output"}, {"question", "answer"} or {"prompt", "completion"},
    /// or the chitchat and BIG-bench JSON files.
    #[arg(long, default_value = "configs/sft-speedrun.toml")]
    config: PathBuf,
    /// Override a config value, e.g. --set train.steps=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue from the latest SFT checkpoint.
    #[arg(long)]
    resume: bool,
}

pub fn sft(a: SftArgs) -> anyhow::Result<()> {
    let cfg = SftConfig::load(&a.config, &a.overrides)?;
    let s = stages::sft::sft(&cfg, &a.run, a.resume, |line| println!("{line}"))?;
    print_summary(&s);
    Ok(())
}

pub fn print_summary(s: &stages::sft::SftSummary) {
    println!(
        "sft summary | steps {} | wall {:.1}s | {:.0} tok/s | final loss {:.4} | val loss {:.4}",
        s.steps, s.wall_s, s.tokens_per_s, s.final_loss, s.val_loss
    );
    if let Some(f) = &s.format {
        println!(
            "format check | {} / {} well-formed ({:.1}%) | decode {:.0} tok/s at batch {}",
            f.well_formed,
            f.prompts,
            100.0 * f.well_formed as f64 / f.prompts.max(1) as f64,
            f.decode_tok_s,
            f.batch
        );
    }
}
