//! Data parallelism over a `Collective`. Every rank holds the whole model and computes the
//! gradient of its own slice of the batch; then either
//! - plain DP: the flat gradient is all-reduced in fixed buckets, in a fixed order, and every
//!   rank runs the same optimizer update; or
//! - ZeRO-1: the gradient is reduce-scattered so rank r holds the summed gradient of its shard
//!   of the parameters only, updates that shard with optimizer state for it alone (1/world of
//!   the memory), and the shards are all-gathered back into every rank's parameters.
//!
//! Shards are contiguous ranges of the flat buffer cut near n/world, but never inside a Muon
//! matrix (its update orthogonalises the whole matrix). Collectives need equal blocks, so each
//! shard travels padded to the longest one's length.
//!
//! Overlapping the buckets with the backward pass does not pay on one CPU: both ranks' cores
//! are busy computing while a transfer would run. On a GPU cluster it would; see the README.

use super::Collective;
use crate::config::DistConfig;
use base::Result;
use std::ops::Range;

/// Which contiguous range of the parameters each rank owns under ZeRO-1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    pub ranges: Vec<Range<usize>>,
    /// The padded block length every shard travels in: the longest shard.
    pub block: usize,
}

impl ShardPlan {
    /// Cuts `n` values into `world` ranges near equal, moving each cut out of any of the
    /// `unsplittable` ranges (to its nearer end).
    pub fn new(n: usize, world: usize, unsplittable: &[Range<usize>]) -> ShardPlan {
        let mut cuts = vec![0];
        for r in 1..world {
            let mut cut = n * r / world;
            if let Some(u) = unsplittable.iter().find(|u| u.start < cut && cut < u.end) {
                cut = if cut - u.start <= u.end - cut {
                    u.start
                } else {
                    u.end
                };
            }
            cuts.push(cut.max(*cuts.last().expect("starts with 0")));
        }
        cuts.push(n);
        let ranges: Vec<Range<usize>> = cuts.windows(2).map(|w| w[0]..w[1]).collect();
        let block = ranges.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        ShardPlan { ranges, block }
    }
}

/// One rank's side of data-parallel training.
pub struct Replica<'c> {
    comm: &'c dyn Collective,
    /// Bucket length in values.
    bucket: usize,
    zero: Option<ShardPlan>,
    n: usize,
    send: Vec<f32>,
    recv: Vec<f32>,
}

