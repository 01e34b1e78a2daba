//! Byte-pair encoding of long pieces in linear time, by the backtracking method of GitHub's
//! `bpe` crate (rust-gems): instead of simulating the merges, which costs O(n·m) for a piece of
//! n bytes and m merges, search directly for the token sequence BPE would produce.
//!
//! Two facts make the search cheap:
//! - **A sequence is BPE's output iff every adjacent pair is.** Whether `[a, b]` is what BPE
//!   makes of bytes(a) ++ bytes(b) is decided by walking the two tokens' merge trees backwards
//!   from the boundary (`valid_pair`), a few table lookups. So every token sequence over a
//!   prefix of the text whose adjacent pairs are all valid *is* the encoding of that prefix,
//!   and there is exactly one.
//! - Hence a depth-first search that prepends, going right to left from the piece's end, the
//!   longest token ending at each position that keeps every pair valid (trying shorter
//!   suffixes of it when not, and backing up when none fits) reaches each position by one path
//!   only: the encoding of the text after it. A position from which no token fits is dead for
//!   good, and is marked so. Every position is entered and left a bounded number of times:
//!   work is linear in the piece's length, times the longest token's length at worst.
//!
//! Going right to left lets one pass of an automaton over the piece (`endings`) give the
//! longest token ending at every position (a search left to right would walk the automaton again from
//! every position it tries, and on a run of spaces it tries most of them), and the answers
//! of the pair checks along a token's chain of suffixes are cached: text repeats itself.
//!
//! The short pieces that pre-splitting produces stay with the merge loop in `encode`, which is
//! faster for them; this takes over above `LONG_PIECE` bytes.

use crate::encode::merge_parts;
use crate::endings::{Endings, DFA_BYTES};
use rustc_hash::FxHashMap;

/// Pieces longer than this are encoded here; shorter ones by the merge loop. On the reference
/// vocabulary the two cost the same at about this length.
pub(crate) const LONG_PIECE: usize = 128;

const NONE: u32 = u32::MAX;
/// In `ends`, a position no encoding of the rest of the piece starts from (its longest token
/// is no longer needed then).
const DEAD: u32 = u32::MAX - 1;

/// A vocabulary's tokens in merge order, with what the search needs. Internal ids number the
/// 256 single bytes first (by byte value: they are never merged), then every longer token in
/// rank order, so that comparing internal ids compares merge priority.
#[derive(Debug)]
pub(crate) struct Backtrack {
    /// Which tables these are, for the answers cached in a `Scratch` that outlives one call
    /// (a thread's scratch may serve several vocabularies in turn).
    id: u64,
    /// The tokens BPE can produce (those it produces from their own bytes) as an automaton
    /// that finds the longest one ending at every byte.
    endings: Endings,
    /// Per internal id: the token id, its length in bytes, the longest producible token that is
    /// a proper suffix of it (NONE for a byte), and the two tokens its last merge joined (itself
    /// twice for a byte).
    token_id: Vec<u32>,
    len: Vec<u32>,
    shorter: Vec<u32>,
    split: Vec<(u32, u32)>,
    /// (x, y) → internal id of the token bytes(x) ++ bytes(y), for producible x and y.
    pairs: PairTable,
}

impl Backtrack {
    /// The tables for a vocabulary (token id = rank), or None where its merges are not
    /// ordered as BPE trains them (a token's parts must rank before it) or it has more than
    /// `MAX_IDS` tokens; encoding then keeps to the merge loop.
    pub(crate) fn new(
        tokens: &[Vec<u8>],
        ranks: &FxHashMap<Vec<u8>, u32>,
        byte_ids: &[u32; 256],
    ) -> Option<Self> {
        Self::with_dfa_budget(tokens, ranks, byte_ids, DFA_BYTES)
    }

