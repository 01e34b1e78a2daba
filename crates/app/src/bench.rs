//! Benchmarks of the compute core: the machine's GEMM throughput, and the full training step
//! (forward, backward, optimizer) on random tokens. Wall-clock, median over steps.

use base::stats::median;
use model::arch::flops_per_token;
use model::Llama;
use std::time::Instant;
use tensor::Rng;
use train::config::Config;
use train::optim::Optimizer;

pub struct TrainBench {
    pub step_ms: Vec<f64>,
    pub losses: Vec<f64>,
    pub tokens_per_step: usize,
    pub flops_per_step: f64,
}

impl TrainBench {
    pub fn median_ms(&self, warmup: usize) -> f64 {
        median(&self.step_ms[warmup.min(self.step_ms.len().saturating_sub(1))..])
    }
}

/// Trains `cfg` for `steps` steps on uniformly random tokens, calling `on_step(i, loss, ms)`.
pub fn bench_train(
    cfg: &Config,
    steps: usize,
    mut on_step: impl FnMut(usize, f64, f64),
) -> base::Result<TrainBench> {
    let _precision = train::precision(&cfg.train)?;
    let (b, t, v) = (
        cfg.train.batch_size,
        cfg.train.seq_len,
        cfg.model.vocab_size as u64,
    );
    let mut model = Llama::init(cfg.model.clone(), cfg.train.seed);
    let mut opt = Optimizer::new(&cfg.train, &model.params);
    let mut ws = model.workspace(b, t);
    let mut grads = vec![0f32; model.params.len()];
    let mut rng = Rng::new(cfg.train.seed ^ 0xDA7A);
    let (mut tokens, mut targets) = (vec![0u32; b * t], vec![0u32; b * t]);
    let mut res = TrainBench {
        step_ms: vec![],
        losses: vec![],
        tokens_per_step: b * t,
        flops_per_step: flops_per_token(&cfg.model, cfg.train.seq_len) * (b * t) as f64,
    };
    for i in 0..steps {
        for s in 0..b {
            let seq: Vec<u32> = (0..=t).map(|_| rng.below(v) as u32).collect();
            tokens[s * t..(s + 1) * t].copy_from_slice(&seq[..t]);
            targets[s * t..(s + 1) * t].copy_from_slice(&seq[1..]);
        }
        let start = Instant::now();
        grads.fill(0.0);
        let (sum, count) =
            model.forward_backward(&tokens, &targets, &mut grads, 1.0 / (b * t) as f32, &mut ws);
        opt.update(&mut model.params.data, &grads, 1.0);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let loss = sum / count as f64;
        res.step_ms.push(ms);
        res.losses.push(loss);
        on_step(i, loss, ms);
    }
    Ok(res)
}

/// Peak resident memory of this process in MiB (Linux VmHWM), if the OS reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Inference speed at one batch size: prefill of `batch` prompts together, then decoding one
/// token per sequence per step through the KV cache.
#[derive(Clone, Debug)]
pub struct InferBench {
    /// Prompt tokens per second (all sequences).
    pub prefill_tok_s: f64,
    /// Generated tokens per second (all sequences).
    pub decode_tok_s: f64,
    /// Milliseconds per decode step (one token for every sequence).
    pub decode_step_ms: f64,
}

