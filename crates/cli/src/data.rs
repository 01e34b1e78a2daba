//! `frugal data prepare` and `frugal data tokenize`.

use clap::Subcommand;
use data::prepare::{prepare, PrepareConfig};
use data::tokenize::tokenize;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Clean, filter, deduplicate and mix raw sources into train/val JSONL (zstd), with a report.
    Prepare {
        /// Prepare config (see configs/data-pretrain.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Tokenize prepared documents into token shards and a manifest.
    Tokenize {
        /// Directory holding train.jsonl.zst and val.jsonl.zst.
        #[arg(long)]
        prepared: PathBuf,
        /// tokenizer.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Output directory (default: <prepared>/shards).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Tokens per shard file.
        #[arg(long, default_value_t = 1 << 26)]
        shard_tokens: usize,
    },
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Prepare { config } => {
            let cfg = PrepareConfig::load(&config)?;
            // Relative paths in the config are relative to the working directory (the repository
            // root in the README's commands), like every other path frugal takes.
            let report = prepare(&cfg, std::path::Path::new("."))?;
            print!("{}", report.to_markdown());
        }
        DataCommand::Tokenize {
            prepared,
            tokenizer,
            out,
            shard_tokens,
        } => {
            let out = out.unwrap_or_else(|| prepared.join("shards"));
            let t = std::time::Instant::now();
            let m = tokenize(&prepared, &tokenizer, &out, shard_tokens)?;
            let secs = t.elapsed().as_secs_f64();
            let (tt, vt) = (m.tokens(&m.train), m.tokens(&m.val));
            println!(
                "train: {tt} tokens in {} shards ({:.3} bytes/token) | val: {vt} tokens | {:.1}s ({:.1} MB/s) -> {}",
                m.train.len(),
                m.train_bytes as f64 / tt.max(1) as f64,
                secs,
                (m.train_bytes + m.val_bytes) as f64 / 1e6 / secs,
                out.display()
            );
        }
    }
    Ok(())
}
