//! Token embedding lookup.

use rayon::prelude::*;

/// out[i] = table[tokens[i]]. # Shapes: tokens (n); table (vocab, d); out (n, d).
/// Token ids are validated where data enters frugal; here an id ≥ vocab is a bug and panics.
pub fn embedding_forward(out: &mut [f32], tokens: &[u32], table: &[f32], d: usize) {
    let vocab = table.len() / d;
    assert_eq!(out.len(), tokens.len() * d, "embedding_forward: out shape");
    out.par_chunks_mut(d)
        .zip(tokens.par_iter())
        .for_each(|(row, &t)| {
            assert!(
                (t as usize) < vocab,
                "embedding_forward: token {t} >= vocab {vocab}"
            );
            row.copy_from_slice(&table[t as usize * d..(t as usize + 1) * d]);
        });
}

/// Accumulates dtable[tokens[i]] += dout[i]. Serial on purpose: it is a few hundred thousand
/// adds, and a fixed order keeps repeated tokens' sums bitwise reproducible.
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], tokens: &[u32], d: usize) {
    assert_eq!(
        dout.len(),
        tokens.len() * d,
        "embedding_backward: dout shape"
    );
    for (row, &t) in dout.chunks_exact(d).zip(tokens) {
        let dst = &mut dtable[t as usize * d..(t as usize + 1) * d];
        for (a, b) in dst.iter_mut().zip(row) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{dot, grad_check, projection};

    #[test]
    fn lookup_and_gradient() {
        let (vocab, d) = (11, 5);
        let tokens = [3u32, 0, 3, 10, 7, 3];
        let table = projection(vocab * d, 1);
        let mut out = vec![0.0; tokens.len() * d];
        embedding_forward(&mut out, &tokens, &table, d);
        assert_eq!(&out[2 * d..3 * d], &table[3 * d..4 * d]);
        let proj = projection(out.len(), 2);
        let mut dtable = vec![0.0; table.len()];
        embedding_backward(&mut dtable, &proj, &tokens, d);
        grad_check("embedding dtable", &mut table.clone(), &dtable, |t| {
            let mut o = vec![0.0; tokens.len() * d];
            embedding_forward(&mut o, &tokens, t, d);
            dot(&o, &proj)
        });
    }
}
