//! `frugal import hf DIR --run R`: a Hugging Face checkpoint of the Llama family becomes a run
//! whose base stage is that model, so SFT, preference tuning, evaluation, chat, serving and
//! export all start from it.
//!
//! Phases: read `config.json` into a `[model]` table (refusing what frugal's model cannot
//! compute, by field); read the byte-level BPE `tokenizer.json`; read the weights (one
//! safetensors file or the shards an index names; f32, bf16 or f16) under frugal's names and
//! shapes; keep the chat template and stop tokens; write the run directory whole.
//!
//! ```text
//! RUN/config.toml                 [model] from config.json, a [train] table to tune with
//! RUN/tokenizer.json              the checkpoint's tokenizer
//! RUN/checkpoints/step-0/         model.safetensors (f32)
//! RUN/chat_template.json          the model's own chat template, BOS/EOS and stop ids
//! RUN/import.json                 where it came from, and what the import changed
//! ```

use super::config::{hf_model_config, HfModel};
use crate::outdir::OutDir;
use base::{Error, Result};
use data::chat::template::{ModelTemplate, Template};
use model::{save_safetensors, Params};
use safetensors::SafeTensors;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct ImportOptions {
    /// The context to build the model for; None: the checkpoint's, up to 4096.
    pub context_len: Option<usize>,
}

/// What an import did.
#[derive(Debug)]
pub struct ImportSummary {
    pub run: PathBuf,
    pub architecture: String,
    pub params: usize,
    pub context_len: usize,
    /// Whether the checkpoint carried a chat template.
    pub chat_template: bool,
    /// What the import changed or dropped, for the user to know.
    pub notes: Vec<String>,
}

/// The longest context an import builds for unless asked: RoPE tables and KV caches are sized
/// by it, and a 128k-token table is half a gigabyte for nothing on a CPU.
const DEFAULT_MAX_CONTEXT: usize = 4096;

