//! Checkpoints: `checkpoints/step-N/` holding model.safetensors (HF names), optim.safetensors
//! (AdamW/Muon moments) and state.json (step, data cursor, RNG, loss guard); a LoRA stage's
//! hold its adapters instead (`lora`), naming the frozen checkpoint they adapt. A checkpoint is
//! written into a hidden temporary directory, every file fsynced, then renamed into place, so a
//! crash or a full disk leaves either the whole new checkpoint or none of it — and the previous
//! one untouched.

use crate::optim::Optimizer;
use base::{Error, Result};
use data::loader::Cursor;
use model::{load_flat, load_safetensors, save_flat, save_safetensors, Llama};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    pub cursor: Cursor,
    /// Running average of the training loss (loss guard).
    pub loss_ema: Option<f64>,
    pub sample_rng: [u64; 4],
    pub tokens_seen: u64,
    /// Training wall time so far, across resumptions.
    pub elapsed_s: f64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn fsync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Writes `checkpoints/step-{state.step}` and deletes all but the newest `keep`.
pub fn save(
    run: &Path,
    model: &Llama,
    opt: &Optimizer,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    save_with(run, model, opt, state, keep, &[])
}

/// `save` with more named tensors (a reward model's head and its moments) in
/// `extra.safetensors`, written and renamed into place with the rest.
pub fn save_with(
    run: &Path,
    model: &Llama,
    opt: &Optimizer,
    state: &TrainState,
    keep: usize,
    extra: &[(&str, &[f32])],
) -> Result<PathBuf> {
    publish(run, state.step, keep, |tmp, _| {
        save_safetensors(&model.params, &tmp.join("model.safetensors"))?;
        let moments = (&opt.m[..], &opt.v[..]);
        write_training(tmp, "optim.safetensors", moments, state, opt.step, extra)
    })
}

/// A LoRA stage's checkpoint: the adapters as a PEFT adapter directory naming the frozen base
/// checkpoint, their moments in adapter_optim.safetensors, state.json and any extra tensors.
pub fn save_adapters(
    run: &Path,
    adapters: &crate::lora::Adapters,
    state: &TrainState,
    keep: usize,
    extra: &[(&str, &[f32])],
) -> Result<PathBuf> {
    publish(run, state.step, keep, |tmp, dir| {
        // Named relative to where the checkpoint will be, so that the run can move.
        let base = relative(dir, &adapters.base_checkpoint)?;
        adapters.write_peft(
            tmp,
            &adapters.base_checkpoint.display().to_string(),
            Some(&base),
        )?;
        let moments = (&adapters.m[..], &adapters.v[..]);
        let file = "adapter_optim.safetensors";
        write_training(tmp, file, moments, state, adapters.step, extra)
    })
}

/// Loads a LoRA checkpoint into `adapters`; returns its training state.
pub fn load_adapters(dir: &Path, adapters: &mut crate::lora::Adapters) -> Result<TrainState> {
    adapters.read(dir, Some(&dir.join("adapter_optim.safetensors")))?;
    let (state, step) = read_state(dir)?;
    adapters.step = step;
    Ok(state)
}

/// `to` as a path relative to the directory `from` (both made absolute first).
fn relative(from: &Path, to: &Path) -> Result<PathBuf> {
    let abs = |p: &Path| -> Result<PathBuf> {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().map_err(io(p))?.join(p)
        };
        // Lexically normalised: `from` does not exist yet.
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                c => out.push(c),
            }
        }
        Ok(out)
    };
    let (from, to) = (abs(from)?, abs(to)?);
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel = PathBuf::new();
    for _ in from.components().skip(common) {
        rel.push("..");
    }
    for c in to.components().skip(common) {
        rel.push(c);
    }
    Ok(rel)
}

