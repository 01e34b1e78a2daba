//! The longest producible token ending at every byte of a piece, by one pass of an
//! Aho–Corasick automaton over it: what the backtracking search (`backtrack`) starts from.
//!
//! The pass is bound by memory latency, not arithmetic: on a megabyte of real words run
//! together each byte's transition lands in a different row of a table of megabytes. Two
//! things keep it fast:
//! - **Our own DFA** (where its table stays within a budget): byte classes taken from the
//!   multi-byte tokens only (bytes that occur in none share one class, and a state whose
//!   longest token is a single byte answers with that byte), and the longest token of each
//!   state in a dense array beside the table, one load instead of the three of a general
//!   automaton's match list.
//! - **Lanes.** The automaton's state after byte i depends only on the last `max_len` bytes
//!   (it is the longest suffix that is a prefix of a token, and no token is longer), so a long
//!   piece is cut into four stretches, each started `max_len` bytes early, and the four
//!   chains of loads are walked in lockstep: their cache misses overlap.
//!
//! Vocabularies whose DFA would not fit (GPT-2's 50,257 tokens) get aho-corasick's contiguous
//! NFA, a few times slower per byte (it follows failure links) but small for any vocabulary.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::{nfa::contiguous, nfa::noncontiguous, Anchored, MatchKind};

const NONE: u32 = u32::MAX;

/// The DFA's table budget: the speedrun's 8,192-token vocabulary takes 7.8 MB (15,309 states,
/// 82 byte classes), built in 9 ms; GPT-2's 50,257 tokens would not fit.
pub(crate) const DFA_BYTES: usize = 64 << 20;

/// The automaton over a vocabulary's producible tokens, answering the longest one ending at
/// each byte as its internal id (single bytes are ids 0..256, by value).
#[derive(Debug)]
pub(crate) struct Endings {
    scan: Scanner,
    /// The longest token's length in bytes: how far back a lane starts.
    max_len: usize,
}

#[derive(Debug)]
enum Scanner {
    Dfa(Dfa),
    Nfa(Nfa),
}

impl Endings {
    /// `tokens`: (internal id, bytes) of every producible token, the 256 single bytes
    /// included. A DFA where its table fits `dfa_bytes`, else an NFA.
    pub(crate) fn new(tokens: &[(u32, &[u8])], dfa_bytes: usize) -> Option<Self> {
        let max_len = tokens.iter().map(|t| t.1.len()).max().unwrap_or(1);
        let scan = match Dfa::build(tokens, dfa_bytes) {
            Some(dfa) => Scanner::Dfa(dfa),
            None => Scanner::Nfa(Nfa::build(tokens)?),
        };
        Some(Endings { scan, max_len })
    }

    #[cfg(test)]
    pub(crate) fn is_dfa(&self) -> bool {
        matches!(self.scan, Scanner::Dfa(_))
    }

    /// `ends[i]` = the longest producible token ending at byte offset i (for i in 1..=n);
    /// `ends[0]` is NONE.
    pub(crate) fn fill(&self, piece: &[u8], ends: &mut Vec<u32>) {
        match &self.scan {
            Scanner::Dfa(a) => fill_in_lanes(a, self.max_len, piece, ends),
            Scanner::Nfa(a) => fill_in_lanes(a, self.max_len, piece, ends),
        }
    }
}

/// One step of an automaton and the answer of the state it reaches.
trait Scan {
    type State: Copy;
    fn start(&self) -> Self::State;
    fn step(&self, s: Self::State, byte: u8) -> Self::State;
    /// The longest token ending at the byte that led to `s`.
    fn longest(&self, s: Self::State, byte: u8) -> u32;
}

/// Lanes walked in lockstep on pieces long enough that starting each `max_len` bytes early
/// costs nothing.
const LANES: usize = 4;

