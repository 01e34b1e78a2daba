//! Byte-level BPE tokenizer: training, encoding, decoding, and the two file formats the field
//! uses — Hugging Face `tokenizer.json` and tiktoken rank files.
//!
//! A tokenizer is its ordinary tokens in rank order (token id = rank = merge priority, the first
//! 256 being the single bytes), its special tokens after them, and a pre-split pattern. Encoding
//! merges, inside each pre-split piece, the adjacent pair whose concatenation has the lowest rank
//! until none is left — tiktoken's rule, which equals applying the learned merges in order.
//! Short pieces merge (`encode`); pieces over 128 bytes, which merging would take quadratic
//! time on, get the same tokens from a linear-time search (`backtrack`), which starts from the
//! longest token ending at every byte (`endings`, one automaton pass). Pre-splitting is
//! `pretokenize`. This crate has no tensor or async dependencies.

mod backtrack;
mod encode;
mod endings;
mod error;
pub mod hf;
pub mod pretokenize;
pub mod tiktoken;
pub mod train;

pub use error::{Error, Result};
pub use pretokenize::{Splitter, GPT2_PATTERN, GPT4_PATTERN};
pub use train::{Trainer, TrainerOptions};

use rustc_hash::FxHashMap;
use std::sync::{Arc, OnceLock};

/// Special tokens frugal's chat format uses (nanochat's set plus system turns).
pub const DEFAULT_SPECIALS: &[&str] = &[
    "<|bos|>",
    "<|system_start|>",
    "<|system_end|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
];

#[derive(Clone, Debug)]
pub struct Tokenizer {
    splitter: Splitter,
    /// Bytes of ordinary token `id`, in rank order.
    tokens: Vec<Vec<u8>>,
    ranks: FxHashMap<Vec<u8>, u32>,
    /// Id of each single byte (every byte-level vocabulary has all 256).
    byte_ids: [u32; 256],
    /// Special tokens and their ids (which follow the ordinary tokens).
    specials: Vec<(String, u32)>,
    /// Bytes of the longest ordinary token.
    longest: usize,
    /// Text is put in Unicode normal form C before it is split (Qwen2's tokenizers do this).
    nfc: bool,
    /// The linear-time encoder of long pieces, built at the first one (None where the
    /// vocabulary's merges are out of order; long pieces are then merged).
    backtrack: OnceLock<Option<Arc<backtrack::Backtrack>>>,
}

thread_local! {
    /// The search's buffers, kept on each thread between calls: a megabyte piece needs about
    /// 6 MB of them, and touching fresh pages costs a tenth of its encoding.
    static SEARCH_SCRATCH: std::cell::RefCell<backtrack::Scratch> = Default::default();
}

