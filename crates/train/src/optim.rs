//! Optimizers over the flat parameter buffer: AdamW everywhere, or Muon for the hidden matrices
//! (attention and MLP weights) with AdamW for embeddings, head and norms, as in modded-nanogpt
//! and nanochat. Weight decay is decoupled and applies to matrices only.

use crate::config::{OptimizerKind, TrainConfig};
use model::Params;
use rayon::prelude::*;
use tensor::ops::adamw::{adamw_update, AdamWHyper};
use tensor::ops::muon::newton_schulz;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    AdamW {
        decay: bool,
        /// This group's peak rate as a multiple of `lr`.
        lr_mult: f32,
    },
    Muon {
        rows: usize,
        cols: usize,
    },
    /// Not the optimizer's to move (see `ParamSpec::trained`).
    Fixed,
}

/// A contiguous run of parameters updated by one rule.
#[derive(Clone, Debug)]
struct Group {
    range: std::ops::Range<usize>,
    rule: Rule,
}

pub struct Optimizer {
    pub step: u64,
    adamw: AdamWHyper,
    muon_lr: f32,
    muon_momentum: f32,
    /// First moment (AdamW) or momentum (Muon), laid out like the parameters.
    pub m: Vec<f32>,
    /// Second moment (AdamW; unused entries for Muon matrices stay zero).
    pub v: Vec<f32>,
    groups: Vec<Group>,
}

/// The update rule of every parameter, as contiguous groups over the flat buffer.
fn groups(cfg: &TrainConfig, params: &Params) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for s in &params.specs {
        let hidden = s.is_matrix() && s.name.starts_with("model.layers.");
        let embed_lr = cfg.embed_lr.filter(|_| s.offset == params.embed);
        let rule = match cfg.optimizer {
            _ if !s.trained => Rule::Fixed,
            OptimizerKind::Muon if hidden => Rule::Muon {
                rows: s.shape[0],
                cols: s.len() / s.shape[0],
            },
            _ => Rule::AdamW {
                decay: s.is_matrix() && embed_lr.is_none(),
                lr_mult: embed_lr.map_or(1.0, |e| e / cfg.lr),
            },
        };
        // Merge neighbours with the same AdamW rule: fewer, longer fused sweeps.
        match groups.last_mut() {
            Some(g)
                if g.rule == rule
                    && matches!(rule, Rule::AdamW { .. })
                    && g.range.end == s.offset =>
            {
                g.range.end = s.range().end
            }
            _ => groups.push(Group {
                range: s.range(),
                rule,
            }),
        }
    }
    groups
}

/// Ranges of the flat buffer an update must see whole (Muon's matrices): a ZeRO shard may not
/// cut them.
pub fn unsplittable(cfg: &TrainConfig, params: &Params) -> Vec<std::ops::Range<usize>> {
    groups(cfg, params)
        .into_iter()
        .filter(|g| matches!(g.rule, Rule::Muon { .. }))
        .map(|g| g.range)
        .collect()
}

impl Optimizer {
    pub fn new(cfg: &TrainConfig, params: &Params) -> Self {
        Self::new_shard(cfg, params, 0..params.len())
    }

    /// The optimizer of the parameters in `shard` only (ZeRO-1): its state, and `update`'s
    /// slices, cover that range. `shard` must not cut an `unsplittable` range.
    pub fn new_shard(cfg: &TrainConfig, params: &Params, shard: std::ops::Range<usize>) -> Self {
        let groups: Vec<Group> = groups(cfg, params)
            .into_iter()
            .filter_map(|g| {
                let (lo, hi) = (g.range.start.max(shard.start), g.range.end.min(shard.end));
                if lo >= hi {
                    return None;
                }
                assert!(
                    !matches!(g.rule, Rule::Muon { .. })
                        || (lo, hi) == (g.range.start, g.range.end),
                    "optimizer shard {shard:?} cuts a Muon matrix {:?}",
                    g.range
                );
                Some(Group {
                    range: lo - shard.start..hi - shard.start,
                    rule: g.rule,
                })
            })
            .collect();
        let n = shard.len();
        Optimizer {
            step: 0,
            adamw: AdamWHyper {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
                weight_decay: cfg.weight_decay,
            },
            muon_lr: cfg.muon_lr,
            muon_momentum: cfg.muon_momentum,
            m: vec![0.0; n],
            v: vec![0.0; n],
            groups,
        }
    }

    /// Bytes of optimizer state this optimizer holds (both moments).
    pub fn state_bytes(&self) -> usize {
        (self.m.len() + self.v.len()) * std::mem::size_of::<f32>()
    }

