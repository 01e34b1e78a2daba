//! Byte-pair merging of one pre-split piece by rank, as tiktoken does: repeatedly merge the
//! adjacent pair whose concatenated bytes have the lowest rank. O(n·m) for a piece of n bytes
//! and m merges, which beats a heap for the short pieces pre-splitting produces.

use rustc_hash::FxHashMap;

/// Appends the token ids of `piece` to `out`. `parts` is scratch reused between calls.
#[inline]
pub(crate) fn encode_piece(
    piece: &[u8],
    ranks: &FxHashMap<Vec<u8>, u32>,
    byte_ids: &[u32; 256],
    out: &mut Vec<u32>,
    parts: &mut Vec<(usize, u32)>,
) {
    // Most pieces are whole tokens: one lookup.
    if let Some(&id) = ranks.get(piece) {
        out.push(id);
        return;
    }
    if piece.len() == 1 {
        out.push(byte_ids[piece[0] as usize]);
        return;
    }
    merge_parts(piece, ranks, u32::MAX, parts);
    for w in parts.windows(2) {
        let bytes = &piece[w[0].0..w[1].0];
        out.push(if bytes.len() == 1 {
            byte_ids[bytes[0] as usize]
        } else {
            ranks[bytes]
        });
    }
}

/// Leaves in `parts` the boundaries (start offsets, plus a final `piece.len()`) of the parts
/// that rank-ordered merging with ranks below `limit` produces.
pub(crate) fn merge_parts(
    piece: &[u8],
    ranks: &FxHashMap<Vec<u8>, u32>,
    limit: u32,
    parts: &mut Vec<(usize, u32)>,
) {
    // parts[i] = (start of part i, rank of merging part i with part i + 1)
    let rank_of = |parts: &[(usize, u32)], i: usize| -> u32 {
        if i + 2 < parts.len() {
            ranks
                .get(&piece[parts[i].0..parts[i + 2].0])
                .copied()
                .filter(|&r| r < limit)
                .unwrap_or(u32::MAX)
        } else {
            u32::MAX
        }
    };
    parts.clear();
    parts.extend((0..=piece.len()).map(|i| (i, u32::MAX)));
    for i in 0..parts.len().saturating_sub(2) {
        parts[i].1 = rank_of(parts, i);
    }
    loop {
        let (mut best, mut at) = (u32::MAX, 0);
        for (i, &(_, r)) in parts[..parts.len() - 1].iter().enumerate() {
            if r < best {
                best = r;
                at = i;
            }
        }
        if best == u32::MAX {
            break;
        }
        parts.remove(at + 1);
        parts[at].1 = rank_of(parts, at);
        if at > 0 {
            parts[at - 1].1 = rank_of(parts, at - 1);
        }
    }
}
