//! The `frugal` command. Thin: parses arguments, builds validated objects, calls the library,
//! prints the error chain and exits non-zero on failure.

mod annotate;
mod bench;
mod chat;
mod cost;
mod data;
mod dist;
mod eval;
mod export;
mod import;
mod plan;
mod pref;
mod prefs;
mod pretrain;
mod serve;
mod sft;
mod speedrun;
mod tokenizer;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "frugal",
    version,
    about = "Build a chat language model from raw text, and account for its cost"
)]
struct Cli {
    /// Worker threads for kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Collect human preferences: sample replies from a run's chat model, then serve a page
    /// where annotators pick the better reply (keys 1/2/…, t tie, x both harmful).
    Annotate(annotate::AnnotateArgs),
    /// Chat with a run's model in the terminal (or answer one prompt with -p).
    Chat(chat::ChatArgs),
    /// Measure the compute core: GEMM throughput and the training step.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Estimate training costs on GPU clusters, and reproduce published runs' figures.
    #[command(subcommand)]
    Cost(cost::CostCommand),
    /// Write a run's report.md and report.html: cost by stage, loss curves, projection.
    Report(cost::ReportArgs),
    /// Score a run's stages (base, SFT, preference-tuned) on standard benchmarks: HellaSwag,
    /// ARC, MMLU, PIQA, WinoGrande, BoolQ, OpenBookQA, LAMBADA, GSM8K, …; writes RUN/eval/
    /// and the report card in report.md and report.html.
    Eval(eval::EvalArgs),
    /// Write a run's model for other tools: a Hugging Face checkpoint directory (config.json,
    /// safetensors, tokenizer files with the chat template).
    Export(export::ExportArgs),
    /// Make a run of another tool's model: a Hugging Face checkpoint of the Llama family.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Distributed training's plumbing: check that the ranks of an mpirun/srun/torchrun
    /// launch can talk, and measure how fast.
    #[command(subcommand)]
    Dist(dist::DistCommand),
    /// Prepare raw text and tokenize it into shards.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// The whole recipe on the default CPU config: fetch, prepare, tokenizer, tokenize, pretrain,
    /// SFT, evaluation, then the cost ledger's summary and the report card.
    Speedrun(speedrun::SpeedrunArgs),
    /// Turn a budget into the run that minimises predicted loss: on this machine, the model
    /// size a scaling law picks at measured speeds and every stage's steps (what the speedrun
    /// plans); with --gpu, the size and tokens for the FLOPs a dollar or time budget buys.
    Plan(plan::PlanArgs),
    /// Pretrain a model on token shards (resumable).
    Pretrain(pretrain::PretrainArgs),
    /// Tune a run's SFT model on human preferences (DPO).
    #[command(subcommand)]
    Pref(pref::PrefCommand),
    /// The preference store: annotators, import of HH-RLHF and hhh_alignment, export, stats.
    #[command(subcommand)]
    Prefs(prefs::PrefsCommand),
    /// Serve a run's chat model: an OpenAI-compatible API (/v1/chat/completions, streaming)
    /// and a web chat page, with continuous batching.
    Serve(serve::ServeArgs),
    /// Instruction-tune a run's pretrained model on conversations (resumable).
    Sft(sft::SftArgs),
    /// Sample text from a run's latest pretraining checkpoint.
    Sample(pretrain::SampleArgs),
    /// Train and use byte-level BPE tokenizers.
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
}

fn main() {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`frugal bench infer | head`) instead of panicking on a failed print.
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Under mpirun, srun or torchrun: this process is one rank of several.
    let launch = train::dist::Launch::detect()?;
    if launch.world > 1 && !matches!(cli.command, Command::Pretrain(_) | Command::Dist(_)) {
        anyhow::bail!(
            "{} started {} ranks, but only `frugal pretrain` and `frugal dist` run on several; start this command as one process",
            launch.launcher.name(),
            launch.world
        );
    }
    // The ranks on one machine share its cores.
    let threads = cli.threads.unwrap_or_else(|| launch.default_threads());
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    match cli.command {
        Command::Bench(cmd) => on_worker(|| bench::run(cmd)),
        Command::Tokenizer(cmd) => tokenizer::run(cmd),
        Command::Data(cmd) => data::run(cmd),
        Command::Dist(cmd) => dist::run(cmd, &launch),
        Command::Pretrain(a) => on_worker(|| pretrain::pretrain(a, &launch)),
        Command::Speedrun(a) => on_worker(|| speedrun::speedrun(a)),
        Command::Plan(a) => on_worker(|| plan::run(a)),
        Command::Sample(a) => on_worker(|| pretrain::sample(a)),
        // The server runs its engine loop on a worker itself; its HTTP side must stay off the
        // pool, or a blocked worker would halve the kernels' threads.
        Command::Serve(a) => serve::serve(a),
        Command::Sft(a) => on_worker(|| sft::sft(a)),
        Command::Chat(a) => on_worker(|| chat::chat(a)),
        Command::Cost(cmd) => cost::run(cmd),
        Command::Report(a) => cost::report(a),
        Command::Eval(a) => on_worker(|| eval::eval(a)),
        Command::Export(a) => export::export(a),
        Command::Import(cmd) => import::run(cmd),
        Command::Pref(cmd) => on_worker(|| pref::run(cmd)),
        Command::Annotate(a) => annotate::annotate(a),
        Command::Prefs(cmd) => prefs::run(cmd),
    }
}

/// Runs a compute-bound command on one of rayon's workers: every kernel's parallel part then
/// starts from inside the pool instead of waking it from outside, which halved the time of a
/// decode step at batch 1 (`frugal bench infer`: 1.2 → 0.6 ms on the speedrun model).
fn on_worker<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let mut out = None;
    rayon::scope(|s| s.spawn(|_| out = Some(f())));
    out.expect("the command ran")
}
