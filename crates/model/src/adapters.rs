//! The types of LoRA's side path (see `lora`): where each adapter sits, the adapters attached
//! to a model, and one layer's share of a pass. Below `llama`, which holds them, and `lora`,
//! which runs them.

use crate::config::ModelConfig;
use crate::workspace::LoraActs;
use crate::LayerOffsets;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tensor::ops::dropout::subkey;
use tensor::{Device, Memory, Ref};

/// The projections LoRA adapts, by the names PEFT gives them in Llama-family models.
pub const MODULES: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The fused projections of a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proj {
    Qkv,
    O,
    GateUp,
    Down,
}

/// Where one adapter sits: in which fused projection, which of its output rows, and where
/// its A then B lie in the adapters' buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    pub proj: Proj,
    /// The adapted weight's first row within its fused projection (k_proj's is n_heads·hd).
    pub row0: usize,
    pub rows: usize,
    pub cols: usize,
    /// A (rank × cols) at `at`, B (rows × rank) right after.
    pub at: usize,
}

impl Adapter {
    /// The adapter of HF module `module` (q_proj … down_proj) in layer `l` of `cfg`, its A at
    /// `at`; or why that layer has no such projection to adapt.
    pub fn of(cfg: &ModelConfig, l: usize, module: &str, at: usize) -> Result<Self, String> {
        if cfg.mla().is_some() || cfg.moe_at(l).is_some() {
            return Err(format!(
                "layer {l} has latent attention or routed experts; LoRA adapts dense grouped-query layers"
            ));
        }
        let (d, hd, hid) = (cfg.d_model, cfg.head_dim(), cfg.dense_hidden(l));
        let (q, kv) = (cfg.n_heads * hd, cfg.n_kv_heads * hd);
        let (proj, row0, rows, cols) = match module {
            "q_proj" => (Proj::Qkv, 0, q, d),
            "k_proj" => (Proj::Qkv, q, kv, d),
            "v_proj" => (Proj::Qkv, q + kv, kv, d),
            "o_proj" => (Proj::O, 0, d, q),
            "gate_proj" => (Proj::GateUp, 0, hid, d),
            "up_proj" => (Proj::GateUp, hid, hid, d),
            "down_proj" => (Proj::Down, 0, d, hid),
            other => return Err(format!("{other:?} is not a projection LoRA adapts")),
        };
        Ok(Adapter {
            proj,
            row0,
            rows,
            cols,
            at,
        })
    }

    /// Floats of A and B at rank r.
    pub fn len(&self, r: usize) -> usize {
        r * (self.rows + self.cols)
    }

    /// Where the adapted weight (its rows of the fused projection) starts in the parameters
    /// of a layer laid out as `off`.
    pub fn weight_offset(&self, off: &LayerOffsets) -> usize {
        let fused = match self.proj {
            Proj::Qkv => off.qkv,
            Proj::O => off.o,
            Proj::GateUp => off.gate_up,
            Proj::Down => off.down,
        };
        fused + self.row0 * self.cols
    }

    /// This adapter's A (rank × cols) and B (rows × rank) in the adapters' buffer.
    pub(crate) fn weights<'w, D: Device>(
        &self,
        all: Ref<'w, D>,
        r: usize,
    ) -> (Ref<'w, D>, Ref<'w, D>) {
        all.at(self.at..self.at + self.len(r))
            .split_at(r * self.cols)
    }
}

/// Adapters attached to a model: their shapes, their weights in the device's memory, and the
/// key of the next training pass's dropout masks.
pub struct Lora<D: Device> {
    pub rank: usize,
    /// s = α / r.
    pub scale: f32,
    pub dropout: f32,
    /// Each decoder layer's adapters.
    pub layers: Vec<Vec<Adapter>>,
    pub weights: D::Mem,
    /// Each training pass takes the next key (see `next_key`).
    passes: AtomicU64,
    seed: u64,
    /// Live `Llama::frozen_base` guards: while any is, passes skip the side path.
    pub(crate) off: AtomicUsize,
}

impl<D: Device> Lora<D> {
    /// Adapters of the given shapes, their weights `weights` (every adapter's A then B, as
    /// `Adapter::at` says), already in `dev`'s memory.
    pub fn new(
        rank: usize,
        scale: f32,
        dropout: f32,
        layers: Vec<Vec<Adapter>>,
        weights: D::Mem,
    ) -> Self {
        assert!((0.0..1.0).contains(&dropout), "Lora: dropout {dropout}");
        let len = layers.iter().flatten().map(|a| a.at + a.len(rank)).max();
        assert_eq!(len.unwrap_or(0), weights.numel(), "Lora: weights' length");
        Lora {
            rank,
            scale,
            dropout,
            layers,
            weights,
            passes: AtomicU64::new(0),
            seed: 0,
            off: AtomicUsize::new(0),
        }
    }

    /// Layer `l`'s adapters on `proj`, with their indices among the layer's (which key their
    /// activations and dropout masks).
    pub(crate) fn adapters(&self, l: usize, proj: Proj) -> impl Iterator<Item = (usize, &Adapter)> {
        let layer = self.layers[l].iter().enumerate();
        layer.filter(move |(_, ad)| ad.proj == proj)
    }

    /// Whether passes run the side path now (no `Llama::frozen_base` guard is live).
    pub fn on(&self) -> bool {
        self.off.load(Ordering::Relaxed) == 0
    }

    /// Floats of every adapter: the length of the gradient buffer of a LoRA pass.
    pub fn len(&self) -> usize {
        self.weights.numel()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a new sequence of dropout masks: the trainer seeds each step, so that a resumed
    /// run draws the masks the uninterrupted one would have.
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.passes.store(0, Ordering::Relaxed);
    }

    /// The side path's activations over n rows.
    pub(crate) fn acts(&self, dev: &D, n: usize) -> LoraActs<D> {
        let widest = self.layers.iter().flatten().map(|a| a.cols).max();
        LoraActs::new(dev, &self.counts(), self.rank, widest.unwrap_or(0), n)
    }

    /// Whether `acts` were sized for these adapters over n rows.
    pub(crate) fn fit(&self, acts: &LoraActs<D>, n: usize) -> bool {
        acts.fits(&self.counts(), self.rank, n)
    }

    /// Adapters per layer.
    fn counts(&self) -> Vec<usize> {
        self.layers.iter().map(Vec::len).collect()
    }

    /// The dropout key of a new training pass; None without dropout.
    pub(crate) fn next_key(&self) -> Option<u64> {
        let pass = self.passes.fetch_add(1, Ordering::Relaxed);
        (self.dropout > 0.0).then(|| subkey(self.seed, pass))
    }
}

/// One layer's share of the side path during a pass.
pub(crate) struct LoraPass<'a, D: Device> {
    pub t: &'a mut [D::Mem],
    pub u: &'a mut D::Mem,
    pub dt: &'a mut D::Mem,
    pub key: Option<u64>,
}

impl<'a, D: Device> LoraPass<'a, D> {
    /// Layer `l`'s share of `acts`.
    pub fn layer(acts: &'a mut LoraActs<D>, l: usize) -> Self {
        LoraPass {
            t: &mut acts.t[l],
            u: &mut acts.u,
            dt: &mut acts.dt,
            key: acts.key.map(|k| subkey(k, l as u64)),
        }
    }
}