    /// `new`, building the automaton as a DFA only within `dfa_bytes`.
    fn with_dfa_budget(
        tokens: &[Vec<u8>],
        ranks: &FxHashMap<Vec<u8>, u32>,
        byte_ids: &[u32; 256],
        dfa_bytes: usize,
    ) -> Option<Self> {
        // Internal ids: bytes, then multi-byte tokens by rank.
        let mut internal = vec![NONE; tokens.len()];
        let mut token_id: Vec<u32> = byte_ids.to_vec();
        for (b, &id) in byte_ids.iter().enumerate() {
            internal[id as usize] = b as u32;
        }
        for (id, t) in tokens.iter().enumerate() {
            if t.len() > 1 {
                internal[id] = token_id.len() as u32;
                token_id.push(id as u32);
            }
        }
        let n = token_id.len();
        if n > MAX_IDS {
            return None;
        }
        let bytes = |i: usize| tokens[token_id[i] as usize].as_slice();
        let of_bytes = |b: &[u8]| ranks.get(b).map(|&id| internal[id as usize]);
        // Which tokens BPE produces from their own bytes, and the last merge that made each.
        let mut parts = Vec::new();
        let mut producible = vec![true; n];
        let mut split: Vec<(u32, u32)> = (0..n as u32).map(|i| (i, i)).collect();
        for i in 256..n {
            let t = bytes(i);
            merge_parts(t, ranks, u32::MAX, &mut parts);
            if parts.len() != 2 {
                producible[i] = false;
                continue;
            }
            merge_parts(t, ranks, token_id[i], &mut parts);
            if parts.len() != 3 {
                return None;
            }
            let k = parts[1].0;
            let (l, r) = (of_bytes(&t[..k])?, of_bytes(&t[k..])?);
            if l >= i as u32 || r >= i as u32 {
                return None;
            }
            split[i] = (l, r);
        }
        // Every way of cutting a token in two producible halves, for the pair checks; and each
        // producible token's longest producible proper suffix, for the search.
        let mut pairs = Vec::new();
        let mut shorter = vec![NONE; n];
        for i in 256..n {
            let t = bytes(i);
            for k in 1..t.len() {
                let (l, r) = (of_bytes(&t[..k]), of_bytes(&t[k..]));
                if let (Some(l), Some(r)) = (l, r) {
                    if producible[l as usize] && producible[r as usize] {
                        pairs.push((l, r, i as u32));
                    }
                }
            }
            if producible[i] {
                shorter[i] = (1..t.len())
                    .filter_map(|k| of_bytes(&t[k..]))
                    .find(|&p| producible[p as usize])
                    .unwrap_or(NONE);
            }
        }
        let tokens: Vec<(u32, &[u8])> = (0..n as u32)
            .filter(|&i| producible[i as usize])
            .map(|i| (i, bytes(i as usize)))
            .collect();
        let endings = Endings::new(&tokens, dfa_bytes)?;
        let len = (0..n).map(|i| bytes(i).len() as u32).collect();
        let pairs = PairTable::new(&pairs);
        static TABLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Some(Backtrack {
            id: TABLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            endings,
            token_id,
            len,
            shorter,
            split,
            pairs,
        })
    }

    /// `encode` with buffers kept between calls, given back after a piece of more than
    /// `KEEP_BYTES`, so a thread does not hold on to what one huge piece needed.
    pub(crate) fn encode_keeping(
        &self,
        piece: &[u8],
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
    ) -> bool {
        const KEEP_BYTES: usize = 4 << 20;
        let found = self.encode(piece, out, scratch);
        if piece.len() > KEEP_BYTES {
            *scratch = Scratch::default();
        }
        found
    }

