//! Softmax cross-entropy fused with the LM head. Logits are formed a chunk of rows at a time and
//! overwritten by their own gradient, so the (N × vocab) logit matrix — the largest activation of
//! a small model — is never held whole, and softmax, loss and dlogits take one pass.

use super::math::{exp, max, sum, tanh};
use crate::matmul::{sgemm, Gemm};
use rayon::prelude::*;

/// Target id meaning "no loss at this position" (padding, prompt tokens in fine-tuning).
pub const IGNORE: u32 = u32::MAX;

/// Logit-chunk budget in floats (16 MiB): large enough for efficient GEMMs, small enough to stay
/// out of the memory peak.
const CHUNK_FLOATS: usize = 1 << 22;

/// The LM head: logits = x·Wᵀ over rows of width `d`, then, with `softcap` c > 0,
/// c·tanh(logit / c) (Gemma 2's final-logit soft-capping, kept by modded-nanogpt and nanochat):
/// no logit passes ±c, so the head cannot buy loss with ever larger logits early in training.
/// The loss is that of softmax(logits / `temperature`): a policy's log-probabilities at the
/// temperature it sampled at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Head {
    pub d: usize,
    /// 0: no cap.
    pub softcap: f32,
    pub temperature: f32,
}

impl Head {
    pub fn new(d: usize, softcap: f32) -> Self {
        Head {
            d,
            softcap,
            temperature: 1.0,
        }
    }

    pub fn at_temperature(self, temperature: f32) -> Self {
        Head {
            temperature,
            ..self
        }
    }

    /// Caps raw logits in place (nothing without a cap); the temperature is the sampler's.
    pub fn cap(&self, logits: &mut [f32]) {
        let c = self.softcap;
        if c > 0.0 {
            logits.iter_mut().for_each(|v| *v = c * tanh(*v / c));
        }
    }
}

/// Gradient outputs of [`lm_head_cross_entropy`].
pub struct LossGrads<'a> {
    /// dL/dx, (n, d), overwritten.
    pub dx: &'a mut [f32],
    /// dL/dW, (vocab, d), accumulated; None when the head is frozen (LoRA), which skips the
    /// pass's largest GEMM.
    pub dw: Option<&'a mut [f32]>,
    /// Multiplier of every gradient: 1 / (number of targets in the whole batch) for a mean loss.
    pub scale: f32,
    /// Per-row multipliers on top of `scale`, (n): the gradient is then that of Σ wᵢ·lossᵢ.
    /// Preference objectives weight each token's log-probability by the loss's derivative.
    pub weights: Option<&'a [f32]>,
}

/// Returns the summed loss over non-ignored targets and their count.
///
/// # Shapes
/// x: (n, d) final hidden states; w: (vocab, d) head weight; targets: (n).
/// `scratch` is reused between calls to hold one chunk of logits.
pub fn lm_head_cross_entropy(
    x: &[f32],
    w: &[f32],
    targets: &[u32],
    head: Head,
    grads: Option<LossGrads>,
    scratch: &mut Vec<f32>,
) -> (f64, usize) {
    head_xent(x, w, targets, head, grads, scratch, None)
}

/// Each row's loss, −ln p(target) (0 at IGNORE), into `out` (n): log-probabilities of given
/// tokens for preference training, without gradients.
pub fn lm_head_token_losses(
    x: &[f32],
    w: &[f32],
    targets: &[u32],
    head: Head,
    scratch: &mut Vec<f32>,
    out: &mut [f64],
) {
    assert_eq!(out.len(), targets.len(), "lm_head_token_losses: out shape");
    head_xent(x, w, targets, head, None, scratch, Some(out));
}

