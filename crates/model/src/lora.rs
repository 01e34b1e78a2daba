//! LoRA's side path (Hu et al., 2021): beside each adapted projection y = W₀·x of a frozen
//! model runs y += s·B·A·drop(x), with A (r × in), B (out × r), s = α/r and drop PEFT's
//! `lora_dropout` on the adapter's input (inverted dropout, a fresh mask per module and pass).
//!
//! With adapters attached (`Llama::attach_lora`), the training passes change in two ways:
//! - forward, every adapted projection adds its low-rank term; the KV-cache forward (sampling,
//!   scoring) adds it too, without dropout;
//! - backward, the gradient buffer is laid out like the adapters, not the parameters, and the
//!   frozen weights' gradients are not computed: no dW GEMM of any projection or of the LM
//!   head, no norm, bias or embedding gradient. What remains is the input gradients' GEMMs and
//!   the adapters' own thin ones, about two thirds of full fine-tuning's work.
//!
//! The adapted weights sit in fused projections (q, k, v in `qkv`; gate, up in `gate_up`): an
//! adapter writes its own block of output columns, `row0..row0 + rows` of the fused weight.
//! Only dense, grouped-query layers take adapters; latent attention, mixture-of-experts layers
//! and multi-token prediction modules are refused by name.

pub use crate::adapters::{Adapter, Lora, Proj, MODULES};

use crate::adapters::LoraPass;
use crate::Llama;
use std::sync::atomic::Ordering;
use tensor::ops::dropout::subkey;
use tensor::{Device, Gemm, Memory, Mut, Ref};

impl<D: Device> Llama<D> {
    /// Attaches adapters: from now on every pass runs their side path, and gradient passes
    /// train them alone (see the module's comment).
    pub fn attach_lora(&mut self, lora: Lora<D>) {
        assert_eq!(lora.layers.len(), self.cfg.n_layers, "attach_lora: layers");
        assert!(self.params.mtp.is_empty(), "attach_lora: MTP modules");
        self.lora = Some(lora);
    }

    /// The attached adapters.
    pub fn lora(&self) -> Option<&Lora<D>> {
        self.lora.as_ref()
    }

    pub fn lora_mut(&mut self) -> Option<&mut Lora<D>> {
        self.lora.as_mut()
    }