    /// Appends the token ids of `piece` to `out`. Returns false (appending nothing) only if the
    /// search finds no encoding, which a vocabulary `new` accepted cannot cause; the caller
    /// then merges instead.
    pub(crate) fn encode(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) -> bool {
        let n = piece.len();
        scratch.fits.fit_for(n, self.id);
        self.endings.fill(piece, &mut scratch.ends);
        let (ends, path) = (&mut scratch.ends, &mut scratch.path);
        path.clear();
        // `path` holds the tokens chosen so far, rightmost first; `pos` is where they begin.
        let mut pos = n;
        let mut next = ends[pos];
        loop {
            scratch.steps += 1;
            // The longest suffix of `next` that BPE keeps apart from the token after it.
            let fit = match path.last() {
                Some(&right) => self.fitting(next, right, &mut scratch.fits),
                None => next,
            };
            if fit != NONE {
                let start = pos - self.len[fit as usize] as usize;
                if ends[start] != DEAD {
                    path.push(fit);
                    pos = start;
                    if pos == 0 {
                        break;
                    }
                    next = ends[pos];
                    continue;
                }
                if self.shorter[fit as usize] != NONE {
                    next = self.shorter[fit as usize];
                    continue;
                }
            }
            // No token fits before the path's first one: back up and try a shorter token in
            // its place.
            ends[pos] = DEAD;
            let Some(right) = path.pop() else {
                return false;
            };
            pos += self.len[right as usize] as usize;
            next = right;
        }
        out.extend(path.iter().rev().map(|&i| self.token_id[i as usize]));
        true
    }

    /// The first token of `next`, `shorter[next]`, `shorter[shorter[next]]`, … that BPE keeps
    /// apart from `right`, the token after it (NONE if none), through a small direct-mapped
    /// cache: the same pairs recur, and where a pair fails (on a run of spaces a long token is
    /// rarely BPE's choice) the same walk down the chain would too.
    fn fitting(&self, next: u32, right: u32, cache: &mut FitCache) -> u32 {
        let key = pack(next, right);
        let slot = (hash(key) >> cache.shift) as usize;
        let entry = cache.slots[slot];
        if entry & KEY == key {
            return unpack_value(entry);
        }
        let mut fit = next;
        while fit != NONE && !self.valid_pair(fit, right) {
            fit = self.shorter[fit as usize];
        }
        cache.slots[slot] = key | pack_value(fit);
        fit
    }

    /// Whether BPE turns bytes(a) ++ bytes(b) into exactly [a, b]. Walks back through the
    /// merges that built a and b, always undoing the later of the two tokens at the boundary
    /// (x ending it, y starting it): while x and y both exist, until the merge that consumes
    /// one of them, BPE would instead merge x with y if their concatenation is a token of lower
    /// rank, or of equal rank when that merge lies to the right (y's: the leftmost of equal
    /// pairs merges first). `limit` is the exclusive bound such a token must stay under.
    fn valid_pair(&self, a: u32, b: u32) -> bool {
        let (mut x, mut y, mut limit) = (a, b, NONE);
        loop {
            if let Some(m) = self.pairs.get(x, y) {
                if m < limit {
                    return false;
                }
            }
            if x > y && x >= 256 {
                limit = x;
                x = self.split[x as usize].1;
            } else if y >= 256 {
                limit = y + 1;
                y = self.split[y as usize].0;
            } else {
                return true;
            }
        }
    }
}

/// Buffers reused between calls to `Backtrack::encode`, and its count of search steps (tokens
/// tried), by which tests check that the work is linear.
#[derive(Default)]
pub(crate) struct Scratch {
    path: Vec<u32>,
    ends: Vec<u32>,
    fits: FitCache,
    pub(crate) steps: u64,
}

/// Answers of `fitting`, direct-mapped: slot → (next, right, the answer) packed in one word
/// (`pack`); all ones marks an empty slot. Sized to the pieces it serves, so a short long
/// piece does not pay for filling the table a megabyte needs.
#[derive(Default)]
struct FitCache {
    slots: Vec<u64>,
    shift: u32,
    /// The `Backtrack::id` whose answers the slots hold (0: none yet).
    owner: u64,
}

impl FitCache {
    /// At most 2¹⁵ slots (256 KiB); at least 2⁸.
    const MAX_BITS: u32 = 15;

