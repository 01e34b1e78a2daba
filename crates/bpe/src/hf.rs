//! Hugging Face `tokenizer.json` (byte-level BPE): frugal's native tokenizer file, readable by
//! the `tokenizers` library as is. Byte-level tokens are written with GPT-2's byte-to-character
//! map, merges are derived from the ranks, special tokens are `added_tokens`.

use crate::encode::merge_parts;
use crate::pretokenize::{Splitter, GPT2_PATTERN};
use crate::{Error, Result, Tokenizer};
use serde_json::{json, Value};
use std::path::Path;

/// GPT-2's bijection from bytes to printable characters.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    for b in 0..256u32 {
        map[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    map
}

/// `bytes_to_unicode()`, built once.
fn byte_chars() -> &'static [char; 256] {
    static MAP: std::sync::OnceLock<[char; 256]> = std::sync::OnceLock::new();
    MAP.get_or_init(bytes_to_unicode)
}

/// Writes `path` so that it appears whole or not at all.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| Error::Io {
        path: path.into(),
        source: e,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl Tokenizer {
    /// The merge list implied by the ranks: for each multi-byte token, the two tokens that
    /// rank-ordered merging of its bytes (using only lower ranks) ends with.
    pub fn merges(&self) -> Result<Vec<(u32, u32)>> {
        let mut merges = Vec::new();
        let (mut out, mut parts) = (Vec::new(), Vec::new());
        for id in 0..self.n_ordinary() as u32 {
            let bytes = self.token_bytes(id).unwrap_or_default();
            if bytes.len() < 2 {
                continue;
            }
            // Merge as the encoder would, but only with ranks below this token's own.
            merge_parts(bytes, &self.ranks, id, &mut parts);
            out.clear();
            out.extend(parts.windows(2).map(|w| self.ranks[&bytes[w[0].0..w[1].0]]));
            match out.as_slice() {
                &[l, r] => merges.push((l, r)),
                _ => {
                    return Err(Error::Invalid(format!(
                        "token {id} ({:?}) is not the merge of two lower-ranked tokens",
                        String::from_utf8_lossy(bytes)
                    )))
                }
            }
        }
        Ok(merges)
    }

    /// Ordinary token `id` as tokenizer.json and GGUF name it: its bytes through GPT-2's
    /// byte-to-character map (empty for an id that is not an ordinary token).
    pub fn token_name(&self, id: u32) -> String {
        let map = byte_chars();
        let bytes = self.token_bytes(id).unwrap_or_default();
        bytes.iter().map(|&b| map[b as usize]).collect()
    }

    /// The merge list as tokenizer.json and GGUF write it: "left right", by token names.
    pub fn merge_names(&self) -> Result<Vec<String>> {
        Ok(self
            .merges()?
            .into_iter()
            .map(|(l, r)| format!("{} {}", self.token_name(l), self.token_name(r)))
            .collect())
    }

    /// The `tokenizer.json` document.
    pub fn to_hf_json(&self) -> Result<Value> {
        let vocab: serde_json::Map<String, Value> = (0..self.n_ordinary() as u32)
            .map(|id| (self.token_name(id), json!(id)))
            .collect();
        let merges: Vec<Value> = self.merge_names()?.into_iter().map(Value::from).collect();
        let added: Vec<Value> = self
            .specials()
            .iter()
            .map(|(s, id)| {
                json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": true})
            })
            .collect();
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": if self.nfc() { json!({"type": "NFC"}) } else { Value::Null },
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern()}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges}
        }))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_hf_json()?)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }

    /// Reads a byte-level BPE `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                path,
                format!("not JSON: {e}"),
                "pass a tokenizer.json written by frugal or HF tokenizers",
            )
        })?;
        Self::from_hf_json(&doc).map_err(|msg| {
            Error::file(
                path,
                msg,
                "only byte-level BPE tokenizer.json files are supported",
            )
        })
    }

    pub fn from_hf_json(doc: &Value) -> std::result::Result<Self, String> {
        let model = &doc["model"];
        if model["type"] != "BPE" {
            return Err(format!("model.type is {}, expected \"BPE\"", model["type"]));
        }
        let vocab = model["vocab"].as_object().ok_or("model.vocab is missing")?;
        let inverse: std::collections::HashMap<char, u8> = bytes_to_unicode()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; vocab.len()];
        for (s, id) in vocab {
            let id = id
                .as_u64()
                .filter(|&i| (i as usize) < vocab.len())
                .ok_or(format!("vocab id of {s:?} is not in 0..{}", vocab.len()))?;
            let bytes = s
                .chars()
                .map(|c| inverse.get(&c).copied())
                .collect::<Option<Vec<u8>>>();
            tokens[id as usize] =
                Some(bytes.ok_or(format!("vocab entry {s:?} is not byte-level encoded"))?);
        }
        let tokens: Vec<Vec<u8>> = tokens
            .into_iter()
            .collect::<Option<_>>()
            .ok_or("vocab ids have gaps")?;
        let pattern = split_pattern(&doc["pre_tokenizer"])
            .ok_or("pre_tokenizer is not byte-level (Split regex and/or ByteLevel)")?;
        let specials: Vec<(u64, String)> = doc["added_tokens"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| Some((t["id"].as_u64()?, t["content"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut sorted = specials.clone();
        sorted.sort();
        for (i, (id, s)) in sorted.iter().enumerate() {
            if *id != (tokens.len() + i) as u64 {
                return Err(format!(
                    "added token {s:?} has id {id}, expected {} (specials follow the vocab)",
                    tokens.len() + i
                ));
            }
        }
        let names: Vec<String> = sorted.into_iter().map(|(_, s)| s).collect();
        let nfc = nfc_normalizer(&doc["normalizer"])?;
        let splitter = Splitter::new(&pattern)?;
        Tokenizer::new(splitter, tokens, &names)
            .map(|t| t.with_nfc(nfc))
            .map_err(|e| e.to_string())
    }
}

/// The split regex of a byte-level pre-tokenizer: an explicit `Split` pattern, or GPT-2's
/// when `ByteLevel` splits by itself (`use_regex`).
fn split_pattern(pre: &Value) -> Option<String> {
    match pre["type"].as_str()? {
        "Split" => pre["pattern"]["Regex"].as_str().map(str::to_string),
        "ByteLevel" => {
            (pre["use_regex"].as_bool() != Some(false)).then(|| GPT2_PATTERN.to_string())
        }
        "Sequence" => pre["pretokenizers"]
            .as_array()?
            .iter()
            .find_map(split_pattern),
        _ => None,
    }
}

/// Whether a `normalizer` is NFC (alone or as a one-step sequence); None is no normalizer.
/// Any other normalizer would change text in ways frugal does not reproduce, so it is refused.
fn nfc_normalizer(n: &Value) -> std::result::Result<bool, String> {
    match n["type"].as_str() {
        None if n.is_null() => Ok(false),
        Some("NFC") => Ok(true),
        Some("Sequence") => match n["normalizers"].as_array().map(Vec::as_slice) {
            Some([]) => Ok(false),
            Some([one]) => nfc_normalizer(one),
            _ => {
                Err("normalizer is a sequence of several steps; frugal applies NFC or none".into())
            }
        },
        other => Err(format!(
            "normalizer {} is not supported; frugal applies NFC or none",
            other.unwrap_or("(untyped)")
        )),
    }
}
