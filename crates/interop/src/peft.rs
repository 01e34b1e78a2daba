//! `frugal export --format peft`: a LoRA stage's adapters as a PEFT adapter directory
//! (`adapter_config.json`, `adapter_model.safetensors`), for `PeftModel.from_pretrained` on the
//! HF export of the stage's base. The merged model is what `--format hf` writes of the stage.

use crate::outdir::OutDir;
use base::{Error, Result};
use std::path::{Path, PathBuf};
use train::checkpoint::{load_weights, Trained};
use train::lora::{adapter_of, Adapters};

/// What an adapter export wrote.
#[derive(Debug)]
pub struct PeftSummary {
    pub dir: PathBuf,
    pub params: usize,
    /// The frugal checkpoint the adapters adapt.
    pub base_checkpoint: PathBuf,
}

/// Writes the adapters of `t`'s checkpoint to `out`, naming `base_model` (the HF export of the
/// base, a path or model id) as `base_model_name_or_path`.
pub fn export(t: &Trained, out: &Path, base_model: &str) -> Result<PeftSummary> {
    let (cfg, base) = adapter_of(&t.checkpoint)?.ok_or_else(|| {
        Error::input(
            t.checkpoint.display().to_string(),
            format!(
                "the {} stage was not tuned with LoRA: it has no adapters",
                t.stage
            ),
            "export it with --format hf (or tune the stage with a [lora] table)",
        )
    })?;
    let base_model_weights = load_weights(&base, &t.cfg.model)?;
    let mut adapters = Adapters::new(&cfg, &base_model_weights, &base)?;
    adapters.read(&t.checkpoint, None)?;
    let dir = OutDir::create(out)?;
    adapters.write_peft(&dir.path(""), base_model, None)?;
    Ok(PeftSummary {
        dir: dir.finish()?,
        params: adapters.len(),
        base_checkpoint: base,
    })
}
