//! `frugal cost estimate`: what training a model on N tokens costs on a GPU cluster, from its
//! FLOPs, a utilisation, the GPUs' datasheet and the price, power and grid assumptions.

use crate::presets::{Basis, Preset, Published};
use ledger::si;
use ledger::tables::{CostConfig, Gpu};
use model::arch::{Arch, AttnConvention, FfnArch, Params};
use std::fmt::Write;

/// The cluster and how well it is used.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub gpu: &'static Gpu,
    pub gpus: usize,
    /// Dollars per GPU-hour.
    pub price: f64,
    /// Use the FP8 peak as the utilisation's denominator instead of BF16.
    pub fp8: bool,
}

impl Cluster {
    /// Peak FLOP/s of one GPU at the chosen precision.
    pub fn peak(&self) -> f64 {
        1e12 * if self.fp8 && self.gpu.fp8_tflops > 0.0 {
            self.gpu.fp8_tflops
        } else {
            self.gpu.bf16_tflops
        }
    }
}

#[derive(Clone, Debug)]
pub struct Estimate {
    pub params: Params,
    /// Training FLOPs per token, PaLM convention, main model.
    pub flops_per_token: f64,
    /// Of which multi-token prediction modules add this much.
    pub mtp_flops_per_token: f64,
    pub tokens: f64,
    pub flops: f64,
    /// Model FLOPs utilisation: stated, or implied by stated GPU-hours.
    pub mfu: f64,
    pub mfu_implied: bool,
    pub gpu_hours: f64,
    pub days: f64,
    pub energy_kwh: f64,
    pub dollars: f64,
    pub kg_co2: f64,
    /// For a mixture of experts: training FLOPs per token if every expert were active (a
    /// dense model of the same total size), as a multiple of the sparse model's.
    pub dense_equivalent: Option<f64>,
}

/// Estimates a run of `tokens` tokens. Utilisation is measured, as the field reports it,
/// against PaLM-convention model FLOPs (every key of the window in attention), so that a
/// published MFU plugs in directly.
pub fn estimate(
    arch: &Arch,
    tokens: f64,
    cluster: &Cluster,
    basis: Basis,
    cost: &CostConfig,
) -> Estimate {
    let params = arch.params();
    let mtp = arch.mtp_flops_per_token(AttnConvention::Palm);
    let per_token = arch.train_flops_per_token(AttnConvention::Palm) + mtp;
    let flops = per_token * tokens;
    let (mfu, gpu_hours, implied) = match basis {
        Basis::Mfu(mfu) => (mfu, flops / (mfu * cluster.peak()) / 3600.0, false),
        Basis::GpuHours(h) => (flops / (h * 3600.0 * cluster.peak()), h, true),
    };
    let energy_kwh = gpu_hours * cluster.gpu.tdp_w * cost.power.gpu_load * cost.power.pue / 1e3;
    let mut dense = arch.clone();
    for (_, f) in dense.ffn.iter_mut() {
        if let FfnArch::Moe { routed, top_k, .. } = f {
            *top_k = *routed;
        }
    }
    let dense_equivalent = (dense != *arch).then(|| {
        (dense.train_flops_per_token(AttnConvention::Palm)
            + dense.mtp_flops_per_token(AttnConvention::Palm))
            / per_token
    });
    Estimate {
        params,
        flops_per_token: per_token,
        mtp_flops_per_token: mtp,
        tokens,
        flops,
        mfu,
        mfu_implied: implied,
        gpu_hours,
        days: gpu_hours / cluster.gpus as f64 / 24.0,
        energy_kwh,
        dollars: gpu_hours * cluster.price,
        kg_co2: energy_kwh * cost.grid.kg_co2_per_kwh,
        dense_equivalent,
    }
}

