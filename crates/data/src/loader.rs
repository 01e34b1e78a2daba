//! The pretraining data loader: memory-mapped token shards → (inputs, targets) batches.
//!
//! Training windows of seq_len + 1 tokens start at a document's `<|bos|>` or a whole number of
//! seq_len past it, so every window begins at a document boundary or a clean cut inside a long
//! document (books), never at an arbitrary offset. Their order is a permutation drawn from
//! (seed, epoch) (`Shuffled`, which SFT's rows and the preference stages' pairs follow too); the
//! cursor (epoch, index) is all a checkpoint needs to resume the exact stream.

use crate::shards::{Shard, ShardInfo};
use crate::tokenize::Manifest;
use base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tensor::Rng;

/// Shards read as one token sequence.
pub struct TokenStream {
    shards: Vec<Shard>,
    /// Global index of each shard's first token.
    starts: Vec<usize>,
    len: usize,
}

impl TokenStream {
    pub fn open(dir: &Path, infos: &[ShardInfo], fingerprint: u64) -> Result<Self> {
        let mut shards = Vec::new();
        let (mut starts, mut len) = (Vec::new(), 0);
        for info in infos {
            let s = Shard::open(&dir.join(&info.file), Some(fingerprint))?;
            if s.len() as u64 != info.tokens {
                return Err(Error::input(
                    dir.join(&info.file).display().to_string(),
                    format!("has {} tokens, manifest.json says {}", s.len(), info.tokens),
                    "re-run `frugal data tokenize`",
                ));
            }
            starts.push(len);
            len += s.len();
            shards.push(s);
        }
        Ok(TokenStream {
            shards,
            starts,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies tokens start..start + out.len() (which may span shards).
    pub fn read(&self, start: usize, out: &mut [u32]) {
        let mut k = self.starts.partition_point(|&s| s <= start) - 1;
        let mut pos = start;
        let mut done = 0;
        while done < out.len() {
            let local = pos - self.starts[k];
            let n = (self.shards[k].len() - local).min(out.len() - done);
            self.shards[k].read(local, &mut out[done..done + n]);
            done += n;
            pos += n;
            k += 1;
        }
    }

    /// Window starts: each `bos` position, and every `seq_len` after it within its document,
    /// while a full window of seq_len + 1 tokens fits.
    pub fn window_starts(&self, bos: u32, seq_len: usize) -> Vec<u64> {
        let mut buf = vec![0u32; 1 << 16];
        let mut docs = Vec::new();
        for chunk in (0..self.len).step_by(buf.len()) {
            let n = buf.len().min(self.len - chunk);
            self.read(chunk, &mut buf[..n]);
            docs.extend(
                buf[..n]
                    .iter()
                    .enumerate()
                    .filter(|(_, &t)| t == bos)
                    .map(|(i, _)| chunk + i),
            );
        }
        let mut starts = Vec::new();
        for (i, &d) in docs.iter().enumerate() {
            let end = docs.get(i + 1).copied().unwrap_or(self.len);
            let mut s = d;
            while s < end && s + seq_len < self.len {
                starts.push(s as u64);
                s += seq_len;
            }
        }
        starts
    }
}

/// Position in the training stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub index: u64,
}

/// The items 0..n in a fresh order each epoch, a fixed function of (seed, epoch), read at a
/// cursor: the one shuffle of every trainer (pretraining's windows, SFT's packed rows, the
/// preference stages' pairs and prompts), so a checkpoint's cursor resumes any of them exactly.
pub struct Shuffled {
    order: Vec<u32>,
    seed: u64,
    cursor: Cursor,
}

impl Shuffled {
    /// `n` items (at least one) from `cursor` on.
    pub fn new(n: usize, seed: u64, cursor: Cursor) -> Self {
        assert!(n > 0, "nothing to shuffle");
        let mut s = Shuffled {
            order: (0..n as u32).collect(),
            seed,
            cursor,
        };
        s.shuffle();
        s
    }

    fn shuffle(&mut self) {
        let mut rng = Rng::new(self.seed ^ self.cursor.epoch.wrapping_mul(0x9E3779B97F4A7C15));
        for (i, o) in self.order.iter_mut().enumerate() {
            *o = i as u32;
        }
        for i in (1..self.order.len()).rev() {
            self.order.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Where the next item comes from.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The next item, moving to a new epoch (and order) when this one is done.
    pub fn next_index(&mut self) -> usize {
        if self.cursor.index as usize >= self.order.len() {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                index: 0,
            };
            self.shuffle();
        }
        let i = self.order[self.cursor.index as usize] as usize;
        self.cursor.index += 1;
        i
    }
}

pub struct Loader {
    stream: TokenStream,
    starts: Vec<u64>,
    windows: Shuffled,
    seq_len: usize,
    window: Vec<u32>,
}

impl Loader {
    pub fn new(
        stream: TokenStream,
        bos: u32,
        seq_len: usize,
        seed: u64,
        cursor: Cursor,
    ) -> Result<Self> {
        let starts = stream.window_starts(bos, seq_len);
        if starts.is_empty() {
            return Err(Error::input(
                "training shards",
                format!(
                    "hold {} tokens, fewer than one window of {}",
                    stream.len(),
                    seq_len + 1
                ),
                "prepare more data or shorten train.seq_len",
            ));
        }
        Ok(Loader {
            windows: Shuffled::new(starts.len(), seed, cursor),
            stream,
            starts,
            seq_len,
            window: vec![0; seq_len + 1],
        })
    }

    pub fn windows_per_epoch(&self) -> usize {
        self.starts.len()
    }

    /// Where the next window comes from.
    pub fn cursor(&self) -> Cursor {
        self.windows.cursor()
    }

    /// Fills `tokens` and `targets` (each batch × seq_len) with the next windows.
    pub fn next_batch(&mut self, tokens: &mut [u32], targets: &mut [u32]) {
        self.next_batch_of(tokens, targets, 0, 1);
    }

    /// Rank `rank`'s part of the next global batch of `world` × batch windows: windows
    /// rank·batch.. of it. Every rank advances the same cursor past the whole global batch,
    /// so the ranks' slices are disjoint, together they are what one process with a batch
    /// `world` times larger would read, and the cursor resumes at any world size.
    pub fn next_batch_of(
        &mut self,
        tokens: &mut [u32],
        targets: &mut [u32],
        rank: usize,
        world: usize,
    ) {
        let t = self.seq_len;
        let b = tokens.len() / t;
        let mut rows = tokens.chunks_exact_mut(t).zip(targets.chunks_exact_mut(t));
        for k in 0..world * b {
            let w = self.windows.next_index();
            if k / b == rank {
                let (x, y) = rows.next().expect("b rows");
                self.stream.read(self.starts[w] as usize, &mut self.window);
                x.copy_from_slice(&self.window[..t]);
                y.copy_from_slice(&self.window[1..]);
            }
        }
    }
}

/// Validation windows: (seq_len + 1)-token windows at multiples of seq_len, at most
/// `max_tokens / seq_len` of them, spread evenly over the whole split. Capped, the first windows
/// would be a handful of documents; spread, they sample all of it. The choice depends only on
/// the split, the length and the cap, so the training log, `frugal eval` and any other run on
/// the same shards that asks for as many tokens see the same bytes. Uncapped, every window.
pub fn validation_windows(
    stream: &TokenStream,
    seq_len: usize,
    max_tokens: usize,
) -> Vec<Vec<u32>> {
    let held = stream.len().saturating_sub(1) / seq_len;
    let n = (max_tokens / seq_len).min(held);
    (0..n)
        .map(|i| {
            let mut w = vec![0u32; seq_len + 1];
            stream.read(i * held / n * seq_len, &mut w);
            w
        })
        .collect()
}

/// Opens the train and validation streams of a tokenized directory, checking the tokenizer.
pub fn open_splits(
    dir: &Path,
    tokenizer: &bpe::Tokenizer,
) -> Result<(Manifest, TokenStream, TokenStream)> {
    let m = Manifest::load(dir)?;
    let fp = tokenizer.fingerprint();
    if m.tokenizer_fingerprint != format!("{fp:016x}") || m.vocab_size != tokenizer.vocab_size() {
        return Err(Error::input(
            dir.join(crate::tokenize::MANIFEST).display().to_string(),
            format!("shards were made with tokenizer {} (vocab {}), the config names one with {fp:016x} (vocab {})", m.tokenizer_fingerprint, m.vocab_size, tokenizer.vocab_size()),
            "point [data] tokenizer at the tokenizer.json used by `frugal data tokenize`",
        ));
    }
    let train = TokenStream::open(dir, &m.train, fp)?;
    let val = TokenStream::open(dir, &m.val, fp)?;
    Ok((m, train, val))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::ShardWriter;

    /// A stream of 40 documents of 3 to 12 tokens, each opening with `bos` = 1.
    fn stream(name: &str) -> TokenStream {
        let dir = std::env::temp_dir().join(format!("frugal-loader-{name}-{}", std::process::id()));
        let mut t = bpe::Trainer::new(bpe::TrainerOptions {
            vocab_size: 300,
            ..Default::default()
        })
        .unwrap();
        t.count(&["a loader test"]);
        let tok = t.finish().unwrap();
        let mut w = ShardWriter::new(&dir, "train", &tok, 64).unwrap();
        for d in 0..40u32 {
            let doc: Vec<u32> = std::iter::once(1)
                .chain((0..2 + d % 11).map(|k| 10 + d * 3 + k))
                .collect();
            w.push_doc(&doc).unwrap();
        }
        let infos = w.finish().unwrap();
        let s = TokenStream::open(&dir, &infos, tok.fingerprint()).unwrap();
        // The maps outlive the files' names.
        std::fs::remove_dir_all(&dir).ok();
        s
    }

    #[test]
    fn validation_windows_spread_over_the_whole_split_when_capped() {
        let s = stream("val");
        let at = |k: usize| {
            let mut t = [0u32];
            s.read(k, &mut t);
            t[0]
        };
        let (seq, held) = (8, (s.len() - 1) / 8);
        let all = validation_windows(&s, seq, usize::MAX);
        assert_eq!(all.len(), held);
        for (k, w) in all.iter().enumerate() {
            assert_eq!(w.len(), seq + 1);
            assert_eq!(w[0], at(k * seq), "uncapped: every window, in order");
        }
        // A quarter of them: every fourth window, the last in the split's last quarter.
        let n = held / 4;
        let some = validation_windows(&s, seq, n * seq);
        assert_eq!(some.len(), n);
        for (i, w) in some.iter().enumerate() {
            assert_eq!(w[0], at(i * held / n * seq));
        }
        assert!(
            (n - 1) * held / n >= held * 3 / 4 - 4,
            "{held} windows, {n} taken"
        );
        assert!(validation_windows(&s, seq, seq - 1).is_empty());
    }

    #[test]
    fn ranks_read_disjoint_slices_that_make_up_one_process_batch() {
        let (seq, b, world) = (4, 2, 3);
        let mut one = Loader::new(stream("one"), 1, seq, 7, Cursor::default()).unwrap();
        let mut ranks: Vec<Loader> = (0..world)
            .map(|r| Loader::new(stream(&format!("r{r}")), 1, seq, 7, Cursor::default()).unwrap())
            .collect();
        let per_epoch = one.windows_per_epoch();
        // Enough steps to cross two epoch boundaries, with a global batch that does not divide
        // an epoch.
        for _ in 0..(2 * per_epoch / (b * world) + 2) {
            let (mut x, mut y) = (vec![0u32; world * b * seq], vec![0u32; world * b * seq]);
            one.next_batch(&mut x, &mut y);
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for (r, l) in ranks.iter_mut().enumerate() {
                let (mut xr, mut yr) = (vec![0u32; b * seq], vec![0u32; b * seq]);
                l.next_batch_of(&mut xr, &mut yr, r, world);
                xs.extend(xr);
                ys.extend(yr);
                assert_eq!(
                    l.cursor(),
                    one.cursor(),
                    "every rank's cursor is the global one"
                );
            }
            assert_eq!((xs, ys), (x, y));
        }
        assert!(one.cursor().epoch >= 2);
    }
}
