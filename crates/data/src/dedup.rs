//! Duplicate removal: exact (a 128-bit hash of the case- and whitespace-folded text) and near
//! (MinHash signatures over word shingles with locality-sensitive hashing; Broder 1997,
//! Leskovec et al., Mining of Massive Datasets ch. 3).
//!
//! LSH only proposes candidates: a document is declared a near-duplicate only when the MinHash
//! estimate of its Jaccard similarity with a kept document reaches `threshold`. Banding sets
//! recall (the S-curve), the verification sets precision.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// SplitMix64's finaliser: a fast bijection on u64 with full avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// FNV-1a over bytes with a seed, then mixed: stable across runs and platforms.
fn hash_bytes(seed: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = 0xcbf29ce484222325u64 ^ mix(seed);
    for b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    mix(h)
}

/// Key for exact deduplication: equal for texts that differ only in case and whitespace.
pub fn exact_key(text: &str) -> u128 {
    let folded: String = text
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ");
    ((hash_bytes(1, folded.bytes()) as u128) << 64) | hash_bytes(2, folded.bytes()) as u128
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NearDupConfig {
    /// Words per shingle.
    pub shingle_words: usize,
    /// LSH bands × rows per band = number of MinHash functions. 20 × 6 puts the S-curve's
    /// midpoint near 0.6, so pairs at Jaccard 0.8 become candidates with probability 0.998.
    pub bands: usize,
    pub rows: usize,
    /// Estimated Jaccard similarity at or above which a document is a near-duplicate.
    pub threshold: f64,
    pub seed: u64,
}

impl Default for NearDupConfig {
    fn default() -> Self {
        NearDupConfig {
            shingle_words: 5,
            bands: 20,
            rows: 6,
            threshold: 0.8,
            seed: 0,
        }
    }
}

pub struct NearDedup {
    cfg: NearDupConfig,
    seeds: Vec<u64>,
    /// Per band: band hash → kept documents with that band.
    tables: Vec<FxHashMap<u64, Vec<usize>>>,
    signatures: FxHashMap<usize, Vec<u64>>,
}

impl NearDedup {
    pub fn new(cfg: NearDupConfig) -> Self {
        let n = (cfg.bands * cfg.rows).max(1);
        let seeds = (0..n as u64)
            .map(|i| {
                mix(cfg
                    .seed
                    .wrapping_add(0x9E3779B97F4A7C15u64.wrapping_mul(i + 1)))
            })
            .collect();
        let tables = (0..cfg.bands).map(|_| FxHashMap::default()).collect();
        NearDedup {
            cfg,
            seeds,
            tables,
            signatures: FxHashMap::default(),
        }
    }

    /// Hashes of the word shingles of the lower-cased text (one shingle for shorter texts).
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let words: Vec<u64> = text
            .split_whitespace()
            .map(|w| hash_bytes(0, w.to_lowercase().bytes()))
            .collect();
        let k = self.cfg.shingle_words.max(1);
        if words.len() <= k {
            return vec![words.iter().fold(0, |h, &w| mix(h ^ w))];
        }
        words
            .windows(k)
            .map(|win| win.iter().fold(k as u64, |h, &w| mix(h.rotate_left(7) ^ w)))
            .collect()
    }

    /// The MinHash signature: for each hash function h_i(x) = mix(x ⊕ seed_i), the minimum
    /// over the document's shingles. Pure, so callers compute signatures in parallel.
    pub fn signature(&self, text: &str) -> Vec<u64> {
        let shingles = self.shingles(text);
        self.seeds
            .iter()
            .map(|&s| {
                shingles
                    .iter()
                    .map(|&x| mix(x ^ s))
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }

    /// Estimated Jaccard similarity: the fraction of equal signature entries.
    pub fn similarity(a: &[u64], b: &[u64]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
    }

    /// The earlier kept document that `doc` near-duplicates, if any; otherwise `doc` is kept
    /// (indexed for later queries) and None is returned.
    pub fn check_and_insert(&mut self, doc: usize, sig: &[u64]) -> Option<usize> {
        let r = self.cfg.rows;
        let bands: Vec<u64> = sig
            .chunks(r)
            .take(self.cfg.bands)
            .map(|band| band.iter().fold(0, |h, &v| mix(h ^ v)))
            .collect();
        for (b, key) in bands.iter().enumerate() {
            if let Some(cands) = self.tables[b].get(key) {
                for &c in cands {
                    if Self::similarity(sig, &self.signatures[&c]) >= self.cfg.threshold {
                        return Some(c);
                    }
                }
            }
        }
        for (b, key) in bands.into_iter().enumerate() {
            self.tables[b].entry(key).or_default().push(doc);
        }
        self.signatures.insert(doc, sig.to_vec());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn jaccard(d: &NearDedup, a: &str, b: &str) -> f64 {
        let (x, y): (HashSet<u64>, HashSet<u64>) = (
            d.shingles(a).into_iter().collect(),
            d.shingles(b).into_iter().collect(),
        );
        x.intersection(&y).count() as f64 / x.union(&y).count() as f64
    }

    #[test]
    fn exact_key_folds_case_and_whitespace_only() {
        assert_eq!(exact_key("Hello  World\n"), exact_key("hello world"));
        assert_ne!(exact_key("hello world"), exact_key("hello, world"));
    }

    #[test]
    fn planted_near_duplicates_are_found_with_high_recall_and_precision() {
        let mut rng = Rng(0x9E3779B97F4A7C15);
        let vocab: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        let mut docs: Vec<String> = (0..500)
            .map(|_| {
                let n = 200 + rng.below(200);
                (0..n)
                    .map(|_| vocab[rng.below(vocab.len())].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        // Near copies: 1–3 words substituted, spread out, so that each edit removes 5 shingles
        // and the true Jaccard of 5-gram shingles stays in 0.85–0.99 (above the 0.8
        // threshold). Far variants: 40% of words substituted (Jaccard ≈ 0.05).
        let mut planted = Vec::new();
        for k in 0..200 {
            let mut words: Vec<&str> = docs[k].split(' ').collect();
            if k % 4 == 3 {
                for w in words.iter_mut() {
                    if rng.below(10) < 4 {
                        *w = vocab[rng.below(vocab.len())].as_str();
                    }
                }
            } else {
                let edits = [1, 2, 3][(k / 4 + k % 4) % 3];
                let step = words.len() / (edits + 1);
                for e in 1..=edits {
                    words[e * step] = vocab[rng.below(vocab.len())].as_str();
                }
            }
            planted.push((k, words.join(" ")));
        }
        let d0 = NearDedup::new(NearDupConfig::default());
        let truth: Vec<(usize, bool)> = (0..200).map(|k| (k, k % 4 != 3)).collect();
        let min_near = planted
            .iter()
            .filter(|(k, _)| k % 4 != 3)
            .map(|(k, t)| jaccard(&d0, &docs[*k], t))
            .fold(1.0, f64::min);
        let max_far = planted
            .iter()
            .filter(|(k, _)| k % 4 == 3)
            .map(|(k, t)| jaccard(&d0, &docs[*k], t))
            .fold(0.0, f64::max);
        eprintln!("true Jaccard: near copies >= {min_near:.3}, far variants <= {max_far:.3}");
        assert!(
            min_near >= 0.8 && max_far < 0.5,
            "the planted pairs must straddle the threshold clearly"
        );
        docs.extend(planted.into_iter().map(|(_, t)| t));

        let mut dedup = NearDedup::new(NearDupConfig::default());
        let flagged: Vec<Option<usize>> = docs
            .iter()
            .enumerate()
            .map(|(i, t)| dedup.check_and_insert(i, &dedup.signature(t)))
            .collect();
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for (i, f) in flagged.iter().enumerate() {
            let is_dup = i >= 500 && truth[i - 500].1;
            match (f, is_dup) {
                (Some(orig), true) => {
                    assert_eq!(*orig, truth[i - 500].0, "matched to its own original");
                    tp += 1
                }
                (Some(_), false) => fp += 1,
                (None, true) => fn_ += 1,
                (None, false) => {}
            }
        }
        let recall = tp as f64 / (tp + fn_) as f64;
        let precision = tp as f64 / (tp + fp).max(1) as f64;
        eprintln!("near-dup: {tp} found, {fn_} missed, {fp} false; recall {recall:.3}, precision {precision:.3}");
        assert!(
            tp + fn_ >= 100,
            "the test must plant enough true near-duplicates"
        );
        assert!(
            recall >= 0.95 && precision >= 0.99,
            "recall {recall}, precision {precision}"
        );
    }
}
