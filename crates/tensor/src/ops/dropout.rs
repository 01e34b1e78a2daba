//! Inverted dropout (Srivastava et al., 2014): each element is zeroed with probability p and the
//! survivors scaled by 1 / (1 − p), so the expectation is unchanged. The mask is a counter-based
//! hash of (key, element index) rather than a stored tensor: a backward pass regenerates the
//! forward's mask from its key, so no mask sits in memory between the two, and the result does
//! not depend on how many threads drew it.

use rayon::prelude::*;

/// SplitMix64's finaliser: a bijective mix of 64 bits (Steele et al., 2014).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Elements of the mask that one hash decides: 16 bits each.
const LANES: usize = 2;

/// p as the count of 16-bit values below it: an element whose value is under it is dropped.
fn threshold(p: f32) -> u32 {
    (p as f64 * 65536.0).round() as u32
}

/// murmur3's 32-bit finaliser: 32-bit multiplies, which vector units have on every x86
/// with AVX2, so a whole mask is hashed many lanes at a time.
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// The 32 bits that decide elements `g·LANES .. (g + 1)·LANES` of the mask `key` (the group
/// index wraps past 2³² groups).
fn group_bits(key: u64, g: usize) -> u32 {
    let h = fmix32((g as u32).wrapping_mul(0x9E37_79B9) ^ key as u32);
    fmix32(h.wrapping_add((key >> 32) as u32))
}

/// Whether element `i` of the mask `key` survives dropout at probability `p` (p is resolved
/// to 1/65536).
pub fn keeps(key: u64, i: usize, p: f32) -> bool {
    let lane = (group_bits(key, i / LANES) >> (16 * (i % LANES))) & 0xFFFF;
    lane >= threshold(p)
}

/// A fresh key from a parent key and an index (a layer, a module, a pass).
pub fn subkey(key: u64, i: u64) -> u64 {
    mix(key.wrapping_add(mix(i.wrapping_add(0x9E37_79B9_7F4A_7C15))))
}

/// out = x ⊙ mask / (1 − p), or out += that with `accumulate`: one pass over both, so that a
/// dropped copy of an input, or a dropped gradient added into another, costs no extra sweep.
/// p must be below 1.
pub fn dropout(out: &mut [f32], x: &[f32], p: f32, key: u64, accumulate: bool) {
    assert!((0.0..1.0).contains(&p), "dropout: p = {p} is not in [0, 1)");
    assert_eq!(out.len(), x.len(), "dropout: lengths differ");
    let (keep, cut) = (1.0 / (1.0 - p), threshold(p));
    let scaled = |v: f32, lane: u32| if lane & 0xFFFF >= cut { v * keep } else { 0.0 };
    let put = |o: &mut f32, v: f32| *o = if accumulate { *o + v } else { v };
    const CHUNK: usize = 1 << 14; // a multiple of LANES: groups never straddle chunks
    let chunks = out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK));
    chunks.enumerate().for_each(|(c, (os, xs))| {
        let (g0, tail) = (c * CHUNK / LANES, xs.len() / LANES);
        let pairs = os.chunks_exact_mut(LANES).zip(xs.chunks_exact(LANES));
        for (g, (o, v)) in pairs.enumerate() {
            let bits = group_bits(key, g0 + g);
            put(&mut o[0], scaled(v[0], bits));
            put(&mut o[1], scaled(v[1], bits >> 16));
        }
        if xs.len() % LANES == 1 {
            let last = os.len() - 1;
            put(&mut os[last], scaled(xs[last], group_bits(key, g0 + tail)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_about_p_and_keeps_the_mean() {
        let n = 200_000;
        for p in [0.1f32, 0.5] {
            let mut x = vec![0f32; n];
            dropout(&mut x, &vec![1f32; n], p, 7, false);
            let dropped = x.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            assert!(
                (dropped - p as f64).abs() < 0.01,
                "p {p}: dropped {dropped}"
            );
            assert!((mean - 1.0).abs() < 0.02, "p {p}: mean {mean}");
        }
    }

    #[test]
    fn the_same_key_gives_the_same_mask_and_another_key_another() {
        let x: Vec<f32> = (0..50_000).map(|i| i as f32).collect();
        let (mut a, mut b, mut c) = (x.clone(), x.clone(), x.clone());
        dropout(&mut a, &x, 0.3, 11, false);
        dropout(&mut b, &x, 0.3, 11, false);
        dropout(&mut c, &x, 0.3, subkey(11, 1), false);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // The mask is elementwise: a prefix drops as the whole does.
        let mut head = vec![0f32; 1001];
        dropout(&mut head, &x[..1001], 0.3, 11, false);
        assert_eq!(head, a[..1001]);
        // And element by element, as `keeps` says.
        for (i, (&v, &orig)) in a.iter().zip(&x).enumerate().take(5000) {
            assert_eq!(v != 0.0 || orig == 0.0, keeps(11, i, 0.3), "element {i}");
        }
    }

    #[test]
    fn accumulating_adds_the_dropped_values() {
        let x: Vec<f32> = (0..3001).map(|i| 0.5 + i as f32).collect();
        let mut dropped = vec![0f32; x.len()];
        dropout(&mut dropped, &x, 0.2, 5, false);
        let mut sum = vec![2f32; x.len()];
        dropout(&mut sum, &x, 0.2, 5, true);
        for (s, d) in sum.iter().zip(&dropped) {
            assert_eq!(*s, 2.0 + d);
        }
        // p = 0 copies.
        let mut copy = vec![0f32; x.len()];
        dropout(&mut copy, &x, 0.0, 5, false);
        assert_eq!(copy, x);
    }
}
