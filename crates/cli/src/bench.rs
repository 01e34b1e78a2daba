//! `frugal bench`: GEMM, tokenizer, training step, inference and speculative decoding speed.

use anyhow::Context;
use app::bench::{bench_infer, bench_speculative, bench_train, peak_rss_mb};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use tensor::peak::bench_gemm;
use train::Config;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Measure the machine's f32 GEMM throughput (GFLOP/s) on training-step shapes.
    Gemm {
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Also bf16 products with f32 accumulation, per training layout, against f32.
        #[arg(long)]
        bf16: bool,
    },
    /// Measure batch-encoding throughput of a tokenizer on text files.
    Tokenizer {
        /// tokenizer.json to load.
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Documents are the files' lines regrouped into chunks of this many bytes.
        #[arg(long, default_value_t = 65536)]
        chunk_bytes: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also time one-piece words (a megabyte of "ing", of one letter, of the input's
        /// letters run together) against a megabyte of the input, one `encode` call each, and
        /// the merging reference on growing one-piece words.
        #[arg(long)]
        worst_case: bool,
    },
    /// Train on random tokens and report step time, tokens/s and MFU (against `bench gemm`'s peak). Prints, last,
    /// `step_ms_median`, `tokens_per_s` and `peak_rss_mb` (medians after 3 warm-up steps).
    Train {
        #[command(flatten)]
        model: BenchModel,
        #[arg(long, default_value_t = 20)]
        steps: usize,
    },
    /// Inference through the KV cache: prefill and decode tokens/s at each batch size, on a
    /// randomly initialised model of the preset or config.
    Infer {
        #[command(flatten)]
        model: BenchModel,
        /// Prompt tokens per sequence.
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        /// Tokens decoded per sequence after the prompt.
        #[arg(long, default_value_t = 64)]
        decode: usize,
        /// Batch sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        batch: Vec<usize>,
        /// Timed repetitions (after one warm-up); the median is reported.
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Greedy decoding of a trained run's model with and without self-speculative decoding
    /// (its first multi-token prediction module drafting), on prompts from the run's validation
    /// split. Fails unless both ways give the same tokens. Prints, last, `plain_tok_s`,
    /// `speculative_tok_s`, `speedup` and `acceptance`.
    Speculative {
        /// Run directory of a model trained with [model.mtp] (its pretraining checkpoint).
        #[arg(long)]
        run: PathBuf,
        /// Prompts, consecutive windows of the validation split.
        #[arg(long, default_value_t = 16)]
        prompts: usize,
        /// Tokens per prompt.
        #[arg(long, default_value_t = 64)]
        prompt_len: usize,
        /// Greedy tokens decoded after each prompt.
        #[arg(long, default_value_t = 128)]
        decode: usize,
        /// Passes over the prompts (both ways each time).
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
    /// Compare a run's logits with another implementation's for the same weights and prompts
    /// (the file bench/interop/hf_readers.py writes from transformers): prints the largest gap
    /// per prompt and fails beyond --tol, or when frugal's tokenizer gives other ids for a
    /// prompt's text.
    Logits {
        #[arg(long)]
        run: PathBuf,
        /// base, sft, dpo or grpo (default: the last one trained).
        #[arg(long)]
        stage: Option<String>,
        /// safetensors file of ids.{i} and logits.{i}.
        #[arg(long)]
        against: PathBuf,
        #[arg(long, default_value_t = 1e-4)]
        tol: f32,
    },
}

const WARMUP: usize = 3;

/// The model a benchmark runs.
#[derive(clap::Args)]
pub struct BenchModel {
    /// A built-in preset: `ref` (13.8M parameters, the benchmark) or `tiny`.
    #[arg(long, default_value = "ref", conflicts_with = "config")]
    preset: String,
    /// A config file instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. --set train.batch_size=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl BenchModel {
    fn load(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(path) => Config::load(path, &self.overrides),
            None => Config::preset(&self.preset, &self.overrides),
        }
        .context("loading the benchmark config")
    }

    /// The preset's name or the config's path, for the report line.
    fn name(&self) -> String {
        self.config
            .as_ref()
            .map_or(self.preset.clone(), |p| p.display().to_string())
    }
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Gemm { reps, bf16 } => {
            let g = bench_gemm(reps);
            println!("{}", tensor::Device::describe(&tensor::Cpu));
            for (m, n, k, gf) in &g.shapes {
                println!("{m}x{n}x{k}: {gf:.1} GFLOP/s");
            }
            println!("gemm_gflops_peak: {:.1}", g.peak_gflops);
            if bf16 {
                let layouts = tensor::peak::bench_gemm_bf16(reps)
                    .context("this CPU lacks AVX-512 BF16: no bf16 products to measure")?;
                for (name, f, b) in &layouts {
                    for ((m, n, k, gf), (.., gb)) in f.shapes.iter().zip(&b.shapes) {
                        println!(
                            "{name} {m}x{n}x{k}: f32 {gf:.1} | bf16 {gb:.1} GFLOP/s | {:.2}x",
                            gb / gf
                        );
                    }
                }
            }
        }
        BenchCommand::Tokenizer {
            tokenizer,
            input,
            chunk_bytes,
            reps,
            worst_case,
        } => {
            use base::fs::{list_files, read_text};
            use data::tokenizer::{bench_encode, chunk_documents};
            let tok = bpe::Tokenizer::load(&tokenizer)?;
            let texts: Vec<String> = list_files(&input)?
                .iter()
                .map(|f| read_text(f))
                .collect::<Result<_, _>>()?;
            let docs = chunk_documents(&texts, chunk_bytes);
            let bytes: usize = docs.iter().map(|d| d.len()).sum();
            let (rate, tokens) = bench_encode(&tok, &docs, reps);
            println!("{}", tensor::Device::describe(&tensor::Cpu));
            println!(
                "documents: {} | {:.1} MB | {tokens} tokens | {:.3} bytes/token",
                docs.len(),
                bytes as f64 / 1e6,
                bytes as f64 / tokens as f64
            );
            println!("encode_mb_per_s: {rate:.2}");
            if worst_case {
                worst_case_encoding(&tok, &texts.concat(), reps);
            }
        }
        BenchCommand::Train { model, steps } => {
            let cfg = model.load()?;
            anyhow::ensure!(
                steps > WARMUP,
                "--steps must exceed the {WARMUP} warm-up steps"
            );
            // MFU is measured against this machine's GEMM throughput at the step's precision,
            // not a datasheet number.
            let _precision = train::precision(&cfg.train)?;
            let peak = bench_gemm(5).peak_gflops;
            println!(
                "bench train | {} | {} | batch {} x {} tokens | {} products",
                model.name(),
                tensor::Device::describe(&tensor::Cpu),
                cfg.train.batch_size,
                cfg.train.seq_len,
                cfg.train.precision.describe(),
            );
            let r = bench_train(&cfg, steps, |i, loss, ms| {
                let tag = if i < WARMUP { " (warm-up)" } else { "" };
                println!("step {i} | loss {loss:.4} | {ms:.1} ms{tag}");
            })?;
            let ms = r.median_ms(WARMUP);
            let gflops = r.flops_per_step / (ms / 1e3) / 1e9;
            println!("model_gflops_per_s: {gflops:.1}");
            println!("gemm_gflops_peak: {peak:.1}");
            println!("mfu: {:.1}%", 100.0 * gflops / peak);
            println!("step_ms_median: {ms:.1}");
            println!("tokens_per_s: {:.1}", r.tokens_per_step as f64 / (ms / 1e3));
            println!("peak_rss_mb: {:.1}", peak_rss_mb().unwrap_or(f64::NAN));
        }
        BenchCommand::Logits {
            run,
            stage,
            against,
            tol,
        } => logits(&run, stage.as_deref(), &against, tol)?,
        BenchCommand::Infer {
            model: choice,
            prompt_len,
            decode,
            batch,
            reps,
        } => {
            let cfg = choice.load()?;
            let ctx = cfg.model.context_len;
            anyhow::ensure!(
                prompt_len >= 1 && prompt_len + decode <= ctx,
                "--prompt-len + --decode must fit the model's context of {ctx} tokens"
            );
            anyhow::ensure!(
                reps >= 1 && batch.iter().all(|&b| b >= 1),
                "--reps and every --batch must be at least 1"
            );
            let model = model::Llama::init(cfg.model.clone(), 0);
            println!(
                "bench infer | {} | {} | {:.2}M params | prompt {prompt_len} tokens, {decode} decoded",
                choice.name(),
                tensor::Device::describe(&tensor::Cpu),
                model.params.len() as f64 / 1e6
            );
            for &b in &batch {
                // main runs benchmarks on a rayon worker, as the server runs its engine loop.
                let r = bench_infer(&model, b, prompt_len, decode, reps);
                println!(
                    "batch {b}: prefill {:.0} tok/s | decode {:.0} tok/s ({:.2} ms/step)",
                    r.prefill_tok_s, r.decode_tok_s, r.decode_step_ms
                );
                println!("prefill_tok_s_b{b}: {:.1}", r.prefill_tok_s);
                println!("decode_tok_s_b{b}: {:.1}", r.decode_tok_s);
            }
            println!(
                "kv_cache_bytes_per_token: {}",
                cfg.model.n_layers * cfg.model.kv_floats_per_token() * 4
            );
            println!("peak_rss_mb: {:.1}", peak_rss_mb().unwrap_or(f64::NAN));
        }
        BenchCommand::Speculative {
            run,
            prompts,
            prompt_len,
            decode,
            reps,
        } => speculative(&run, prompts, prompt_len, decode, reps)?,
    }
    Ok(())
}

