//! BPE training: count pre-split pieces in parallel, then merge the most frequent adjacent pair
//! repeatedly, updating pair counts incrementally — only the words that contain the merged pair
//! are touched, never a full recount.

use crate::pretokenize::Splitter;
use crate::{Result, Tokenizer};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Debug)]
pub struct TrainerOptions {
    /// Total vocabulary including the 256 byte tokens and the special tokens.
    pub vocab_size: usize,
    /// Pre-split regex (`GPT4_PATTERN` by default).
    pub pattern: String,
    pub specials: Vec<String>,
    /// Pairs seen fewer times than this are never merged (training may stop early).
    pub min_frequency: u64,
}

impl Default for TrainerOptions {
    fn default() -> Self {
        TrainerOptions {
            vocab_size: 8192,
            pattern: crate::GPT4_PATTERN.to_string(),
            specials: crate::DEFAULT_SPECIALS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            min_frequency: 2,
        }
    }
}

/// Accumulates piece counts over any number of `count` calls, then `finish` learns the merges.
pub struct Trainer {
    opts: TrainerOptions,
    splitter: Splitter,
    counts: FxHashMap<String, u64>,
}

type Pair = (u32, u32);

impl Trainer {
    pub fn new(opts: TrainerOptions) -> Result<Self> {
        let splitter = Splitter::new(&opts.pattern).map_err(crate::Error::Invalid)?;
        if opts.vocab_size < 256 + opts.specials.len() {
            return Err(crate::Error::Invalid(format!(
                "vocab_size {} leaves no room for 256 byte tokens and {} special tokens",
                opts.vocab_size,
                opts.specials.len()
            )));
        }
        Ok(Trainer {
            opts,
            splitter,
            counts: FxHashMap::default(),
        })
    }

    /// Counts the pieces of a batch of documents, in parallel.
    pub fn count<S: AsRef<str> + Sync>(&mut self, docs: &[S]) {
        let splitter = &self.splitter;
        let local = docs
            .par_chunks(docs.len().div_ceil(4 * rayon::current_num_threads()).max(1))
            .map(|chunk| {
                let mut m: FxHashMap<&str, u64> = FxHashMap::default();
                for d in chunk {
                    splitter.split(d.as_ref(), |p| *m.entry(p).or_insert(0) += 1);
                }
                m
            })
            .reduce(FxHashMap::default, |mut a, b| {
                let (small, mut big) = if a.len() < b.len() {
                    (a, b)
                } else {
                    (b, std::mem::take(&mut a))
                };
                for (k, v) in small {
                    *big.entry(k).or_insert(0) += v;
                }
                big
            });
        for (k, v) in local {
            match self.counts.get_mut(k) {
                Some(c) => *c += v,
                None => {
                    self.counts.insert(k.to_string(), v);
                }
            }
        }
    }

    /// Number of distinct pieces counted so far.
    pub fn distinct_pieces(&self) -> usize {
        self.counts.len()
    }

    /// Learns merges until the vocabulary is full or no pair reaches `min_frequency`.
    pub fn finish(self) -> Result<Tokenizer> {
        let target = self.opts.vocab_size - self.opts.specials.len();
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ids: FxHashMap<Vec<u8>, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // Sorted so that word indices, and therefore tie-breaks, do not depend on hash order.
        let mut entries: Vec<(String, u64)> = self.counts.into_iter().collect();
        entries.sort_unstable();
        let mut words: Vec<Vec<u32>> = entries
            .iter()
            .map(|(w, _)| w.bytes().map(u32::from).collect())
            .collect();
        let counts: Vec<i64> = entries.iter().map(|&(_, c)| c as i64).collect();
        drop(entries);

        let mut pair_counts: FxHashMap<Pair, i64> = FxHashMap::default();
        let mut where_: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
        for (w, word) in words.iter().enumerate() {
            for p in word.windows(2) {
                *pair_counts.entry((p[0], p[1])).or_insert(0) += counts[w];
                where_.entry((p[0], p[1])).or_default().push(w as u32);
            }
        }
        // Max-heap on count; among equal counts the smallest pair wins (deterministic).
        let mut heap: BinaryHeap<(i64, Reverse<Pair>)> =
            pair_counts.iter().map(|(&p, &c)| (c, Reverse(p))).collect();
        let mut touched: FxHashSet<Pair> = FxHashSet::default();

        while tokens.len() < target {
            let Some((c, Reverse(pair))) = heap.pop() else {
                break;
            };
            let current = pair_counts.get(&pair).copied().unwrap_or(0);
            if current != c {
                if current > 0 {
                    heap.push((current, Reverse(pair)));
                }
                continue;
            }
            if (c as u64) < self.opts.min_frequency.max(1) {
                break;
            }
            let (a, b) = pair;
            let merged: Vec<u8> =
                [tokens[a as usize].as_slice(), tokens[b as usize].as_slice()].concat();
            // A byte string reachable by two different splits keeps its first id.
            let id = *ids.entry(merged.clone()).or_insert_with(|| {
                tokens.push(merged);
                tokens.len() as u32 - 1
            });
            let mut list = where_.remove(&pair).unwrap_or_default();
            list.sort_unstable();
            list.dedup();
            touched.clear();
            let mut created: Vec<Pair> = Vec::new();
            for &w in &list {
                let word = &mut words[w as usize];
                let n = counts[w as usize];
                created.clear();
                let mut i = 0;
                while i + 1 < word.len() {
                    if word[i] != a || word[i + 1] != b {
                        i += 1;
                        continue;
                    }
                    let mut bump = |p: Pair, d: i64| *pair_counts.entry(p).or_insert(0) += d;
                    bump(pair, -n);
                    if i > 0 {
                        bump((word[i - 1], a), -n);
                        bump((word[i - 1], id), n);
                        created.push((word[i - 1], id));
                    }
                    if i + 2 < word.len() {
                        bump((b, word[i + 2]), -n);
                        bump((id, word[i + 2]), n);
                        created.push((id, word[i + 2]));
                    }
                    word[i] = id;
                    word.remove(i + 1);
                    i += 1;
                }
                // Over-appending is harmless: a list is deduplicated, and words that no longer
                // hold its pair are skipped, when that pair is merged.
                for &p in &created {
                    where_.entry(p).or_default().push(w);
                    touched.insert(p);
                }
            }
            pair_counts.remove(&pair);
            for p in touched.drain() {
                if let Some(&c) = pair_counts.get(&p) {
                    if c > 0 {
                        heap.push((c, Reverse(p)));
                    }
                }
            }
        }
        Tokenizer::new(self.splitter, tokens, &self.opts.specials)
    }
}
