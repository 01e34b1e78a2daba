//! Agreement with the ecosystem's readers: logits another implementation computed for the same
//! weights (transformers, for an export or for a checkpoint it saved itself), read from a
//! safetensors file that `bench/interop/hf_readers.py` writes:
//!
//! ```text
//! ids.{i}     I64 [T]     prompt i's token ids, from the reader's tokenizer
//! logits.{i}  F32 [T, V]  the reader's logits at every position
//! metadata    text.{i}    prompt i's text, so frugal's tokenizer can be checked against the ids
//! ```

use base::{Error, Result};
use model::Llama;
use safetensors::{tensor::Dtype, SafeTensors};
use std::path::Path;

/// One prompt a reader scored.
pub struct PeerPrompt {
    pub text: Option<String>,
    pub ids: Vec<u32>,
    /// (T, vocab) row-major.
    pub logits: Vec<f32>,
}

pub fn read_peer_logits(path: &Path) -> Result<Vec<PeerPrompt>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |msg: String| Error::weights(path, msg, "rerun bench/interop/hf_readers.py");
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let texts = meta.metadata().clone().unwrap_or_default();
    let mut out = Vec::new();
    for i in 0.. {
        let Ok(ids) = file.tensor(&format!("ids.{i}")) else {
            break;
        };
        let logits = file
            .tensor(&format!("logits.{i}"))
            .map_err(|_| bad(format!("ids.{i} has no logits.{i}")))?;
        let ids: Vec<u32> = match ids.dtype() {
            Dtype::I64 => ids
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
                .collect(),
            d => return Err(bad(format!("ids.{i} is {d:?}, expected I64"))),
        };
        if logits.dtype() != Dtype::F32 || logits.shape().first() != Some(&ids.len()) {
            return Err(bad(format!(
                "logits.{i} is {:?} {:?}, expected F32 [{}, vocab]",
                logits.dtype(),
                logits.shape(),
                ids.len()
            )));
        }
        let logits = logits
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        out.push(PeerPrompt {
            text: texts.get(&format!("text.{i}")).cloned(),
            ids,
            logits,
        });
    }
    if out.is_empty() {
        return Err(bad("holds no ids.0".into()));
    }
    Ok(out)
}

/// The largest |frugal − peer| over every logit of every prompt, per prompt.
pub fn logit_gaps(model: &Llama, prompts: &[PeerPrompt]) -> Result<Vec<f32>> {
    let v = model.cfg.vocab_size;
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if p.logits.len() != p.ids.len() * v {
                return Err(Error::input(
                    format!("logits.{i}"),
                    format!(
                        "has {} values, not {} tokens × vocab {v}",
                        p.logits.len(),
                        p.ids.len()
                    ),
                    "score the same model",
                ));
            }
            if p.ids.is_empty() || p.ids.len() > model.cfg.context_len {
                return Err(Error::input(
                    format!("ids.{i}"),
                    format!(
                        "has {} tokens, outside 1..={}",
                        p.ids.len(),
                        model.cfg.context_len
                    ),
                    "score prompts that fit the model's context",
                ));
            }
            if let Some(&bad) = p.ids.iter().find(|&&t| t as usize >= v) {
                return Err(Error::input(
                    format!("ids.{i}"),
                    format!("token {bad} is outside the vocabulary of {v}"),
                    "score with the exported tokenizer",
                ));
            }
            let mut ws = model.workspace(1, p.ids.len());
            let ours = model.logits(&p.ids, &mut ws);
            Ok(ours
                .iter()
                .zip(&p.logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max))
        })
        .collect()
}