impl Tokenizer {
    /// Builds a tokenizer from ordinary tokens in rank order and special token names.
    /// Token bytes must be unique, non-empty, and include every single byte.
    pub fn new(
        splitter: Splitter,
        tokens: Vec<Vec<u8>>,
        specials: &[impl AsRef<str>],
    ) -> Result<Self> {
        let mut ranks = FxHashMap::default();
        for (id, t) in tokens.iter().enumerate() {
            if t.is_empty() || ranks.insert(t.clone(), id as u32).is_some() {
                return Err(Error::Invalid(format!(
                    "token {id} ({:?}) is empty or repeats an earlier token",
                    String::from_utf8_lossy(t)
                )));
            }
        }
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = *ranks
                .get(&[b as u8][..])
                .ok_or_else(|| Error::Invalid(format!("byte {b:#04x} has no token")))?;
        }
        let n = tokens.len() as u32;
        let mut seen = std::collections::HashSet::new();
        let mut list = Vec::new();
        for (i, s) in specials.iter().enumerate() {
            let s = s.as_ref();
            if s.is_empty() || !seen.insert(s.to_string()) {
                return Err(Error::Invalid(format!(
                    "special token {s:?} is empty or repeated"
                )));
            }
            list.push((s.to_string(), n + i as u32));
        }
        let tokens_longest = tokens.iter().map(Vec::len).max().unwrap_or(1);
        Ok(Tokenizer {
            splitter,
            tokens,
            ranks,
            byte_ids,
            specials: list,
            longest: tokens_longest,
            nfc: false,
            backtrack: OnceLock::new(),
        })
    }

    /// A tokenizer with no merges: one token per byte (id = byte value), then `specials`.
    /// Useful for tests, where token ids are readable.
    pub fn bytes_only(specials: &[impl AsRef<str>]) -> Result<Self> {
        let tokens = (0..=255u8).map(|b| vec![b]).collect();
        Self::new(Splitter::Gpt4, tokens, specials)
    }

    /// Ordinary plus special tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len() + self.specials.len()
    }

    pub fn n_ordinary(&self) -> usize {
        self.tokens.len()
    }

    /// The longest ordinary token, in bytes: text of more than n times this many bytes cannot
    /// encode to n tokens or fewer, which bounds the input worth encoding against a budget.
    pub fn max_token_bytes(&self) -> usize {
        self.longest
    }

    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    pub fn special_id(&self, name: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(s, _)| s == name)
            .map(|&(_, id)| id)
    }

    pub fn pattern(&self) -> &str {
        self.splitter.pattern()
    }

    /// The same tokenizer, putting text in Unicode normal form C before encoding it (a
    /// tokenizer.json `normalizer` of type NFC) when `on`.
    pub fn with_nfc(mut self, on: bool) -> Self {
        self.nfc = on;
        self
    }

    /// Whether text is NFC-normalised before encoding.
    pub fn nfc(&self) -> bool {
        self.nfc
    }

    /// `text`, NFC-normalised when this tokenizer normalises (borrowed when already normal).
    fn normalized<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
        if self.nfc && is_nfc_quick(text.chars()) != IsNormalized::Yes {
            std::borrow::Cow::Owned(text.nfc().collect())
        } else {
            std::borrow::Cow::Borrowed(text)
        }
    }

    /// Encodes text, treating special-token strings in it as ordinary text (the safe default
    /// for untrusted input: a user cannot inject `<|assistant_start|>`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3);
        self.encode_into(text, &mut out);
        out
    }

    /// Encodes text, turning occurrences of special-token strings into their ids.
    pub fn encode_with_specials(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3);
        let mut rest = text;
        while !rest.is_empty() {
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|pos| (pos, s.len(), *id)))
                .min();
            match next {
                Some((pos, len, id)) => {
                    self.encode_into(&rest[..pos], &mut out);
                    out.push(id);
                    rest = &rest[pos + len..];
                }
                None => {
                    self.encode_into(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    /// Encodes arbitrary bytes: valid UTF-8 runs are encoded as text, each invalid byte becomes
    /// its byte token, so decode(encode_bytes(b)) == b for every byte string.
    pub fn encode_bytes(&self, mut bytes: &[u8]) -> Vec<u32> {
        let mut out = Vec::with_capacity(bytes.len() / 3);
        while !bytes.is_empty() {
            match std::str::from_utf8(bytes) {
                Ok(s) => {
                    self.encode_into(s, &mut out);
                    break;
                }
                Err(e) => {
                    let (valid, rest) = bytes.split_at(e.valid_up_to());
                    // SAFETY-free: valid_up_to guarantees this prefix is UTF-8.
                    self.encode_into(std::str::from_utf8(valid).unwrap_or_default(), &mut out);
                    let bad = e.error_len().unwrap_or(rest.len());
                    out.extend(rest[..bad].iter().map(|&b| self.byte_ids[b as usize]));
                    bytes = &rest[bad..];
                }
            }
        }
        out
    }

    /// Encodes many texts in parallel on the current rayon pool.
    pub fn encode_batch(&self, texts: &[impl AsRef<str> + Sync]) -> Vec<Vec<u32>> {
        use rayon::prelude::*;
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// `encode` by merging alone, the reference its linear-time search is checked against:
    /// O(n²) on a piece of n bytes, so not for untrusted input.
    pub fn encode_by_merging(&self, text: &str) -> Vec<u32> {
        let (mut out, mut parts) = (Vec::new(), Vec::new());
        self.splitter.split(&self.normalized(text), |piece| {
            encode::encode_piece(
                piece.as_bytes(),
                &self.ranks,
                &self.byte_ids,
                &mut out,
                &mut parts,
            )
        });
        out
    }

    fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut parts = Vec::new();
        self.splitter.split(&self.normalized(text), |piece| {
            let piece = piece.as_bytes();
            if piece.len() > backtrack::LONG_PIECE {
                if let Some(b) = self.backtrack() {
                    if SEARCH_SCRATCH.with_borrow_mut(|s| b.encode_keeping(piece, out, s)) {
                        return;
                    }
                }
            }
            encode::encode_piece(piece, &self.ranks, &self.byte_ids, out, &mut parts)
        });
    }

    fn backtrack(&self) -> Option<&backtrack::Backtrack> {
        self.backtrack
            .get_or_init(|| {
                backtrack::Backtrack::new(&self.tokens, &self.ranks, &self.byte_ids).map(Arc::new)
            })
            .as_deref()
    }

    /// The bytes of a token sequence; special tokens decode to their names.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.tokens.get(id as usize) {
                Some(t) => out.extend_from_slice(t),
                None => {
                    let (name, _) = self
                        .specials
                        .iter()
                        .find(|&&(_, s)| s == id)
                        .ok_or(Error::UnknownId(id, self.vocab_size()))?;
                    out.extend_from_slice(name.as_bytes());
                }
            }
        }
        Ok(out)
    }

    /// `decode`, with invalid UTF-8 (a multi-byte character cut between tokens) replaced by U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode(ids)?).into_owned())
    }

    /// A stable 64-bit fingerprint (FNV-1a) of the vocabulary, specials and pattern, stored in
    /// token shards so that a shard is never read with another tokenizer.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes.iter().chain(&[0xFF]) {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
        };
        eat(self.pattern().as_bytes());
        for t in &self.tokens {
            eat(t);
        }
        for (s, _) in &self.specials {
            eat(s.as_bytes());
        }
        if self.nfc {
            eat(b"normalizer: NFC");
        }
        h
    }
}
