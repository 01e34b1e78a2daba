//! The mixture-of-experts MLP's routed part, forward and backward: router GEMM, top-k routing,
//! dispatch of each expert's tokens into one block, the experts' SwiGLUs over their blocks as one
//! grouped kernel (`tensor::ops::experts`), and the gated combine. The shared experts
//! are the layer's dense SwiGLU and run in `llama.rs` like any dense MLP.

use crate::config::MoeConfig;
use crate::workspace::{MoeActs, MoeGrads};
use crate::{Llama, MoeOffsets};
use tensor::{Device, Gemm, Memory, Mut, Ref};

impl<D: Device> Llama<D> {
    /// out += Σ_k gate · expert_k(x) over the rows of x (n, d), keeping what the backward
    /// needs in `acts`. Returns the tokens each routed expert received.
    pub(crate) fn moe_forward(
        &self,
        m: &MoeConfig,
        off: &MoeOffsets,
        x: Ref<D>,
        out: Mut<D>,
        acts: &mut MoeActs<D>,
    ) -> Vec<usize> {
        let (dev, d) = (&self.dev, self.cfg.d_model);
        let (n, e, k, eh) = (x.len() / d, m.routed_experts, m.top_k, m.expert_hidden);
        let p = &self.params.data;
        let rows = n * k;
        dev.resize(&mut acts.logits, n * e);
        dev.resize(&mut acts.xd, rows * d);
        dev.resize(&mut acts.gud, rows * 2 * eh);
        dev.resize(&mut acts.hd, rows * eh);
        dev.resize(&mut acts.yd, rows * d);
        dev.gemm(
            &Gemm::nt(n, e, d),
            x,
            p.at(off.router..),
            acts.logits.all_mut(),
        );
        let r = &mut acts.routing;
        let bias = p.at(off.bias..off.bias + e);
        dev.moe_route(acts.logits.all(), bias, k, m.route_scale, r);
        dev.moe_dispatch(acts.xd.all_mut(), x, r, d);
        let weights = p.at(off.experts..off.experts + e * 3 * eh * d);
        let (gud, hd, yd) = (acts.gud.all_mut(), acts.hd.all_mut(), acts.yd.all_mut());
        dev.experts_forward(r, (d, eh), weights, acts.xd.all(), gud, hd, yd);
        dev.moe_combine(out, acts.yd.all(), r, d);
        dev.moe_load(r)
    }

