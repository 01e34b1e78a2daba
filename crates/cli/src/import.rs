//! `frugal import hf DIR --run R`: a Hugging Face checkpoint of the Llama family (Llama,
//! Mistral, Qwen2) as a run whose base stage is that model.

use clap::Subcommand;
use interop::hf::{self, ImportOptions};
use std::path::PathBuf;

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
    }
}