/// Writes checkpoint `step` of `run`: `write(tmp, dir)` fills a hidden temporary directory
/// `tmp` that will become `dir`, every file in it is fsynced, and it is renamed into place;
/// then all but the newest `keep` are deleted.
fn publish(
    run: &Path,
    step: usize,
    keep: usize,
    write: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = run.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let dir = root.join(format!("step-{step}"));
    let tmp = root.join(format!(".step-{step}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    write(&tmp, &dir)?;
    for e in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
        fsync(&e.map_err(io(&tmp))?.path())?;
    }
    // The directory's entries reach the disk before the rename publishes it.
    fsync(&tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    fsync(&root)?;
    let mut all = list(run)?;
    while all.len() > keep.max(1) {
        let (_, old) = all.remove(0);
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(dir)
}

/// What every checkpoint holds besides its weights: the optimizer's moments in `moments_file`,
/// state.json (the training state and the optimizer's step count) and any extra tensors.
fn write_training(
    dir: &Path,
    moments_file: &str,
    (m, v): (&[f32], &[f32]),
    state: &TrainState,
    optimizer_step: u64,
    extra: &[(&str, &[f32])],
) -> Result<()> {
    save_flat(&dir.join(moments_file), &[("m", m), ("v", v)])?;
    let json = serde_json::json!({"state": state, "optimizer_step": optimizer_step});
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(&json).unwrap_or_default(),
    )
    .map_err(io(dir))?;
    if !extra.is_empty() {
        save_flat(&dir.join("extra.safetensors"), extra)?;
    }
    Ok(())
}

/// A checkpoint's state.json: the training state and the optimizer's step count.
fn read_state(dir: &Path) -> Result<(TrainState, u64)> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let damaged = |e: serde_json::Error| {
        Error::input(
            path.display().to_string(),
            e.to_string(),
            "the checkpoint is damaged; resume from an older one",
        )
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(damaged)?;
    let step = json["optimizer_step"].as_u64().unwrap_or(0);
    Ok((
        serde_json::from_value(json["state"].clone()).map_err(damaged)?,
        step,
    ))
}

/// Complete checkpoints, oldest first.
pub fn list(run: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = run.join("checkpoints");
    if !root.exists() {
        return Ok(vec![]);
    }
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(&root)
        .map_err(io(&root))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            Some((
                e.file_name()
                    .to_str()?
                    .strip_prefix("step-")?
                    .parse()
                    .ok()?,
                e.path(),
            ))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Loads a checkpoint into `model` and `opt`; returns its training state.
pub fn load(dir: &Path, model: &mut Llama, opt: &mut Optimizer) -> Result<TrainState> {
    let extra = load_safetensors(&mut model.params, &dir.join("model.safetensors"))?;
    if !extra.is_empty() {
        return Err(Error::weights(
            dir.join("model.safetensors"),
            format!("unexpected tensors {extra:?}"),
            "the checkpoint belongs to another config",
        ));
    }
    let n = model.params.len();
    opt.m = load_flat(&dir.join("optim.safetensors"), "m", n)?;
    opt.v = load_flat(&dir.join("optim.safetensors"), "v", n)?;
    let (state, step) = read_state(dir)?;
    opt.step = step;
    Ok(state)
}

/// A tensor of `len` values from a checkpoint's `extra.safetensors` (see `save_with`).
pub fn load_extra(dir: &Path, name: &str, len: usize) -> Result<Vec<f32>> {
    load_flat(&dir.join("extra.safetensors"), name, len)
}

/// A model ready for inference or fine-tuning: the run's config and tokenizer with the
/// weights of one checkpoint.
pub struct Trained {
    /// The run directory.
    pub run: PathBuf,
    pub cfg: crate::Config,
    pub tok: bpe::Tokenizer,
    pub model: Llama,
    pub checkpoint: PathBuf,
    /// "pretrain", "sft", "dpo" or "grpo": which stage the checkpoint comes from.
    pub stage: &'static str,
}

/// The weights of the checkpoint in `dir`, for a model of `cfg`.
pub fn load_weights(dir: &Path, cfg: &model::config::ModelConfig) -> Result<Llama> {
    if let Some((lora, base)) = crate::lora::adapter_of(dir)? {
        // A LoRA stage's checkpoint: its frozen base (itself possibly adapted) plus adapters.
        let mut model = load_weights(&base, cfg).map_err(|e| {
            Error::input(
                dir.join("adapter_config.json").display().to_string(),
                format!(
                    "its base checkpoint {} cannot be loaded: {e}",
                    base.display()
                ),
                "keep the checkpoint a LoRA stage was tuned from (or retrain the stage)",
            )
        })?;
        let mut adapters = crate::lora::Adapters::new(&lora, &model, &base)?;
        adapters.read(dir, None)?;
        adapters.merge_into(&mut model.params);
        return Ok(model);
    }
    let path = dir.join("model.safetensors");
    let mut params = model::Params::zeros(cfg);
    let extra = load_safetensors(&mut params, &path)?;
    if !extra.is_empty() {
        return Err(Error::weights(
            path,
            format!("unexpected tensors {extra:?}"),
            "the checkpoint belongs to another config",
        ));
    }
    Ok(Llama::new(cfg.clone(), params))
}

/// The trained stages of the recipe in order: each one's name and the subdirectory of the run
/// that holds its checkpoints ("" for pretraining's).
pub const STAGES: &[(&str, &str)] = &[
    ("base", ""),
    ("sft", "sft"),
    ("dpo", "dpo"),
    ("grpo", "grpo"),
];

/// Loads a run directory's newest model: the SFT stage's (`run/sft/`) when there is one and
/// `prefer_sft`, else pretraining's.
pub fn load_trained(run: &Path, prefer_sft: bool) -> Result<Trained> {
    let (cfg, tok) = open_run(run)?;
    let sft = run.join("sft");
    let (stage, ckpt) = match list(&sft)?.pop() {
        Some((_, dir)) if prefer_sft => ("sft", dir),
        _ => match list(run)?.pop() {
            Some((_, dir)) => ("pretrain", dir),
            None => {
                return Err(Error::input(
                    run.display().to_string(),
                    "has no checkpoint yet",
                    "let `frugal pretrain` run until its first checkpoint",
                ))
            }
        },
    };
    let model = load_weights(&ckpt, &cfg.model)?;
    Ok(Trained {
        run: run.to_path_buf(),
        cfg,
        tok,
        model,
        checkpoint: ckpt,
        stage,
    })
}

/// Loads the newest checkpoint of one stage of a run (`base`, `sft`, `dpo` or `grpo`; see
/// [`STAGES`]), or with `None` of the last stage of the recipe that has one.
pub fn load_stage(run: &Path, stage: Option<&str>) -> Result<Trained> {
    let (cfg, tok) = open_run(run)?;
    let names: Vec<&str> = STAGES.iter().map(|(n, _)| *n).collect();
    let wanted: Vec<&(&'static str, &str)> = match stage {
        Some(s) => vec![STAGES.iter().find(|(n, _)| *n == s).ok_or_else(|| {
            Error::input(
                format!("--stage {s}"),
                "is not a stage of the recipe",
                format!("use one of {}", names.join(", ")),
            )
        })?],
        None => STAGES.iter().rev().collect(),
    };
    for &&(name, sub) in &wanted {
        if let Some((_, ckpt)) = list(&run.join(sub))?.pop() {
            let model = load_weights(&ckpt, &cfg.model)?;
            let stage = if name == "base" { "pretrain" } else { name };
            return Ok(Trained {
                run: run.to_path_buf(),
                cfg,
                tok,
                model,
                checkpoint: ckpt,
                stage,
            });
        }
    }
    Err(Error::input(
        run.display().to_string(),
        match stage {
            Some(s) => format!("has no checkpoint of the {s} stage"),
            None => "has no checkpoint yet".to_string(),
        },
        "train that stage first, or name another with --stage",
    ))
}

/// A run directory's config and tokenizer.
fn open_run(run: &Path) -> Result<(crate::Config, bpe::Tokenizer)> {
    let cfg_path = run.join("config.toml");
    if !cfg_path.exists() {
        return Err(Error::input(
            run.display().to_string(),
            "is not a run directory (no config.toml)",
            "pass the --run directory of `frugal pretrain` or `frugal speedrun` (runs/speedrun)",
        ));
    }
    let cfg = crate::Config::load(&cfg_path, &[])?;
    let tok_path = run.join("tokenizer.json");
    let tok = bpe::Tokenizer::load(&tok_path).map_err(|e| {
        Error::input(
            tok_path.display().to_string(),
            e.to_string(),
            "the run directory is incomplete; rerun pretraining",
        )
    })?;
    Ok((cfg, tok))
}

/// Prepares the directory of a tuning stage (`RUN/sft`, `RUN/dpo`, ...): on `resume` its saved
/// config must equal `resolved`; otherwise it must hold no checkpoints. Then `resolved` is
/// written as its config.toml. `what` names the stage in messages ("SFT", "DPO").
pub fn open_stage_dir(dir: &Path, resolved: &str, resume: bool, what: &str) -> Result<()> {
    let cfg_path = dir.join("config.toml");
    let sub = dir
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    if resume && cfg_path.exists() {
        let old = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        if old != resolved {
            return Err(Error::config(
                cfg_path.display().to_string(),
                format!("the {what} run was made with a different config"),
                format!("resume with the same config and --set overrides, or remove RUN/{sub} to start over"),
            ));
        }
    } else if !list(dir)?.is_empty() {
        return Err(Error::config(
            dir.display().to_string(),
            format!("already holds {what} checkpoints"),
            "pass --resume to continue, or remove that directory to start over",
        ));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    base::fs::write_atomic(&cfg_path, resolved.as_bytes())
}
