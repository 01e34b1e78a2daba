//! The SFT mixture: conversations from every source, held-out conversations split off per
//! source, rendered with the chat format, and packed into fixed-length rows.
//!
//! Packing is best-fit decreasing: each conversation (never split) goes into the fullest row
//! that still has room, so rows are nearly full and no compute is spent on padding. Each
//! conversation starts with `<|bos|>`, as pretraining documents do; only assistant tokens are
//! targets. What padding remains has no targets.

use crate::chat::import::{read_conversations, ChatFormatKind};
use crate::chat::{ChatFormat, Conversation, Role};
use base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tensor::ops::cross_entropy::IGNORE;
use tensor::Rng;

/// One source of conversations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatSource {
    pub name: String,
    /// A file, or a directory searched for .jsonl/.json files.
    pub path: PathBuf,
    pub format: ChatFormatKind,
    /// Training conversations taken from this source at most (0: all).
    pub max_conversations: usize,
}

impl Default for ChatSource {
    fn default() -> Self {
        ChatSource {
            name: String::new(),
            path: PathBuf::new(),
            format: ChatFormatKind::Auto,
            max_conversations: Default::default(),
        }
    }
}

/// What the mixture is made of and how it is split: the `[sft]` table's sources and held-out
/// fraction, with the training length and seed.
#[derive(Clone, Copy, Debug)]
pub struct MixSpec<'a> {
    pub sources: &'a [ChatSource],
    pub seq_len: usize,
    pub seed: u64,
    /// Fraction of each source held out for validation and the format check ...
    pub val_fraction: f32,
    /// ... but at most this many conversations per source.
    pub max_val_per_source: usize,
}

/// Rows of seq_len inputs and targets (IGNORE where nothing is trained), and for each input
/// the position in its row where its conversation starts (attention stays within it).
#[derive(Clone, Debug, Default)]
pub struct Packed {
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub starts: Vec<u32>,
}

