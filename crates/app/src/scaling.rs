//! Scaling laws in the Chinchilla form, L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022),
//! fitted on the user's own runs when there are enough of them, and what reaching a target
//! loss would cost: the compute-optimal size and tokens, priced on this machine at its
//! measured speed and on a GPU cluster at a stated utilisation.

use base::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossLaw {
    pub e: f64,
    pub a: f64,
    pub b: f64,
    pub alpha: f64,
    pub beta: f64,
    /// How the constants were obtained, for the report.
    pub source: String,
}

impl LossLaw {
    /// The law as TOML, which `load` reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a law serialises")
    }

    /// A law saved as TOML (the five constants and `source`), e.g. configs/scaling-cpu.toml.
    pub fn load(path: &std::path::Path) -> Result<LossLaw> {
        let text = base::fs::read_text(path)?;
        let law: LossLaw = toml::from_str(&text).map_err(|e| {
            Error::config(
                path.display().to_string(),
                format!("is not a scaling law: {}", e.message()),
                "give e, a, b, alpha, beta and source, as bench/sweep.sh prints them",
            )
        })?;
        let ok = [law.e, law.a, law.b, law.alpha, law.beta]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0);
        if !ok {
            return Err(Error::config(
                path.display().to_string(),
                "has a constant that is not a positive number",
                "refit it with bench/sweep.sh",
            ));
        }
        Ok(law)
    }
}

/// One finished run: parameters, training tokens, final validation loss (nats per token).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunPoint {
    pub params: f64,
    pub tokens: f64,
    pub loss: f64,
}

/// Runs needed for a fit of all five constants.
pub const MIN_RUNS_FOR_FIT: usize = 5;

impl LossLaw {
    /// The Chinchilla law as re-fitted by Besiroglu et al. 2024 ("Chinchilla Scaling: A
    /// replication attempt", table 1) from the paper's own data: E = 1.8172, A = 482.01,
    /// B = 2085.43, α = 0.3478, β = 0.3658 (nats per token, MassiveText). Unlike the paper's
    /// printed fit (`hoffmann`), it puts the compute optimum near 20 tokens per parameter, as
    /// the paper's other two approaches and its Chinchilla model do.
    pub fn chinchilla() -> LossLaw {
        LossLaw {
            e: 1.8172,
            a: 482.01,
            b: 2085.43,
            alpha: 0.3478,
            beta: 0.3658,
            source: "Chinchilla law as re-fitted by Besiroglu et al. 2024".into(),
        }
    }

    /// Hoffmann et al. 2022, equation 10, as printed: E = 1.69, A = 406.4, B = 410.7,
    /// α = 0.34, β = 0.28.
    pub fn hoffmann() -> LossLaw {
        LossLaw {
            e: 1.69,
            a: 406.4,
            b: 410.7,
            alpha: 0.34,
            beta: 0.28,
            source: "Hoffmann et al. 2022, eq. 10".into(),
        }
    }

    pub fn loss(&self, n: f64, d: f64) -> f64 {
        self.e + self.a / n.powf(self.alpha) + self.b / d.powf(self.beta)
    }

    /// Tokens a model of `n` parameters needs to reach `target`, or None if it never does.
    pub fn tokens_for(&self, n: f64, target: f64) -> Option<f64> {
        let room = target - self.e - self.a / n.powf(self.alpha);
        (room > 0.0).then(|| (self.b / room).powf(1.0 / self.beta))
    }

    /// The (parameters, tokens) reaching `target` with the fewest training FLOPs (6·N·D),
    /// searched over model sizes from 1e5 to 1e13 parameters.
    pub fn compute_optimal(&self, target: f64) -> Option<(f64, f64)> {
        (0..=800)
            .map(|i| 10f64.powf(5.0 + 8.0 * i as f64 / 800.0))
            .filter_map(|n| Some((n, self.tokens_for(n, target)?)))
            .min_by(|x, y| (x.0 * x.1).total_cmp(&(y.0 * y.1)))
    }