fn speculative(
    run: &std::path::Path,
    prompts: usize,
    prompt_len: usize,
    decode: usize,
    reps: usize,
) -> anyhow::Result<()> {
    let t = train::checkpoint::load_trained(run, false)?;
    let data = t
        .cfg
        .data
        .as_ref()
        .context("the run's config.toml has no [data] table to draw prompts from")?;
    let (_, _, val) = data::loader::open_splits(&data.shards, &t.tok)?;
    let ctx = t.model.cfg.context_len;
    anyhow::ensure!(
        prompts >= 1 && prompt_len >= 1 && reps >= 1 && prompt_len + decode <= ctx,
        "--prompts, --prompt-len and --reps must be at least 1, and --prompt-len + --decode fit the \
         model's context of {ctx} tokens"
    );
    // Windows a context apart, so that the prompts come from different stretches of text.
    let windows = data::loader::validation_windows(&val, ctx, prompts * ctx);
    anyhow::ensure!(
        windows.len() == prompts,
        "{}: the validation split holds {} contexts, not the {prompts} prompts asked for",
        data.shards.display(),
        windows.len()
    );
    let prompts: Vec<Vec<u32>> = windows.iter().map(|w| w[..prompt_len].to_vec()).collect();
    println!(
        "bench speculative | {} ({} checkpoint {}) | {} | {} prompts of {prompt_len} tokens, {decode} decoded, {reps} passes",
        run.display(),
        t.stage,
        t.checkpoint.display(),
        tensor::Device::describe(&tensor::Cpu),
        prompts.len()
    );
    let r = bench_speculative(&t.model, &prompts, decode, reps)?;
    println!(
        "plain: {:.1} tok/s | speculative: {:.1} tok/s | {:.2} tokens per main pass | {}/{} drafts accepted",
        r.plain_tok_s(),
        r.speculative_tok_s(),
        r.tokens_per_pass(),
        r.stats.accepted,
        r.stats.drafted
    );
    println!(
        "drafting: {:.0}% of the speculative time",
        100.0 * r.stats.draft_time.as_secs_f64() / r.speculative_s
    );
    println!("identical_outputs: {} tokens", r.tokens);
    println!("plain_tok_s: {:.1}", r.plain_tok_s());
    println!("speculative_tok_s: {:.1}", r.speculative_tok_s());
    // A pass costs `cost` plain steps (draft and verify) and yields 1 + acceptance tokens.
    let speedup = r.plain_s / r.speculative_s;
    let cost = r.tokens_per_pass() / speedup;
    println!(
        "a pass (draft + verify) costs {cost:.2} plain steps: speculation pays above {:.0}% acceptance",
        100.0 * (cost - 1.0)
    );
    println!("speedup: {speedup:.3}");
    println!("acceptance: {:.3}", r.stats.acceptance());
    Ok(())
}

