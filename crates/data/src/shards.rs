//! Token shards: the tokenized corpus as flat binary files the trainer memory-maps.
//!
//! Layout of a shard (little-endian):
//! ```text
//! offset  size  field
//!      0     8  magic "FRGLTOK\0"
//!      8     4  version (1)
//!     12     4  bytes per token: 2 (u16, vocab ≤ 65536) or 4 (u32)
//!     16     8  token count
//!     24     8  document count
//!     32     8  tokenizer fingerprint (bpe::Tokenizer::fingerprint)
//!     40     4  vocabulary size
//!     44    20  reserved (zero)
//!     64     …  tokens; every document starts with <|bos|>
//! ```
//! A shard is written to a temporary name and renamed when complete, and its length must
//! equal header + count × width, so a torn or truncated shard is always detected.

use base::{Error, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"FRGLTOK\0";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    pub width: u32,
    pub tokens: u64,
    pub docs: u64,
    pub fingerprint: u64,
    pub vocab_size: u32,
}

impl ShardHeader {
    fn to_bytes(self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.width.to_le_bytes());
        h[16..24].copy_from_slice(&self.tokens.to_le_bytes());
        h[24..32].copy_from_slice(&self.docs.to_le_bytes());
        h[32..40].copy_from_slice(&self.fingerprint.to_le_bytes());
        h[40..44].copy_from_slice(&self.vocab_size.to_le_bytes());
        h
    }

    fn parse(b: &[u8], path: &Path) -> Result<Self> {
        let bad = |msg: String| {
            Error::input(
                path.display().to_string(),
                msg,
                "re-run `frugal data tokenize` to rewrite the shard",
            )
        };
        if b.len() < HEADER_BYTES {
            return Err(bad(format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header",
                b.len()
            )));
        }
        if &b[..8] != MAGIC {
            return Err(bad("wrong magic: not a frugal token shard".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        if u32_at(8) != VERSION {
            return Err(bad(format!(
                "version {} (this frugal reads version {VERSION})",
                u32_at(8)
            )));
        }
        let h = ShardHeader {
            width: u32_at(12),
            tokens: u64_at(16),
            docs: u64_at(24),
            fingerprint: u64_at(32),
            vocab_size: u32_at(40),
        };
        if h.width != 2 && h.width != 4 {
            return Err(bad(format!(
                "token width {} at offset 12 (expected 2 or 4)",
                h.width
            )));
        }
        // Checked: a header's count is untrusted, and tokens × width can wrap.
        let Some(want) = h
            .tokens
            .checked_mul(h.width as u64)
            .and_then(|body| body.checked_add(HEADER_BYTES as u64))
        else {
            return Err(bad(format!(
                "the header's token count {} at offset 16 is too large for any file",
                h.tokens
            )));
        };
        if b.len() as u64 != want {
            return Err(bad(format!(
                "file has {} bytes, the header promises {want} ({} tokens): truncated or torn",
                b.len(),
                h.tokens
            )));
        }
        Ok(h)
    }
}

/// A memory-mapped shard.
pub struct Shard {
    pub path: PathBuf,
    pub header: ShardHeader,
    map: Mmap,
}

impl Shard {
    /// Opens and validates a shard; `fingerprint`, when given, must match the shard's tokenizer.
    pub fn open(path: &Path, fingerprint: Option<u64>) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: shards are written once (temp + rename) and never modified in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = ShardHeader::parse(&map, path)?;
        if let Some(f) = fingerprint {
            if f != header.fingerprint {
                return Err(Error::input(
                    path.display().to_string(),
                    format!("tokenized with another tokenizer (fingerprint {:016x}, expected {f:016x})", header.fingerprint),
                    "re-tokenize with this run's tokenizer, or use the tokenizer the shard was made with",
                ));
            }
        }
        let shard = Shard {
            path: path.to_path_buf(),
            header,
            map,
        };
        shard.check_ids()?;
        Ok(shard)
    }

    /// Every token id below the header's vocabulary size: a damaged shard is refused here, by
    /// name, rather than reaching the model's embedding as an id it has no row for. One pass
    /// over the file (a fraction of a second per hundred million tokens).
    fn check_ids(&self) -> Result<()> {
        let vocab = self.header.vocab_size;
        let bad = (0..self.len()).find(|&i| self.get(i) >= vocab);
        match bad {
            None => Ok(()),
            Some(i) => Err(Error::input(
                self.path.display().to_string(),
                format!(
                    "token {i} is id {}, outside the vocabulary of {vocab} the header names: the shard is damaged",
                    self.get(i)
                ),
                "re-tokenize the prepared data (`frugal data tokenize`)",
            )),
        }
    }

    pub fn len(&self) -> usize {
        self.header.tokens as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        let body = &self.map[HEADER_BYTES..];
        match self.header.width {
            2 => u16::from_le_bytes([body[2 * i], body[2 * i + 1]]) as u32,
            _ => u32::from_le_bytes(body[4 * i..4 * i + 4].try_into().unwrap_or_default()),
        }
    }

    /// Copies tokens `start..start + out.len()` into `out`.
    pub fn read(&self, start: usize, out: &mut [u32]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.get(start + k);
        }
    }
}