impl<'c> Replica<'c> {
    /// For a flat buffer of `n` parameters; `unsplittable` ranges (Muon matrices) stay whole
    /// in one shard under ZeRO-1.
    pub fn new(
        comm: &'c dyn Collective,
        cfg: &DistConfig,
        n: usize,
        unsplittable: &[Range<usize>],
    ) -> Replica<'c> {
        let zero = (cfg.zero >= 1).then(|| ShardPlan::new(n, comm.world(), unsplittable));
        Replica {
            comm,
            bucket: ((cfg.bucket_mb * (1 << 20) as f64 / 4.0) as usize).max(1),
            zero,
            n,
            send: Vec::new(),
            recv: Vec::new(),
        }
    }

    pub fn comm(&self) -> &'c dyn Collective {
        self.comm
    }

    pub fn zero(&self) -> Option<&ShardPlan> {
        self.zero.as_ref()
    }

    /// The parameters whose update (and optimizer state) this rank owns: all of them, or its
    /// ZeRO-1 shard.
    pub fn owned(&self) -> Range<usize> {
        match &self.zero {
            Some(p) => p.ranges[self.comm.rank()].clone(),
            None => 0..self.n,
        }
    }

    /// Sums the ranks' gradients: all of `grads` (plain DP), or the owned shard only (ZeRO-1;
    /// the rest of `grads` is then stale and must not be read).
    pub fn sync_grads(&mut self, grads: &mut [f32]) -> Result<()> {
        if self.comm.world() == 1 {
            return Ok(());
        }
        let Some(plan) = &self.zero else {
            for bucket in grads.chunks_mut(self.bucket) {
                self.comm.all_reduce(bucket)?;
            }
            return Ok(());
        };
        let (world, rank) = (self.comm.world(), self.comm.rank());
        // Bucket j carries values j·B.. of every shard: each rank's part stays contiguous.
        for at in (0..plan.block).step_by(self.bucket) {
            let w = self.bucket.min(plan.block - at);
            self.send.clear();
            self.send.resize(world * w, 0.0);
            for (r, range) in plan.ranges.iter().enumerate() {
                let part = piece(range, at, w);
                self.send[r * w..r * w + part.len()].copy_from_slice(&grads[part]);
            }
            self.recv.resize(w, 0.0);
            self.comm.reduce_scatter(&self.send, &mut self.recv)?;
            let mine = piece(&plan.ranges[rank], at, w);
            let k = mine.len();
            grads[mine].copy_from_slice(&self.recv[..k]);
        }
        Ok(())
    }

    /// The global gradient norm after `sync_grads`: every rank gets the same value.
    pub fn grad_norm(&self, grads: &[f32]) -> Result<f64> {
        let own = self.owned();
        let sum_sq = crate::step::grad_sum_sq(&grads[own]);
        match self.zero {
            None => Ok(sum_sq.sqrt()),
            Some(_) => {
                let mut s = [sum_sq];
                self.comm.all_reduce_f64(&mut s)?;
                Ok(s[0].sqrt())
            }
        }
    }

    /// After a ZeRO-1 update of the owned shard of `full`: every rank's shards into every
    /// rank's `full`. With `own`, this rank's shard is taken from there instead (optimizer
    /// state gathered for a checkpoint). Nothing to do for plain DP.
    pub fn all_gather(&mut self, full: &mut [f32], own: Option<&[f32]>) -> Result<()> {
        let Some(plan) = &self.zero else {
            return Ok(());
        };
        if self.comm.world() == 1 {
            if let Some(own) = own {
                full.copy_from_slice(own);
            }
            return Ok(());
        }
        let (world, rank) = (self.comm.world(), self.comm.rank());
        let mine = plan.ranges[rank].clone();
        for at in (0..plan.block).step_by(self.bucket) {
            let w = self.bucket.min(plan.block - at);
            let part = piece(&mine, at, w);
            self.send.clear();
            self.send.resize(w, 0.0);
            let k = part.len();
            match own {
                Some(own) => self.send[..k]
                    .copy_from_slice(&own[part.start - mine.start..part.end - mine.start]),
                None => self.send[..k].copy_from_slice(&full[part]),
            }
            self.recv.resize(world * w, 0.0);
            self.comm.all_gather(&self.send, &mut self.recv)?;
            for (r, range) in plan.ranges.iter().enumerate() {
                let part = piece(range, at, w);
                let k = part.len();
                full[part].copy_from_slice(&self.recv[r * w..r * w + k]);
            }
        }
        Ok(())
    }
}

/// Values at..at+w of `range`, clipped to it, as absolute indices.
fn piece(range: &Range<usize>, at: usize, w: usize) -> Range<usize> {
    let start = (range.start + at).min(range.end);
    start..(start + w).min(range.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_everything_and_never_cut_an_unsplittable_range() {
        let muon = [10..40, 40..90, 95..100];
        for world in 1..6 {
            let p = ShardPlan::new(100, world, &muon);
            assert_eq!(p.ranges.len(), world);
            assert_eq!(p.ranges[0].start, 0);
            assert_eq!(p.ranges[world - 1].end, 100);
            for w in p.ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                let cut = w[0].end;
                assert!(
                    !muon.iter().any(|u| u.start < cut && cut < u.end),
                    "{world}: cut {cut}"
                );
            }
            assert_eq!(
                p.block,
                p.ranges.iter().map(|r| r.len()).max().unwrap().max(1)
            );
        }
        // Without matrices to respect, shards are within one value of equal.
        let p = ShardPlan::new(10, 3, &[]);
        assert_eq!(p.ranges, vec![0..3, 3..6, 6..10]);
    }

    #[test]
    fn solo_replica_leaves_values_alone() {
        let cfg = DistConfig {
            zero: 1,
            bucket_mb: 1e-5,
            ..DistConfig::default()
        };
        let solo = super::super::Solo;
        let mut r = Replica::new(&solo, &cfg, 7, &[]);
        assert_eq!(r.owned(), 0..7);
        let mut g: Vec<f32> = (0..7).map(|i| i as f32).collect();
        r.sync_grads(&mut g).unwrap();
        assert_eq!(r.grad_norm(&g).unwrap(), 91f64.sqrt());
        let mut full = vec![0f32; 7];
        r.all_gather(&mut full, Some(&g)).unwrap();
        assert_eq!(full, g);
    }
}
