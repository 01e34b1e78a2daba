//! `frugal export --format hf`: one stage of a run as a Hugging Face checkpoint directory.
//!
//! ```text
//! config.json               LlamaForCausalLM (Qwen2ForCausalLM with q/k/v biases), f32 or bf16
//! model.safetensors         HF Llama tensor names (or model-0000i-of-0000n + index past a size)
//! tokenizer.json            the run's byte-level BPE, as frugal writes it
//! tokenizer_config.json     special tokens and the chat template (frugal's format in Jinja, or
//!                           an imported model's own)
//! special_tokens_map.json
//! generation_config.json    the stop tokens
//! ```
//! Multi-token prediction modules are training aids with no place in a Llama: they are left out
//! and the summary says so.

use super::config::{hf_config, SpecialIds};
use crate::outdir::OutDir;
use crate::tensors::{write_safetensors, Dtype, Named};
use base::Result;
use data::chat::template::FRUGAL_TEMPLATE;
use data::chat::ChatStyle;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use train::checkpoint::Trained;

pub struct ExportOptions {
    pub dtype: Dtype,
    /// Shards are at most this many bytes (a larger tensor gets one of its own).
    pub max_shard_bytes: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            dtype: Dtype::F32,
            max_shard_bytes: 5_000_000_000,
        }
    }
}

/// What an export wrote.
#[derive(Debug)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub files: Vec<String>,
    pub params: usize,
    pub bytes: u64,
    /// Tensors of the run left out (multi-token prediction modules).
    pub dropped: Vec<String>,
}

/// Writes `t` (a stage's model with its run's tokenizer) to `out` as a HF checkpoint.
pub fn export(t: &Trained, out: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    let cfg = &t.model.cfg;
    let chat = chat_identity(t)?;
    let config = hf_config(cfg, &chat.ids, opts.dtype.torch_name())?;
    let dir = OutDir::create(out)?;
    let (tensors, dropped) = mtp_free_tensors(t);
    let params = tensors.iter().map(|n| n.values.len()).sum();
    let mut files = write_safetensors(
        &dir.path(""),
        "model",
        &tensors,
        opts.dtype,
        opts.max_shard_bytes,
    )?;
    dir.write_json("config.json", &config)?;
    dir.write_json("generation_config.json", &generation_config(&chat.ids))?;
    t.tok.save(&dir.path("tokenizer.json")).map_err(|e| {
        base::Error::input("tokenizer.json", e.to_string(), "check the --out directory")
    })?;
    dir.write_json(
        "tokenizer_config.json",
        &tokenizer_config(&t.tok, &chat, cfg.context_len),
    )?;
    dir.write_json("special_tokens_map.json", &special_tokens_map(t, &chat))?;
    files.extend(
        [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
        .map(String::from),
    );
    let dir = dir.finish()?;
    let bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Ok(ExportSummary {
        dir,
        files,
        params,
        bytes,
        dropped,
    })
}

/// How the exported model is prompted and stopped.
pub(crate) struct ChatIdentity {
    pub(crate) template: String,
    pub(crate) bos: Option<String>,
    pub(crate) eos: String,
    pub(crate) ids: SpecialIds,
}

/// frugal's chat format for its own runs; an imported model's own template, BOS/EOS and stop
/// ids (RUN/chat_template.json) for runs made by `frugal import`.
pub(crate) fn chat_identity(t: &Trained) -> Result<ChatIdentity> {
    let chat = match ChatStyle::of_run(&t.tok, &t.run)? {
        ChatStyle::Template(s) => {
            let m = &s.model;
            return Ok(ChatIdentity {
                ids: SpecialIds {
                    // The model's own BOS only: the style's fallback to EOS is frugal's.
                    bos: m.bos_token.as_deref().and_then(|n| t.tok.special_id(n)),
                    eos: s.stops.clone(),
                },
                template: m.chat_template.clone(),
                bos: m.bos_token.clone(),
                eos: m.eos_token.clone().unwrap_or_default(),
            });
        }
        ChatStyle::Frugal(chat) => chat,
    };
    let eos = if t.stage == "pretrain" {
        vec![chat.bos]
    } else {
        chat.reply_stops()
    };
    Ok(ChatIdentity {
        template: FRUGAL_TEMPLATE.to_string(),
        bos: Some(special_name(&t.tok, chat.bos)),
        eos: special_name(&t.tok, eos[0]),
        ids: SpecialIds {
            bos: Some(chat.bos),
            eos,
        },
    })
}

/// The tensors a Llama has, in the run's order, and the names of those it has not.
pub(crate) fn mtp_free_tensors(t: &Trained) -> (Vec<Named<'_>>, Vec<String>) {
    let p = &t.model.params;
    let n_layers = t.model.cfg.n_layers;
    let is_mtp = |name: &str| {
        name.strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= n_layers)
    };
    let (keep, drop): (Vec<_>, Vec<_>) = p.specs.iter().partition(|s| !is_mtp(&s.name));
    let tensors = keep
        .into_iter()
        .map(|s| Named {
            name: s.name.clone(),
            shape: s.shape.clone(),
            values: &p.data[s.range()],
        })
        .collect();
    (tensors, drop.into_iter().map(|s| s.name.clone()).collect())
}

fn generation_config(ids: &SpecialIds) -> Value {
    json!({
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "do_sample": true,
        "temperature": 0.7,
        "top_k": 50,
        "top_p": 0.95,
    })
}

/// Every special token is declared in `added_tokens_decoder`, so transformers treats their
/// names in rendered templates as the tokens themselves; no BOS is added on encoding, since
/// the chat template writes it and base-model text starts with it explicitly.
fn tokenizer_config(tok: &bpe::Tokenizer, chat: &ChatIdentity, context_len: usize) -> Value {
    let added: Map<String, Value> = tok
        .specials()
        .iter()
        .map(|(s, id)| {
            (
                id.to_string(),
                json!({"content": s, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": true}),
            )
        })
        .collect();
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": chat.bos,
        "eos_token": chat.eos,
        "pad_token": chat.bos.as_deref().unwrap_or(&chat.eos),
        "unk_token": null,
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": context_len,
        "added_tokens_decoder": added,
        "chat_template": chat.template,
    })
}

fn special_tokens_map(t: &Trained, chat: &ChatIdentity) -> Value {
    let extra: Vec<&str> = t.tok.specials().iter().map(|(s, _)| s.as_str()).collect();
    json!({
        "bos_token": chat.bos,
        "eos_token": chat.eos,
        "pad_token": chat.bos.as_deref().unwrap_or(&chat.eos),
        "additional_special_tokens": extra,
    })
}

/// The name of special token `id`.
fn special_name(tok: &bpe::Tokenizer, id: u32) -> String {
    tok.specials()
        .iter()
        .find(|(_, i)| *i == id)
        .map(|(s, _)| s.clone())
        .unwrap_or_default()
}