    /// Grows the table, if need be, to a slot for every two bytes of an `n`-byte piece.
    /// Answers are a vocabulary's: those of another `owner`'s tables are forgotten.
    fn fit_for(&mut self, n: usize, owner: u64) {
        let bits = (n / 2)
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(8, Self::MAX_BITS);
        if self.slots.len() < 1 << bits {
            self.slots = vec![EMPTY; 1 << bits];
            self.shift = 64 - bits;
        } else if self.owner != owner {
            self.slots.fill(EMPTY);
        }
        self.owner = owner;
    }
}

fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Both caches' entries are three internal ids of 21 bits in one word, the key (x, y) in the
/// low 42 bits, so that an entry is 8 bytes and a lookup one load: half the cache lines of a
/// (u64, u32) pair. Vocabularies are held to `MAX_IDS` for it (the largest published ones
/// have about 256K tokens).
const ID_BITS: u32 = 21;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
const KEY: u64 = (1 << (2 * ID_BITS)) - 1;
/// All ones: its key names id 2²¹ − 1, which no token has.
const EMPTY: u64 = u64::MAX;
pub(crate) const MAX_IDS: usize = (1 << ID_BITS) - 1;

#[inline(always)]
fn pack(x: u32, y: u32) -> u64 {
    x as u64 | (y as u64) << ID_BITS
}

/// The value field; NONE is stored as all ones.
#[inline(always)]
fn pack_value(z: u32) -> u64 {
    (z as u64 & ID_MASK) << (2 * ID_BITS)
}

#[inline(always)]
fn unpack_value(entry: u64) -> u32 {
    match (entry >> (2 * ID_BITS)) as u32 {
        z if z as u64 == ID_MASK => NONE,
        z => z,
    }
}

/// (x, y) → z as one open-addressed array with linear probing: a lookup is one cache line,
/// where a general hash map reads a control array and then a slot. Most lookups find nothing,
/// so a bit per (hashed) key, 16 for each entry, answers those from a filter that stays in cache.
#[derive(Debug)]
struct PairTable {
    slots: Vec<u64>,
    shift: u32,
    filter: Vec<u64>,
    filter_shift: u32,
}

impl PairTable {
    fn new(pairs: &[(u32, u32, u32)]) -> Self {
        let bits = (2 * pairs.len().max(1))
            .next_power_of_two()
            .trailing_zeros()
            .max(4);
        let filter_bits = bits + 3;
        let mut slots = vec![EMPTY; 1 << bits];
        let mut filter = vec![0u64; (1usize << filter_bits) / 64];
        let mask = slots.len() - 1;
        for &(x, y, z) in pairs {
            let key = pack(x, y);
            let bit = filter_bit(key, 64 - filter_bits);
            filter[bit / 64] |= 1 << (bit % 64);
            let mut i = (hash(key) >> (64 - bits)) as usize;
            while slots[i] != EMPTY && slots[i] & KEY != key {
                i = (i + 1) & mask;
            }
            slots[i] = key | pack_value(z);
        }
        PairTable {
            slots,
            shift: 64 - bits,
            filter,
            filter_shift: 64 - filter_bits,
        }
    }

