//! `frugal export`: a run's stage as a Hugging Face checkpoint directory (transformers, vLLM,
//! lm-evaluation-harness) or as a GGUF file (llama.cpp).

use clap::{Args, ValueEnum};
use interop::hf::{self, ExportOptions};
use interop::{gguf, tensors::parse_size, Dtype};
use std::path::PathBuf;
use train::checkpoint::load_stage;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// config.json + safetensors + tokenizer files with the chat template (LlamaForCausalLM).
    Hf,
    /// One GGUF file for llama.cpp, with the tokenizer and chat template in its metadata.
    Gguf,
    /// A LoRA stage's adapters as a PEFT adapter directory (for the HF export of its base).
    Peft,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Run directory.
    #[arg(long)]
    run: PathBuf,
    /// Which stage's newest checkpoint: base, sft, dpo or grpo (default: the last one trained).
    #[arg(long)]
    stage: Option<String>,
    #[arg(long, value_enum, default_value = "hf")]
    format: Format,
    /// The directory to write; it must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
    /// Weight type: f32 (exact) or bf16; for GGUF also f16 and q8_0.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Largest safetensors shard, as `save_pretrained` takes it (5GB, 500MB).
    #[arg(long, default_value = "5GB")]
    max_shard_size: String,
    /// With --format peft: the base model the adapters go on, as PEFT names it (the path of
    /// the base stage's --format hf export, or a model id).
    #[arg(long)]
    base_model: Option<String>,
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let trained = load_stage(&a.run, a.stage.as_deref())?;
    let from = format!(
        "{} ({} stage, {})",
        a.run.display(),
        trained.stage,
        trained.checkpoint.display()
    );
    match a.format {
        Format::Hf => {
            let opts = ExportOptions {
                dtype: Dtype::parse(&a.dtype)?,
                max_shard_bytes: parse_size(&a.max_shard_size)?,
            };
            let s = hf::export(&trained, &a.out, &opts)?;
            println!(
                "exported {from} to {}: {} parameters in {}, {:.1} MB",
                s.dir.display(),
                s.params,
                opts.dtype.torch_name(),
                s.bytes as f64 / 1e6
            );
            for f in &s.files {
                println!("  {f}");
            }
            if !s.dropped.is_empty() {
                println!(
                    "left out {} tensors of the multi-token prediction modules (a Llama has none)",
                    s.dropped.len()
                );
            }
        }
        Format::Peft => {
            let base = a.base_model.as_deref().ok_or_else(|| {
                anyhow::anyhow!("--format peft needs --base-model: the path of the base stage's `--format hf` export (or a model id)")
            })?;
            let s = interop::peft::export(&trained, &a.out, base)?;
            println!(
                "exported the adapters of {from} to {}: {} parameters, for {base} (frugal's base checkpoint {})",
                s.dir.display(),
                s.params,
                s.base_checkpoint.display()
            );
        }
        Format::Gguf => {
            let s = gguf::export(&trained, &a.out, gguf::GgufType::parse(&a.dtype)?)?;
            println!(
                "exported {from} to {}: {} architecture, {} tensors, {:.1} MB",
                s.path.display(),
                s.architecture,
                s.tensors,
                s.bytes as f64 / 1e6
            );
            if !s.fallbacks.is_empty() {
                println!(
                    "  {} matrices in f16: Q8_0 needs rows in multiples of 32 ({})",
                    s.fallbacks.len(),
                    s.fallbacks.join(", ")
                );
            }
        }
    }
    Ok(())
}
