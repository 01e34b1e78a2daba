//! The objectives of preference learning, with their gradients written out: the reward model's
//! Bradley–Terry loss, Direct Preference Optimization, and GRPO's group-relative advantages,
//! clipped surrogate and KL penalty. The training loops turn a gradient with respect to a
//! sequence's (or a token's) log-probability into per-token weights of the LM head's
//! cross-entropy gradient.

/// ln(1 + eˣ) without overflow.
pub fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// 1 / (1 + e⁻ˣ).
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Bradley–Terry on a pair of scalar rewards: −ln σ(r_chosen − r_rejected), and its gradient
/// (d/dr_chosen, d/dr_rejected).
pub fn bradley_terry(chosen: f64, rejected: f64) -> (f64, f64, f64) {
    let m = chosen - rejected;
    let g = -sigmoid(-m);
    (softplus(-m), g, -g)
}

/// One pair's DPO terms (Rafailov et al. 2023). Inputs are summed log-probabilities of the
/// responses under the policy and the frozen reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dpo {
    /// −ln σ(β·((π_c − ρ_c) − (π_r − ρ_r))).
    pub loss: f64,
    /// The implicit rewards β·(π − ρ) of the chosen and the rejected response.
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    /// d loss / d π_c and d loss / d π_r.
    pub d_chosen: f64,
    pub d_rejected: f64,
}

pub fn dpo(
    policy_chosen: f64,
    policy_rejected: f64,
    ref_chosen: f64,
    ref_rejected: f64,
    beta: f64,
) -> Dpo {
    let chosen_reward = beta * (policy_chosen - ref_chosen);
    let rejected_reward = beta * (policy_rejected - ref_rejected);
    let z = chosen_reward - rejected_reward;
    let g = beta * sigmoid(-z);
    Dpo {
        loss: softplus(-z),
        chosen_reward,
        rejected_reward,
        d_chosen: -g,
        d_rejected: g,
    }
}

/// GRPO's advantages (Shao et al. 2024): each reward less its group's mean, over the group's
/// standard deviation (Bessel-corrected, as TRL computes it) plus `eps`. A group whose rewards
/// are all equal teaches nothing: its advantages are 0.
///
/// With `scale` false the deviation is left out (Dr. GRPO, Liu et al. 2025): a group that
/// differs only by a small shaping term then gets small advantages, instead of having that
/// difference blown up to the size of a right-versus-wrong answer.
pub fn group_advantages(rewards: &[f64], scale: bool, eps: f64) -> Vec<f64> {
    let g = rewards.len() as f64;
    let mean = rewards.iter().sum::<f64>() / g;
    let var = if rewards.len() > 1 {
        rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (g - 1.0)
    } else {
        0.0
    };
    let div = if scale { var.sqrt() + eps } else { 1.0 };
    rewards.iter().map(|r| (r - mean) / div).collect()
}

/// The k3 estimator of KL(π ‖ π_ref) at one sampled token (Schulman 2020): e^(ρ−π) − (ρ−π) − 1,
/// unbiased and never negative, with π and ρ the token's log-probabilities under the policy and
/// the reference. Returns (kl, d kl / d π).
pub fn kl_k3(logp: f64, ref_logp: f64) -> (f64, f64) {
    let d = ref_logp - logp;
    (d.exp() - d - 1.0, 1.0 - d.exp())
}