#[inline(always)]
fn fill_in_lanes<A: Scan>(a: &A, max_len: usize, piece: &[u8], ends: &mut Vec<u32>) {
    let n = piece.len();
    ends.clear();
    ends.resize(n + 1, NONE);
    let mut step = |s: A::State, i: usize| {
        let s = a.step(s, piece[i]);
        ends[i + 1] = a.longest(s, piece[i]);
        s
    };
    if n < LANES * 16 * max_len {
        let mut s = a.start();
        for i in 0..n {
            s = step(s, i);
        }
        return;
    }
    // Lane k answers the bytes from[k]..from[k] + chunk (the last lane fewer), after warming
    // its state on the `max_len` bytes before them.
    let chunk = n.div_ceil(LANES);
    let from: [usize; LANES] = std::array::from_fn(|k| k * chunk);
    let mut state: [A::State; LANES] = std::array::from_fn(|k| {
        let warm = &piece[from[k].saturating_sub(max_len)..from[k]];
        warm.iter().fold(a.start(), |s, &b| a.step(s, b))
    });
    let shortest = n - from[LANES - 1];
    for t in 0..shortest {
        for k in 0..LANES {
            state[k] = step(state[k], from[k] + t);
        }
    }
    for k in 0..LANES - 1 {
        for i in from[k] + shortest..from[k + 1] {
            state[k] = step(state[k], i);
        }
    }
}

/// A dense DFA over the multi-byte tokens. State ids in `next` are premultiplied by the row
/// length (`1 << stride2`), so a step is one add and one load.
#[derive(Debug)]
struct Dfa {
    class: [u16; 256],
    stride2: u32,
    next: Vec<u32>,
    /// Per state: the longest multi-byte token that the state's bytes end with, or NONE.
    longest: Vec<u32>,
}

impl Dfa {
    /// The trie of the multi-byte tokens, completed into a DFA by failure links (breadth
    /// first, so a state's failure row is complete before its own). None past `budget` bytes.
    fn build(tokens: &[(u32, &[u8])], budget: usize) -> Option<Dfa> {
        let long = || tokens.iter().filter(|t| t.1.len() > 1);
        // Classes: each byte some multi-byte token uses, in byte order; all others share 0.
        let mut used = [false; 256];
        long().for_each(|t| t.1.iter().for_each(|&b| used[b as usize] = true));
        let mut class = [0u16; 256];
        let mut classes = 1;
        for b in 0..256 {
            if used[b] {
                class[b] = classes;
                classes += 1;
            }
        }
        let stride = (classes as usize).next_power_of_two();
        if trie_nodes(long().map(|t| t.1)) * stride * 4 > budget {
            return None;
        }
        // The trie: row 0 is the root; 0 in a row means no child (no edge enters the root).
        let mut next = vec![0u32; stride];
        let mut out = vec![NONE];
        for &(id, t) in long() {
            let mut s = 0;
            for &b in t {
                let at = s * stride + class[b as usize] as usize;
                if next[at] == 0 {
                    next[at] = out.len() as u32;
                    next.resize(next.len() + stride, 0);
                    out.push(NONE);
                }
                s = next[at] as usize;
            }
            out[s] = id;
        }
        let rows = out.len();
        let mut fail = vec![0u32; rows];
        let mut longest = vec![NONE; rows];
        let mut queue = std::collections::VecDeque::new();
        for &v in &next[..stride] {
            let v = v as usize;
            if v != 0 {
                longest[v] = out[v];
                queue.push_back(v);
            }
        }
        while let Some(u) = queue.pop_front() {
            let f = fail[u] as usize;
            for c in 0..stride {
                let (at, via_fail) = (u * stride + c, next[f * stride + c]);
                let v = next[at] as usize;
                if v == 0 {
                    next[at] = via_fail;
                    continue;
                }
                fail[v] = via_fail;
                longest[v] = if out[v] != NONE {
                    out[v]
                } else {
                    longest[via_fail as usize]
                };
                queue.push_back(v);
            }
        }
        let stride2 = stride.trailing_zeros();
        next.iter_mut().for_each(|s| *s <<= stride2);
        Some(Dfa {
            class,
            stride2,
            next,
            longest,
        })
    }
}

/// The nodes of the trie of `tokens`, the root included: its distinct prefixes, counted on
/// the sorted tokens, so that a DFA past its budget is refused before any of it is built.
fn trie_nodes<'a>(tokens: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut sorted: Vec<&[u8]> = tokens.collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut prev: &[u8] = &[];
    let mut nodes = 1;
    for t in sorted {
        nodes += t.len() - t.iter().zip(prev).take_while(|(a, b)| a == b).count();
        prev = t;
    }
    nodes
}

impl Scan for Dfa {
    type State = u32;