pub fn import(dir: &Path, run: &Path, opts: &ImportOptions) -> Result<ImportSummary> {
    let config_path = dir.join("config.json");
    let hf = hf_model_config(&read_json(&config_path)?, &config_path, opts.context_len)?;
    let HfModel {
        mut cfg,
        architecture,
        tied,
        mut notes,
    } = hf;
    if opts.context_len.is_none() && cfg.context_len > DEFAULT_MAX_CONTEXT {
        notes.push(format!(
            "context built for {DEFAULT_MAX_CONTEXT} of the checkpoint's {} positions (pass --context-len to change)",
            cfg.context_len
        ));
        cfg.context_len = DEFAULT_MAX_CONTEXT;
    }
    let tok = read_tokenizer(&dir.join("tokenizer.json"))?;
    if tok.vocab_size() > cfg.vocab_size {
        return Err(Error::input(
            dir.join("tokenizer.json").display().to_string(),
            format!(
                "has {} tokens, more than config.json's vocab_size {}",
                tok.vocab_size(),
                cfg.vocab_size
            ),
            "pair the checkpoint with the tokenizer it was trained with",
        ));
    }
    check_size(dir, &cfg, tied)?;
    let mut params = Params::zeros(&cfg);
    let dropped = read_weights(dir, &mut params, tied)?;
    if tied {
        notes.push(
            "tied embeddings: lm_head.weight starts as a copy of model.embed_tokens.weight and is trained apart from it"
                .into(),
        );
    }
    if !dropped.is_empty() {
        notes.push(format!("ignored {}", dropped.join(", ")));
    }
    // A model in frugal's own format (an export of frugal's) needs no template of its own.
    let chat = read_chat_template(dir)?.filter(|m| {
        m.chat_template != data::chat::template::FRUGAL_TEMPLATE
            || data::chat::ChatTokens::from_tokenizer(&tok).is_err()
    });

    let out = OutDir::create(run)?;
    let train = train::config::TrainConfig {
        batch_size: 8,
        seq_len: cfg.context_len.min(1024),
        lr: 1e-5,
        warmup_steps: 10,
        ..Default::default()
    };
    let config = train::Config {
        model: cfg.clone(),
        train,
        data: None,
        dist: Default::default(),
    };
    let text = format!(
        "# Imported from {} ({architecture}) by `frugal import hf`.\n{}",
        dir.display(),
        config.to_toml()
    );
    // Written before the weights are, so a config frugal cannot read back fails here.
    train::Config::parse(&text, "the imported config", &[])?;
    out.write("config.toml", text.as_bytes())?;
    tok.save(&out.path("tokenizer.json"))
        .map_err(|e| Error::input("tokenizer.json", e.to_string(), "check the --run directory"))?;
    let ckpt = out.path("checkpoints/step-0");
    std::fs::create_dir_all(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
    save_safetensors(&params, &ckpt.join("model.safetensors"))?;
    if let Some(c) = &chat {
        let v = serde_json::to_value(c).expect("a template serialises");
        out.write_json(ModelTemplate::FILE, &v)?;
    }
    out.write_json(
        "import.json",
        &json!({"source": dir.display().to_string(), "architecture": architecture, "notes": notes}),
    )?;
    let run = out.finish()?;
    Ok(ImportSummary {
        run,
        architecture,
        params: params.len(),
        context_len: cfg.context_len,
        chat_template: chat.is_some(),
        notes,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::input(
            path.display().to_string(),
            format!("not JSON: {e}"),
            "the checkpoint directory is damaged; download it again",
        )
    })
}

/// The checkpoint's tokenizer, which must be byte-level BPE whose merge order is its id
/// order (frugal's encoder merges by rank = id; GPT-2, Llama 3 and Qwen2 tokenizers are so).
fn read_tokenizer(path: &Path) -> Result<bpe::Tokenizer> {
    let doc = read_json(path)?;
    let refuse = |msg: String| {
        Error::input(
            path.display().to_string(),
            msg,
            "frugal reads byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, its own); convert the model's tokenizer or pick such a model",
        )
    };
    let model = &doc["model"];
    let sentencepiece = model["byte_fallback"] == true
        || doc["pre_tokenizer"]["type"] == "Metaspace"
        || doc["decoder"]["decoders"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["type"] == "ByteFallback"));
    if sentencepiece {
        return Err(refuse(
            "is a SentencePiece-style tokenizer (byte_fallback / Metaspace, as Llama 2's and Mistral's are), not byte-level BPE".into(),
        ));
    }
    if model["type"] != "BPE" {
        return Err(refuse(format!(
            "model.type is {}, not \"BPE\"",
            model["type"]
        )));
    }
    let tok = bpe::Tokenizer::from_hf_json(&doc).map_err(refuse)?;
    // The file's merges must be the ones rank order implies, in the same order.
    let ours = tok.merge_names().map_err(|e| refuse(e.to_string()))?;
    let theirs: Vec<String> = model["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(p) => Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(i) = (0..ours.len().max(theirs.len())).find(|&i| ours.get(i) != theirs.get(i)) {
        return Err(refuse(format!(
            "model.merges[{i}] is {:?}, but the token ids imply {:?}: its merge order is not its id order",
            theirs.get(i),
            ours.get(i)
        )));
    }
    Ok(tok)
}

/// The tensor files of a checkpoint: the shards `model.safetensors.index.json` names, or the
/// one `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let doc = read_json(&index)?;
        let map = doc["weight_map"].as_object().ok_or_else(|| {
            Error::input(
                index.display().to_string(),
                "has no weight_map",
                "the checkpoint directory is damaged; download it again",
            )
        })?;
        let files: std::collections::BTreeSet<&str> =
            map.values().filter_map(Value::as_str).collect();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.exists()) {
            return Err(Error::input(
                missing.display().to_string(),
                format!("is missing: {} names it in weight_map", index.display()),
                "download every shard of the checkpoint",
            ));
        }
        return Ok(paths);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(Error::input(
        dir.display().to_string(),
        "holds neither model.safetensors nor model.safetensors.index.json",
        "pass a Hugging Face checkpoint directory saved in safetensors (save_pretrained's default)",
    ))
}

