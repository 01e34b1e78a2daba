//! `frugal tokenizer train` and `frugal tokenizer encode`.

use anyhow::Context;
use bpe::{Tokenizer, TrainerOptions, GPT2_PATTERN, GPT4_PATTERN};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on text files (directories are walked).
    Train {
        /// Text files or directories.
        #[arg(long, num_args = 1.., required_unless_present = "prepared", conflicts_with = "prepared")]
        input: Vec<PathBuf>,
        /// A `frugal data prepare` output directory: train on its train.jsonl.zst.
        #[arg(long)]
        prepared: Option<PathBuf>,
        /// Total vocabulary, including 256 byte tokens and the special tokens.
        #[arg(long, default_value_t = 8192)]
        vocab_size: usize,
        /// Pre-split pattern: `gpt4`, `gpt2`, or a regex.
        #[arg(long, default_value = "gpt4")]
        pattern: String,
        /// Where to write tokenizer.json (Hugging Face format).
        #[arg(long)]
        out: PathBuf,
        /// Also write a tiktoken rank file.
        #[arg(long)]
        tiktoken: Option<PathBuf>,
    },
    /// Print the token ids of a text.
    Encode {
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        text: String,
        /// Turn special-token strings in the text into their ids.
        #[arg(long)]
        specials: bool,
    },
}

pub fn pattern(name: &str) -> String {
    match name {
        "gpt4" => GPT4_PATTERN.to_string(),
        "gpt2" => GPT2_PATTERN.to_string(),
        regex => regex.to_string(),
    }
}

pub fn run(cmd: TokenizerCommand) -> anyhow::Result<()> {
    match cmd {
        TokenizerCommand::Train {
            input,
            prepared,
            vocab_size,
            pattern: pat,
            out,
            tiktoken,
        } => {
            let opts = TrainerOptions {
                vocab_size,
                pattern: pattern(&pat),
                ..Default::default()
            };
            let mut meter = data::tokenizer::meter(&out, prepared.as_deref())?;
            let (tok, r) = match &prepared {
                Some(dir) => data::tokenizer::train_from_prepared(dir, opts)?,
                None => data::tokenizer::train_from_files(&input, opts)?,
            };
            let mb = r.bytes as f64 / 1e6;
            println!(
                "trained on {} files, {mb:.1} MB ({} distinct pieces) | read {:.2}s | count {:.2}s ({:.1} MB/s) | merges {:.2}s",
                r.files,
                r.distinct_pieces,
                r.read_s,
                r.count_s,
                mb / r.count_s,
                r.merge_s
            );
            let total = r.count_s + r.merge_s;
            println!("vocab_size: {}", tok.vocab_size());
            println!("train_seconds: {total:.3}");
            tok.save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            if let Some(path) = tiktoken {
                tok.save_tiktoken(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            meter.detail(format!("vocab {} from {mb:.1} MB", tok.vocab_size()));
            meter.finish()?;
        }
        TokenizerCommand::Encode {
            tokenizer,
            text,
            specials,
        } => {
            let tok = Tokenizer::load(&tokenizer)?;
            let ids = if specials {
                tok.encode_with_specials(&text)
            } else {
                tok.encode(&text)
            };
            println!("{ids:?}");
        }
    }
    Ok(())
}
