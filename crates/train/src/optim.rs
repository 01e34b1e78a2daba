//! Optimizers over the flat parameter buffer: AdamW everywhere, or Muon for the hidden matrices
//! (attention and MLP weights) with AdamW for embeddings, head and norms, as in modded-nanogpt
//! and nanochat. Weight decay is decoupled and applies to matrices only.

use crate::config::{OptimizerKind, TrainConfig};
use model::Params;
use tensor::ops::adamw::{adamw_update, AdamWHyper};
use tensor::ops::muon::newton_schulz;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    AdamW {
        decay: bool,
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
    scratch: Vec<f32>,
}

/// The update rule of every parameter, as contiguous groups over the flat buffer.
fn groups(cfg: &TrainConfig, params: &Params) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for s in &params.specs {
        let hidden = s.is_matrix() && s.name.starts_with("model.layers.");
        let rule = match cfg.optimizer {
            _ if !s.trained => Rule::Fixed,
            OptimizerKind::Muon if hidden => Rule::Muon {
                rows: s.shape[0],
                cols: s.len() / s.shape[0],
            },
            _ => Rule::AdamW {
                decay: s.is_matrix(),
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
            scratch: Vec::new(),
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
        for g in &self.groups {
            let r = g.range.clone();
            match g.rule {
                Rule::AdamW { decay } => {
                    let h = AdamWHyper {
                        lr: self.adamw.lr * lr_scale,
                        weight_decay: if decay { self.adamw.weight_decay } else { 0.0 },
                        ..self.adamw
                    };
                    adamw_update(
                        &mut params[r.clone()],
                        &grads[r.clone()],
                        &mut self.m[r.clone()],
                        &mut self.v[r],
                        &h,
                        self.step,
                    );
                }
                Rule::Muon { rows, cols } => {
                    let (mu, lr) = (self.muon_momentum, self.muon_lr * lr_scale);
                    let (m, grad) = (&mut self.m[r.clone()], &grads[r.clone()]);
                    // Nesterov momentum: buf = μ·buf + g; direction = g + μ·buf.
                    self.scratch.resize(m.len(), 0.0);
                    for ((b, &gi), u) in m.iter_mut().zip(grad).zip(self.scratch.iter_mut()) {
                        *b = mu * *b + gi;
                        *u = gi + mu * *b;
                    }
                    let mut ortho = vec![0f32; m.len()];
                    newton_schulz(&mut ortho, &self.scratch, rows, cols);
                    // Scale so that updates have similar RMS whatever the aspect ratio.
                    let step = lr * (rows as f32 / cols as f32).max(1.0).sqrt();
                    let decay = 1.0 - lr * self.adamw.weight_decay;
                    for (p, o) in params[r].iter_mut().zip(&ortho) {
                        *p = *p * decay - step * o;
                    }
                }
                Rule::Fixed => {}
            }
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
}
