//! `frugal data tokenize`: prepared documents → token shards plus a manifest. Every document
//! starts with `<|bos|>`, so the loader can align training sequences to document starts.

use crate::jsonl::read_docs;
use crate::shards::{ShardInfo, ShardWriter};
use base::{Error, Result};
use bpe::Tokenizer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MANIFEST: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub tokenizer_fingerprint: String,
    pub vocab_size: usize,
    pub bos_id: u32,
    pub train: Vec<ShardInfo>,
    pub val: Vec<ShardInfo>,
    /// UTF-8 bytes of the documents of each split, for bits-per-byte.
    pub train_bytes: u64,
    pub val_bytes: u64,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::input(
                path.display().to_string(),
                e.to_string(),
                "re-run `frugal data tokenize`",
            )
        })
    }

    pub fn tokens(&self, split: &[ShardInfo]) -> u64 {
        split.iter().map(|s| s.tokens).sum()
    }
}

/// Tokenizes `prepared/{train,val}.jsonl.zst` into `out_dir` with the tokenizer at
/// `tokenizer`; the ledger in `out_dir` carries the data and tokenizer stages' entries.
pub fn tokenize(
    prepared: &Path,
    tokenizer: &Path,
    out_dir: &Path,
    shard_tokens: usize,
) -> Result<Manifest> {
    let tok = &Tokenizer::load(tokenizer).map_err(|e| {
        Error::input(
            tokenizer.display().to_string(),
            e.to_string(),
            "run `frugal tokenizer train` first",
        )
    })?;
    let bos = tok.special_id("<|bos|>").ok_or_else(|| {
        Error::input(
            "tokenizer",
            "has no <|bos|> special token",
            "train the tokenizer with frugal, which adds it",
        )
    })?;
    let upstream = [prepared, &ledger::dir_of(tokenizer)];
    let mut meter = ledger::Meter::start_after(out_dir, "tokenize", None, &upstream)?;
    let mut splits = Vec::new();
    let mut bytes = Vec::new();
    for name in ["train", "val"] {
        let docs = read_docs(&prepared.join(format!("{name}.jsonl.zst")))?;
        let mut writer = ShardWriter::new(out_dir, name, tok, shard_tokens)?;
        let pb = base::progress::bar(docs.len() as u64, &format!("tokenize {name}"));
        // Batches bound memory while keeping both cores busy; order is preserved.
        for batch in docs.chunks(256) {
            let encoded: Vec<Vec<u32>> = batch.par_iter().map(|d| tok.encode(&d.text)).collect();
            for ids in encoded {
                let mut doc = Vec::with_capacity(ids.len() + 1);
                doc.push(bos);
                doc.extend_from_slice(&ids);
                writer.push_doc(&doc)?;
            }
            pb.inc(batch.len() as u64);
        }
        pb.finish_and_clear();
        bytes.push(docs.iter().map(|d| d.text.len() as u64).sum::<u64>());
        splits.push(writer.finish()?);
    }
    let val = splits.pop().unwrap_or_default();
    let train = splits.pop().unwrap_or_default();
    let manifest = Manifest {
        tokenizer_fingerprint: format!("{:016x}", tok.fingerprint()),
        vocab_size: tok.vocab_size(),
        bos_id: bos,
        train,
        val,
        train_bytes: bytes[0],
        val_bytes: bytes[1],
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::input("manifest", e.to_string(), "report this as a bug"))?;
    let path = out_dir.join(MANIFEST);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    let tokens = manifest.tokens(&manifest.train) + manifest.tokens(&manifest.val);
    meter.add(tokens, 0.0);
    meter.detail(format!(
        "{:.1} MB of text",
        (manifest.train_bytes + manifest.val_bytes) as f64 / 1e6
    ));
    meter.finish()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonl::JsonlWriter;
    use crate::shards::Shard;
    use crate::Doc;

    #[test]
    fn documents_become_bos_separated_shards() {
        let dir = std::env::temp_dir().join(format!("frugal-tokenize-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let texts = [
            "first document",
            "second one, longer than the first",
            "third",
        ];
        for (name, docs) in [("train", &texts[..2]), ("val", &texts[2..])] {
            let mut w = JsonlWriter::create(&dir.join(format!("{name}.jsonl.zst"))).unwrap();
            for (i, t) in docs.iter().enumerate() {
                w.write(&Doc {
                    id: format!("{name}{i}"),
                    source: "s".into(),
                    text: t.to_string(),
                })
                .unwrap();
            }
            w.finish().unwrap();
        }
        let mut t = bpe::Trainer::new(bpe::TrainerOptions {
            vocab_size: 300,
            ..Default::default()
        })
        .unwrap();
        t.count(&texts);
        let tok = t.finish().unwrap();
        tok.save(&dir.join("tokenizer.json")).unwrap();
        let m = tokenize(
            &dir,
            &dir.join("tokenizer.json"),
            &dir.join("shards"),
            1 << 20,
        )
        .unwrap();
        assert_eq!(Manifest::load(&dir.join("shards")).unwrap(), m);
        let shard = Shard::open(
            &dir.join("shards").join(&m.train[0].file),
            Some(tok.fingerprint()),
        )
        .unwrap();
        let ids: Vec<u32> = (0..shard.len()).map(|i| shard.get(i)).collect();
        let docs: Vec<&[u32]> = ids.split(|&t| t == m.bos_id).skip(1).collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(tok.decode(docs[1]).unwrap(), texts[1].as_bytes());
        assert_eq!(
            (m.val[0].docs, m.train_bytes),
            (1, (texts[0].len() + texts[1].len()) as u64)
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