impl Packed {
    pub fn rows(&self) -> usize {
        self.inputs.len() / self.seq_len.max(1)
    }
    /// (inputs, targets, starts) of row i.
    pub fn row(&self, i: usize) -> (&[u32], &[u32], &[u32]) {
        let t = self.seq_len;
        (
            &self.inputs[i * t..(i + 1) * t],
            &self.targets[i * t..(i + 1) * t],
            &self.starts[i * t..(i + 1) * t],
        )
    }
    /// Tokens that are trained on.
    pub fn target_tokens(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// What building the mixture did, per source and in all.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MixReport {
    pub sources: Vec<SourceReport>,
    pub train_rows: usize,
    pub val_rows: usize,
    /// Fraction of row slots holding conversation tokens (the rest is padding).
    pub fill: f64,
    pub train_target_tokens: usize,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SourceReport {
    pub name: String,
    pub read: usize,
    pub train: usize,
    pub val: usize,
    /// Conversations (train and val) whose first exchange alone is longer than seq_len + 1
    /// tokens.
    pub too_long: usize,
    /// Conversations shortened to their first exchanges to fit.
    pub shortened: usize,
}

/// The built mixture.
pub struct Mixture {
    pub train: Packed,
    pub val: Packed,
    /// Held-out conversations, interleaved across sources (for the format check).
    pub held_out: Vec<Conversation>,
    pub report: MixReport,
}

fn seed_of(name: &str, seed: u64) -> u64 {
    name.bytes().fold(seed ^ 0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Reads one source and splits it: (train, val).
fn split_source(
    src: &ChatSource,
    spec: &MixSpec,
) -> Result<(Vec<Conversation>, Vec<Conversation>)> {
    let mut convs = read_conversations(&src.path, src.format)?;
    let mut rng = Rng::new(seed_of(&src.name, spec.seed));
    shuffle(&mut convs, &mut rng);
    // The tolerance keeps 40 × 0.2 (0.2 in f32 is a little more) at 8, not 9.
    let n_val = ((convs.len() as f64 * spec.val_fraction as f64 - 1e-6).ceil() as usize)
        .min(spec.max_val_per_source)
        .min(convs.len() / 2);
    let mut train = convs.split_off(n_val);
    if src.max_conversations > 0 {
        train.truncate(src.max_conversations);
    }
    Ok((train, convs))
}

/// Best-fit decreasing packing of rendered sequences (each ≤ seq_len + 1 tokens) into rows.
fn pack(seqs: Vec<(Vec<u32>, Vec<u8>)>, seq_len: usize, bos: u32) -> (Packed, f64) {
    let cap = seq_len + 1;
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(seqs[i].0.len()), i));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut room: Vec<usize> = Vec::new();
    // Free space → rows with that much free space.
    let mut by_room: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in order {
        let len = seqs[i].0.len();
        let found = by_room.range(len..).next().map(|(&r, _)| r);
        let row = match found {
            Some(r) => {
                let list = by_room.get_mut(&r).expect("key just found");
                let row = list.pop().expect("lists are never left empty");
                if list.is_empty() {
                    by_room.remove(&r);
                }
                row
            }
            None => {
                rows.push(Vec::new());
                room.push(cap);
                rows.len() - 1
            }
        };
        rows[row].push(i);
        room[row] -= len;
        by_room.entry(room[row]).or_default().push(row);
    }
    let mut p = Packed {
        seq_len,
        ..Default::default()
    };
    let mut used = 0usize;
    for members in &rows {
        let (mut ids, mut mask) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
        let mut starts = Vec::with_capacity(cap);
        for &i in members {
            starts.extend(std::iter::repeat_n(ids.len() as u32, seqs[i].0.len()));
            ids.extend_from_slice(&seqs[i].0);
            mask.extend_from_slice(&seqs[i].1);
        }
        used += ids.len();
        // Padding is a document of its own: it attends to nothing real, and nothing to it.
        starts.resize(cap, ids.len() as u32);
        ids.resize(cap, bos);
        mask.resize(cap, 0);
        p.starts.extend_from_slice(&starts[..seq_len]);
        p.inputs.extend_from_slice(&ids[..seq_len]);
        p.targets
            .extend((1..cap).map(|k| if mask[k] == 1 { ids[k] } else { IGNORE }));
    }
    let fill = used as f64 / (rows.len() * cap).max(1) as f64;
    (p, fill)
}

/// Renders each conversation to fit seq_len + 1 tokens; counts what did not fit.
fn render_all(
    f: &ChatFormat,
    convs: &[Conversation],
    seq_len: usize,
    rep: &mut SourceReport,
) -> Result<Vec<(Vec<u32>, Vec<u8>)>> {
    let mut out = Vec::with_capacity(convs.len());
    for c in convs {
        match f.render_fitted(c, seq_len + 1)? {
            Some(r) => {
                if r.message_starts.len() < c.messages.len() {
                    rep.shortened += 1;
                }
                out.push((r.ids, r.mask));
            }
            None => rep.too_long += 1,
        }
    }
    Ok(out)
}

/// Builds the training and validation rows and the held-out prompts.
pub fn build(spec: &MixSpec, f: &ChatFormat) -> Result<Mixture> {
    let t = spec.seq_len;
    let (mut train_seqs, mut val_seqs) = (Vec::new(), Vec::new());
    let mut held: Vec<Vec<Conversation>> = Vec::new();
    let mut report = MixReport::default();
    for src in spec.sources {
        let (train, val) = split_source(src, spec)?;
        let mut rep = SourceReport {
            name: src.name.clone(),
            read: train.len() + val.len(),
            ..Default::default()
        };
        let tr = render_all(f, &train, t, &mut rep)?;
        rep.train = tr.len();
        let va = render_all(f, &val, t, &mut rep)?;
        rep.val = va.len();
        train_seqs.extend(tr);
        val_seqs.extend(va);
        // Held-out prompts: each validation conversation up to its first user message.
        held.push(
            val.into_iter()
                .map(|mut c| {
                    let first_user = c.messages.iter().position(|m| m.role == Role::User);
                    c.messages.truncate(first_user.map_or(0, |u| u + 1));
                    c
                })
                .filter(|c| !c.messages.is_empty())
                .collect(),
        );
        report.sources.push(rep);
    }
    if train_seqs.is_empty() {
        let names: Vec<String> = report
            .sources
            .iter()
            .map(|s| format!("{} ({} read, {} too long)", s.name, s.read, s.too_long))
            .collect();
        return Err(Error::input(
            "sft.sources",
            format!(
                "no training conversations fit in seq_len {t}: {}",
                names.join(", ")
            ),
            "add sources with conversations, or raise train.seq_len (up to the model's context)",
        ));
    }
    let (train, fill) = pack(train_seqs, t, f.bos());
    let (val, _) = pack(val_seqs, t, f.bos());
    report.train_rows = train.rows();
    report.val_rows = val.rows();
    report.fill = fill;
    report.train_target_tokens = train.target_tokens();
    // Round-robin over sources, so every source is represented among the first prompts.
    let mut held_out = Vec::new();
    let longest = held.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        held_out.extend(held.iter().filter_map(|h| h.get(k).cloned()));
    }
    Ok(Mixture {
        train,
        val,
        held_out,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_fits_every_sequence_once() {
        let mut rng = Rng::new(1);
        let seqs: Vec<(Vec<u32>, Vec<u8>)> = (0..200)
            .map(|i| {
                let len = 2 + rng.below(15) as usize;
                let ids: Vec<u32> = std::iter::once(0)
                    .chain((1..len).map(|k| (i * 31 + k) as u32 % 90 + 1))
                    .collect();
                let mask = (0..len).map(|k| (k % 2) as u8).collect();
                (ids, mask)
            })
            .collect();
        let total: usize = seqs.iter().map(|s| s.0.len()).sum();
        let targets: usize = seqs
            .iter()
            .map(|s| s.1.iter().skip(1).filter(|&&m| m == 1).count())
            .sum();
        let (p, fill) = pack(seqs.clone(), 16, 0);
        // Every trained token is a target exactly once, targets follow inputs by one position.
        assert_eq!(p.target_tokens(), targets);
        assert!(p.rows() * 17 >= total && fill > 0.9, "fill {fill}");
        for r in 0..p.rows() {
            let (x, y, st) = p.row(r);
            assert_eq!(x[0], 0, "every row starts with a conversation's bos");
            for k in 0..15 {
                if y[k] != IGNORE {
                    assert_eq!(y[k], x[k + 1], "targets are the next input");
                    assert_eq!(st[k], st[k + 1], "a target is in its input's conversation");
                }
            }
            for (k, &s) in st.iter().enumerate() {
                let s = s as usize;
                assert!(s <= k && x[s] == 0, "a conversation starts at its bos");
            }
        }
    }
}
