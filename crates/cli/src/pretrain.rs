//! `frugal pretrain` and `frugal sample`.

use clap::Args;
use stages::sample::{continue_text, SamplingParams};
use std::path::PathBuf;
use train::checkpoint;
use train::dist::Launch;
use train::Config;

#[derive(Args)]
pub struct PretrainArgs {
    /// Training config (with [model], [train] and [data]). With --resume it defaults to the
    /// run's own config.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory: config, tokenizer, checkpoints, metrics.
    #[arg(long)]
    run: PathBuf,
    /// Override a config value, e.g. --set train.steps=200 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run from its latest checkpoint.
    #[arg(long)]
    resume: bool,
}

pub fn pretrain(a: PretrainArgs, launch: &Launch) -> anyhow::Result<()> {
    let path = match (&a.config, a.resume) {
        (Some(p), _) => p.clone(),
        (None, true) => a.run.join("config.toml"),
        (None, false) => anyhow::bail!("--config is required for a new run"),
    };
    let cfg = Config::load(&path, &a.overrides)?;
    let comm = train::dist::connect(&cfg.dist, launch)?;
    let out =
        stages::pretrain::pretrain_on(&*comm, &cfg, &a.run, a.resume, |line| println!("{line}"));
    let s = match out {
        Ok(s) => s,
        // One rank's error ends them all: the others would wait for it in their next
        // collective.
        Err(e) if comm.world() > 1 => {
            match e {
                // Already says which rank.
                base::Error::Dist { .. } => eprintln!("error: {e:#}"),
                _ => eprintln!("error: rank {} of {}: {e:#}", comm.rank(), comm.world()),
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            comm.abort(1)
        }
        Err(e) => return Err(e.into()),
    };
    if comm.rank() > 0 {
        return Ok(());
    }
    println!(
        "summary | params {:.2}M | steps {} | tokens {} | wall {:.1}s | {:.0} tok/s | mfu {:.0}% | final loss {:.4} | val loss {:.4} | val bpb {:.4}",
        s.params as f64 / 1e6,
        s.steps,
        s.tokens,
        s.wall_s,
        s.tokens_per_s,
        100.0 * s.mfu,
        s.final_loss,
        s.val_loss,
        s.val_bpb
    );
    if !s.sample.is_empty() {
        println!("sample | {:?}", s.sample);
    }
    Ok(())
}

#[derive(Args)]
pub struct SampleArgs {
    #[arg(long)]
    run: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn sample(a: SampleArgs) -> anyhow::Result<()> {
    let trained = checkpoint::load_trained(&a.run, false)?;
    let tok = &trained.tok;
    let p = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        ..Default::default()
    };
    let mut rng = tensor::Rng::new(a.seed);
    let text = continue_text(&trained.model, tok, &a.prompt, a.tokens, p, &mut rng);
    println!("{text}");
    Ok(())
}