    /// The frozen base alone, on this model's own weights: until the guard drops, passes skip
    /// the side path, so under LoRA this is the model the adapters started from. The
    /// preference stages score their reference with it instead of keeping a second copy of
    /// the weights. The switch is the model's, not the guard's: every pass made meanwhile, by
    /// any holder of the model, sees the base, so the guard is for one sequence of passes.
    /// Gradient passes refuse to run under it. Without adapters it changes nothing.
    pub fn frozen_base(&self) -> FrozenBase<'_, D> {
        if let Some(lora) = &self.lora {
            lora.off.fetch_add(1, Ordering::Relaxed);
        }
        FrozenBase(self)
    }

    /// The adapters whose side path passes run now: the attached ones, unless a
    /// `frozen_base` guard is live.
    pub(crate) fn side(&self) -> Option<&Lora<D>> {
        self.lora.as_ref().filter(|l| l.on())
    }

    /// Forward and backward FLOPs per token trained on sequences of `seq_len`, as this model
    /// trains: with adapters, the frozen weights' gradients are never computed, so each of
    /// their weights costs 4 FLOPs (forward, input gradient) instead of 6, attention's backward
    /// is unchanged, and every adapter float costs 6.
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let full = crate::arch::flops_per_token(&self.cfg, seq_len);
        let Some(lora) = &self.lora else {
            return full;
        };
        let matmul = crate::Arch::from_model(&self.cfg, seq_len).params().matmul;
        full - 2.0 * matmul + 6.0 * lora.len() as f64
    }

    /// Floats of the gradient buffer a gradient pass fills: the adapters' with LoRA, else the
    /// parameters'.
    pub fn trainable_len(&self) -> usize {
        self.lora.as_ref().map_or(self.params.len(), Lora::len)
    }

    /// y[:, row0..row0 + rows] += s·drop(x)·Aᵀ·Bᵀ for the adapters of layer `l` on `proj`,
    /// whose input is x (N, cols) and output y (N, ld).
    pub(crate) fn side_forward(
        &self,
        l: usize,
        proj: Proj,
        x: Ref<D>,
        mut y: Mut<D>,
        ld: usize,
        side: &mut Option<LoraPass<D>>,
    ) {
        let (Some(lora), Some(s)) = (&self.lora, side.as_mut()) else {
            return;
        };
        let (dev, r) = (&self.dev, lora.rank);
        for (j, ad) in lora.adapters(l, proj) {
            let n = x.len() / ad.cols;
            let (a, b) = ad.weights(lora.weights.all(), r);
            let key = s.key.map(|k| subkey(k, j as u64));
            let input = dropped(dev, x, &mut *s.u, lora.dropout, key);
            let t = s.t[j].all_mut();
            dev.gemm(&Gemm::nt(n, r, ad.cols), input, a, t); // (N, r)
            dev.scale(s.t[j].all_mut(), lora.scale);
            let up = Gemm::nt(n, ad.rows, r).ld(r, r, ld).accumulate(true);
            dev.gemm(&up, s.t[j].all(), b, y.at(ad.row0..));
        }
    }

    /// The backward of `side_forward`: from dy (N, ld) and the forward's input x (N, cols),
    /// accumulates dA and dB into `g` (laid out like the adapters) and the input's gradient
    /// into dx (N, cols).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn side_backward(
        &self,
        l: usize,
        proj: Proj,
        dy: Ref<D>,
        ld: usize,
        x: Ref<D>,
        mut dx: Mut<D>,
        g: &mut Mut<D>,
        side: &mut Option<LoraPass<D>>,
    ) {
        let (Some(lora), Some(s)) = (&self.lora, side.as_mut()) else {
            return;
        };
        let (dev, r) = (&self.dev, lora.rank);
        for (j, ad) in lora.adapters(l, proj) {
            let (n, cols) = (x.len() / ad.cols, ad.cols);
            let (a, b) = ad.weights(lora.weights.all(), r);
            let dy = dy.at(ad.row0..);
            let mut ga = g.at(ad.at..ad.at + ad.len(r));
            // dB (rows, r) += dyᵀ·T, T = s·drop(x)·Aᵀ as the forward kept it.
            let db = Gemm::tn(ad.rows, r, n).ld(ld, r, r).accumulate(true);
            dev.gemm(&db, dy, s.t[j].all(), ga.at(r * cols..));
            // dT (N, r) = s·dy·B.
            let dt = s.dt.at_mut(..n * r);
            dev.gemm(&Gemm::nn(n, r, ad.rows).ld(ld, r, r), dy, b, dt);
            dev.scale(s.dt.at_mut(..n * r), lora.scale);
            let dt = s.dt.at(..n * r);
            let key = s.key.map(|k| subkey(k, j as u64));
            // dA (r, cols) += dTᵀ·drop(x), the forward's mask regenerated from its key.
            let input = dropped(dev, x, &mut *s.u, lora.dropout, key);
            dev.gemm(
                &Gemm::tn(r, cols, n).accumulate(true),
                dt,
                input,
                ga.at(..r * cols),
            );
            // dx += drop'(dT·A): the same mask and scale on the way back.
            match key {
                Some(key) => {
                    dev.gemm(&Gemm::nn(n, cols, r), dt, a, s.u.at_mut(..n * cols));
                    dev.dropout(dx.rb(), s.u.at(..n * cols), lora.dropout, key, true);
                }
                None => dev.gemm(&Gemm::nn(n, cols, r).accumulate(true), dt, a, dx.rb()),
            }
        }
    }
}

