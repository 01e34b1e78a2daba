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
const LANES: usize = 4;

/// p as the count of 16-bit values below it: an element whose value is under it is dropped.
fn threshold(p: f32) -> u32 {
    (p as f64 * 65536.0).round() as u32
}

/// The 64 bits that decide elements `g·LANES .. (g + 1)·LANES` of the mask `key`.
fn group_bits(key: u64, g: usize) -> u64 {
    mix(key ^ (g as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Whether element `i` of the mask `key` survives dropout at probability `p` (p is resolved
/// to 1/65536).
pub fn keeps(key: u64, i: usize, p: f32) -> bool {
    let lane = (group_bits(key, i / LANES) >> (16 * (i % LANES))) & 0xFFFF;
    lane as u32 >= threshold(p)
}

/// A fresh key from a parent key and an index (a layer, a module, a pass).
pub fn subkey(key: u64, i: u64) -> u64 {
    mix(key.wrapping_add(mix(i.wrapping_add(0x9E37_79B9_7F4A_7C15))))
}

/// x ⊙ mask / (1 − p), in place. p = 0 leaves x untouched; p must be below 1.
pub fn dropout(x: &mut [f32], p: f32, key: u64) {
    assert!((0.0..1.0).contains(&p), "dropout: p = {p} is not in [0, 1)");
    if p == 0.0 {
        return;
    }
    let (keep, cut) = (1.0 / (1.0 - p), threshold(p));
    const CHUNK: usize = 1 << 14; // a multiple of LANES: groups never straddle chunks
    x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, xs)| {
        let g0 = c * CHUNK / LANES;
        for (g, vs) in xs.chunks_mut(LANES).enumerate() {
            let bits = group_bits(key, g0 + g);
            for (lane, v) in vs.iter_mut().enumerate() {
                let kept = ((bits >> (16 * lane)) & 0xFFFF) as u32 >= cut;
                *v = if kept { *v * keep } else { 0.0 };
            }
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
            let mut x = vec![1f32; n];
            dropout(&mut x, p, 7);
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
        dropout(&mut a, 0.3, 11);
        dropout(&mut b, 0.3, 11);
        dropout(&mut c, 0.3, subkey(11, 1));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // The mask is elementwise: a prefix drops as the whole does.
        let mut head = x[..1000].to_vec();
        dropout(&mut head, 0.3, 11);
        assert_eq!(head, a[..1000]);
        // And element by element, as `keeps` says.
        for (i, (&v, &orig)) in a.iter().zip(&x).enumerate().take(5000) {
            assert_eq!(v != 0.0 || orig == 0.0, keeps(11, i, 0.3), "element {i}");
        }
    }

    #[test]
    fn zero_leaves_the_input_alone() {
        let mut x = vec![2.5f32; 100];
        dropout(&mut x, 0.0, 3);
        assert!(x.iter().all(|&v| v == 2.5));
    }
}