    /// The backward of `moe_forward` for the layer's input x (n, d): accumulates into `dx` and
    /// into the router's and experts' gradients in `g`, from `dout` = dL/d(layer output). With a
    /// balance loss (α > 0) over sequences of `seq_len`, its gradient enters with `aux_weight`
    /// per sequence.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn moe_backward(
        &self,
        m: &MoeConfig,
        off: &MoeOffsets,
        x: Ref<D>,
        dout: Ref<D>,
        mut dx: Mut<D>,
        mut g: Mut<D>,
        acts: &MoeActs<D>,
        s: &mut MoeGrads<D>,
        (seq_len, aux_weight): (usize, f32),
    ) {
        let (dev, d) = (&self.dev, self.cfg.d_model);
        let (n, e, eh) = (x.len() / d, m.routed_experts, m.expert_hidden);
        let p = &self.params.data;
        let r = &acts.routing;
        let rows = n * m.top_k;
        dev.resize(&mut s.dyd, rows * d);
        dev.resize(&mut s.dhd, rows * eh);
        dev.resize(&mut s.dgud, rows * 2 * eh);
        dev.resize(&mut s.dxd, rows * d);
        dev.resize(&mut s.dgates, rows);
        dev.resize(&mut s.dlogits, n * e);
        let (dyd, dgates) = (s.dyd.all_mut(), s.dgates.all_mut());
        dev.moe_combine_backward(dyd, dgates, dout, acts.yd.all(), r, d);
        let span = off.experts..off.experts + e * 3 * eh * d;
        let params = (p.at(span.clone()), g.at(span));
        let saved = (acts.xd.all(), acts.gud.all(), acts.hd.all());
        let scratch = (s.dgud.all_mut(), s.dhd.all_mut(), s.dxd.all_mut());
        dev.experts_backward(r, (d, eh), params, saved, s.dyd.all(), scratch);
        dev.moe_dispatch_backward(dx.rb(), s.dxd.all(), r, d);
        dev.moe_route_backward(s.dlogits.all_mut(), s.dgates.all(), r, m.route_scale);
        if m.balance_loss > 0.0 {
            let dlogits = Some(s.dlogits.all_mut());
            dev.moe_balance_loss(dlogits, r, seq_len, m.balance_loss, aux_weight);
        }
        let g_router = g.into_at(off.router..off.router + e * d);
        let dlogits = s.dlogits.all();
        dev.gemm(&Gemm::tn(e, d, n).accumulate(true), dlogits, x, g_router);
        let dx_router = Gemm::nn(n, d, e).accumulate(true);
        dev.gemm(&dx_router, dlogits, p.at(off.router..), dx);
    }

    /// Auxiliary-loss-free balancing after an optimizer step: each routed expert's selection
    /// bias moves by γ = bias_update toward the mean load, up when the expert got fewer tokens
    /// than the mean, down when it got more (DeepSeek-V3, eq. 16's update rule). `load` is
    /// `Workspace::take_expert_load`'s count over the step.
    pub fn balance_experts(&mut self, load: &[Vec<u64>]) {
        let Some(m) = self.cfg.moe.clone() else {
            return;
        };
        if m.bias_update == 0.0 {
            return;
        }
        let mtp_blocks = self.params.mtp.iter().map(|m| &m.block);
        for (off, counts) in self.params.layers.iter().chain(mtp_blocks).zip(load) {
            let Some(moe) = off.moe else { continue };
            let mean = counts.iter().sum::<u64>() as f64 / counts.len().max(1) as f64;
            // A handful of floats per layer: moved on the host.
            let span = moe.bias..moe.bias + counts.len();
            let mut bias = vec![0f32; counts.len()];
            self.dev
                .download(self.params.data.at(span.clone()), &mut bias);
            for (b, &c) in bias.iter_mut().zip(counts) {
                let c = c as f64;
                if c < mean {
                    *b += m.bias_update;
                } else if c > mean {
                    *b -= m.bias_update;
                }
            }
            self.dev.write(self.params.data.at_mut(span), &bias);
        }
    }
}

