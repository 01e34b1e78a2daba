//! Published training runs, described from their own stated assumptions, so that `frugal cost
//! estimate --preset NAME` can be checked against the figures their authors published.

use model::arch::{Arch, AttnArch, FfnArch, NormArch};

/// What the authors state about how long the run took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Basis {
    /// A stated utilisation (model FLOPs / peak): time follows from the FLOPs.
    Mfu(f64),
    /// Stated GPU-hours: the utilisation follows from the FLOPs.
    GpuHours(f64),
}

/// Figures the authors published, to print beside the estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Published {
    pub params: Option<f64>,
    pub active_params: Option<f64>,
    pub flops: Option<f64>,
    pub gpu_hours: Option<f64>,
    pub wall_hours: Option<f64>,
    pub dollars: Option<f64>,
    pub tonnes_co2: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub title: &'static str,
    pub arch: Arch,
    pub tokens: f64,
    pub gpu: &'static str,
    pub gpus: usize,
    /// Dollars per GPU-hour the authors priced at.
    pub price: f64,
    pub basis: Basis,
    pub published: Published,
    /// Where the figures come from, and what the estimate leaves out.
    pub source: &'static str,
}

pub const NAMES: &[&str] = &[
    "deepseek-v3",
    "llama3-70b",
    "gpt2",
    "nanochat-d20",
    "nanochat-d24",
    "deepseek-r1-rl",
];