/// Refuses a config.json that implies more parameters than its weight files could hold (at
/// two bytes each, a tied head excepted), before anything is sized from it: a damaged or
/// hostile config must not make the import allocate without bound.
fn check_size(dir: &Path, cfg: &model::config::ModelConfig, tied: bool) -> Result<()> {
    let implied = model::arch::Arch::from_model(cfg, 1).params().total;
    let head = if tied {
        (cfg.vocab_size * cfg.d_model) as f64
    } else {
        0.0
    };
    let bytes: u64 = weight_files(dir)?
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if implied - head > bytes as f64 / 2.0 {
        return Err(Error::input(
            dir.join("config.json").display().to_string(),
            format!(
                "implies {implied:.0} parameters, more than its weight files ({bytes} bytes) hold"
            ),
            "check that config.json belongs to these weights and that every shard is there",
        ));
    }
    Ok(())
}

/// Fills `params` from the checkpoint's tensors, converting them to f32. With `tied`, the
/// head is the embedding. Returns the names of tensors left out (RoPE's cached frequencies).
fn read_weights(dir: &Path, params: &mut Params, tied: bool) -> Result<Vec<String>> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut dropped = Vec::new();
    for path in weight_files(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::weights(
                &path,
                e.to_string(),
                "the shard is damaged; download it again",
            )
        })?;
        let mut tensors = file.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, view) in tensors {
            let Some(spec) = params.spec(&name).cloned() else {
                if name.ends_with("rotary_emb.inv_freq") {
                    dropped.push(name);
                    continue;
                }
                return Err(Error::weights(
                    &path,
                    format!("tensor {name} has no place in the model config.json describes"),
                    "check that config.json belongs to these weights (its model_type, num_hidden_layers and bias fields)",
                ));
            };
            if view.shape() != spec.shape.as_slice() {
                return Err(Error::weights(
                    &path,
                    format!(
                        "tensor {name} has shape {:?}, config.json implies {:?}",
                        view.shape(),
                        spec.shape
                    ),
                    "check that config.json belongs to these weights",
                ));
            }
            crate::tensors::decode_into(&mut params.data[spec.range()], view.dtype(), view.data())
                .map_err(|msg| {
                    Error::weights(
                        &path,
                        format!("tensor {name}: {msg}"),
                        "convert the checkpoint to f32, bf16 or f16",
                    )
                })?;
            found.insert(name, path.clone());
        }
    }
    if tied && !found.contains_key("lm_head.weight") {
        let (e, h) = (params.embed, params.lm_head);
        let n = params.spec("lm_head.weight").map_or(0, |s| s.len());
        params.data.copy_within(e..e + n, h);
        found.insert("lm_head.weight".into(), PathBuf::new());
    }
    let missing: Vec<&str> = params
        .specs
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !found.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).copied().collect();
        return Err(Error::input(
            dir.display().to_string(),
            format!(
                "lacks {} tensors the config implies: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > 5 { ", …" } else { "" }
            ),
            "download every shard; check tie_word_embeddings and num_hidden_layers in config.json",
        ));
    }
    Ok(dropped)
}

/// The checkpoint's chat template with what rendering it needs: `chat_template` of
/// tokenizer_config.json (a string, or a list of named templates, "default" taken) or the
/// chat_template.jinja file transformers 5 saves; BOS and EOS names; generation_config.json's
/// stop ids. None when it has no template.
fn read_chat_template(dir: &Path) -> Result<Option<ModelTemplate>> {
    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.exists() {
        read_json(&tc_path)?
    } else {
        Value::Null
    };
    let from_config = match &tc["chat_template"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or(list.first())
            .and_then(|t| t["template"].as_str().map(String::from)),
        _ => None,
    };
    let jinja = dir.join("chat_template.jinja");
    let (template, origin) = match from_config {
        Some(t) => (t, tc_path),
        None if jinja.exists() => (
            std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?,
            jinja,
        ),
        None => return Ok(None),
    };
    // Fails here, naming the file, rather than at the first prompt.
    Template::new(&template, &origin.display().to_string())?;
    let token = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    };
    let gen_path = dir.join("generation_config.json");
    let stop_ids = if gen_path.exists() {
        match &read_json(&gen_path)?["eos_token_id"] {
            Value::Number(n) => n.as_u64().map(|v| v as u32).into_iter().collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|v| v as u32)
                .collect(),
            _ => vec![],
        }
    } else {
        vec![]
    };
    Ok(Some(ModelTemplate {
        chat_template: template,
        bos_token: token(&tc["bos_token"]),
        eos_token: token(&tc["eos_token"]),
        stop_ids,
    }))
}
