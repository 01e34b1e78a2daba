//! tiktoken rank files: one `base64(token bytes) rank` line per ordinary token. Special tokens
//! and the split pattern are not part of the format; tiktoken takes them as arguments.

use crate::pretokenize::Splitter;
use crate::{Error, Result, Tokenizer};
use std::path::Path;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let v = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                B64[(v >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

impl Tokenizer {
    /// The rank file text of the ordinary tokens.
    pub fn to_tiktoken(&self) -> String {
        let mut out = String::new();
        for id in 0..self.n_ordinary() as u32 {
            let bytes = self.token_bytes(id).unwrap_or_default();
            out.push_str(&format!("{} {id}\n", b64_encode(bytes)));
        }
        out
    }

    pub fn save_tiktoken(&self, path: &Path) -> Result<()> {
        crate::hf::write_atomic(path, self.to_tiktoken().as_bytes())
    }

    /// Reads a rank file; ranks must be 0..n without gaps, the first 256 the single bytes.
    pub fn load_tiktoken(path: &Path, pattern: &str, specials: &[impl AsRef<str>]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })?;
        // Ranks run 0..n over the file's n tokens: a larger one is refused before anything is
        // allocated for it (a rank of 16 million would otherwise cost hundreds of megabytes).
        let listed = text.lines().filter(|l| !l.trim().is_empty()).count();
        let mut tokens: Vec<Option<Vec<u8>>> = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let bad = |msg: &str| {
                Error::file(
                    path,
                    format!("line {}: {msg}", n + 1),
                    "expected `<base64 bytes> <rank>` per line",
                )
            };
            let (b64, rank) = line.trim().split_once(' ').ok_or_else(|| bad("no space"))?;
            let bytes = b64_decode(b64).ok_or_else(|| bad("invalid base64"))?;
            let rank: usize = rank
                .trim()
                .parse()
                .map_err(|_| bad("rank is not a number"))?;
            if rank >= listed {
                return Err(bad(&format!(
                    "rank {rank}, but the file lists {listed} tokens (ranks run 0..{listed})"
                )));
            }
            if tokens.len() <= rank {
                tokens.resize(rank + 1, None);
            }
            tokens[rank] = Some(bytes);
        }
        let tokens: Vec<Vec<u8>> = tokens
            .into_iter()
            .enumerate()
            .map(|(r, t)| {
                t.ok_or_else(|| {
                    Error::file(
                        path,
                        format!("rank {r} is missing"),
                        "ranks must run 0..n without gaps",
                    )
                })
            })
            .collect::<Result<_>>()?;
        let splitter = Splitter::new(pattern).map_err(Error::Invalid)?;
        Tokenizer::new(splitter, tokens, specials).map_err(|e| {
            Error::file(
                path,
                e.to_string(),
                "the file is not a byte-level BPE rank file",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for bytes in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"\x00\xff\x80 hello",
        ] {
            assert_eq!(b64_decode(&b64_encode(bytes)).unwrap(), bytes);
        }
        assert_eq!(b64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64_encode(b"fo"), "Zm8=");
        assert!(b64_decode("a*b").is_none());
    }

    #[test]
    fn a_rank_past_the_files_tokens_is_refused_before_allocation() {
        let bytes = Tokenizer::bytes_only(&[] as &[&str]).unwrap();
        let mut text = bytes.to_tiktoken();
        text += &format!("{} 16777215\n", b64_encode(b"ab"));
        let path =
            std::env::temp_dir().join(format!("frugal-rank-{}.tiktoken", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let e = Tokenizer::load_tiktoken(&path, crate::GPT4_PATTERN, &[] as &[&str])
            .err()
            .unwrap()
            .to_string();
        std::fs::remove_file(&path).ok();
        assert!(
            e.contains("rank 16777215, but the file lists 257 tokens"),
            "{e}"
        );
    }
}