    /// The lowest loss a compute budget of `flops` (6·N·D) buys.
    pub fn best_loss(&self, flops: f64) -> (f64, f64, f64) {
        (0..=800)
            .map(|i| {
                let n = 10f64.powf(5.0 + 8.0 * i as f64 / 800.0);
                let d = flops / (6.0 * n);
                (self.loss(n, d), n, d)
            })
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .expect("a non-empty grid")
    }

    /// Fits a law to finished runs. With at least `MIN_RUNS_FOR_FIT` runs of three or more
    /// sizes all five constants are fitted (α, β on a grid, E, A, B by least squares at each).
    /// With fewer, one run cannot tell exponents apart: the published law is kept and scaled
    /// as a whole to the runs' losses. Scaling, not shifting, because what differs between
    /// tokenizers and corpora is first of all the unit: a loss per token is a loss per byte
    /// times the bytes per token, and a shift would let E go negative.
    pub fn fit(runs: &[RunPoint]) -> Result<LossLaw> {
        if runs.is_empty() {
            return Err(Error::input(
                "scaling fit",
                "no finished runs to fit",
                "train at least one run to the end (its metrics.jsonl needs a val_loss)",
            ));
        }
        if let Some(r) = runs
            .iter()
            .find(|r| !(r.params > 0.0 && r.tokens > 0.0 && r.loss.is_finite()))
        {
            return Err(Error::input(
                "scaling fit",
                format!(
                    "a run has params {}, tokens {}, loss {}",
                    r.params, r.tokens, r.loss
                ),
                "every run needs a positive size and token count and a finite validation loss",
            ));
        }
        let sizes = {
            let mut s: Vec<u64> = runs.iter().map(|r| r.params as u64).collect();
            s.sort();
            s.dedup();
            s.len()
        };
        let base = LossLaw::chinchilla();
        if runs.len() < MIN_RUNS_FOR_FIT || sizes < 3 {
            let k = runs
                .iter()
                .map(|r| r.loss / base.loss(r.params, r.tokens))
                .sum::<f64>()
                / runs.len() as f64;
            return Ok(LossLaw {
                e: base.e * k,
                a: base.a * k,
                b: base.b * k,
                source: format!(
                    "{}, scaled x{k:.3} to pass through this run's loss ({} run{}; {MIN_RUNS_FOR_FIT} runs of 3+ sizes fit all five constants)",
                    base.source,
                    runs.len(),
                    if runs.len() == 1 { "" } else { "s" }
                ),
                ..base
            });
        }
        let mut best: Option<(f64, LossLaw)> = None;
        for ia in 1..=60 {
            for ib in 1..=60 {
                let (alpha, beta) = (0.02 * ia as f64, 0.02 * ib as f64);
                let Some((e, a, b)) = least_squares(runs, alpha, beta) else {
                    continue;
                };
                if a < 0.0 || b < 0.0 {
                    continue;
                }
                let law = LossLaw {
                    e,
                    a,
                    b,
                    alpha,
                    beta,
                    source: String::new(),
                };
                let sse: f64 = runs
                    .iter()
                    .map(|r| (law.loss(r.params, r.tokens) - r.loss).powi(2))
                    .sum();
                if best.as_ref().is_none_or(|(s, _)| sse < *s) {
                    best = Some((sse, law));
                }
            }
        }
        let (sse, mut law) = best.ok_or_else(|| {
            Error::input(
                "scaling fit",
                "no law with positive A and B fits these runs",
                "add runs that vary size and tokens more widely",
            )
        })?;
        law.source = format!(
            "fitted on {} runs (rms error {:.4})",
            runs.len(),
            (sse / runs.len() as f64).sqrt()
        );
        Ok(law)
    }
}

