//! `frugal import hf DIR --run R`: a Hugging Face checkpoint of the Llama family (Llama,
//! Mistral, Qwen2) as a run whose base stage is that model.

use clap::Subcommand;
use interop::hf::{self, ImportOptions};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ImportCommand {
    /// A checkpoint directory (config.json, safetensors, tokenizer.json) as a new run.
    Hf {
        /// The checkpoint directory, as save_pretrained writes it.
        dir: PathBuf,
        /// The run directory to create; it must not exist or be empty.
        #[arg(long)]
        run: PathBuf,
        /// Context to build the model for (default: the checkpoint's, up to 4096).
        #[arg(long)]
        context_len: Option<usize>,
    },
    /// A run of freshly initialised weights of a config's shape, for benchmarks of shapes no
    /// run has trained (bench/interop/llama_cpp.sh exports one for llama.cpp).
    #[command(hide = true)]
    Init {
        #[arg(long)]
        config: PathBuf,
        /// The tokenizer.json the run carries (its vocabulary fits the config's).
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        run: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(cmd: ImportCommand) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Hf {
            dir,
            run,
            context_len,
        } => {
            let s = hf::import(&dir, &run, &ImportOptions { context_len })?;
            println!(
                "imported {} ({}, {} parameters, context {}) as {}{}",
                dir.display(),
                s.architecture,
                s.params,
                s.context_len,
                s.run.display(),
                if s.chat_template {
                    ", with its chat template"
                } else {
                    ""
                }
            );
            for n in &s.notes {
                println!("  note: {n}");
            }
            Ok(())
        }
        ImportCommand::Init {
            config,
            tokenizer,
            run,
            seed,
        } => init(&config, &tokenizer, &run, seed),
    }
}

fn init(config: &Path, tokenizer: &Path, run: &Path, seed: u64) -> anyhow::Result<()> {
    let cfg = train::Config::load(config, &[])?;
    let tok = bpe::Tokenizer::load(tokenizer)?;
    anyhow::ensure!(
        tok.vocab_size() <= cfg.model.vocab_size,
        "{} has {} tokens, more than {}'s vocab_size {}",
        tokenizer.display(),
        tok.vocab_size(),
        config.display(),
        cfg.model.vocab_size
    );
    let out = interop::outdir::OutDir::create(run)?;
    out.write("config.toml", cfg.to_toml().as_bytes())?;
    tok.save(&out.path("tokenizer.json"))?;
    let ckpt = out.path("checkpoints/step-0");
    std::fs::create_dir_all(&ckpt)?;
    let model = model::Llama::init(cfg.model.clone(), seed);
    model::save_safetensors(&model.params, &ckpt.join("model.safetensors"))?;
    let run = out.finish()?;
    println!(
        "initialised {} ({} parameters, seed {seed})",
        run.display(),
        model.params.len()
    );
    Ok(())
}