/// drop(x): x itself without a mask key, else x masked into the scratch `u`.
fn dropped<'a, D: Device>(
    dev: &D,
    x: Ref<'a, D>,
    u: &'a mut D::Mem,
    p: f32,
    key: Option<u64>,
) -> Ref<'a, D> {
    let Some(key) = key else {
        return x;
    };
    dev.dropout(u.at_mut(..x.len()), x, p, key, false);
    u.at(..x.len())
}

/// A model with its adapters switched off (`Llama::frozen_base`); they come back on when it
/// drops.
pub struct FrozenBase<'a, D: Device>(&'a Llama<D>);

impl<D: Device> std::ops::Deref for FrozenBase<'_, D> {
    type Target = Llama<D>;
    fn deref(&self) -> &Llama<D> {
        self.0
    }
}

impl<D: Device> Drop for FrozenBase<'_, D> {
    fn drop(&mut self) {
        if let Some(lora) = &self.0.lora {
            lora.off.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Llama {
    /// The KV-cache forward's side path: y (n, ld) += s·x·Aᵀ·Bᵀ for layer `l`'s adapters on
    /// `proj`, x (n, cols); no dropout (inference).
    pub(crate) fn side_infer(&self, l: usize, proj: Proj, x: &[f32], y: &mut [f32], ld: usize) {
        let Some(lora) = self.side() else {
            return;
        };
        let r = lora.rank;
        for (_, ad) in lora.adapters(l, proj) {
            let n = x.len() / ad.cols;
            let (a, b) = ad.weights((&lora.weights).into(), r);
            let (a, b) = (a.slice(), b.slice());
            let mut t = vec![0f32; n * r];
            tensor::sgemm(&Gemm::nt(n, r, ad.cols), x, a, &mut t);
            t.iter_mut().for_each(|v| *v *= lora.scale);
            let up = Gemm::nt(n, ad.rows, r).ld(r, r, ld).accumulate(true);
            tensor::sgemm(&up, &t, b, &mut y[ad.row0..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LanguageModel, ModelConfig, Params, Workspace};
    use tensor::check::{assert_close, grad_check, projection};

    /// The tiny model with q/k/v biases (every term of the projections), and adapters of rank
    /// 3 on every projection with random A and B (B is zero only at a fresh start).
    fn adapted(dropout: f32) -> (Llama, Vec<Vec<Adapter>>, Vec<f32>) {
        let set = [
            "model.qkv_bias=true".to_string(),
            "model.init_std=0.2".into(),
        ];
        let cfg = ModelConfig::preset("tiny", &set).unwrap();
        let mut m = Llama::init(cfg.clone(), 3);
        let mut at = 0;
        let layers: Vec<Vec<Adapter>> = (0..cfg.n_layers)
            .map(|l| {
                let layer = MODULES.iter().map(|name| {
                    let ad = Adapter::of(&cfg, l, name, at).unwrap();
                    at += ad.len(3);
                    ad
                });
                layer.collect()
            })
            .collect();
        let w: Vec<f32> = projection(at, 9).iter().map(|v| 0.3 * v).collect();
        m.attach_lora(Lora::new(3, 1.5, dropout, layers.clone(), w.clone()));
        (m, layers, w)
    }

    /// W = W₀ + s·B·A for every adapter, into a copy of the parameters.
    fn merged(m: &Llama, layers: &[Vec<Adapter>], w: &[f32], s: f32) -> Llama {
        let mut p: Params = m.params.clone();
        for (off, layer) in m.params.layers.iter().zip(layers) {
            for ad in layer {
                let base = ad.weight_offset(off);
                let (a, b) = w[ad.at..ad.at + ad.len(3)].split_at(3 * ad.cols);
                for i in 0..ad.rows {
                    for j in 0..ad.cols {
                        let ba: f32 = (0..3).map(|k| b[i * 3 + k] * a[k * ad.cols + j]).sum();
                        p.data[base + i * ad.cols + j] += s * ba;
                    }
                }
            }
        }
        Llama::new(m.cfg.clone(), p)
    }

    fn batch(m: &Llama) -> (Vec<u32>, Vec<u32>) {
        let v = m.cfg.vocab_size as u32;
        let tokens: Vec<u32> = (0..32u32).map(|i| (i * 37 + 5) % v).collect();
        let targets: Vec<u32> = (0..32u32).map(|i| (i * 53 + 11) % v).collect();
        (tokens, targets)
    }

    #[test]
    fn the_side_path_computes_what_the_merged_weights_do() {
        let (m, layers, w) = adapted(0.0);
        let reference = merged(&m, &layers, &w, 1.5);
        let (tokens, _) = batch(&m);
        let mut ws = Workspace::new(&m.cfg, 2, 16);
        let got = m.logits(&tokens, &mut ws);
        let want = reference.logits(&tokens, &mut Workspace::new(&m.cfg, 2, 16));
        assert_close(&got, &want, 1e-4, "training forward");
        // The KV-cache forward (sampling), a prompt then one token.
        let (mut a, mut b) = (m.new_cache(), reference.new_cache());
        let (mut la, mut lb) = (vec![0f32; 128], vec![0f32; 128]);
        for step in [&tokens[..9], &tokens[9..10]] {
            m.forward(&mut [(&mut a, step)], &mut la);
            reference.forward(&mut [(&mut b, step)], &mut lb);
            assert_close(&la, &lb, 1e-4, "KV-cache forward");
        }
    }

    #[test]
    fn the_frozen_base_is_the_model_without_its_adapters() {
        let (m, _, _) = adapted(0.0);
        let base = Llama::new(m.cfg.clone(), m.params.clone());
        let (tokens, _) = batch(&m);
        let ws = || Workspace::new(&m.cfg, 2, 16);
        let adapted_logits = m.logits(&tokens, &mut ws());
        let want = base.logits(&tokens, &mut ws());
        assert!(
            adapted_logits != want,
            "the adapters must change the logits for this check to mean anything"
        );
        {
            let frozen = m.frozen_base();
            // Nested guards: the adapters stay off until the outer one drops.
            drop(m.frozen_base());
            assert_eq!(frozen.logits(&tokens, &mut ws()), want, "training forward");
            let (mut a, mut b) = (frozen.new_cache(), base.new_cache());
            let (mut la, mut lb) = (vec![0f32; 128], vec![0f32; 128]);
            frozen.forward(&mut [(&mut a, &tokens[..9])], &mut la);
            base.forward(&mut [(&mut b, &tokens[..9])], &mut lb);
            assert_eq!(la, lb, "KV-cache forward");
        }
        assert_eq!(m.logits(&tokens, &mut ws()), adapted_logits, "back on");
    }

    #[test]
    #[should_panic(expected = "adapters are switched off")]
    fn a_gradient_pass_refuses_the_frozen_base() {
        let (m, _, _) = adapted(0.0);
        let (tokens, targets) = batch(&m);
        let mut g = vec![0f32; m.trainable_len()];
        let frozen = m.frozen_base();
        frozen.forward_backward(
            &tokens,
            &targets,
            &mut g,
            1.0,
            &mut Workspace::new(&m.cfg, 2, 16),
        );
    }

    #[test]
    fn adapter_gradients_are_the_full_gradient_projected_onto_them() {
        // dA = s·Bᵀ·dW and dB = s·dW·Aᵀ, dW the merged weight's gradient: checks the side
        // path's backward and every input gradient flowing past the frozen weights.
        let (m, layers, w) = adapted(0.0);
        let reference = merged(&m, &layers, &w, 1.5);
        let (tokens, targets) = batch(&m);
        let mut ws = Workspace::new(&m.cfg, 2, 16);
        let mut g = vec![0f32; m.trainable_len()];
        assert_eq!(g.len(), w.len());
        m.forward_backward(&tokens, &targets, &mut g, 1.0 / 32.0, &mut ws);
        let mut full = vec![0f32; reference.params.len()];
        let mut ws = Workspace::new(&m.cfg, 2, 16);
        reference.forward_backward(&tokens, &targets, &mut full, 1.0 / 32.0, &mut ws);
        let mut want = vec![0f32; w.len()];
        for (off, layer) in reference.params.layers.iter().zip(&layers) {
            for ad in layer {
                let base = ad.weight_offset(off);
                let dw = &full[base..base + ad.rows * ad.cols];
                let (a, b) = w[ad.at..ad.at + ad.len(3)].split_at(3 * ad.cols);
                let (da, db) = want[ad.at..ad.at + ad.len(3)].split_at_mut(3 * ad.cols);
                for k in 0..3 {
                    for j in 0..ad.cols {
                        da[k * ad.cols + j] = 1.5
                            * (0..ad.rows)
                                .map(|i| b[i * 3 + k] * dw[i * ad.cols + j])
                                .sum::<f32>();
                    }
                }
                for i in 0..ad.rows {
                    for k in 0..3 {
                        db[i * 3 + k] = 1.5
                            * (0..ad.cols)
                                .map(|j| dw[i * ad.cols + j] * a[k * ad.cols + j])
                                .sum::<f32>();
                    }
                }
            }
        }
        assert_close(&g, &want, 1e-4, "adapter gradients");
    }

    #[test]
    fn dropout_gradients_pass_a_finite_difference_check() {
        let (mut m, _, w) = adapted(0.3);
        // Smaller adapters keep the loss near-linear over the differences' step.
        let w: Vec<f32> = w.iter().map(|v| 0.3 * v).collect();
        let (tokens, targets) = batch(&m);
        let mut ws = Workspace::new(&m.cfg, 2, 16);
        // Every pass below draws the same masks: the first key after reseeding.
        let pass = |m: &mut Llama, w: &[f32], ws: &mut Workspace| {
            let lora = m.lora_mut().unwrap();
            lora.weights.copy_from_slice(w);
            lora.reseed(17);
            let mut g = vec![0f32; w.len()];
            let (loss, n) = m.forward_backward(&tokens, &targets, &mut g, 1.0, ws);
            (
                loss / n as f64,
                g.iter().map(|v| v / n as f32).collect::<Vec<_>>(),
            )
        };
        let (with_drop, analytic) = pass(&mut m, &w, &mut ws);
        let no_drop = m.loss(&tokens, &targets, &mut ws).0 / 32.0;
        assert!(analytic.iter().all(|v| v.is_finite()));
        assert!(
            (with_drop - no_drop).abs() > 1e-4,
            "dropout changed nothing"
        );
        let mut x = w.clone();
        grad_check("LoRA with dropout", &mut x, &analytic, |x| {
            pass(&mut m, x, &mut ws).0
        });
        // Another pass of the same step draws other masks.
        let lora = m.lora_mut().unwrap();
        lora.reseed(17);
        let (first, second) = (lora.next_key(), lora.next_key());
        assert_ne!(first, second);
    }

    #[test]
    fn layers_without_a_dense_grouped_query_projection_are_refused() {
        let moe = ModelConfig::preset("tiny-moe", &[]).unwrap();
        let last = moe.n_layers - 1;
        let err = Adapter::of(&moe, last, "gate_proj", 0).unwrap_err();
        assert!(err.contains("routed experts"), "{err}");
        let tiny = ModelConfig::preset("tiny", &[]).unwrap();
        let err = Adapter::of(&tiny, 0, "lm_head", 0).unwrap_err();
        assert!(err.contains("lm_head"), "{err}");
    }
}
