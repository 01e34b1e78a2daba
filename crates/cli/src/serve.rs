//! `frugal serve`: a run's chat model behind an OpenAI-compatible API and a web chat page,
//! with continuous batching, until SIGINT or SIGTERM (then a graceful shutdown).

use crate::annotate::chat_model;
use clap::Args;
use data::chat::ChatStyle;
use serve::api::{App, Auth, RequestLimits};
use serve::http::{ConnLimits, Server};
use serve::metrics::Metrics;
use serve::scheduler::{Limits, Scheduler};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Run directory; its newest chat stage (grpo, dpo, then sft) is served.
    #[arg(long, required_unless_present = "dummy_weights")]
    run: Option<PathBuf>,
    /// Serve a randomly initialised model of this config (its vocabulary replaced by a
    /// byte-level tokenizer's) instead of a trained run: for load tests and benchmarks.
    #[arg(long, conflicts_with = "run")]
    dummy_weights: Option<PathBuf>,
    /// Serve this stage (pretrain, sft, dpo, grpo) instead of the newest chat stage.
    #[arg(long)]
    stage: Option<String>,
    /// Address to listen on; 0.0.0.0 exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: pick a free one and print it).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// API keys, one per line: clients send `Authorization: Bearer KEY`.
    #[arg(long, conflicts_with = "no_auth")]
    api_key_file: Option<PathBuf>,
    /// Serve without API keys: anyone who can reach the port can use the model.
    #[arg(long)]
    no_auth: bool,
    /// The model's name in the API (default: the run directory's name).
    #[arg(long)]
    model_name: Option<String>,
    /// Sequences decoded together in one forward pass.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Requests waiting for a place in the batch; beyond it requests get 429.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Allow browser pages from this origin (e.g. http://localhost:3000) to call the API.
    #[arg(long)]
    allow_origin: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds a client has to send a request's headers, and its body; also how long one write
    /// of a response may wait for the client to read, and how long a kept-alive connection idles.
    #[arg(long, default_value_t = 10)]
    request_timeout: u64,
    /// Seconds running generations get to finish at shutdown.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Pause after every decode step (milliseconds): for tests and demonstrations.
    #[arg(long, default_value_t = 0, hide = true)]
    step_delay_ms: u64,
}

/// The model to serve, its tokenizer, a label for it, and the default name.
fn load(
    a: &ServeArgs,
) -> anyhow::Result<(model::Llama, bpe::Tokenizer, ChatStyle, String, String)> {
    if let Some(cfg) = &a.dummy_weights {
        let mut cfg = train::Config::load(cfg, &[])?;
        let tok = bpe::Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS)?;
        // The vocabulary is the tokenizer's, so every sampled token has text to stream.
        cfg.model.vocab_size = tok.vocab_size();
        let model = model::Llama::init(cfg.model, 0);
        let style = ChatStyle::frugal(&tok)?;
        return Ok((model, tok, style, "random weights".into(), "dummy".into()));
    }
    let run = a
        .run
        .as_ref()
        .expect("clap requires --run or --dummy-weights");
    anyhow::ensure!(
        run.join("config.toml").exists(),
        "{} is not a run directory (no config.toml)\nHINT: pass the --run directory of `frugal pretrain` or `frugal speedrun`",
        run.display()
    );
    let (trained, origin) = chat_model(run, a.stage.as_deref())?;
    let name = run
        .canonicalize()
        .unwrap_or(run.clone())
        .file_name()
        .map_or("frugal".into(), |n| n.to_string_lossy().into_owned());
    let label = format!("{origin}, {}", trained.checkpoint.display());
    let style = ChatStyle::of_run(&trained.tok, run)?;
    Ok((trained.model, trained.tok, style, label, name))
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let auth = match (&a.api_key_file, a.no_auth) {
        (Some(f), _) => Auth::from_file(f)?,
        (None, true) => Auth::Open,
        (None, false) => anyhow::bail!(
            "no API keys given\nHINT: pass --api-key-file FILE (one key per line), or --no-auth to serve without keys"
        ),
    };
    anyhow::ensure!(
        a.max_batch > 0 && a.max_queue > 0,
        "--max-batch and --max-queue must be at least 1"
    );
    let allow_origin = a
        .allow_origin
        .as_deref()
        .map(|o| {
            o.parse().map_err(|_| {
                anyhow::anyhow!("--allow-origin {o:?} is not a valid origin (scheme://host[:port])")
            })
        })
        .transpose()?;
    let (model, tok, style, label, default_name) = load(&a)?;
    let name = a.model_name.clone().unwrap_or(default_name);
    let ctx = model.cfg.context_len;
    let tok = Arc::new(tok);
    // The calculator is frugal's format's tool; an imported template has none.
    let tools = match &style {
        ChatStyle::Frugal(t) => Some((tok.clone(), *t)),
        ChatStyle::Template(_) => None,
    };
    let metrics = Arc::new(Metrics::default());
    let scheduler = Scheduler::start(
        Arc::new(model),
        tools,
        Limits {
            max_batch: a.max_batch,
            max_queue: a.max_queue,
            step_delay: Duration::from_millis(a.step_delay_ms),
        },
        metrics.clone(),
    );
    let timeout = Duration::from_secs(a.request_timeout.max(1));
    let app = App::new(
        scheduler,
        tok,
        style,
        name.clone(),
        ctx,
        auth,
        allow_origin,
        RequestLimits {
            max_body: a.max_body,
        },
        metrics,
    )?;
    let server = Server::start(
        Arc::new(app),
        &format!("{}:{}", a.host, a.port),
        ConnLimits {
            header_timeout: timeout,
            body_timeout: timeout,
            write_timeout: timeout,
            shutdown_grace: Duration::from_secs(a.shutdown_grace),
            ..ConnLimits::default()
        },
    )?;
    println!(
        "serving {name} ({label}; context {ctx}) at {}",
        server.url()
    );
    println!(
        "  chat page {}/   API {}/v1   metrics {}/metrics{}",
        server.url(),
        server.url(),
        server.url(),
        if a.no_auth { "   (no API keys)" } else { "" }
    );
    let _ = std::io::stdout().flush();
    Ok(server.wait()?)
}