/// E, A, B minimising the squared error at fixed exponents (3×3 normal equations).
fn least_squares(runs: &[RunPoint], alpha: f64, beta: f64) -> Option<(f64, f64, f64)> {
    let mut m = [[0f64; 4]; 3];
    for r in runs {
        let x = [1.0, r.params.powf(-alpha), r.tokens.powf(-beta)];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += x[i] * x[j];
            }
            m[i][3] += x[i] * r.loss;
        }
    }
    // Gaussian elimination with partial pivoting.
    for c in 0..3 {
        let p = (c..3).max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))?;
        m.swap(c, p);
        if m[c][c].abs() < 1e-300 {
            return None;
        }
        let pivot = m[c];
        for (r, row) in m.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped law (bench/sweep.sh's fit) loads, and ranks models as it was fitted to: at
    /// 0.82M tokens the 9.3M model beats the 3M one (the sweep's 400-step runs).
    #[test]
    fn the_shipped_cpu_law_loads_and_ranks_the_sweeps_sizes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/scaling-cpu.toml"
        );
        let law = LossLaw::load(std::path::Path::new(path)).unwrap();
        assert!(law.loss(9.31e6, 0.82e6) < law.loss(2.95e6, 0.82e6));
    }

    #[test]
    fn chinchilla_is_compute_optimal_near_twenty_tokens_per_parameter() {
        let law = LossLaw::chinchilla();
        // At Chinchilla's own budget (70B parameters, 1.4T tokens) the optimum is about
        // Chinchilla: ~73B parameters at ~18 tokens each.
        let budget = 6.0 * 70e9 * 1.4e12;
        let (_, n, d) = law.best_loss(budget);
        assert!(
            (60e9..90e9).contains(&n) && d / n > 14.0 && d / n < 24.0,
            "{n:e}: {} tokens per parameter",
            d / n
        );
        // The paper's printed fit puts it at ~93 tokens per parameter instead: the
        // inconsistency the replication found.
        let (_, n, d) = LossLaw::hoffmann().best_loss(budget);
        assert!(
            d / n > 80.0 && d / n < 100.0,
            "{} tokens per parameter",
            d / n
        );
        let target = law.loss(70e9, 1.4e12);
        let (n, d) = law.compute_optimal(target).unwrap();
        assert!(
            law.tokens_for(1e6, 1.0).is_none(),
            "below E no size suffices"
        );
        let (l, n2, d2) = law.best_loss(6.0 * n * d);
        assert!(
            (l - target).abs() < 0.01 && (n2 / n - 1.0).abs() < 0.1,
            "{l} {n2} {d2}"
        );
    }

    #[test]
    fn recovers_a_law_from_its_own_runs_and_offsets_a_single_run() {
        let truth = LossLaw {
            e: 2.1,
            a: 80.0,
            b: 300.0,
            alpha: 0.3,
            beta: 0.36,
            source: String::new(),
        };
        let runs: Vec<RunPoint> = [
            (1e6, 2e7),
            (3e6, 6e7),
            (1e7, 2e8),
            (3e7, 3e8),
            (1e8, 2e9),
            (3e6, 3e8),
        ]
        .iter()
        .map(|&(n, d)| RunPoint {
            params: n,
            tokens: d,
            loss: truth.loss(n, d),
        })
        .collect();
        let fit = LossLaw::fit(&runs).unwrap();
        assert!(
            (fit.alpha - 0.3).abs() < 0.021 && (fit.beta - 0.36).abs() < 0.021,
            "{fit:?}"
        );
        for r in &runs {
            assert!((fit.loss(r.params, r.tokens) - r.loss).abs() < 0.01);
        }
        let one = LossLaw::fit(&runs[..1]).unwrap();
        assert!((one.loss(1e6, 2e7) - runs[0].loss).abs() < 1e-9);
        assert!(one.source.contains("scaled x"), "{}", one.source);
        assert!(one.e > 0.0 && one.alpha == LossLaw::chinchilla().alpha);
        let bad = [RunPoint {
            params: 1e6,
            tokens: 0.0,
            loss: 3.0,
        }];
        assert!(LossLaw::fit(&bad)
            .unwrap_err()
            .to_string()
            .contains("tokens 0"));
        assert!(LossLaw::fit(&[]).is_err());
    }
}