    #[inline]
    fn get(&self, x: u32, y: u32) -> Option<u32> {
        let key = pack(x, y);
        let bit = filter_bit(key, self.filter_shift);
        if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = (hash(key) >> self.shift) as usize;
        loop {
            let entry = self.slots[i];
            if entry & KEY == key {
                return Some(unpack_value(entry));
            }
            if entry == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }
}

/// The filter's bit for `key`: from a second multiplier, so that keys sharing a slot of the
/// table do not also share a bit.
#[inline]
fn filter_bit(key: u64, shift: u32) -> usize {
    (key.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) >> shift) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Tokenizer, Trainer, TrainerOptions};

    /// A vocabulary trained on `docs` split by `pattern`.
    fn trained(docs: &[String], pattern: &str, vocab: usize) -> Tokenizer {
        let mut t = Trainer::new(TrainerOptions {
            vocab_size: vocab,
            pattern: pattern.into(),
            specials: vec![],
            min_frequency: 2,
        })
        .unwrap();
        t.count(docs);
        t.finish().unwrap()
    }

    /// The producible tokens' internal ids: the bytes, and the tokens a last merge makes.
    fn producible(b: &Backtrack) -> Vec<u32> {
        (0..b.len.len() as u32)
            .filter(|&i| i < 256 || b.split[i as usize] != (i, i))
            .collect()
    }

    /// The merge loop's encoding of one piece: the reference.
    fn merged(t: &Tokenizer, piece: &[u8]) -> Vec<u32> {
        let (mut out, mut parts) = (Vec::new(), Vec::new());
        crate::encode::encode_piece(piece, &t.ranks, &t.byte_ids, &mut out, &mut parts);
        out
    }

    fn searched(t: &Tokenizer, piece: &[u8], scratch: &mut Scratch) -> Vec<u32> {
        let b = Backtrack::new(&t.tokens, &t.ranks, &t.byte_ids).expect("ordered merges");
        let mut out = Vec::new();
        assert!(b.encode(piece, &mut out, scratch), "no encoding found");
        out
    }

    /// Text over a few letters with repeats, so that long and overlapping merges are learned.
    fn letters(rng: &mut u64, len: usize, alphabet: &[u8]) -> Vec<u8> {
        let mut next = || {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng
        };
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let r = next();
            if r % 4 == 0 && out.len() >= 4 {
                // Copy an earlier stretch: repeats make long tokens.
                let from = (r >> 8) as usize % (out.len() - 3);
                let n = ((r >> 32) as usize % 12).min(out.len() - from);
                out.extend_from_within(from..from + n);
            } else {
                out.push(alphabet[(r >> 16) as usize % alphabet.len()]);
            }
        }
        out.truncate(len);
        out
    }

    /// One piece per document over `alphabet`: merges run across whole texts.
    fn vocab_over(rng: &mut u64, alphabet: &[u8], vocab: usize) -> Tokenizer {
        let docs: Vec<String> = (0..300)
            .map(|_| String::from_utf8(letters(rng, 200, alphabet)).unwrap())
            .collect();
        let t = trained(&docs, r"[\s\S]+", vocab);
        assert!(
            t.n_ordinary() > 256 + (vocab - 256) / 2,
            "too few merges learned"
        );
        t
    }

    #[test]
    fn the_pair_check_equals_merging_on_every_pair() {
        let mut rng = 0x2545f4914f6cdd1du64;
        for (alphabet, vocab) in [(&b"ab"[..], 300), (b"abc", 400)] {
            let t = vocab_over(&mut rng, alphabet, vocab);
            let b = Backtrack::new(&t.tokens, &t.ranks, &t.byte_ids).unwrap();
            let producible = producible(&b);
            let mut checked = 0;
            for &x in &producible {
                for &y in &producible {
                    let (tx, ty) = (b.token_id[x as usize], b.token_id[y as usize]);
                    let mut bytes = t.tokens[tx as usize].clone();
                    bytes.extend(&t.tokens[ty as usize]);
                    let truth = merged(&t, &bytes) == [tx, ty];
                    assert_eq!(b.valid_pair(x, y), truth, "{tx} {ty}");
                    checked += 1;
                }
            }
            assert!(checked > 60_000, "{checked} pairs");
        }
    }

    #[test]
    fn one_pass_finds_the_longest_token_ending_everywhere() {
        let mut rng = 0x51_7cc1_b727_220au64;
        let t = vocab_over(&mut rng, b"abc", 500);
        let piece = letters(&mut rng, 2000, b"abc");
        // Both automata: the DFA, and the NFA that vocabularies past the DFA budget get.
        for budget in [DFA_BYTES, 0] {
            let b = Backtrack::with_dfa_budget(&t.tokens, &t.ranks, &t.byte_ids, budget).unwrap();
            assert_eq!(b.endings.is_dfa(), budget > 0);
            longest_ending_by_brute_force(&t, &b, &piece);
            let mut out = Vec::new();
            assert!(b.encode(&piece, &mut out, &mut Scratch::default()));
            assert_eq!(out, merged(&t, &piece));
        }
    }

    /// Checks the one pass against brute force: the longest producible token that the text up
    /// to each offset ends with.
    fn longest_ending_by_brute_force(t: &Tokenizer, b: &Backtrack, piece: &[u8]) {
        let mut ends = Vec::new();
        b.endings.fill(piece, &mut ends);
        for i in 1..=piece.len() {
            // By brute force: the longest producible token that the text up to i ends with.
            let want = producible(b)
                .into_iter()
                .filter(|&p| {
                    let tok = &t.tokens[b.token_id[p as usize] as usize];
                    piece[..i].ends_with(tok)
                })
                .max_by_key(|&p| b.len[p as usize])
                .unwrap();
            assert_eq!(b.len[ends[i] as usize], b.len[want as usize], "at {i}");
            assert_eq!(ends[i], want, "at {i}");
        }
    }

    #[test]
    fn search_equals_merging_on_random_pieces() {
        let mut rng = 0x9e3779b97f4a7c15u64;
        for (alphabet, vocab) in [(&b"ab"[..], 300), (b"abc", 500), (b"abcd", 900)] {
            let t = vocab_over(&mut rng, alphabet, vocab);
            let mut scratch = Scratch::default();
            for len in (1..300).chain([1000, 4000]) {
                let piece = letters(&mut rng, len, alphabet);
                assert_eq!(
                    searched(&t, &piece, &mut scratch),
                    merged(&t, &piece),
                    "{:?}",
                    String::from_utf8_lossy(&piece)
                );
            }
        }
    }

    #[test]
    fn search_equals_merging_on_words_run_together() {
        let words = "the quick brown fox jumps over the lazy dog while singing and ringing \
                     bells in the morning; nothing is thinking of anything interesting";
        let docs: Vec<String> = (0..200).map(|_| words.to_string()).collect();
        let t = trained(&docs, crate::GPT4_PATTERN, 420);
        let mut scratch = Scratch::default();
        let joined: String = words.split_whitespace().collect();
        for piece in [
            "ing".repeat(700),
            "the".repeat(500),
            joined.repeat(20),
            "thingsinging".repeat(99),
            "a".repeat(1000),
        ] {
            assert_eq!(
                searched(&t, piece.as_bytes(), &mut scratch),
                merged(&t, piece.as_bytes())
            );
            // And through the public encoder, which hands such long pieces to the search.
            assert_eq!(t.encode(&piece), merged(&t, piece.as_bytes()));
        }
    }

    /// The public encoder keeps its search buffers per thread: answers cached for one
    /// vocabulary must not answer for another encoding on the same thread after it.
    #[test]
    fn vocabularies_taking_turns_on_one_thread_each_encode_as_merging() {
        let mut rng = 0x6a09_e667_f3bc_c908u64;
        let a = vocab_over(&mut rng, b"ab", 300);
        let b = vocab_over(&mut rng, b"ab", 400);
        for _ in 0..3 {
            let piece = String::from_utf8(letters(&mut rng, 3000, b"ab")).unwrap();
            for t in [&a, &b, &a] {
                assert_eq!(t.encode(&piece), merged(t, piece.as_bytes()));
            }
        }
    }

    #[test]
    fn the_search_does_linear_work_on_a_hostile_word() {
        let docs: Vec<String> = (0..200).map(|_| "singing ringing inging".into()).collect();
        let t = trained(&docs, crate::GPT4_PATTERN, 300);
        let per_byte = |n: usize| {
            let mut scratch = Scratch::default();
            searched(&t, "ing".repeat(n / 3).as_bytes(), &mut scratch);
            scratch.steps as f64 / n as f64
        };
        let (small, large) = (per_byte(30_000), per_byte(960_000));
        assert!(large <= 2.0, "{large} search steps per byte");
        assert!(
            large <= small * 1.05,
            "steps per byte grow: {small} → {large}"
        );
    }
}