    /// One update with every learning rate multiplied by `lr_scale` (the schedule's factor).
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr_scale: f32) {
        assert!(
            params.len() == grads.len() && grads.len() == self.m.len(),
            "optimizer: buffer sizes differ"
        );
        self.step += 1;
        let muon = MuonHyper {
            momentum: self.muon_momentum,
            lr: self.muon_lr * lr_scale,
            weight_decay: self.adamw.weight_decay,
        };
        let mut matrices = Vec::new();
        let (mut p_rest, mut m_rest, mut v_rest) = (params, &mut self.m[..], &mut self.v[..]);
        let mut at = 0;
        for g in &self.groups {
            // Carve this group's slices off the front of what is left (groups are in order).
            let (skip, len) = (g.range.start - at, g.range.len());
            let (p, m, v);
            (p, p_rest) = std::mem::take(&mut p_rest)[skip..].split_at_mut(len);
            (m, m_rest) = std::mem::take(&mut m_rest)[skip..].split_at_mut(len);
            (v, v_rest) = std::mem::take(&mut v_rest)[skip..].split_at_mut(len);
            at = g.range.end;
            let grad = &grads[g.range.clone()];
            match g.rule {
                Rule::AdamW { decay, lr_mult } => {
                    let h = AdamWHyper {
                        lr: self.adamw.lr * lr_mult * lr_scale,
                        weight_decay: if decay { self.adamw.weight_decay } else { 0.0 },
                        ..self.adamw
                    };
                    adamw_update(p, grad, m, v, &h, self.step);
                }
                Rule::Muon { rows, cols } => matrices.push((p, m, grad, rows, cols)),
                Rule::Fixed => {}
            }
        }
        // One matrix per thread: each Newton–Schulz product is small, so splitting every one
        // across the pool would cost more in wake-ups than the matrices cost together.
        matrices
            .into_par_iter()
            .for_each(|(p, m, grad, rows, cols)| muon.update(p, m, grad, rows, cols));
    }
}

/// Muon's settings for one update (the schedule already applied to `lr`).
#[derive(Clone, Copy)]
struct MuonHyper {
    momentum: f32,
    lr: f32,
    weight_decay: f32,
}

impl MuonHyper {
    /// One matrix: Nesterov momentum, orthogonalised by Newton–Schulz, decoupled decay.
    fn update(self, p: &mut [f32], m: &mut [f32], grad: &[f32], rows: usize, cols: usize) {
        let mu = self.momentum;
        // Nesterov momentum: buf = μ·buf + g; direction = g + μ·buf.
        let direction: Vec<f32> = m
            .iter_mut()
            .zip(grad)
            .map(|(b, &gi)| {
                *b = mu * *b + gi;
                gi + mu * *b
            })
            .collect();
        let mut ortho = vec![0f32; m.len()];
        newton_schulz(&mut ortho, &direction, rows, cols);
        // Scale so that updates have similar RMS whatever the aspect ratio.
        let step = self.lr * (rows as f32 / cols as f32).max(1.0).sqrt();
        let decay = 1.0 - self.lr * self.weight_decay;
        for (p, o) in p.iter_mut().zip(&ortho) {
            *p = *p * decay - step * o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn groups_cover_every_parameter_once() {
        for opt in ["adamw", "muon"] {
            let cfg = Config::preset("tiny", &[format!("train.optimizer={opt}")]).unwrap();
            let p = Params::zeros(&cfg.model);
            let o = Optimizer::new(&cfg.train, &p);
            let mut next = 0;
            for g in &o.groups {
                assert_eq!(g.range.start, next, "{opt}: groups are contiguous");
                next = g.range.end;
            }
            assert_eq!(next, p.len());
            let muon = o
                .groups
                .iter()
                .filter(|g| matches!(g.rule, Rule::Muon { .. }))
                .count();
            assert_eq!(
                muon,
                if opt == "muon" {
                    7 * cfg.model.n_layers
                } else {
                    0
                }
            );
        }
    }

    /// Adam's first step moves every parameter by its rate (the update is m̂/√v̂ = ±1), so the
    /// embedding must move by embed_lr, undecayed, and the head by lr less its decay.
    #[test]
    fn embed_lr_moves_only_the_embedding_at_its_rate() {
        let cfg = Config::preset(
            "tiny",
            &[
                "train.embed_lr=0.05".into(),
                "train.weight_decay=0.1".into(),
            ],
        )
        .unwrap();
        let p = Params::init(&cfg.model, 0);
        let mut after = p.data.clone();
        let mut o = Optimizer::new(&cfg.train, &p);
        o.update(&mut after, &vec![1.0; p.len()], 1.0);
        let moved = |name: &str| {
            let s = p.specs.iter().find(|s| s.name == name).unwrap();
            let decay = if name == "lm_head.weight" {
                1.0 - cfg.train.lr * 0.1
            } else {
                1.0
            };
            let r = s.range();
            let steps: Vec<f32> = (r.clone()).map(|i| p.data[i] * decay - after[i]).collect();
            let (lo, hi) = steps
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            (lo, hi)
        };
        let (lo, hi) = moved("model.embed_tokens.weight");
        assert!(
            (lo - 0.05).abs() < 1e-5 && (hi - 0.05).abs() < 1e-5,
            "embedding moved {lo}..{hi}"
        );
        let (lo, hi) = moved("lm_head.weight");
        let lr = cfg.train.lr;
        assert!(
            (lo - lr).abs() < 1e-5 && (hi - lr).abs() < 1e-5,
            "head moved {lo}..{hi}, not {lr}"
        );
    }
}