    fn start(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn step(&self, s: u32, byte: u8) -> u32 {
        self.next[s as usize + self.class[byte as usize] as usize]
    }

    #[inline(always)]
    fn longest(&self, s: u32, byte: u8) -> u32 {
        let l = self.longest[(s >> self.stride2) as usize];
        if l == NONE {
            byte as u32
        } else {
            l
        }
    }
}

/// aho-corasick's contiguous NFA over every producible token, single bytes included, with
/// standard match semantics: in the state after each byte, match 0 is the longest token
/// ending there (every byte is a token, so every such state matches).
#[derive(Debug)]
struct Nfa {
    nfa: contiguous::NFA,
    start: StateID,
    /// Pattern p is internal id `of_pattern[p]`.
    of_pattern: Vec<u32>,
}

impl Nfa {
    fn build(tokens: &[(u32, &[u8])]) -> Option<Nfa> {
        let nfa = noncontiguous::Builder::new()
            .match_kind(MatchKind::Standard)
            .build(tokens.iter().map(|t| t.1))
            .ok()?;
        let nfa = contiguous::Builder::new()
            .build_from_noncontiguous(&nfa)
            .ok()?;
        let start = nfa.start_state(Anchored::No).ok()?;
        let of_pattern = tokens.iter().map(|t| t.0).collect();
        Some(Nfa {
            nfa,
            start,
            of_pattern,
        })
    }
}

impl Scan for Nfa {
    type State = StateID;

    fn start(&self) -> StateID {
        self.start
    }

    #[inline(always)]
    fn step(&self, s: StateID, byte: u8) -> StateID {
        self.nfa.next_state(Anchored::No, s, byte)
    }

    #[inline(always)]
    fn longest(&self, s: StateID, _byte: u8) -> u32 {
        self.of_pattern[self.nfa.match_pattern(s, 0).as_usize()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens over "abc" of every length up to 5 that a seeded draw keeps, plus the bytes.
    fn vocabulary() -> Vec<Vec<u8>> {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for len in 2..=5u32 {
            for code in 0..3u32.pow(len) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng.is_multiple_of(3) {
                    let t = (0..len).map(|i| b"abc"[(code / 3u32.pow(i) % 3) as usize]);
                    tokens.push(t.collect());
                }
            }
        }
        tokens
    }

    /// (internal id, bytes) as `Endings::new` takes them: the id is the index.
    fn with_ids(tokens: &[Vec<u8>]) -> Vec<(u32, &[u8])> {
        (0..tokens.len() as u32)
            .zip(tokens.iter().map(Vec::as_slice))
            .collect()
    }

    /// Brute force: the longest token the text up to each offset ends with.
    fn brute_force(tokens: &[Vec<u8>], piece: &[u8]) -> Vec<u32> {
        let mut ends = vec![NONE];
        for i in 1..=piece.len() {
            let best = (0..tokens.len())
                .filter(|&t| piece[..i].ends_with(&tokens[t]))
                .max_by_key(|&t| tokens[t].len())
                .unwrap();
            ends.push(best as u32);
        }
        ends
    }

    #[test]
    fn the_size_bound_counts_the_trie_the_dfa_builds() {
        let tokens = vocabulary();
        let pairs = with_ids(&tokens);
        let dfa = Dfa::build(&pairs, DFA_BYTES).unwrap();
        let long = pairs.iter().filter(|t| t.1.len() > 1).map(|t| t.1);
        assert_eq!(trie_nodes(long), dfa.longest.len());
        // A budget a byte short of the table refuses it; the exact one builds it.
        let bytes = dfa.next.len() * 4;
        assert!(Dfa::build(&pairs, bytes).is_some());
        assert!(Dfa::build(&pairs, bytes - 1).is_none());
    }

    #[test]
    fn dfa_and_nfa_in_lanes_equal_brute_force_at_every_length() {
        let tokens = vocabulary();
        let pairs = with_ids(&tokens);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let text: Vec<u8> = (0..2000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Mostly the token letters, sometimes a byte no multi-byte token uses.
                if rng.is_multiple_of(17) {
                    b'z'
                } else {
                    b"abc"[(rng >> 8) as usize % 3]
                }
            })
            .collect();
        let want = brute_force(&tokens, &text);
        for budget in [DFA_BYTES, 0] {
            let e = Endings::new(&pairs, budget).unwrap();
            assert_eq!(e.is_dfa(), budget > 0);
            // Lanes engage from 4 x 16 x 5 = 320 bytes; lengths around that and a remainder
            // of every size in the last lanes.
            let mut ends = Vec::new();
            for n in (0..40)
                .chain(310..340)
                .chain([1000, 1001, 1002, 1003, 2000])
            {
                e.fill(&text[..n], &mut ends);
                assert_eq!(ends, want[..=n], "{n} bytes, dfa {}", e.is_dfa());
            }
        }
    }
}
