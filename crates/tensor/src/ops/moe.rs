//! Mixture-of-experts routing and token dispatch (DeepSeekMoE as in DeepSeek-V3, §2.1.2).
//!
//! Each token's affinity to expert i is sᵢ = sigmoid(router logit ᵢ). The top-k experts are
//! chosen by sᵢ + bᵢ, where the bias b serves load balancing only (auxiliary-loss-free
//! balancing): the gates use the affinities alone, normalised over the chosen experts,
//! gᵢ = scale · sᵢ / Σ_{j chosen} sⱼ.
//!
//! Tokens are then grouped by expert: `dispatch` gathers each expert's tokens into one
//! contiguous block of rows, so each expert runs as one GEMM over its block (`experts`); `combine` sums the
//! experts' outputs back per token, weighted by the gates. Both walk tokens in a fixed order, so
//! the results do not depend on the thread count.

use super::math::sigmoid;
use crate::ROW_CHUNK;
use rayon::prelude::*;

/// Where n tokens go: chosen experts and gates per token, and the dispatch order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routing {
    pub experts: usize,
    pub top_k: usize,
    /// sigmoid(logits): (n, experts).
    pub affinity: Vec<f32>,
    /// The chosen experts of each token, best first: (n, top_k).
    pub chosen: Vec<u32>,
    /// Their gates: (n, top_k).
    pub gates: Vec<f32>,
    /// Dispatch rows of expert e: offsets[e]..offsets[e + 1]; (experts + 1).
    pub offsets: Vec<usize>,
    /// The dispatch row holding (token, k): (n, top_k).
    pub slot: Vec<u32>,
    /// The token each dispatch row came from: (n · top_k), ascending within each expert.
    pub token: Vec<u32>,
}

impl Routing {
    pub fn tokens(&self) -> usize {
        self.chosen.len() / self.top_k.max(1)
    }