/// Writes documents into numbered shards of at most `max_tokens` tokens each.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    max_tokens: usize,
    width: u32,
    fingerprint: u64,
    vocab_size: u32,
    buf: Vec<u32>,
    docs: u64,
    written: Vec<ShardInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub tokens: u64,
    pub docs: u64,
}

impl ShardWriter {
    pub fn new(
        dir: &Path,
        prefix: &str,
        tokenizer: &bpe::Tokenizer,
        max_tokens: usize,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let vocab = tokenizer.vocab_size();
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            max_tokens: max_tokens.max(1),
            width: if vocab <= 1 << 16 { 2 } else { 4 },
            fingerprint: tokenizer.fingerprint(),
            vocab_size: vocab as u32,
            buf: Vec::new(),
            docs: 0,
            written: Vec::new(),
        })
    }

    /// Appends one document's tokens (which should begin with <|bos|>). Documents are never
    /// split across shards unless a single document exceeds `max_tokens`.
    pub fn push_doc(&mut self, tokens: &[u32]) -> Result<()> {
        if let Some(&id) = tokens.iter().find(|&&id| id >= self.vocab_size) {
            return Err(Error::input(
                self.dir.display().to_string(),
                format!(
                    "a document holds token id {id}, outside the tokenizer's vocabulary of {}",
                    self.vocab_size
                ),
                "encode documents with the tokenizer the shards are written for",
            ));
        }
        if !self.buf.is_empty() && self.buf.len() + tokens.len() > self.max_tokens {
            self.flush()?;
        }
        self.buf.extend_from_slice(tokens);
        self.docs += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let name = format!("{}_{:05}.bin", self.prefix, self.written.len());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let header = ShardHeader {
            width: self.width,
            tokens: self.buf.len() as u64,
            docs: self.docs,
            fingerprint: self.fingerprint,
            vocab_size: self.vocab_size,
        };
        let mut bytes = Vec::with_capacity(HEADER_BYTES + self.buf.len() * self.width as usize);
        bytes.extend_from_slice(&header.to_bytes());
        for &t in &self.buf {
            if self.width == 2 {
                bytes.extend_from_slice(&(t as u16).to_le_bytes());
            } else {
                bytes.extend_from_slice(&t.to_le_bytes());
            }
        }
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        self.written.push(ShardInfo {
            file: name,
            tokens: header.tokens,
            docs: header.docs,
        });
        self.buf.clear();
        self.docs = 0;
        Ok(())
    }

    /// Writes the last shard and returns the list of shards written.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>> {
        self.flush()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> bpe::Tokenizer {
        let mut t = bpe::Trainer::new(bpe::TrainerOptions {
            vocab_size: 300,
            ..Default::default()
        })
        .unwrap();
        t.count(&["hello world, hello shards"]);
        t.finish().unwrap()
    }

    #[test]
    fn write_read_and_detect_damage() {
        let dir = std::env::temp_dir().join(format!("frugal-shards-{}", std::process::id()));
        let tok = tokenizer();
        let mut w = ShardWriter::new(&dir, "train", &tok, 10).unwrap();
        let docs: Vec<Vec<u32>> = vec![
            vec![1, 2, 3, 4],
            vec![5, 6, 7],
            vec![8, 9, 10, 11, 12],
            vec![270; 12],
        ];
        for d in &docs {
            w.push_doc(d).unwrap();
        }
        assert!(
            w.push_doc(&[1, 271]).is_err(),
            "an id past the vocabulary is refused"
        );
        let infos = w.finish().unwrap();
        assert_eq!(
            infos.iter().map(|i| i.tokens).collect::<Vec<_>>(),
            [7, 5, 12]
        );
        let all: Vec<u32> = infos
            .iter()
            .flat_map(|i| {
                let s = Shard::open(&dir.join(&i.file), Some(tok.fingerprint())).unwrap();
                (0..s.len()).map(move |k| s.get(k))
            })
            .collect();
        assert_eq!(all, docs.concat());

        let first = dir.join(&infos[0].file);
        let e = Shard::open(&first, Some(tok.fingerprint() ^ 1))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another tokenizer"), "{e}");
        let bytes = std::fs::read(&first).unwrap();
        std::fs::write(dir.join("short.bin"), &bytes[..bytes.len() - 2]).unwrap();
        let e = Shard::open(&dir.join("short.bin"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("truncated") && e.contains("short.bin"), "{e}");
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        std::fs::write(dir.join("magic.bin"), &wrong).unwrap();
        assert!(Shard::open(&dir.join("magic.bin"), None)
            .err()
            .unwrap()
            .to_string()
            .contains("magic"));
        std::fs::write(dir.join("tiny.bin"), b"FRG").unwrap();
        assert!(Shard::open(&dir.join("tiny.bin"), None).is_err());
        // A token count that wraps when multiplied by the width.
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&(u64::MAX / 2 + 2).to_le_bytes());
        std::fs::write(dir.join("huge.bin"), &huge).unwrap();
        let e = Shard::open(&dir.join("huge.bin"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("too large"), "{e}");
        // An id past the vocabulary: refused at open, not by the model.
        let mut id = bytes.clone();
        let at = bytes.len() - 2;
        id[at..].copy_from_slice(&60000u16.to_le_bytes());
        std::fs::write(dir.join("id.bin"), &id).unwrap();
        let e = Shard::open(&dir.join("id.bin"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("outside the vocabulary") && e.contains("id.bin"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
