//! Element-wise math the compiler can vectorise. `f32::exp` is a libm call per element and
//! keeps loops scalar; softmax, SiLU and cross-entropy spend most of their time in it.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so that n·ln2 is exact in its high part (Cody–Waite reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5·2²³ rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// eˣ with relative error below 3e-7 on the whole f32 range; 0 below −87.3, +∞ above 88.7
/// (the f32 limits), NaN for NaN. Range reduction x = n·ln2 + r, |r| ≤ ln2/2, then the
/// Cephes expf polynomial for eʳ, then scaling by 2ⁿ through exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.336_55, 88.722_83);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2ⁿ as 2^(n/2)·2^(n − n/2): n reaches 128 at the top of the range, beyond one exponent field.
    let ni = n as i32;
    let (n1, n2) = (ni >> 1, ni - (ni >> 1));
    let scaled =
        y * f32::from_bits(((n1 + 127) << 23) as u32) * f32::from_bits(((n2 + 127) << 23) as u32);
    if x < -87.336_55 {
        0.0
    } else if x > 88.722_83 {
        f32::INFINITY
    } else {
        scaled // NaN in, NaN out: clamp keeps NaN
    }
}

/// 1 / (1 + e⁻ˣ).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh(x) through one `exp` of −2|x|: absolute error below 1e-6 everywhere, ±1 beyond ±9.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// Lanes of the reductions below: independent accumulators let the compiler use SIMD registers
/// and hide add latency. The order is fixed, so results are reproducible.
const LANES: usize = 16;

/// Σ xᵢ.
#[inline]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// max xᵢ (−∞ for an empty slice).
#[inline]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// Σ aᵢ·bᵢ.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_is_accurate_and_odd() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            let (got, want) = (tanh(x), (x as f64).tanh());
            assert!(
                (got as f64 - want).abs() < 1e-6,
                "tanh({x}) = {got}, not {want}"
            );
            assert_eq!(tanh(-x), -got);
        }
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_accurate_across_the_range() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.5 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7 && sigmoid(-100.0) == 0.0);
    }

    #[test]
    fn reductions_match_plain_loops() {
        for n in [0, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13) % 7) as f32 * 0.5).collect();
            assert_eq!(sum(&a), a.iter().sum::<f32>());
            assert_eq!(max(&a), a.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
            assert_eq!(
                dot(&a, &b),
                a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
            );
        }
    }
}
