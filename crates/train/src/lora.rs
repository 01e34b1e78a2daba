//! LoRA (Hu et al., 2021): a frozen weight W₀ is tuned as W = W₀ + (α/r)·B·A, with A (r × in)
//! and B (out × r) the only trained tensors; A starts as PEFT starts it, U(±1/√in), and B at
//! zero, so training starts from the base model exactly.
//!
//! Training runs the adapters as a side path beside the frozen weights (`model::lora`): the
//! model's passes add s·B·A·drop(x) to each adapted projection and return the adapters'
//! gradients alone, so neither the frozen weights' gradients nor their optimizer moments
//! exist, and dropout on the adapter's input is exact. This module owns the adapters' host
//! copy, their AdamW state, their PEFT files and the merge for inference.
//!
//! Checkpoints of a LoRA stage hold only the adapters, as a PEFT adapter directory
//! (`adapter_config.json`, `adapter_model.safetensors`), their moments and the training state;
//! `frugal` finds the frozen base through `adapter_config.json` (`checkpoint::load_weights`
//! merges them), so evaluation, chat, serving and export read a LoRA stage like any other.

use base::{Error, Result};
use model::lora::{Adapter, Lora};
use model::{Llama, Params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use tensor::matmul::{sgemm, Gemm};
use tensor::ops::adamw::{adamw_update, AdamWHyper};
use tensor::Rng;

pub use model::lora::MODULES;

/// `[lora]` of a tuning stage's config (PEFT's LoraConfig names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// r: the adapters' inner width.
    pub rank: usize,
    /// α: the update is scaled by α / r.
    pub alpha: f32,
    /// Dropout on the adapter's input (PEFT's lora_dropout), in [0, 1).
    pub dropout: f32,
    /// Which projections get adapters (of `MODULES`) [target_modules].
    pub target_modules: Vec<String>,
    /// Seed of A's initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: MODULES.iter().map(|m| m.to_string()).collect(),
            seed: 0,
        }
    }
}