    /// Tokens sent to each expert.
    pub fn load(&self) -> Vec<usize> {
        self.offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// Routes n tokens from their router `logits` (n, experts) with selection `bias` (experts),
/// keeping `top_k` experts per token with gates scaled by `scale`. Ties in the selection score
/// go to the lower expert index, so routing is a pure function of its inputs.
pub fn route(logits: &[f32], bias: &[f32], top_k: usize, scale: f32, out: &mut Routing) {
    let e = bias.len();
    assert!(
        e > 0 && top_k >= 1 && top_k <= e && logits.len().is_multiple_of(e),
        "route: {top_k} of {e} experts over {} logits",
        logits.len()
    );
    let n = logits.len() / e;
    out.experts = e;
    out.top_k = top_k;
    out.affinity.resize(n * e, 0.0);
    out.chosen.resize(n * top_k, 0);
    out.gates.resize(n * top_k, 0.0);
    out.affinity
        .par_chunks_mut(ROW_CHUNK * e)
        .zip(logits.par_chunks(ROW_CHUNK * e))
        .zip(out.chosen.par_chunks_mut(ROW_CHUNK * top_k))
        .zip(out.gates.par_chunks_mut(ROW_CHUNK * top_k))
        .for_each(|(((aff, lg), chosen), gates)| {
            let mut order: Vec<u32> = Vec::with_capacity(e);
            for (((s, z), c), g) in aff
                .chunks_exact_mut(e)
                .zip(lg.chunks_exact(e))
                .zip(chosen.chunks_exact_mut(top_k))
                .zip(gates.chunks_exact_mut(top_k))
            {
                for (s, &z) in s.iter_mut().zip(z) {
                    *s = sigmoid(z);
                }
                order.clear();
                order.extend(0..e as u32);
                let score = |i: u32| s[i as usize] + bias[i as usize];
                // Descending score, lower index first on ties: a total order, so the selection
                // is unique.
                let by_score = |a: &u32, b: &u32| score(*b).total_cmp(&score(*a)).then(a.cmp(b));
                if top_k < e {
                    order.select_nth_unstable_by(top_k - 1, by_score);
                }
                order[..top_k].sort_unstable_by(by_score);
                c.copy_from_slice(&order[..top_k]);
                let total: f32 = c.iter().map(|&i| s[i as usize]).sum();
                for (g, &i) in g.iter_mut().zip(c.iter()) {
                    *g = scale * s[i as usize] / total;
                }
            }
        });
    plan_dispatch(out);
}

/// Counting sort of the (token, k) pairs by expert, tokens ascending within each expert.
fn plan_dispatch(r: &mut Routing) {
    let (e, k) = (r.experts, r.top_k);
    let rows = r.chosen.len();
    r.offsets.clear();
    r.offsets.resize(e + 1, 0);
    for &c in &r.chosen {
        r.offsets[c as usize + 1] += 1;
    }
    for i in 0..e {
        r.offsets[i + 1] += r.offsets[i];
    }
    let mut next = r.offsets[..e].to_vec();
    r.slot.resize(rows, 0);
    r.token.resize(rows, 0);
    for (pair, &c) in r.chosen.iter().enumerate() {
        let row = next[c as usize];
        next[c as usize] += 1;
        r.slot[pair] = row as u32;
        r.token[row] = (pair / k) as u32;
    }
}

/// Gathers token rows for the experts: xd (n·top_k, d), row r = x[token[r]].
pub fn dispatch(xd: &mut [f32], x: &[f32], r: &Routing, d: usize) {
    assert_eq!(xd.len(), r.token.len() * d, "dispatch: shape mismatch");
    xd.par_chunks_mut(ROW_CHUNK * d)
        .enumerate()
        .for_each(|(c, rows)| {
            for (i, row) in rows.chunks_exact_mut(d).enumerate() {
                let t = r.token[c * ROW_CHUNK + i] as usize;
                row.copy_from_slice(&x[t * d..(t + 1) * d]);
            }
        });
}

/// The backward of `dispatch`: dx[t] += Σ_k dxd[slot(t, k)] (accumulates).
pub fn dispatch_backward(dx: &mut [f32], dxd: &[f32], r: &Routing, d: usize) {
    gather_sum(dx, dxd, r, d, None);
}

/// out[t] += Σ_k gate(t, k) · yd[slot(t, k)] (accumulates): the experts' outputs, combined.
pub fn combine(out: &mut [f32], yd: &[f32], r: &Routing, d: usize) {
    gather_sum(out, yd, r, d, Some(&r.gates));
}

/// out[t] += Σ_k w(t, k) · rows[slot(t, k)], k in order; w = 1 without weights.
fn gather_sum(out: &mut [f32], rows: &[f32], r: &Routing, d: usize, w: Option<&[f32]>) {
    let k = r.top_k;
    assert!(
        out.len() == r.tokens() * d && rows.len() == r.token.len() * d,
        "combine: shape mismatch"
    );
    out.par_chunks_mut(ROW_CHUNK * d)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (i, o) in chunk.chunks_exact_mut(d).enumerate() {
                let t = c * ROW_CHUNK + i;
                for j in t * k..(t + 1) * k {
                    let s = r.slot[j] as usize;
                    let g = w.map_or(1.0, |w| w[j]);
                    for (o, &y) in o.iter_mut().zip(&rows[s * d..(s + 1) * d]) {
                        *o += g * y;
                    }
                }
            }
        });
}

/// The backward of `combine`: dyd[slot(t, k)] = gate(t, k) · dout[t] (overwrites) and
/// dgates(t, k) = dout[t] · yd[slot(t, k)] (overwrites, (n, top_k)).
pub fn combine_backward(
    dyd: &mut [f32],
    dgates: &mut [f32],
    dout: &[f32],
    yd: &[f32],
    r: &Routing,
    d: usize,
) {
    assert!(
        dyd.len() == yd.len() && dgates.len() == r.gates.len() && dout.len() == r.tokens() * d,
        "combine_backward: shape mismatch"
    );
    dyd.par_chunks_mut(ROW_CHUNK * d)
        .enumerate()
        .for_each(|(c, rows)| {
            for (i, row) in rows.chunks_exact_mut(d).enumerate() {
                let s = c * ROW_CHUNK + i;
                let t = r.token[s] as usize;
                // The pair (t, k) that owns this row: the one of t's k slots that is s.
                let j = (t * r.top_k..(t + 1) * r.top_k)
                    .find(|&j| r.slot[j] as usize == s)
                    .expect("every dispatch row belongs to one of its token's slots");
                let g = r.gates[j];
                for (a, &b) in row.iter_mut().zip(&dout[t * d..(t + 1) * d]) {
                    *a = g * b;
                }
            }
        });
    dgates
        .par_chunks_mut(ROW_CHUNK * r.top_k)
        .enumerate()
        .for_each(|(c, gs)| {
            for (i, g) in gs.iter_mut().enumerate() {
                let j = c * ROW_CHUNK * r.top_k + i;
                let (t, s) = (j / r.top_k, r.slot[j] as usize);
                *g = super::math::dot(&dout[t * d..(t + 1) * d], &yd[s * d..(s + 1) * d]);
            }
        });
}