pub fn preset(name: &str) -> Option<Preset> {
    Some(match name {
        // DeepSeek-V3 Technical Report (arXiv 2412.19437), table 1 and section 1: 671B total,
        // 37B activated parameters, 14.8T tokens, 2.664M H800 GPU-hours of pre-training ("each
        // trillion tokens takes 180K H800 GPU hours, 3.7 days on our cluster with 2048 H800
        // GPUs") plus 119K for context extension and 5K for post-training: 2.788M GPU-hours,
        // $5.576M at $2 per GPU-hour. Architecture from the released config.json.
        "deepseek-v3" => Preset {
            name: "deepseek-v3",
            title: "DeepSeek-V3 (MLA, 1 shared + 8 of 256 routed experts, 1 MTP module)",
            arch: Arch {
                vocab: 129_280,
                d_model: 7168,
                n_layers: 61,
                seq_len: 4096,
                attention: AttnArch::Mla {
                    n_heads: 128,
                    q_lora_rank: 1536,
                    kv_lora_rank: 512,
                    qk_nope_dim: 128,
                    qk_rope_dim: 64,
                    v_head_dim: 128,
                },
                ffn: vec![
                    (
                        3,
                        FfnArch::Dense {
                            hidden: 18_432,
                            gated: true,
                        },
                    ),
                    (
                        58,
                        FfnArch::Moe {
                            routed: 256,
                            top_k: 8,
                            shared: 1,
                            expert_hidden: 2048,
                            gated: true,
                        },
                    ),
                ],
                norm: NormArch::Rms,
                biases: false,
                tied_embeddings: false,
                learned_positions: 0,
                mtp_depth: 1,
            },
            tokens: 14.8e12,
            gpu: "h800",
            gpus: 2048,
            price: 2.0,
            basis: Basis::GpuHours(2.788e6),
            published: Published {
                params: Some(671e9),
                active_params: Some(37e9),
                gpu_hours: Some(2.788e6),
                dollars: Some(5.576e6),
                ..Published::default()
            },
            source: "DeepSeek-V3 Technical Report (2024), sections 1 and 3; the GPU-hours include context extension and post-training; most matrix products ran in FP8, so utilisation against the BF16 peak can look high",
        },
        // Llama 3 model card (Meta, April 2024): 70B trained on over 15T tokens, 6.4M GPU-hours
        // of H100-80GB at 700 W TDP, 1,900 tCO2eq location-based. Architecture: 80 layers,
        // width 8192, 64 query heads and 8 KV heads of 128, SwiGLU 28672, vocabulary 128256,
        // context 8192 (the Llama 3 paper, table 3).
        "llama3-70b" => Preset {
            name: "llama3-70b",
            title: "Llama 3 70B (GQA 64/8, SwiGLU)",
            arch: Arch {
                vocab: 128_256,
                d_model: 8192,
                n_layers: 80,
                seq_len: 8192,
                attention: AttnArch::Gqa {
                    n_heads: 64,
                    n_kv_heads: 8,
                    head_dim: 128,
                },
                ffn: vec![(
                    80,
                    FfnArch::Dense {
                        hidden: 28_672,
                        gated: true,
                    },
                )],
                norm: NormArch::Rms,
                biases: false,
                tied_embeddings: false,
                learned_positions: 0,
                mtp_depth: 0,
            },
            tokens: 15e12,
            gpu: "h100",
            gpus: 16_384,
            price: 3.0,
            basis: Basis::GpuHours(6.4e6),
            published: Published {
                params: Some(70.6e9),
                gpu_hours: Some(6.4e6),
                tonnes_co2: Some(1900.0),
                ..Published::default()
            },
            source: "Llama 3 model card (2024): GPU-hours at 700 W TDP and tCO2eq; Meta published no dollar figure (the price here is the rental assumption); 16,384 GPUs is the largest cluster of the Llama 3 paper",
        },
        // "Reproducing GPT-2 (124M) in llm.c in 90 minutes for $20", llm.c discussion #481
        // (May 2024): 12 layers, 12 heads, width 768, 10B tokens of FineWeb at length 1024, on
        // one 8xA100 80GB SXM node (~$14/h) "at up to ~60% model flops utilization", ~90 min.
        "gpt2" => Preset {
            name: "gpt2",
            title: "GPT-2 124M as llm.c trains it",
            arch: Arch {
                vocab: 50_257,
                d_model: 768,
                n_layers: 12,
                seq_len: 1024,
                attention: AttnArch::Gqa {
                    n_heads: 12,
                    n_kv_heads: 12,
                    head_dim: 64,
                },
                ffn: vec![(
                    12,
                    FfnArch::Dense {
                        hidden: 3072,
                        gated: false,
                    },
                )],
                norm: NormArch::Layer,
                biases: true,
                tied_embeddings: true,
                learned_positions: 1024,
                mtp_depth: 0,
            },
            tokens: 10e9,
            gpu: "a100",
            gpus: 8,
            price: 14.0 / 8.0,
            basis: Basis::Mfu(0.60),
            published: Published {
                params: Some(124e6),
                wall_hours: Some(1.5),
                dollars: Some(20.0),
                ..Published::default()
            },
            source: "llm.c discussion #481 (2024): the MFU is the post's \"up to ~60%\", so time and dollars are estimates from it",
        },
        // nanochat README and speedrun.sh (October 2025): depth 20, width 1280, 10 heads of
        // 128, ReLU² MLP of 4x, untied embeddings, parameter-free RMSNorm, vocabulary 65536,
        // length 2048; 561M parameters on 11.2B tokens (20 per parameter): "a 4e19 FLOPs
        // capability model", about 4 hours on an 8xH100 node at $24/h, about $100, for the
        // whole pipeline (tokenizer, base, mid, SFT, evaluation).
        "nanochat-d20" => Preset {
            name: "nanochat-d20",
            title: "nanochat d20 ($100 speedrun)",
            arch: Arch {
                vocab: 65_536,
                d_model: 1280,
                n_layers: 20,
                seq_len: 2048,
                attention: AttnArch::Gqa {
                    n_heads: 10,
                    n_kv_heads: 10,
                    head_dim: 128,
                },
                ffn: vec![(
                    20,
                    FfnArch::Dense {
                        hidden: 5120,
                        gated: false,
                    },
                )],
                norm: NormArch::RmsNoWeight,
                biases: false,
                tied_embeddings: false,
                learned_positions: 0,
                mtp_depth: 0,
            },
            tokens: 11.2e9,
            gpu: "h100",
            gpus: 8,
            price: 3.0,
            basis: Basis::GpuHours(4.0 * 8.0),
            published: Published {
                params: Some(561e6),
                flops: Some(4e19),
                wall_hours: Some(4.0),
                dollars: Some(100.0),
                ..Published::default()
            },
            source: "nanochat README (2025): the 4 hours cover the whole pipeline, so the implied MFU is that of the pipeline, not of pretraining alone",
        },
        // nanochat dev/LEADERBOARD.md, run 6 (March 2026): GPT-2's CORE score (0.2565) passed
        // in 1.65 hours on one 8xH100 node, ~$40 at $24/h: depth 24, width 1536 (12 heads of
        // 128), ReLU² MLP of 4x, untied, vocabulary 32768, length 2048, trained for 8 tokens per
        // "scaling parameter" (its transformer matrices and LM head: 729.8M, so 5.84B tokens).
        // Value embeddings, smear and backout add parameters but few FLOPs and are left out;
        // the sliding windows of three layers in four make attention cheaper than counted.
        "nanochat-d24" => Preset {
            name: "nanochat-d24",
            title: "nanochat d24 (time to GPT-2, March 2026)",
            arch: Arch {
                vocab: 32_768,
                d_model: 1536,
                n_layers: 24,
                seq_len: 2048,
                attention: AttnArch::Gqa {
                    n_heads: 12,
                    n_kv_heads: 12,
                    head_dim: 128,
                },
                ffn: vec![(
                    24,
                    FfnArch::Dense {
                        hidden: 6144,
                        gated: false,
                    },
                )],
                norm: NormArch::RmsNoWeight,
                biases: false,
                tied_embeddings: false,
                learned_positions: 0,
                mtp_depth: 0,
            },
            tokens: 8.0 * 729_808_896.0,
            gpu: "h100",
            gpus: 8,
            price: 3.0,
            basis: Basis::GpuHours(1.65 * 8.0),
            published: Published {
                wall_hours: Some(1.65),
                dollars: Some(40.0),
                ..Published::default()
            },
            source: "nanochat dev/LEADERBOARD.md (2026), run 6: the 1.65 hours are the training iterations alone (evaluation excluded), the mean of 5 runs; dollars at $24 per node-hour; its linear layers ran in FP8, so utilisation against the BF16 peak looks high",
        },
        // DeepSeek-R1 (Nature, 2025), supplementary "training cost": from DeepSeek-V3-Base,
        // R1-Zero's reinforcement learning took 101K H800 GPU-hours, making R1's SFT data 5K
        // and R1's own training 41K: 147K GPU-hours, $294K at $2 an hour. R1-Zero's GRPO ran
        // 10,400 steps of 32 questions x 16 sampled replies (up to 32,768 tokens, 65,536 from
        // step 8.2K) on 64 x 8 H800s for 198 hours, R1's own training 80 hours on the same
        // GPUs; the multi-token module is not counted (RL trains the main head). Its tokens are counted as those replies at an assumed mean of 10,000
        // tokens (the paper plots the mean length, it does not tabulate it), R1's later stages
        // not at all.
        "deepseek-r1-rl" => {
            let v3 = preset("deepseek-v3")?;
            Preset {
                name: "deepseek-r1-rl",
                title: "DeepSeek-R1 reinforcement learning on DeepSeek-V3-Base (GRPO)",
                arch: Arch {
                    mtp_depth: 0,
                    ..v3.arch
                },
                gpus: 512,
                tokens: 10_400.0 * 512.0 * 10_000.0,
                basis: Basis::GpuHours(147e3),
                published: Published {
                    params: Some(671e9),
                    active_params: Some(37e9),
                    gpu_hours: Some(147e3),
                    dollars: Some(294e3),
                    ..Published::default()
                },
                source: "DeepSeek-R1 (Nature, 2025), supplementary table of training costs: 101K H800-hours for R1-Zero's RL (198 h on 512 GPUs), 5K for SFT data, 41K for R1 (80 h); tokens are R1-Zero's sampled replies at an assumed mean of 10,000 tokens, counted as training tokens (6 FLOPs per active parameter): sampling them costs most of the hours at inference efficiency, so the implied utilisation is low by nature",
                ..v3
            }
        }
        _ => return None,
    })
}