fn head_xent(
    x: &[f32],
    w: &[f32],
    targets: &[u32],
    head: Head,
    mut grads: Option<LossGrads>,
    scratch: &mut Vec<f32>,
    mut rows_out: Option<&mut [f64]>,
) -> (f64, usize) {
    let d = head.d;
    let (n, vocab) = (targets.len(), w.len() / d);
    assert!(
        x.len() == n * d && w.len() == vocab * d,
        "lm_head_cross_entropy: shape mismatch"
    );
    if let Some(wt) = grads.as_ref().and_then(|g| g.weights) {
        assert_eq!(wt.len(), n, "lm_head_cross_entropy: one weight per row");
    }
    let chunk = (CHUNK_FLOATS / vocab).clamp(1, n.max(1));
    scratch.resize(chunk * vocab, 0.0);
    let (mut loss, mut count) = (0f64, 0usize);
    let mut row_loss = vec![0f64; chunk];
    for r0 in (0..n).step_by(chunk) {
        let rows = chunk.min(n - r0);
        let logits = &mut scratch[..rows * vocab];
        let xc = &x[r0 * d..(r0 + rows) * d];
        let tc = &targets[r0..r0 + rows];
        sgemm(&Gemm::nt(rows, vocab, d), xc, w, logits);
        let scale = grads.as_ref().map(|g| g.scale);
        let weights = grads
            .as_ref()
            .and_then(|g| g.weights)
            .map(|w| &w[r0..r0 + rows]);
        logits
            .par_chunks_mut(vocab)
            .zip(tc.par_iter())
            .zip(row_loss[..rows].par_iter_mut())
            .enumerate()
            .for_each_init(Vec::new, |capped, (i, ((l, &t), out))| {
                let s = scale.map(|s| weights.map_or(s, |w| s * w[i]));
                *out = head_xent_row(l, t, s, head, capped);
            });
        if let Some(o) = rows_out.as_deref_mut() {
            o[r0..r0 + rows].copy_from_slice(&row_loss[..rows]);
        }
        for (&t, &rl) in tc.iter().zip(&row_loss[..rows]) {
            if t != IGNORE {
                loss += rl;
                count += 1;
            }
        }
        if let Some(g) = grads.as_mut() {
            // dx_c (rows, d) = dlogits (rows, V) · W (V, d); dW (V, d) += dlogitsᵀ · x_c
            sgemm(
                &Gemm::nn(rows, d, vocab),
                logits,
                w,
                &mut g.dx[r0 * d..(r0 + rows) * d],
            );
            if let Some(dw) = g.dw.as_deref_mut() {
                sgemm(&Gemm::tn(vocab, d, rows).accumulate(true), logits, xc, dw);
            }
        }
    }
    (loss, count)
}

/// `softmax_xent_row` of the head's logits: capped (c·tanh(l / c) for c = `head.softcap`),
/// then divided by the temperature; the gradient is taken back through both, d/dl =
/// (1 − tanh²) / T. `tanh_row` keeps the row's derivatives.
fn head_xent_row(
    l: &mut [f32],
    target: u32,
    scale: Option<f32>,
    head: Head,
    tanh_row: &mut Vec<f32>,
) -> f64 {
    let (cap, inv_t) = (head.softcap, 1.0 / head.temperature);
    if target == IGNORE || (cap <= 0.0 && inv_t == 1.0) {
        return softmax_xent_row(l, target, scale);
    }
    if cap <= 0.0 {
        l.iter_mut().for_each(|v| *v *= inv_t);
        let loss = softmax_xent_row(l, target, scale);
        if scale.is_some() {
            l.iter_mut().for_each(|g| *g *= inv_t);
        }
        return loss;
    }
    // One pass: each capped, tempered logit, and its derivative (1 − tanh²) / T kept for the
    // backward (a multiply by 1 / c, not a division: this pass is the cap's whole cost).
    let (inv_c, k) = (1.0 / cap, cap * inv_t);
    tanh_row.resize(l.len(), 0.0);
    for (v, dv) in l.iter_mut().zip(tanh_row.iter_mut()) {
        let t = tanh(*v * inv_c);
        *v = k * t;
        *dv = (1.0 - t * t) * inv_t;
    }
    let loss = softmax_xent_row(l, target, scale);
    if scale.is_some() {
        l.iter_mut()
            .zip(tanh_row.iter())
            .for_each(|(g, &f)| *g *= f);
    }
    loss
}

/// Loss of one row; with `scale`, overwrites the logits by scale · (softmax − onehot).
fn softmax_xent_row(l: &mut [f32], target: u32, scale: Option<f32>) -> f64 {
    if target == IGNORE {
        if scale.is_some() {
            l.fill(0.0);
        }
        return 0.0;
    }
    let t = target as usize;
    assert!(
        t < l.len(),
        "cross_entropy: target {t} >= vocab {}",
        l.len()
    );
    let m = max(l);
    let target_logit = l[t];
    // Exponentiate in place (one vectorised pass), sum, then normalise if a gradient is wanted.
    l.iter_mut().for_each(|v| *v = exp(*v - m));
    let total = sum(l);
    let loss = (m + total.ln() - target_logit) as f64;
    if let Some(scale) = scale {
        let k = scale / total;
        l.iter_mut().for_each(|v| *v *= k);
        l[t] -= scale;
    }
    loss
}

pub mod reference {
    use super::IGNORE;

    use super::Head;