/// The backward of `route` through the gates: dlogits (n, experts) from dgates (n, top_k)
/// (overwrites). The selection itself has no gradient; only chosen experts receive one.
/// With gᵢ = c·sᵢ/S over the chosen set: dsᵢ = (c·dgᵢ − Σⱼ dgⱼ·gⱼ) / S, and dzᵢ = dsᵢ·sᵢ(1 − sᵢ).
pub fn route_backward(dlogits: &mut [f32], dgates: &[f32], r: &Routing, scale: f32) {
    let (e, k) = (r.experts, r.top_k);
    assert!(
        dlogits.len() == r.affinity.len() && dgates.len() == r.gates.len(),
        "route_backward: shape mismatch"
    );
    dlogits
        .par_chunks_mut(ROW_CHUNK * e)
        .enumerate()
        .for_each(|(c, rows)| {
            for (i, dz) in rows.chunks_exact_mut(e).enumerate() {
                let t = c * ROW_CHUNK + i;
                let s = &r.affinity[t * e..(t + 1) * e];
                let (chosen, g, dg) = (
                    &r.chosen[t * k..(t + 1) * k],
                    &r.gates[t * k..(t + 1) * k],
                    &dgates[t * k..(t + 1) * k],
                );
                let total: f32 = chosen.iter().map(|&i| s[i as usize]).sum();
                let mix: f32 = dg.iter().zip(g).map(|(a, b)| a * b).sum();
                dz.fill(0.0);
                for (&i, &dgi) in chosen.iter().zip(dg) {
                    let si = s[i as usize];
                    dz[i as usize] = (scale * dgi - mix) / total * si * (1.0 - si);
                }
            }
        });
}

/// DeepSeek-V3's sequence-wise balance loss over sequences of `seq_len` tokens, times `alpha`:
/// L = α Σᵢ fᵢ·Pᵢ per sequence, with fᵢ = E/(K·T) · (tokens choosing i) and Pᵢ the mean over
/// the sequence of sᵢ/Σⱼsⱼ. Returns the loss summed over sequences and accumulates
/// `weight` · dL/dlogits into `dlogits` (f counts choices and has no gradient).
pub fn balance_loss(
    dlogits: Option<&mut [f32]>,
    r: &Routing,
    seq_len: usize,
    alpha: f32,
    weight: f32,
) -> f64 {
    let (e, k, n) = (r.experts, r.top_k, r.tokens());
    assert!(
        seq_len > 0 && n.is_multiple_of(seq_len),
        "balance_loss: sequence length"
    );
    let mut total = 0f64;
    let mut dlogits = dlogits;
    for q in 0..n / seq_len {
        let tokens = q * seq_len..(q + 1) * seq_len;
        let mut f = vec![0f32; e];
        let mut p = vec![0f32; e];
        for t in tokens.clone() {
            for &i in &r.chosen[t * k..(t + 1) * k] {
                f[i as usize] += 1.0;
            }
            let s = &r.affinity[t * e..(t + 1) * e];
            let sum: f32 = s.iter().sum();
            for (p, &si) in p.iter_mut().zip(s) {
                *p += si / sum;
            }
        }
        let norm = e as f32 / (k * seq_len) as f32;
        f.iter_mut().for_each(|f| *f *= norm);
        p.iter_mut().for_each(|p| *p /= seq_len as f32);
        total += alpha as f64
            * f.iter()
                .zip(&p)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>();
        if let Some(dz) = dlogits.as_deref_mut() {
            // dL/ds'ᵢ = α·fᵢ/T for every token; s' = s/Σs, then through the sigmoid.
            let g: Vec<f32> = f
                .iter()
                .map(|&f| weight * alpha * f / seq_len as f32)
                .collect();
            for t in tokens {
                let s = &r.affinity[t * e..(t + 1) * e];
                let sum: f32 = s.iter().sum();
                let mix: f32 = g.iter().zip(s).map(|(a, b)| a * b).sum::<f32>() / sum;
                for ((dz, &gi), &si) in dz[t * e..(t + 1) * e].iter_mut().zip(&g).zip(s) {
                    *dz += (gi - mix) / sum * si * (1.0 - si);
                }
            }
        }
    }
    total
}