/// max / mean tokens per expert, the balance figure of DeepSeek-V3's ablations (1 is perfect),
/// for each MoE layer of `load` (dense layers are skipped).
pub fn load_imbalance(load: &[Vec<u64>]) -> Vec<f64> {
    load.iter()
        .filter(|c| !c.is_empty())
        .map(|c| {
            let mean = c.iter().sum::<u64>() as f64 / c.len() as f64;
            let max = c.iter().copied().max().unwrap_or(0) as f64;
            if mean > 0.0 {
                max / mean
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use tensor::check::{assert_close, projection};
    use tensor::ops::moe::reference::{moe_apply, route_token};
    use tensor::ops::swiglu::reference::swiglu_forward as swiglu_ref;

    fn model(overrides: &[&str]) -> Llama {
        let mut set = vec!["model.init_std=0.3".to_string()];
        set.extend(overrides.iter().map(|s| s.to_string()));
        let cfg = ModelConfig::preset("tiny-moe", &set).unwrap();
        let mut m = Llama::init(cfg, 4);
        // A non-zero selection bias, so that it is exercised.
        let off = m.params.layers[1].moe.unwrap();
        m.params.data[off.bias..off.bias + 4].copy_from_slice(&[0.05, -0.1, 0.0, 0.2]);
        m
    }

    /// One expert applied to one token by plain loops: W_down · (silu(W_gate x) ⊙ W_up x).
    fn expert_ref(m: &Llama, off: &MoeOffsets, ex: usize, x: &[f32]) -> Vec<f32> {
        let (d, eh) = (m.cfg.d_model, m.cfg.moe.as_ref().unwrap().expert_hidden);
        let w = &m.params.data[off.experts + ex * 3 * eh * d..];
        let gu: Vec<f32> = (0..2 * eh)
            .map(|r| (0..d).map(|c| w[r * d + c] * x[c]).sum())
            .collect();
        let mut h = vec![0f32; eh];
        swiglu_ref(&mut h, &gu, eh);
        let down = &w[2 * eh * d..];
        (0..d)
            .map(|r| (0..eh).map(|c| down[r * eh + c] * h[c]).sum())
            .collect()
    }

    #[test]
    fn grouped_experts_equal_each_token_through_its_own_experts() {
        for k in ["model.moe.top_k=2", "model.moe.top_k=4"] {
            let m = model(&[k, "model.moe.route_scale=2.5"]);
            let (cfg, off) = (m.cfg.moe_at(1).unwrap(), m.params.layers[1].moe.unwrap());
            let (n, d) = (37, m.cfg.d_model);
            let x = projection(n * d, 11);
            let mut out = vec![0.5f32; n * d];
            let mut acts = MoeActs::default();
            let load = m.moe_forward(cfg, &off, (&x).into(), (&mut out).into(), &mut acts);
            assert_eq!(load.iter().sum::<usize>(), n * cfg.top_k);
            // Per token: router logits by loops, brute-force choice, each chosen expert alone.
            let e = cfg.routed_experts;
            let router = &m.params.data[off.router..];
            let bias = &m.params.data[off.bias..off.bias + e];
            let (mut chosen, mut gates) = (Vec::new(), Vec::new());
            for t in 0..n {
                let z: Vec<f32> = (0..e)
                    .map(|i| (0..d).map(|c| router[i * d + c] * x[t * d + c]).sum())
                    .collect();
                let (c, g) = route_token(&z, bias, cfg.top_k, cfg.route_scale);
                chosen.extend(c);
                gates.extend(g);
            }
            assert_eq!(chosen, acts.routing.chosen, "{k}");
            let want = moe_apply(&x, d, &chosen, &gates, cfg.top_k, |ex, v| {
                expert_ref(&m, &off, ex, v)
            });
            let want: Vec<f32> = want.iter().map(|v| v + 0.5).collect();
            assert_close(&out, &want, 1e-4, k);
        }
    }

    #[test]
    fn experts_and_biases_round_trip_through_safetensors_under_deepseek_names() {
        let m = model(&[]);
        let dir = std::env::temp_dir().join(format!("frugal-moe-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        crate::save_safetensors(&m.params, &path).unwrap();
        let mut back = crate::Params::zeros(&m.cfg);
        let extra = crate::load_safetensors(&mut back, &path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(extra.is_empty());
        assert_eq!(back.data, m.params.data);
        for name in [
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.1.mlp.gate.weight",
            "model.layers.1.mlp.gate.e_score_correction_bias",
            "model.layers.1.mlp.shared_experts.up_proj.weight",
            "model.layers.1.mlp.experts.3.down_proj.weight",
        ] {
            assert!(back.spec(name).is_some(), "{name}");
        }
        assert!(back.spec("model.layers.1.mlp.gate_proj.weight").is_none());
    }

    #[test]
    fn balancing_moves_biases_toward_the_mean_load() {
        let mut m = model(&["model.moe.bias_update=0.01"]);
        let off = m.params.layers[1].moe.unwrap();
        let before = m.params.data[off.bias..off.bias + 4].to_vec();
        m.balance_experts(&[vec![], vec![10, 2, 4, 0]]);
        let after = &m.params.data[off.bias..off.bias + 4];
        let moved: Vec<f32> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_close(&moved, &[-0.01, 0.01, 0.0, 0.01], 1e-6, "bias steps");
        assert_eq!(load_imbalance(&[vec![], vec![10, 2, 4, 0]]), vec![2.5]);
    }
}
