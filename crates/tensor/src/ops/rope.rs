//! Rotary position embedding, rotate-half convention (HF Llama): within each head, element j
//! pairs with j + hd/2 and the pair is rotated by angle pos · θ^(−2j/hd), the frequencies
//! optionally stretched for long contexts (`RopeScaling`: linear, Llama 3.1's).

use crate::ROW_CHUNK;
use rayon::prelude::*;

/// How the rotation frequencies θ^(−2j/hd) are stretched for contexts longer than training's
/// (transformers' `rope_scaling` types of the same names).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum RopeScaling {
    #[default]
    None,
    /// Every frequency divided by `factor` (position interpolation).
    Linear { factor: f32 },
    /// Llama 3.1's: wavelengths longer than original_context / low_freq_factor are stretched
    /// by `factor`, those shorter than original_context / high_freq_factor kept, and those
    /// between blended smoothly.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    },
}

impl RopeScaling {
    /// The scaled inverse frequency, in f32 as transformers computes it.
    pub fn apply(self, inv_freq: f32) -> f32 {
        match self {
            RopeScaling::None => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_context: old,
            } => {
                let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
                if wavelen < old / high {
                    inv_freq
                } else if wavelen > old / low {
                    inv_freq / factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
                }
            }
        }
    }
}

/// cos/sin of every (position, frequency) pair. # Shapes: cos, sin: (context, head_dim / 2).
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
}

impl RopeTable {
    pub fn new(context: usize, head_dim: usize, theta: f32, scaling: RopeScaling) -> Self {
        assert!(
            head_dim.is_multiple_of(2),
            "rope: head_dim {head_dim} must be even"
        );
        let half = head_dim / 2;
        // inv_freq is rounded to f32 first, as the reference implementations do.
        let inv_freq: Vec<f32> = (0..half)
            .map(|j| {
                let f = (1.0 / (theta as f64).powf(2.0 * j as f64 / head_dim as f64)) as f32;
                scaling.apply(f)
            })
            .collect();
        let (mut cos, mut sin) = (
            Vec::with_capacity(context * half),
            Vec::with_capacity(context * half),
        );
        for pos in 0..context {
            for &f in &inv_freq {
                let angle = pos as f64 * f as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { cos, sin, half }
    }
}

/// Where the heads sit in the buffer: rows of `stride` floats, `n_heads` heads of 2·half floats
/// from column `col`. Row r is token r % seq_len of its sequence, at position pos0 + r % seq_len.
#[derive(Clone, Copy, Debug)]
pub struct RopeLayout {
    pub stride: usize,
    pub col: usize,
    pub n_heads: usize,
    pub seq_len: usize,
    pub pos0: usize,
}

/// Rotates in place. `sign` = +1 applies the rotation, −1 its inverse (= the backward pass,
/// since a rotation's Jacobian is the rotation and its transpose the inverse rotation).
fn rotate(x: &mut [f32], l: RopeLayout, table: &RopeTable, sign: f32) {
    let half = table.half;
    assert!(
        l.col + l.n_heads * 2 * half <= l.stride && x.len().is_multiple_of(l.stride),
        "rope: layout {l:?} out of bounds"
    );
    assert!(
        (l.pos0 + l.seq_len) * half <= table.cos.len(),
        "rope: position beyond the table's context"
    );
    x.par_chunks_mut(ROW_CHUNK * l.stride)
        .enumerate()
        .for_each(|(c, rows)| {
            for (i, row) in rows.chunks_exact_mut(l.stride).enumerate() {
                let pos = l.pos0 + (c * ROW_CHUNK + i) % l.seq_len;
                let (cos, sin) = (
                    &table.cos[pos * half..][..half],
                    &table.sin[pos * half..][..half],
                );
                for head in row[l.col..l.col + l.n_heads * 2 * half].chunks_exact_mut(2 * half) {
                    let (a, b) = head.split_at_mut(half);
                    for j in 0..half {
                        let (x1, x2, s) = (a[j], b[j], sign * sin[j]);
                        a[j] = x1 * cos[j] - x2 * s;
                        b[j] = x2 * cos[j] + x1 * s;
                    }
                }
            }
        });
}

pub fn rope_forward(x: &mut [f32], layout: RopeLayout, table: &RopeTable) {
    rotate(x, layout, table, 1.0);
}

/// Overwrites dx (the gradient w.r.t. the rotated values) with the gradient w.r.t. the inputs.
pub fn rope_backward(dx: &mut [f32], layout: RopeLayout, table: &RopeTable) {
    rotate(dx, layout, table, -1.0);
}

pub mod reference {
    /// HF's formulation: x·cos + rotate_half(x)·sin, with cos/sin repeated over both halves,
    /// angles computed independently of `RopeTable`. x: (seq_len, head_dim), one head.
    pub fn rope_forward(x: &mut [f32], head_dim: usize, theta: f32) {
        let half = head_dim / 2;
        for (pos, row) in x.chunks_exact_mut(head_dim).enumerate() {
            let orig = row.to_vec();
            for i in 0..head_dim {
                let j = i % half;
                let angle = pos as f64 * (theta as f64).powf(-(2.0 * j as f64) / head_dim as f64);
                let rotated = if i < half {
                    -orig[i + half]
                } else {
                    orig[i - half]
                };
                row[i] = (orig[i] as f64 * angle.cos() + rotated as f64 * angle.sin()) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, dot, grad_check, projection};

    #[test]
    fn matches_reference_and_inverts() {
        // 2 sequences × 5 tokens; rows hold [junk 3 | 2 heads of 8 | junk 2].
        let (b, t, hd, heads, stride, col) = (2, 5, 8, 2, 21, 3);
        let layout = RopeLayout {
            stride,
            col,
            n_heads: heads,
            seq_len: t,
            pos0: 0,
        };
        let table = RopeTable::new(16, hd, 10000.0, RopeScaling::None);
        let x = projection(b * t * stride, 1);
        let mut y = x.clone();
        rope_forward(&mut y, layout, &table);
        for s in 0..b {
            for h in 0..heads {
                let mut head: Vec<f32> = (0..t)
                    .flat_map(|i| x[(s * t + i) * stride + col + h * hd..][..hd].to_vec())
                    .collect();
                reference::rope_forward(&mut head, hd, 10000.0);
                let got: Vec<f32> = (0..t)
                    .flat_map(|i| y[(s * t + i) * stride + col + h * hd..][..hd].to_vec())
                    .collect();
                assert_close(&got, &head, 1e-5, "rope forward");
            }
        }
        assert_eq!(
            y[..col],
            x[..col],
            "columns outside the heads are untouched"
        );
        let mut back = y.clone();
        rope_backward(&mut back, layout, &table);
        assert_close(&back, &x, 1e-5, "inverse rotation restores the input");

        let proj = projection(x.len(), 2);
        let mut dx = proj.clone();
        rope_backward(&mut dx, layout, &table);
        grad_check("rope dx", &mut x.clone(), &dx, |x| {
            let mut y = x.to_vec();
            rope_forward(&mut y, layout, &table);
            dot(&y, &proj)
        });
    }
}