/// Plain specifications of the kernels above, for the tests.
pub mod reference {
    /// (chosen, gates) of one token by brute force: repeatedly take the best remaining expert.
    pub fn route_token(
        logits: &[f32],
        bias: &[f32],
        top_k: usize,
        scale: f32,
    ) -> (Vec<u32>, Vec<f32>) {
        let s: Vec<f64> = logits
            .iter()
            .map(|&z| 1.0 / (1.0 + (-(z as f64)).exp()))
            .collect();
        let mut chosen: Vec<u32> = Vec::new();
        for _ in 0..top_k {
            let best = (0..s.len())
                .filter(|i| !chosen.contains(&(*i as u32)))
                .fold(None::<usize>, |best, i| match best {
                    Some(b) if (s[b] as f32 + bias[b]) >= (s[i] as f32 + bias[i]) => Some(b),
                    _ => Some(i),
                })
                .unwrap();
            chosen.push(best as u32);
        }
        let total: f64 = chosen.iter().map(|&i| s[i as usize]).sum();
        let gates = chosen
            .iter()
            .map(|&i| (scale as f64 * s[i as usize] / total) as f32)
            .collect();
        (chosen, gates)
    }

    /// Σ_k gate · f_e(x) per token, applying each chosen expert's function to the token itself.
    pub fn moe_apply(
        x: &[f32],
        d: usize,
        chosen: &[u32],
        gates: &[f32],
        top_k: usize,
        expert: impl Fn(usize, &[f32]) -> Vec<f32>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for (t, o) in out.chunks_exact_mut(d).enumerate() {
            for j in t * top_k..(t + 1) * top_k {
                let y = expert(chosen[j] as usize, &x[t * d..(t + 1) * d]);
                for (o, y) in o.iter_mut().zip(y) {
                    *o += gates[j] * y;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{assert_close, dot, grad_check, projection};

    fn logits(n: usize, e: usize, seed: u64) -> Vec<f32> {
        projection(n * e, seed).iter().map(|v| 1.5 * v).collect()
    }

    #[test]
    fn routing_matches_the_brute_force_choice_and_is_deterministic() {
        let (n, e, k) = (300, 8, 3);
        let z = logits(n, e, 1);
        let bias: Vec<f32> = projection(e, 2).iter().map(|v| 0.1 * v).collect();
        let mut r = Routing::default();
        route(&z, &bias, k, 2.5, &mut r);
        for t in 0..n {
            let (c, g) = reference::route_token(&z[t * e..(t + 1) * e], &bias, k, 2.5);
            assert_eq!(&r.chosen[t * k..(t + 1) * k], &c[..], "token {t}");
            assert_close(&r.gates[t * k..(t + 1) * k], &g, 1e-6, "gates");
        }
        // Ties go to the lower index: all-equal logits choose experts 0..k.
        let mut tie = Routing::default();
        route(&vec![0.3; 2 * e], &vec![0.0; e], k, 1.0, &mut tie);
        assert_eq!(tie.chosen, vec![0, 1, 2, 0, 1, 2]);
        // The same routing from one thread as from the pool.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let mut one = Routing::default();
        pool.install(|| route(&z, &bias, k, 2.5, &mut one));
        assert_eq!(one, r);
        // The bias steers selection but never the gates' values.
        let mut steer = vec![0.0; e];
        steer[5] = 10.0;
        let mut b = Routing::default();
        route(&z, &steer, k, 1.0, &mut b);
        assert!(b.chosen.chunks(k).all(|c| c[0] == 5));
        let s5 = 1.0 / (1.0 + (-z[5]).exp());
        let denom: f32 = b.chosen[..k]
            .iter()
            .map(|&i| 1.0 / (1.0 + (-z[i as usize]).exp()))
            .sum();
        assert!((b.gates[0] - s5 / denom).abs() < 1e-6);
    }

    #[test]
    fn dispatch_groups_by_expert_and_combine_round_trips() {
        let (n, e, k, d) = (97, 6, 2, 5);
        let z = logits(n, e, 3);
        let mut r = Routing::default();
        route(&z, &vec![0.0; e], k, 1.0, &mut r);
        assert_eq!(r.load().iter().sum::<usize>(), n * k);
        for ex in 0..e {
            let rows = &r.token[r.offsets[ex]..r.offsets[ex + 1]];
            assert!(
                rows.windows(2).all(|w| w[0] < w[1]),
                "tokens ascend per expert"
            );
            for &t in rows {
                assert!(r.chosen[t as usize * k..][..k].contains(&(ex as u32)));
            }
        }
        let x = projection(n * d, 4);
        let mut xd = vec![0.0; n * k * d];
        dispatch(&mut xd, &x, &r, d);
        // Experts that return their input, with unit gates, give back k·x; with the routing's
        // gates, Σ gates · x.
        let mut back = vec![0.0; n * d];
        dispatch_backward(&mut back, &xd, &r, d);
        let kx: Vec<f32> = x.iter().map(|v| k as f32 * v).collect();
        assert_close(&back, &kx, 1e-6, "unit round trip");
        // Expert e scales its input by (e + 1): combine must match applying them per token.
        let mut yd = xd.clone();
        for ex in 0..e {
            for v in &mut yd[r.offsets[ex] * d..r.offsets[ex + 1] * d] {
                *v *= ex as f32 + 1.0;
            }
        }
        let mut out = vec![0.0; n * d];
        combine(&mut out, &yd, &r, d);
        let want = reference::moe_apply(&x, d, &r.chosen, &r.gates, k, |ex, v| {
            v.iter().map(|a| a * (ex as f32 + 1.0)).collect()
        });
        assert_close(&out, &want, 1e-6, "combine");
    }

    #[test]
    fn combine_and_route_gradients_check() {
        let (n, e, k, d) = (24, 5, 2, 4);
        let scale = 1.7;
        let z = logits(n, e, 5);
        let bias: Vec<f32> = projection(e, 6).iter().map(|v| 0.05 * v).collect();
        let mut r = Routing::default();
        route(&z, &bias, k, scale, &mut r);
        let yd = projection(n * k * d, 7);
        let proj = projection(n * d, 8);
        let mut dyd = vec![0.0; yd.len()];
        let mut dg = vec![0.0; n * k];
        combine_backward(&mut dyd, &mut dg, &proj, &yd, &r, d);
        // d/d yd of Σ proj · combine(yd), with the routing held fixed.
        grad_check("combine dyd", &mut yd.clone(), &dyd, |yd| {
            let mut out = vec![0.0; n * d];
            combine(&mut out, yd, &r, d);
            dot(&out, &proj)
        });
        // d/d logits, through the gates, keeping the selection (a small step never flips it
        // here: the logits are well separated at this seed) — recomputed from scratch.
        let mut dz = vec![0.0; n * e];
        route_backward(&mut dz, &dg, &r, scale);
        let chosen = r.chosen.clone();
        grad_check("route dlogits", &mut z.clone(), &dz, |z| {
            let mut q = Routing::default();
            route(z, &bias, k, scale, &mut q);
            assert_eq!(q.chosen, chosen, "the step flipped a selection");
            let mut out = vec![0.0; n * d];
            combine(&mut out, &yd, &q, d); // same choices: the same dispatch rows
            dot(&out, &proj)
        });
        // The balance loss's gradient.
        let mut dzb = vec![0.0; n * e];
        let l = balance_loss(Some(&mut dzb), &r, 8, 0.3, 1.0);
        assert!(l > 0.0);
        grad_check("balance dlogits", &mut z.clone(), &dzb, |z| {
            let mut q = Routing::default();
            route(z, &bias, k, scale, &mut q);
            assert_eq!(q.chosen, chosen, "the step flipped a selection");
            balance_loss(None, &q, 8, 0.3, 1.0)
        });
    }

    #[test]
    fn balance_loss_is_alpha_at_uniform_routing() {
        // Equal affinities and every expert chosen equally often: fᵢ = 1, Pᵢ = 1/E, L = α.
        let (e, k, t) = (4, 2, 4);
        let mut r = Routing {
            experts: e,
            top_k: k,
            affinity: vec![0.5; t * e],
            chosen: vec![0, 1, 2, 3, 0, 1, 2, 3],
            gates: vec![0.5; t * k],
            ..Default::default()
        };
        plan_dispatch(&mut r);
        let l = balance_loss(None, &r, t, 0.01, 1.0);
        assert!((l - 0.01).abs() < 1e-9, "{l}");
    }
}