/// Times the model's cached forward pass (what the engine runs) on random prompts: the median
/// of `reps` repetitions after one warm-up. Decoding feeds each sequence the greedy token.
pub fn bench_infer(
    model: &Llama,
    batch: usize,
    prompt_len: usize,
    decode_tokens: usize,
    reps: usize,
) -> InferBench {
    use model::LanguageModel;
    let v = model.cfg.vocab_size;
    let mut rng = Rng::new(7);
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..prompt_len)
                .map(|_| rng.below(v as u64) as u32)
                .collect()
        })
        .collect();
    let mut logits = vec![0f32; batch * v];
    let greedy = engine::SamplingParams::greedy();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let mut caches: Vec<_> = (0..batch).map(|_| model.new_cache()).collect();
        let t0 = Instant::now();
        let mut b: Vec<(&mut _, &[u32])> = caches
            .iter_mut()
            .zip(&prompts)
            .map(|(c, p)| (c, p.as_slice()))
            .collect();
        model.forward(&mut b, &mut logits);
        let t1 = Instant::now();
        for _ in 0..decode_tokens {
            let next: Vec<[u32; 1]> = logits
                .chunks_exact(v)
                .map(|row| [engine::sample_logits(row, greedy, &mut rng)])
                .collect();
            let mut b: Vec<(&mut _, &[u32])> = caches
                .iter_mut()
                .zip(&next)
                .map(|(c, t)| (c, t.as_slice()))
                .collect();
            model.forward(&mut b, &mut logits);
        }
        if rep > 0 {
            prefill.push(t1.duration_since(t0).as_secs_f64());
            decode.push(t1.elapsed().as_secs_f64());
        }
    }
    let (p, d) = (median(&prefill), median(&decode));
    InferBench {
        prefill_tok_s: (batch * prompt_len) as f64 / p,
        decode_tok_s: (batch * decode_tokens) as f64 / d,
        decode_step_ms: d * 1e3 / decode_tokens.max(1) as f64,
    }
}

/// Greedy decoding of the same prompts two ways: the engine's plain cached decoding (one main
/// pass per token) and self-speculative decoding with the model's first multi-token prediction
/// module (`engine::greedy_speculative`).
#[derive(Clone, Debug)]
pub struct SpeculativeBench {
    /// Tokens generated per way (the same tokens both ways), over all repetitions.
    pub tokens: usize,
    /// Seconds of generation, prefill included, summed over the prompts.
    pub plain_s: f64,
    pub speculative_s: f64,
    pub stats: engine::SpecStats,
}

impl SpeculativeBench {
    pub fn plain_tok_s(&self) -> f64 {
        self.tokens as f64 / self.plain_s
    }
    pub fn speculative_tok_s(&self) -> f64 {
        self.tokens as f64 / self.speculative_s
    }
    /// Generated tokens per main-model pass after the prompt's.
    pub fn tokens_per_pass(&self) -> f64 {
        self.tokens as f64 / self.stats.passes.max(1) as f64
    }
}

/// Decodes `decode` greedy tokens after each prompt plainly and speculatively, `reps` times
/// over the prompts, alternating the two ways per prompt so that the machine's drift falls on
/// both alike, after one untimed warm-up of each. Fails if the two ways disagree on any token:
/// speculation must not change the reply.
pub fn bench_speculative(
    model: &Llama,
    prompts: &[Vec<u32>],
    decode: usize,
    reps: usize,
) -> base::Result<SpeculativeBench> {
    use engine::{generate, greedy_speculative, Request, SamplingParams, SpecStats};
    let plain = |p: &[u32]| {
        let r = Request {
            prompt: p.to_vec(),
            sampling: SamplingParams::greedy(),
            max_tokens: decode,
            stop: Vec::new(),
            seed: 0,
        };
        generate(model, &[r], None, |_| true).map(|mut c| c.remove(0))
    };
    if let Some(p) = prompts.first() {
        plain(p)?;
        greedy_speculative(model, p, decode, &[])?;
    }
    let mut r = SpeculativeBench {
        tokens: 0,
        plain_s: 0.0,
        speculative_s: 0.0,
        stats: SpecStats::default(),
    };
    let all = prompts
        .iter()
        .enumerate()
        .cycle()
        .take(reps * prompts.len());
    for (i, p) in all {
        let t0 = Instant::now();
        let want = plain(p)?;
        r.plain_s += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let (got, stats) = greedy_speculative(model, p, decode, &[])?;
        r.speculative_s += t0.elapsed().as_secs_f64();
        if got.tokens != want.tokens {
            return Err(base::Error::input(
                format!("prompt {i}"),
                format!(
                    "speculative decoding changed the greedy reply: {:?} against {:?}",
                    got.tokens, want.tokens
                ),
                "this is a bug in the engine; report it with the run directory",
            ));
        }
        r.tokens += got.tokens.len();
        r.stats.passes += stats.passes;
        r.stats.drafted += stats.drafted;
        r.stats.accepted += stats.accepted;
        r.stats.draft_time += stats.draft_time;
    }
    Ok(r)
}