    /// Mean cross-entropy of logits = x·Wᵀ (capped and tempered as `head` says), all in f64.
    pub fn lm_head_cross_entropy(x: &[f32], w: &[f32], targets: &[u32], head: Head) -> f64 {
        let d = head.d;
        let vocab = w.len() / d;
        let (c, temp) = (head.softcap as f64, head.temperature as f64);
        let (mut total, mut count) = (0f64, 0);
        for (i, &t) in targets.iter().enumerate() {
            if t == IGNORE {
                continue;
            }
            let logits: Vec<f64> = (0..vocab)
                .map(|v| {
                    let z: f64 = (0..d)
                        .map(|k| x[i * d + k] as f64 * w[v * d + k] as f64)
                        .sum();
                    if c > 0.0 {
                        c * (z / c).tanh() / temp
                    } else {
                        z / temp
                    }
                })
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            total += lse - logits[t as usize];
            count += 1;
        }
        total / count as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{grad_check, projection};

    /// Uncapped, and capped at 1.5 (below these logits' range, so tanh bends them); at
    /// temperature 1 and 0.7.
    #[test]
    fn matches_reference_and_gradients_check() {
        for (softcap, temperature) in [(0.0, 1.0), (1.5, 1.0), (0.0, 0.7), (1.5, 0.7)] {
            let head = Head::new(6, softcap).at_temperature(temperature);
            matches_reference_and_gradients_check_at(head);
        }
    }

    fn matches_reference_and_gradients_check_at(head: Head) {
        let (n, d, vocab) = (9, head.d, 13);
        let x = projection(n * d, 1);
        let w = projection(vocab * d, 2);
        let targets = [0, 12, 5, IGNORE, 7, 7, 1, 3, IGNORE];
        let count = targets.iter().filter(|&&t| t != IGNORE).count();
        let (mut dx, mut dw, mut scratch) = (vec![0.0; n * d], vec![0.0; vocab * d], Vec::new());
        let grads = LossGrads {
            dx: &mut dx,
            dw: Some(&mut dw),
            scale: 1.0 / count as f32,
            weights: None,
        };
        let (sum, c) = lm_head_cross_entropy(&x, &w, &targets, head, Some(grads), &mut scratch);
        assert_eq!(c, count);
        let want = reference::lm_head_cross_entropy(&x, &w, &targets, head);
        assert!(
            (sum / c as f64 - want).abs() < 1e-5,
            "loss {} vs reference {want}",
            sum / c as f64
        );
        assert!(
            dx[3 * d..4 * d].iter().all(|&g| g == 0.0),
            "an ignored position gets no gradient"
        );
        grad_check("cross-entropy dx", &mut x.clone(), &dx, |x| {
            reference::lm_head_cross_entropy(x, &w, &targets, head)
        });
        grad_check("cross-entropy dw", &mut w.clone(), &dw, |w| {
            reference::lm_head_cross_entropy(&x, w, &targets, head)
        });
    }

    #[test]
    fn per_row_weights_and_token_losses() {
        for (softcap, temperature) in [(0.0, 1.0), (2.0, 1.0), (2.0, 1.3)] {
            let head = Head::new(5, softcap).at_temperature(temperature);
            per_row_weights_and_token_losses_at(head);
        }
    }

    fn per_row_weights_and_token_losses_at(head: Head) {
        let (n, d, vocab) = (7, head.d, 11);
        let x = projection(n * d, 3);
        let w = projection(vocab * d, 4);
        let targets = [3, 0, IGNORE, 10, 4, 4, 9];
        // Signed weights, as DPO gives chosen and rejected tokens.
        let weights = [0.5f32, -1.0, 2.0, 0.25, -0.75, 1.5, 0.0];
        let weighted = |x: &[f32], w: &[f32]| -> f64 {
            (0..n)
                .filter(|&i| targets[i] != IGNORE)
                .map(|i| {
                    let one = [targets[i]];
                    weights[i] as f64
                        * reference::lm_head_cross_entropy(&x[i * d..(i + 1) * d], w, &one, head)
                })
                .sum()
        };
        let (mut dx, mut dw, mut scratch) = (vec![0.0; n * d], vec![0.0; vocab * d], Vec::new());
        let grads = LossGrads {
            dx: &mut dx,
            dw: Some(&mut dw),
            scale: 1.0,
            weights: Some(&weights),
        };
        lm_head_cross_entropy(&x, &w, &targets, head, Some(grads), &mut scratch);
        grad_check("weighted dx", &mut x.clone(), &dx, |x| weighted(x, &w));
        grad_check("weighted dw", &mut w.clone(), &dw, |w| weighted(&x, w));
        let mut losses = vec![0f64; n];
        lm_head_token_losses(&x, &w, &targets, head, &mut scratch, &mut losses);
        for i in 0..n {
            let want = if targets[i] == IGNORE {
                0.0
            } else {
                reference::lm_head_cross_entropy(&x[i * d..(i + 1) * d], &w, &[targets[i]], head)
            };
            assert!(
                (losses[i] - want).abs() < 1e-5,
                "row {i}: {} vs {want}",
                losses[i]
            );
        }
    }
}
