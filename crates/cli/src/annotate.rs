//! `frugal annotate`: fills the preference store with model replies to compare, then serves
//! the annotation page on 127.0.0.1 until stopped.

use anyhow::Context;
use clap::Args;
use data::chat::ChatFormat;
use engine::SamplingParams;
use serve::annotate::Server;
use serve::sample::{fill, read_prompts, SampleConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use store::Store;
use train::checkpoint::{list, load_trained, load_weights, Trained};

#[derive(Args)]
pub struct AnnotateArgs {
    /// Run directory; its newest chat stage (grpo, dpo, then sft) samples the replies.
    #[arg(long)]
    run: PathBuf,
    /// Prompts to add: JSONL ({"prompt": "..."} or {"messages": [...]}) or a text file with one
    /// prompt per line. Without it, the prompts already in the store are used.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: pick a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Replies sampled per prompt (each prompt becomes one item comparing them).
    #[arg(long, default_value_t = 2)]
    responses: usize,
    /// The preference store (default: RUN/prefs.sqlite).
    #[arg(long)]
    db: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Reply length limit in tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sample from this stage (sft, dpo, grpo) instead of the newest one.
    #[arg(long)]
    stage: Option<String>,
}

/// The run's chat model: the named stage, or the last of sft, dpo, grpo that has a
/// checkpoint. Returns it with its origin label ("dpo:step-40").
pub fn chat_model(run: &Path, stage: Option<&str>) -> anyhow::Result<(Trained, String)> {
    let mut trained = load_trained(run, true)?;
    let stages = eval::stages(run)?;
    let chosen = match stage {
        Some(name) => Some(stages.iter().find(|s| s.name == name).with_context(|| {
            let have: Vec<&str> = stages.iter().map(|s| s.name).collect();
            format!(
                "{} has no {name} checkpoint (stages with one: {})",
                run.display(),
                have.join(", ")
            )
        })?),
        None => stages.iter().rev().find(|s| s.chat),
    };
    if let Some(s) = chosen {
        if let Some((_, dir)) = list(&s.dir)?.pop() {
            trained.model = load_weights(&dir, &trained.cfg.model)?;
            trained.checkpoint = dir;
            trained.stage = s.name;
        }
    }
    if trained.stage == "pretrain" || trained.stage == "base" {
        eprintln!(
            "note: {} has no chat-tuned checkpoint; sampling from the pretrained model (run `frugal sft --run {}` first)",
            run.display(),
            run.display()
        );
    }
    let step = trained
        .checkpoint
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let origin = format!("{}:{step}", trained.stage);
    Ok((trained, origin))
}

pub fn annotate(a: AnnotateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.run.join("config.toml").exists(),
        "{} is not a run directory (no config.toml)\nHINT: pass the --run directory of `frugal pretrain` or `frugal speedrun`",
        a.run.display()
    );
    anyhow::ensure!(a.max_tokens > 0, "--max-tokens must be at least 1");
    let db = a.db.clone().unwrap_or_else(|| a.run.join("prefs.sqlite"));
    let mut store = Store::open(&db)?;
    if let Some(path) = &a.prompts {
        let read = read_prompts(path)?;
        let mut new = 0;
        for p in &read.prompts {
            new += usize::from(store.add_prompt(p, &path.display().to_string())?.1);
        }
        println!(
            "prompts: {} read from {}, {new} new{}",
            read.prompts.len(),
            path.display(),
            skipped(read.skipped, read.first_skip.as_deref())
        );
    }
    let todo = store.prompts_without_responses()?.len();
    if todo > 0 {
        let (trained, origin) = chat_model(&a.run, a.stage.as_deref())?;
        let f = ChatFormat::for_run(&trained.tok, &a.run)?;
        let cfg = SampleConfig {
            responses: a.responses,
            sampling: SamplingParams {
                temperature: a.temperature,
                ..SampleConfig::default().sampling
            },
            max_tokens: a.max_tokens,
            seed: a.seed,
        };
        println!(
            "sampling {} replies to each of {todo} prompts with {} ({})",
            a.responses,
            origin,
            trained.checkpoint.display()
        );
        let filled = fill(
            &mut store,
            &trained.model,
            &f,
            &origin,
            &cfg,
            |done, total| {
                print!("\r  {done}/{total} prompts");
                let _ = std::io::stdout().flush();
            },
        )?;
        println!(
            "\r  {} items made{}",
            filled.items,
            skipped(filled.skipped, filled.first_skip.as_deref())
        );
    }
    let stats = store.stats()?;
    anyhow::ensure!(
        stats.items > 0,
        "{} holds no items to judge\nHINT: pass --prompts FILE (JSONL or one prompt per line)",
        db.display()
    );
    // Tokens are stored hashed and cannot be shown again: a store without a human annotator
    // gets one, "operator", whose link is printed once.
    let operator = if stats.annotators.iter().any(|x| x.has_token) {
        None
    } else {
        Some(store.add_annotator("operator")?)
    };
    let server = Server::start(store, &format!("127.0.0.1:{}", a.port))?;
    println!(
        "{} items, {} judged, {} votes | store {}",
        stats.items,
        stats.items_voted,
        stats.votes,
        db.display()
    );
    match &operator {
        Some(t) => println!("annotate as operator: {}", server.url(Some(t))),
        None => println!(
            "annotate at {}?token=TOKEN (tokens from `frugal prefs annotator add NAME --db {}`)",
            server.url(None),
            db.display()
        ),
    }
    let _ = std::io::stdout().flush();
    Ok(server.wait()?)
}

fn skipped(n: usize, first: Option<&str>) -> String {
    match first {
        Some(m) if n > 0 => format!(", {n} skipped (first: {m})"),
        _ => String::new(),
    }
}