impl LoraConfig {
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.rank == 0 {
            return Err(("lora.rank", "must be at least 1".into()));
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 {
            return Err(("lora.alpha", "must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(("lora.dropout", "must be in [0, 1)".into()));
        }
        if self.target_modules.is_empty() {
            return Err(("lora.target_modules", "names no module".into()));
        }
        if let Some(bad) = self
            .target_modules
            .iter()
            .find(|m| !MODULES.contains(&m.as_str()))
        {
            return Err((
                "lora.target_modules",
                format!("{bad:?} is not one of {MODULES:?}"),
            ));
        }
        Ok(())
    }

    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

/// One adapted weight.
#[derive(Clone, Debug)]
struct Target {
    /// The weight's HF name (model.layers.0.self_attn.q_proj.weight).
    name: String,
    /// Where it sits in the model's parameters.
    offset: usize,
    rows: usize,
    cols: usize,
    /// Where its A (rank × cols) and then B (rows × rank) sit in `Adapters::data`.
    at: usize,
}

impl Target {
    fn a_len(&self, r: usize) -> usize {
        r * self.cols
    }
    fn len(&self, r: usize) -> usize {
        r * (self.cols + self.rows)
    }
    /// PEFT's name of this adapter's `part` ("lora_A" or "lora_B").
    fn peft_name(&self, part: &str) -> String {
        let module = self.name.strip_suffix(".weight").unwrap_or(&self.name);
        format!("base_model.model.{module}.{part}.weight")
    }
}

/// The adapters of one model and their optimizer state.
pub struct Adapters {
    pub cfg: LoraConfig,
    targets: Vec<Target>,
    /// Each decoder layer's adapters, as the model's side path places them.
    layers: Vec<Vec<Adapter>>,
    /// Every target's A then B.
    pub data: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u64,
    /// The checkpoint the frozen weights came from (recorded in every adapter checkpoint).
    pub base_checkpoint: PathBuf,
}

impl Adapters {
    /// Adapters for `cfg.target_modules` of every decoder layer of `model`, whose weights are
    /// those of `base_checkpoint`.
    pub fn new(cfg: &LoraConfig, model: &Llama, base_checkpoint: &Path) -> Result<Self> {
        cfg.validate()
            .map_err(|(f, m)| Error::config(f, m, "fix the [lora] table"))?;
        let p = &model.params;
        let r = cfg.rank;
        let (mut targets, mut layers, mut at) = (Vec::new(), Vec::new(), 0);
        for l in 0..model.cfg.n_layers {
            let mut layer = Vec::new();
            for m in &cfg.target_modules {
                let group = match m.as_str() {
                    "gate_proj" | "up_proj" | "down_proj" => "mlp",
                    _ => "self_attn",
                };
                let name = format!("model.layers.{l}.{group}.{m}.weight");
                let site = Adapter::of(&model.cfg, l, m, at).map_err(|why| {
                    Error::config(
                        "lora.target_modules",
                        why,
                        "target the projections the model has",
                    )
                })?;
                let spec = p.spec(&name).ok_or_else(|| {
                    Error::config(
                        "lora.target_modules",
                        format!("{m:?}: the model has no {name}"),
                        "target the projections the model has",
                    )
                })?;
                let (rows, cols) = (spec.shape[0], spec.shape[1]);
                assert_eq!(
                    (site.rows, site.cols),
                    (rows, cols),
                    "{name}: adapter shape"
                );
                let t = Target {
                    name,
                    offset: spec.offset,
                    rows,
                    cols,
                    at,
                };
                at += t.len(r);
                targets.push(t);
                layer.push(site);
            }
            layers.push(layer);
        }
        if !p.mtp.is_empty() {
            return Err(Error::config(
                "lora",
                "the model has multi-token prediction modules; LoRA tunes models without them",
                "remove the [lora] table, or tune a model without model.mtp",
            ));
        }
        let mut data = vec![0f32; at];
        let mut rng = Rng::new(cfg.seed);
        for t in &targets {
            let bound = 1.0 / (t.cols as f32).sqrt();
            for a in &mut data[t.at..t.at + t.a_len(r)] {
                *a = (2.0 * rng.uniform() as f32 - 1.0) * bound;
            }
        }
        Ok(Adapters {
            cfg: cfg.clone(),
            m: vec![0.0; at],
            v: vec![0.0; at],
            step: 0,
            targets,
            layers,
            data,
            base_checkpoint: base_checkpoint.to_path_buf(),
        })
    }

    /// Attaches these adapters to `model` (their base): its passes run them as a side path and
    /// train them alone.
    pub fn attach(&self, model: &mut Llama) {
        let c = &self.cfg;
        let lora = Lora::new(
            c.rank,
            c.scale(),
            c.dropout,
            self.layers.clone(),
            self.data.clone(),
        );
        model.attach_lora(lora);
    }

    /// Copies these adapters' weights into the ones attached to `model`.
    pub fn install(&self, model: &mut Llama) {
        let lora = model.lora_mut().expect("install: no adapters attached");
        lora.weights.copy_from_slice(&self.data);
    }

    /// Parameters trained.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// W₀ += (α/r)·B·A for every target: the frozen weights `params` (these adapters' base)
    /// become the tuned model's, for inference and export.
    pub fn merge_into(&self, params: &mut Params) {
        let (r, s) = (self.cfg.rank, self.cfg.scale());
        for t in &self.targets {
            let (a, b) = self.data[t.at..t.at + t.len(r)].split_at(t.a_len(r));
            let sb: Vec<f32> = b.iter().map(|x| s * x).collect();
            let w = &mut params.data[t.offset..t.offset + t.rows * t.cols];
            sgemm(&Gemm::nn(t.rows, t.cols, r).accumulate(true), &sb, a, w);
        }
    }

    /// AdamW on the adapters from their gradients `grads` (a LoRA pass's buffer), scaled by
    /// `clip` first.
    pub fn update(&mut self, grads: &mut [f32], hyper: &AdamWHyper, clip: f32) {
        if clip < 1.0 {
            grads.iter_mut().for_each(|g| *g *= clip);
        }
        self.step += 1;
        adamw_update(
            &mut self.data,
            grads,
            &mut self.m,
            &mut self.v,
            hyper,
            self.step,
        );
    }

    /// Writes the adapters into `dir` as PEFT does (adapter_model.safetensors and
    /// adapter_config.json), naming `base` (a path or model id) as the base model, and the
    /// frozen checkpoint `frugal_base` (relative to `dir`) for frugal itself.
    pub fn write_peft(&self, dir: &Path, base: &str, frugal_base: Option<&Path>) -> Result<()> {
        let r = self.cfg.rank;
        let mut named: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for t in &self.targets {
            let (a, b) = self.data[t.at..t.at + t.len(r)].split_at(t.a_len(r));
            named.push((t.peft_name("lora_A"), vec![r, t.cols], a));
            named.push((t.peft_name("lora_B"), vec![t.rows, r], b));
        }
        let bytes: Vec<Vec<u8>> = named
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = named
            .iter()
            .zip(&bytes)
            .map(|((n, shape, _), b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::input(n, e.to_string(), "report this as a bug"))
            })
            .collect::<Result<Vec<_>>>()?;
        let path = dir.join("adapter_model.safetensors");
        let meta = Some(std::collections::HashMap::from([(
            "format".to_string(),
            "pt".to_string(),
        )]));
        safetensors::serialize_to_file(views, &meta, &path)
            .map_err(|e| Error::weights(&path, e.to_string(), "check the disk"))?;
        let mut config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": r,
            "lora_alpha": self.cfg.alpha,
            "lora_dropout": self.cfg.dropout,
            "target_modules": self.cfg.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
        });
        if let Some(b) = frugal_base {
            config["frugal_base_checkpoint"] = b.display().to_string().into();
            config["frugal_seed"] = self.cfg.seed.into();
        }
        let path = dir.join("adapter_config.json");
        let text = serde_json::to_string_pretty(&config).expect("JSON serialises");
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }

    /// Loads adapters written by `write_peft` (and their moments, when `moments` is given)
    /// into these (same targets and rank).
    pub fn read(&mut self, dir: &Path, moments: Option<&Path>) -> Result<()> {
        let path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::weights(&path, e.to_string(), "the checkpoint is damaged"))?;
        let r = self.cfg.rank;
        for t in &self.targets {
            let (a, b) = self.data[t.at..t.at + t.len(r)].split_at_mut(t.a_len(r));
            for (part, dst, shape) in [("lora_A", a, [r, t.cols]), ("lora_B", b, [t.rows, r])] {
                let name = t.peft_name(part);
                let v = file.tensor(&name).map_err(|_| {
                    Error::weights(
                        &path,
                        format!("tensor {name} is missing"),
                        "the adapters belong to another [lora] table",
                    )
                })?;
                if v.shape() != shape || v.dtype() != safetensors::Dtype::F32 {
                    return Err(Error::weights(
                        &path,
                        format!(
                            "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                            v.dtype(),
                            v.shape()
                        ),
                        "the adapters belong to another [lora] table",
                    ));
                }
                for (d, c) in dst.iter_mut().zip(v.data().chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
        if let Some(p) = moments {
            let n = self.data.len();
            self.m = model::load_flat(p, "m", n)?;
            self.v = model::load_flat(p, "v", n)?;
        }
        Ok(())
    }
}

/// A PEFT `adapter_config.json`'s LoRA settings, and frugal's base checkpoint when it names one.
fn peft_config(dir: &Path) -> Result<Option<(LoraConfig, Option<String>)>> {
    let path = dir.join("adapter_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let bad = |msg: String| {
        Error::input(
            path.display().to_string(),
            msg,
            "pass a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors)",
        )
    };
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if doc["peft_type"] != "LORA" {
        return Err(bad(format!(
            "peft_type is {}, not \"LORA\"",
            doc["peft_type"]
        )));
    }
    for (field, off) in [
        ("use_dora", false),
        ("use_rslora", false),
        ("fan_in_fan_out", false),
    ] {
        if doc[field].as_bool().unwrap_or(off) != off {
            return Err(bad(format!("{field} is set; frugal applies plain LoRA")));
        }
    }
    let cfg = LoraConfig {
        rank: doc["r"].as_u64().ok_or_else(|| bad("has no r".into()))? as usize,
        alpha: doc["lora_alpha"]
            .as_f64()
            .ok_or_else(|| bad("has no lora_alpha".into()))? as f32,
        dropout: doc["lora_dropout"].as_f64().unwrap_or(0.0) as f32,
        target_modules: serde_json::from_value(doc["target_modules"].clone())
            .map_err(|e| bad(format!("target_modules: {e}")))?,
        seed: doc["frugal_seed"].as_u64().unwrap_or(0),
    };
    cfg.validate().map_err(|(f, m)| bad(format!("{f}: {m}")))?;
    Ok(Some((
        cfg,
        doc["frugal_base_checkpoint"].as_str().map(String::from),
    )))
}

/// What `adapter_config.json` in a LoRA checkpoint says: its [lora] table and the frozen
/// checkpoint (resolved against the adapter's directory). None for other checkpoints.
pub fn adapter_of(dir: &Path) -> Result<Option<(LoraConfig, PathBuf)>> {
    match peft_config(dir)? {
        None => Ok(None),
        Some((cfg, Some(base))) => Ok(Some((cfg, dir.join(base)))),
        Some((_, None)) => Err(Error::input(
            dir.join("adapter_config.json").display().to_string(),
            "names no frugal_base_checkpoint",
            "a checkpoint's adapters must name the checkpoint they adapt",
        )),
    }
}

impl Adapters {
    /// The adapters of a PEFT LoRA directory, for `model` (their base).
    pub fn from_peft(dir: &Path, model: &Llama) -> Result<Self> {
        let (cfg, _) = peft_config(dir)?.ok_or_else(|| {
            Error::input(
                dir.display().to_string(),
                "has no adapter_config.json",
                "pass a PEFT LoRA adapter directory",
            )
        })?;
        let mut ad = Adapters::new(&cfg, model, dir)?;
        ad.read(dir, None)?;
        Ok(ad)
    }
}