/// One token's share of GRPO's loss: −[min(r·A, clip(r, 1−ε, 1+ε)·A) − β·KL], with the ratio
/// r = e^(π − π_old). Returns (loss, d loss / d π). Where the clip binds, the surrogate passes
/// no gradient.
pub fn grpo_token(
    logp: f64,
    old_logp: f64,
    ref_logp: f64,
    adv: f64,
    clip: f64,
    beta: f64,
) -> (f64, f64) {
    let ratio = (logp - old_logp).exp();
    let clipped = ratio.clamp(1.0 - clip, 1.0 + clip);
    let (unclipped_obj, clipped_obj) = (ratio * adv, clipped * adv);
    let (surrogate, d_surrogate) = if unclipped_obj <= clipped_obj {
        (unclipped_obj, ratio * adv)
    } else {
        (clipped_obj, 0.0)
    };
    let (kl, d_kl) = kl_k3(logp, ref_logp);
    (-(surrogate - beta * kl), -(d_surrogate - beta * d_kl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    /// Finite differences of f at x.
    fn numeric(f: impl Fn(f64) -> f64, x: f64) -> f64 {
        let h = 1e-6;
        (f(x + h) - f(x - h)) / (2.0 * h)
    }

    #[test]
    fn bradley_terry_by_hand() {
        // Equal rewards: ln 2, gradients ∓1/2.
        let (l, gc, gr) = bradley_terry(0.7, 0.7);
        close(l, std::f64::consts::LN_2);
        close(gc, -0.5);
        close(gr, 0.5);
        // Margin 2: ln(1 + e⁻²) = 0.126928011042973.
        let (l, gc, _) = bradley_terry(1.5, -0.5);
        close(l, 0.126_928_011_042_973);
        close(gc, -1.0 / (1.0 + 2f64.exp()));
        assert!((numeric(|c| bradley_terry(c, -0.5).0, 1.5) - gc).abs() < 1e-8);
        // Far apart, no overflow.
        assert_eq!(bradley_terry(-800.0, 800.0).0, 1600.0);
        assert!(bradley_terry(800.0, -800.0).0 < 1e-300);
    }

    #[test]
    fn dpo_by_hand() {
        // β = 0.1; policy moved +2 on chosen, −1 on rejected relative to the reference:
        // z = 0.1·(2 − (−1)) = 0.3; loss = ln(1 + e^−0.3) = 0.554355244468527.
        let d = dpo(-10.0, -21.0, -12.0, -20.0, 0.1);
        close(d.loss, 0.554_355_244_468_527);
        close(d.chosen_reward, 0.2);
        close(d.rejected_reward, -0.1);
        let g = 0.1 / (1.0 + 0.3f64.exp());
        close(d.d_chosen, -g);
        close(d.d_rejected, g);
        let f = |pc: f64| dpo(pc, -21.0, -12.0, -20.0, 0.1).loss;
        assert!((numeric(f, -10.0) - d.d_chosen).abs() < 1e-8);
        // At the reference the loss is ln 2 whatever β.
        close(
            dpo(-5.0, -7.0, -5.0, -7.0, 0.5).loss,
            std::f64::consts::LN_2,
        );
    }

    #[test]
    fn advantages_are_normalised_within_the_group() {
        // Rewards 1, 0, 0, 1: mean 0.5, unbiased std sqrt(1/3).
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], true, 0.0);
        let s = (1.0f64 / 3.0).sqrt();
        for (x, want) in a.iter().zip([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]) {
            close(*x, want);
        }
        assert!(a.iter().sum::<f64>().abs() < 1e-12);
        // All equal: nothing to learn.
        assert!(group_advantages(&[1.0; 4], true, 1e-4)
            .iter()
            .all(|&x| x == 0.0));
        assert_eq!(group_advantages(&[3.0], true, 1e-4), vec![0.0]);
        // A format bonus alone (0.1 for three of four replies, none right): scaled, it weighs
        // as much as a right answer would; unscaled (Dr. GRPO) it stays a tenth of one.
        let fmt = [0.1, 0.1, 0.1, 0.0];
        let right = [1.0, 0.0, 0.0, 0.0];
        close(
            group_advantages(&fmt, true, 0.0)[3],
            -group_advantages(&right, true, 0.0)[0],
        );
        close(group_advantages(&fmt, false, 0.0)[3], -0.075);
        close(group_advantages(&right, false, 0.0)[0], 0.75);
    }

    #[test]
    fn k3_is_unbiased_nonnegative_and_its_gradient_is_right() {
        close(kl_k3(-1.0, -1.0).0, 0.0);
        // π = −1, ρ = −2: d = −1, e⁻¹ + 1 − 1.
        close(kl_k3(-1.0, -2.0).0, (-1f64).exp());
        for (p, r) in [(-1.0, -2.0), (-3.0, -0.5), (-0.2, -0.21)] {
            assert!(kl_k3(p, r).0 >= 0.0);
            assert!((numeric(|x| kl_k3(x, r).0, p) - kl_k3(p, r).1).abs() < 1e-7);
        }
        // Unbiased: under q, E[e^(ln p − ln q) − (ln p − ln q) − 1] = KL(q ‖ p), here for two
        // distributions on three outcomes, computed exactly.
        let (q, p) = ([0.5, 0.3, 0.2], [0.2, 0.5, 0.3]);
        let k3: f64 = (0..3)
            .map(|i| q[i] * kl_k3(f64::ln(q[i]), f64::ln(p[i])).0)
            .sum();
        let kl: f64 = (0..3).map(|i| q[i] * (q[i] / p[i]).ln()).sum();
        close(k3, kl);
    }

    #[test]
    fn grpo_clips_where_the_ratio_runs_away() {
        let (clip, beta) = (0.2, 0.0);
        // On-policy (ratio 1): loss −A, gradient −A.
        let (l, g) = grpo_token(-2.0, -2.0, -2.0, 1.5, clip, beta);
        close(l, -1.5);
        close(g, -1.5);
        // A > 0 and the ratio above 1 + ε: clipped, no gradient.
        let (l, g) = grpo_token(-2.0 + 0.5, -2.0, -2.0, 1.0, clip, beta);
        close(l, -1.2);
        close(g, 0.0);
        // A < 0 and the ratio below 1 − ε: clipped too.
        let (l, g) = grpo_token(-2.5, -2.0, -2.0, -1.0, clip, beta);
        close(l, 0.8);
        close(g, 0.0);
        // A < 0 and the ratio above 1 + ε: not clipped (the pessimistic bound is the raw one).
        let (_, g) = grpo_token(-1.5, -2.0, -2.0, -1.0, clip, beta);
        close(g, 0.5f64.exp());
        // The KL term's gradient, by finite differences, with the surrogate inside the clip.
        let f = |p: f64| grpo_token(p, -2.0, -1.7, 0.8, clip, 0.04).0;
        let (_, g) = grpo_token(-2.05, -2.0, -1.7, 0.8, clip, 0.04);
        assert!((numeric(f, -2.05) - g).abs() < 1e-7);
    }
}