/// Estimates a published run from its own stated assumptions.
pub fn estimate_preset(p: &Preset, cost: &CostConfig, basis: Option<Basis>) -> Estimate {
    let cluster = Cluster {
        gpu: ledger::tables::gpu(p.gpu).expect("presets name known GPUs"),
        gpus: p.gpus,
        price: p.price,
        fp8: false,
    };
    estimate(&p.arch, p.tokens, &cluster, basis.unwrap_or(p.basis), cost)
}

fn line(out: &mut String, what: &str, ours: String, published: Option<String>) {
    match published {
        Some(p) => writeln!(out, "  {what:<26}{ours:<18}published {p}"),
        None => writeln!(out, "  {what:<26}{ours}"),
    }
    .expect("writing to a String");
}

/// The estimate as text: assumptions first, then results beside any published figures.
pub fn render(
    title: &str,
    e: &Estimate,
    cluster: &Cluster,
    cost: &CostConfig,
    published: &Published,
    source: Option<&str>,
) -> String {
    let mut o = String::new();
    let w = |o: &mut String, s: String| writeln!(o, "{s}").expect("writing to a String");
    w(&mut o, title.to_string());
    w(&mut o, "assumptions".into());
    w(
        &mut o,
        format!(
            "  cluster                 {} x {} ({:.0} TFLOP/s {} peak each, {:.0} W board power)",
            cluster.gpus,
            cluster.gpu.full_name,
            cluster.peak() / 1e12,
            if cluster.fp8 { "FP8" } else { "BF16 dense" },
            cluster.gpu.tdp_w
        ),
    );
    w(
        &mut o,
        if e.mfu_implied {
            "  utilisation             implied by the stated GPU-hours (below)".to_string()
        } else {
            format!(
                "  utilisation             {:.0}% MFU (stated)",
                100.0 * e.mfu
            )
        },
    );
    w(
        &mut o,
        format!(
            "  price                   ${:.2} per GPU-hour",
            cluster.price
        ),
    );
    w(
        &mut o,
        format!(
            "  energy                  board power x {:.2} load x PUE {:.2}; grid {:.3} kg CO2e/kWh",
            cost.power.gpu_load, cost.power.pue, cost.grid.kg_co2_per_kwh
        ),
    );
    w(&mut o, "  FLOPs                   PaLM convention: 6 per active weight per token, attention over the whole window".into());
    w(&mut o, "results".into());
    let p = &e.params;
    line(&mut o, "parameters", si(p.total), published.params.map(si));
    line(
        &mut o,
        "active per token",
        si(p.active),
        published.active_params.map(si),
    );
    if p.mtp > 0.0 {
        line(&mut o, "multi-token modules", si(p.mtp), None);
    }
    line(&mut o, "tokens", si(e.tokens), None);
    line(
        &mut o,
        "training FLOPs / token",
        si(e.flops_per_token),
        None,
    );
    if e.mtp_flops_per_token > 0.0 {
        line(&mut o, "  of which MTP", si(e.mtp_flops_per_token), None);
    }
    line(
        &mut o,
        "training FLOPs",
        format!("{:.3e}", e.flops),
        published.flops.map(|f| format!("{f:.1e}")),
    );
    line(
        &mut o,
        if e.mfu_implied {
            "MFU (implied)"
        } else {
            "MFU"
        },
        format!("{:.1}%", 100.0 * e.mfu),
        None,
    );
    line(
        &mut o,
        "GPU-hours",
        si(e.gpu_hours),
        published.gpu_hours.map(si),
    );
    line(
        &mut o,
        "wall time",
        if e.days < 2.0 {
            format!("{:.1} h", e.days * 24.0)
        } else {
            format!("{:.1} days", e.days)
        },
        published.wall_hours.map(|h| format!("{h:.1} h")),
    );
    line(&mut o, "energy", format!("{} kWh", si(e.energy_kwh)), None);
    line(
        &mut o,
        "CO2e",
        if e.kg_co2 >= 1e3 {
            format!("{:.1} t", e.kg_co2 / 1e3)
        } else {
            format!("{:.1} kg", e.kg_co2)
        },
        published.tonnes_co2.map(|t| format!("{t:.0} t")),
    );
    line(
        &mut o,
        "cost",
        format!("${}", si(e.dollars)),
        published.dollars.map(|d| format!("${}", si(d))),
    );
    if let Some(x) = e.dense_equivalent {
        line(
            &mut o,
            "if dense (all experts on)",
            format!(
                "{x:.1}x the FLOPs: {} GPU-hours, ${} at the same MFU",
                si(x * e.gpu_hours),
                si(x * e.dollars)
            ),
            None,
        );
    }
    if let Some(s) = source {
        w(&mut o, format!("source: {s}"));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::preset;

    fn within(x: f64, target: f64, rel: f64) -> bool {
        (x - target).abs() <= rel * target.abs()
    }

    /// DeepSeek-V3 Technical Report (arXiv 2412.19437): 671B total and 37B activated
    /// parameters; 2.788M H800 GPU-hours at $2 = $5.576M; "180K H800 GPU hours per trillion
    /// tokens, 3.7 days on our cluster with 2048 H800 GPUs".
    #[test]
    fn deepseek_v3_from_its_stated_assumptions() {
        let p = preset("deepseek-v3").unwrap();
        p.arch.validate().unwrap();
        let e = estimate_preset(&p, &CostConfig::builtin(), None);
        assert!(
            within(e.params.total, 671e9, 0.01),
            "total {}",
            si(e.params.total)
        );
        // Activated 37B in the report; ours counts the embedding table too (0.93B).
        assert!(
            within(e.params.active, 37e9, 0.03),
            "active {}",
            si(e.params.active)
        );
        // The MTP module: a layer (MLA + MoE) and its projection, 11.6B; the report's "14B"
        // stores its own copy of the embedding and head as well.
        assert!(
            within(e.params.mtp + 2.0 * 129_280.0 * 7168.0, 14e9, 0.05),
            "mtp {}",
            si(e.params.mtp)
        );
        assert!(within(e.dollars, 5.576e6, 1e-9), "dollars {}", e.dollars);
        // Pretraining alone: 2.664M GPU-hours on 2048 GPUs, 3.7 days per trillion tokens.
        let pre = estimate_preset(&p, &CostConfig::builtin(), Some(Basis::GpuHours(2.664e6)));
        assert!(
            within(pre.days / 14.8, 3.7, 0.02),
            "{} days per trillion",
            pre.days / 14.8
        );
        // A plausible utilisation of the BF16 peak for a mostly-FP8 run.
        assert!(pre.mfu > 0.3 && pre.mfu < 0.6, "implied MFU {}", pre.mfu);
        // Sparsity is most of the saving: all 256 experts on would cost ~14x the FLOPs.
        let x = e.dense_equivalent.unwrap();
        assert!(x > 10.0 && x < 20.0, "dense equivalent {x}");
        assert!(
            estimate_preset(&preset("llama3-70b").unwrap(), &CostConfig::builtin(), None)
                .dense_equivalent
                .is_none()
        );
    }

    /// Llama 3 model card: 70B, 6.4M H100-80GB GPU-hours at 700 W TDP.
    #[test]
    fn llama3_70b_parameters_and_energy() {
        let p = preset("llama3-70b").unwrap();
        let e = estimate_preset(&p, &CostConfig::builtin(), None);
        assert!(
            within(e.params.total, 70.6e9, 0.005),
            "{}",
            si(e.params.total)
        );
        // 6.4M GPU-hours x 0.7 kW = 4.48 GWh (board power, PUE 1: the card's convention).
        assert!(within(e.energy_kwh, 4.48e6, 1e-9), "{}", e.energy_kwh);
        assert!(e.mfu > 0.25 && e.mfu < 0.5, "implied MFU {}", e.mfu);
    }

    /// llm.c discussion #481: GPT-2 124M on 10B tokens on 8xA100 at up to ~60% MFU takes
    /// ~90 minutes and ~$20 at ~$14/h.
    #[test]
    fn gpt2_124m_in_llm_c() {
        let p = preset("gpt2").unwrap();
        let e = estimate_preset(&p, &CostConfig::builtin(), None);
        // The exact parameter count of GPT-2 small (Hugging Face's gpt2): 124,439,808.
        assert_eq!(e.params.total, 124_439_808.0);
        assert!(within(e.days * 24.0, 1.5, 0.10), "{} h", e.days * 24.0);
        assert!(within(e.dollars, 20.0, 0.15), "${}", e.dollars);
    }

    /// nanochat README: d20 has 561M parameters, is "a 4e19 FLOPs capability model" on 11.2B
    /// tokens, and costs ~$100 (4 h of an 8xH100 node at $24/h).
    #[test]
    fn nanochat_d20() {
        let p = preset("nanochat-d20").unwrap();
        let e = estimate_preset(&p, &CostConfig::builtin(), None);
        assert!(
            within(e.params.total, 561e6, 0.005),
            "{}",
            si(e.params.total)
        );
        assert!(within(e.flops, 4e19, 0.05), "{:.3e}", e.flops);
        assert!(within(e.dollars, 100.0, 0.05), "${}", e.dollars);
    }

    /// nanochat's leaderboard, run 6: GPT-2's CORE in 1.65 h on 8xH100, ~$40. Run 1 of the
    /// same depth logged 4.33e19 training FLOPs at 12 tokens per scaling parameter; at 8 the
    /// count scales to ~2.9e19.
    #[test]
    fn nanochat_d24_time_to_gpt2() {
        let p = preset("nanochat-d24").unwrap();
        let e = estimate_preset(&p, &CostConfig::builtin(), None);
        assert!(within(e.dollars, 40.0, 0.02), "${}", e.dollars);
        assert!(within(e.days * 24.0, 1.65, 1e-9), "{} h", e.days * 24.0);
        assert!(
            within(e.flops, 4.33e19 * 8.0 / 12.0, 0.15),
            "{:.3e}",
            e.flops
        );
        // Its linear layers ran in FP8: against the BF16 peak the utilisation looks high.
        assert!(e.mfu > 0.4 && e.mfu < 0.9, "implied MFU {}", e.mfu);
    }

    /// DeepSeek-R1's RL: 147K H800-hours, $294K, on DeepSeek-V3's architecture.
    #[test]
    fn deepseek_r1_reinforcement_learning() {
        let p = preset("deepseek-r1-rl").unwrap();
        let e = estimate_preset(&p, &CostConfig::builtin(), None);
        assert!(within(e.dollars, 294e3, 0.01), "${}", e.dollars);
        assert_eq!(p.arch.d_model, preset("deepseek-v3").unwrap().arch.d_model);
        // 198 h of R1-Zero and 80 h of R1 on the same 512 GPUs, and the SFT data between.
        assert!(
            e.days * 24.0 > 278.0 && e.days * 24.0 < 300.0,
            "{} h",
            e.days * 24.0
        );
        // Rollouts are generation: far below pretraining's utilisation.
        assert!(e.mfu > 0.005 && e.mfu < 0.2, "implied MFU {}", e.mfu);
    }

    #[test]
    fn stated_mfu_and_implied_mfu_invert_each_other() {
        let p = preset("gpt2").unwrap();
        let c = CostConfig::builtin();
        let a = estimate_preset(&p, &c, Some(Basis::Mfu(0.42)));
        let b = estimate_preset(&p, &c, Some(Basis::GpuHours(a.gpu_hours)));
        assert!(within(b.mfu, 0.42, 1e-12));
        let text = render(
            "t",
            &a,
            &Cluster {
                gpu: ledger::tables::gpu("a100").unwrap(),
                gpus: 8,
                price: 1.0,
                fp8: false,
            },
            &c,
            &p.published,
            Some(p.source),
        );
        assert!(
            text.contains("42% MFU (stated)") && text.contains("published $20.00"),
            "{text}"
        );
    }
}