/// Seconds of one call of `f`, the median of `reps`.
fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut s: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// `bench tokenizer --worst-case`: a megabyte of ordinary text against one-piece megabyte
/// words, each one `encode` call on one thread; then the merging reference on growing words.
fn worst_case_encoding(tok: &bpe::Tokenizer, text: &str, reps: usize) {
    const MIB: usize = 1 << 20;
    let cut = |s: &str, n: usize| {
        let mut end = n.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    let ordinary = cut(text, MIB);
    let letters: String = text.chars().filter(|c| c.is_alphabetic()).collect();
    let words = [
        ("ordinary text", ordinary.clone()),
        ("\"ing\" repeated", cut(&"ing".repeat(MIB / 3 + 1), MIB)),
        ("one letter repeated", "a".repeat(MIB)),
        (
            "the input's letters run together",
            cut(&letters.repeat(1 + MIB / letters.len().max(1)), MIB),
        ),
        ("spaces, then a letter", format!("{}x", " ".repeat(MIB - 1))),
        ("spaces and line breaks", " \n".repeat(MIB / 2)),
        ("punctuation", "-".repeat(MIB)),
    ];
    // The same inputs through a split pattern of the user's (GPT-2's, not the hand-written
    // GPT-4 matcher), which runs on fancy-regex under its backtrack limit.
    let tokens = (0..tok.n_ordinary() as u32)
        .map(|id| tok.token_bytes(id).expect("an ordinary id").to_vec())
        .collect();
    let names: Vec<&str> = tok.specials().iter().map(|(n, _)| n.as_str()).collect();
    let splitter = bpe::Splitter::new(bpe::GPT2_PATTERN).expect("the GPT-2 pattern compiles");
    let user = bpe::Tokenizer::new(splitter, tokens, &names).expect("the same vocabulary");
    for (label, tok) in [
        ("GPT-4 pattern, hand matcher", tok),
        ("GPT-2 pattern, fancy-regex", &user),
    ] {
        // Rounds that time every input once, in turn: the machine's speed drifts between
        // rounds, so each ratio is taken within a round, and the median over rounds printed.
        let mut times = vec![Vec::new(); words.len()];
        for _ in 0..reps.max(1) {
            for (t, (_, w)) in times.iter_mut().zip(&words) {
                t.push(median_seconds(1, || drop(tok.encode(w))));
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "worst case ({label}): one encode call per megabyte, 1 thread, median of {reps} rounds"
        );
        for ((name, w), t) in words.iter().zip(&times) {
            let ratio = median(t.iter().zip(&times[0]).map(|(a, b)| a / b).collect());
            let s = median(t.clone());
            println!(
                "  {name:34} {:7.1} ms  {:6.1} MB/s  {ratio:.2}x ordinary",
                s * 1e3,
                w.len() as f64 / 1e6 / s,
            );
        }
    }
    println!("merging reference on \"ing\" repeated (what encode did before its search):");
    for kb in [16, 32, 64, 128] {
        let w = cut(&"ing".repeat(kb * 1024 / 3 + 1), kb * 1024);
        let s = median_seconds(1, || drop(tok.encode_by_merging(&w)));
        let fast = median_seconds(reps, || drop(tok.encode(&w)));
        println!(
            "  {kb:4} KB: merging {:8.1} ms, search {:6.2} ms",
            s * 1e3,
            fast * 1e3
        );
    }
}

fn logits(run: &Path, stage: Option<&str>, against: &Path, tol: f32) -> anyhow::Result<()> {
    let t = train::checkpoint::load_stage(run, stage)?;
    let prompts = interop::check::read_peer_logits(against)?;
    let gaps = interop::check::logit_gaps(&t.model, &prompts)?;
    let mut ok = true;
    for (i, (p, gap)) in prompts.iter().zip(&gaps).enumerate() {
        // As transformers encodes: special-token names in the text are those tokens.
        let ids_agree = p
            .text
            .as_ref()
            .map(|text| t.tok.encode_with_specials(text) == p.ids);
        println!(
            "prompt {i}: {} tokens, largest logit gap {gap:.2e}{}",
            p.ids.len(),
            match ids_agree {
                Some(true) => ", same ids",
                Some(false) => ", OTHER IDS than frugal's tokenizer",
                None => "",
            }
        );
        ok &= *gap <= tol && ids_agree != Some(false);
    }
    let worst = gaps.iter().copied().fold(0f32, f32::max);
    println!("largest_logit_gap: {worst:.3e} (tolerance {tol:.0e})");
    anyhow::ensure!(
        ok,
        "{} disagrees with {} beyond the tolerance",
        run.display(),
        against.display()
    );
    Ok(())
}
