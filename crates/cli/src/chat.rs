//! `frugal chat`: talk to a run's model in the terminal, tokens streamed as they are made.
//! Multi-turn history, `/reset`, `/temp 0.7`, and Ctrl-C stops the current answer (at the
//! prompt it exits). `-p "…"` answers once, for scripts.

use clap::Args;
use data::chat::stream::TextStream;
use data::chat::{ChatFormat, Conversation, Message, Role};
use engine::{self, Finish, Request, SamplingParams, TokenEvent, Tools};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use train::checkpoint::load_trained;

#[derive(Args)]
pub struct ChatArgs {
    /// Run directory; its SFT checkpoint is used when there is one.
    #[arg(long)]
    run: PathBuf,
    /// Answer this prompt, print the reply and exit.
    #[arg(short = 'p', long)]
    prompt: Option<String>,
    /// A system message opening the conversation.
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Reply length limit in tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Chat with the pretrained model even when an SFT checkpoint exists.
    #[arg(long)]
    base: bool,
    /// Pause after each streamed token (milliseconds): for demonstrations and the terminal test.
    #[arg(long, default_value_t = 0, hide = true)]
    token_delay_ms: u64,
    /// After each reply, print a line `ids: {"prompt": [...], "reply": [...]}` (for comparing
    /// token for token with other engines: bench/interop/llama_cpp.sh).
    #[arg(long, hide = true)]
    print_ids: bool,
    /// Leave the calculator out: the model's own tokens follow its calls (what an engine
    /// without frugal's tool does).
    #[arg(long, hide = true)]
    no_tools: bool,
}

/// Set while a reply is being generated; Ctrl-C then only sets CANCEL.
static GENERATING: AtomicBool = AtomicBool::new(false);
static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    if GENERATING.load(Ordering::SeqCst) {
        CANCEL.store(true, Ordering::SeqCst);
    } else {
        // At the prompt Ctrl-C leaves, as in a shell. Only async-signal-safe calls here.
        unsafe {
            libc::write(2, b"\n".as_ptr().cast(), 1);
            libc::_exit(130);
        }
    }
}

fn install_sigint() {
    // SAFETY: the handler only touches atomics and async-signal-safe libc functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

/// Printable text of a typed line: control characters (escape sequences, bells, NULs) are
/// dropped, tabs kept, surrounding whitespace trimmed.
fn clean_line(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect::<String>()
        .trim()
        .to_string()
}

struct Session<'a> {
    a: &'a ChatArgs,
    f: &'a ChatFormat<'a>,
    model: &'a model::Llama,
    conv: Conversation,
    sampling: SamplingParams,
    turn: u64,
}

impl Session<'_> {
    fn reset(&mut self) {
        self.conv.messages.clear();
        if let Some(s) = &self.a.system {
            self.conv
                .messages
                .push(Message::text(Role::System, s.clone()));
        }
    }

    /// Renders the prompt, dropping the oldest exchanges while it is too long. Err: the new
    /// message alone does not fit.
    fn prompt(&mut self) -> Result<Vec<u32>, String> {
        let ctx = self.model.cfg.context_len;
        loop {
            match self.f.render_prompt(&self.conv, ctx - 1) {
                Ok(p) => return Ok(p),
                Err(e) => {
                    let first = self.conv.messages.iter().position(|m| m.role == Role::User);
                    match first {
                        // More than the new message: forget the oldest exchange.
                        Some(i) if i + 1 < self.conv.messages.len() => {
                            self.conv.messages.drain(i..i + 2);
                        }
                        _ => return Err(e.to_string()),
                    }
                }
            }
        }
    }

    /// Sends one user message and streams the reply to `out`.
    fn ask(&mut self, text: String, out: &mut impl Write) -> anyhow::Result<()> {
        self.conv.messages.push(Message::text(Role::User, text));
        let prompt = match self.prompt() {
            Ok(p) => p,
            Err(e) => {
                self.conv.messages.pop();
                writeln!(out, "error: {e}")?;
                return Ok(());
            }
        };
        let ctx = self.model.cfg.context_len;
        let prompt_ids = self.a.print_ids.then(|| prompt.clone());
        let request = Request {
            max_tokens: self.a.max_tokens.min(ctx - prompt.len()),
            prompt,
            sampling: self.sampling,
            stop: self.f.reply_stops(),
            seed: self.a.seed.wrapping_add(self.turn),
        };
        self.turn += 1;
        let tools = Tools::for_format(self.f).filter(|_| !self.a.no_tools);
        let mut streamer = TextStream::new(self.f);
        let delay = std::time::Duration::from_millis(self.a.token_delay_ms);
        let mut write_err = None;
        CANCEL.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let result = engine::generate(self.model, &[request], tools.as_ref(), |e: TokenEvent| {
            if let Err(err) = write!(out, "{}", streamer.push(e.token)).and_then(|_| out.flush()) {
                write_err = Some(err);
                return false;
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            !CANCEL.load(Ordering::SeqCst)
        });
        GENERATING.store(false, Ordering::SeqCst);
        if let Some(e) = write_err {
            return Err(e.into());
        }
        let c = result?.remove(0);
        write!(out, "{}", streamer.finish())?;
        match c.finish {
            Finish::Cancelled => writeln!(out, "\n[stopped]")?,
            Finish::Length => writeln!(out, "\n[cut at {} tokens]", c.tokens.len())?,
            Finish::Stop => writeln!(out)?,
        }
        if let Some(p) = prompt_ids {
            let ids = serde_json::json!({"prompt": p, "reply": c.tokens});
            writeln!(out, "ids: {ids}")?;
        }
        let reply = self.f.parse_reply(&c.tokens);
        self.conv.messages.push(reply);
        Ok(())
    }

    /// Handles a `/command`. Returns false to quit.
    fn command(&mut self, line: &str, out: &mut impl Write) -> anyhow::Result<bool> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let arg = words.next();
        match (cmd, arg) {
            ("/quit" | "/exit", _) => return Ok(false),
            ("/reset", _) => {
                self.reset();
                writeln!(out, "[conversation reset]")?;
            }
            ("/temp", Some(v)) => match v.parse::<f32>() {
                Ok(x) if x >= 0.0 && x.is_finite() => {
                    self.sampling.temperature = x;
                    writeln!(out, "[temperature {x}]")?;
                }
                _ => writeln!(out, "error: /temp takes a number ≥ 0, e.g. /temp 0.7")?,
            },
            ("/temp", None) => writeln!(out, "[temperature {}]", self.sampling.temperature)?,
            ("/help", _) => writeln!(
                out,
                "/reset  forget the conversation\n/temp X  sampling temperature (0: greedy)\n/quit   leave (or Ctrl-D)\nCtrl-C stops an answer; at the prompt it leaves."
            )?,
            _ => writeln!(out, "unknown command {cmd:?}; /help lists them")?,
        }
        Ok(true)
    }
}

pub fn chat(a: ChatArgs) -> anyhow::Result<()> {
    let trained = load_trained(&a.run, !a.base)?;
    let f = ChatFormat::for_run(&trained.tok, &a.run)?;
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
    };
    sampling
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}; fix the sampling options"))?;
    anyhow::ensure!(a.max_tokens > 0, "--max-tokens must be at least 1");
    if trained.stage != "sft" && !a.base {
        eprintln!(
            "note: {} has no SFT checkpoint; chatting with the pretrained model (run `frugal sft --run {}` first)",
            a.run.display(),
            a.run.display()
        );
    }
    let mut s = Session {
        a: &a,
        f: &f,
        model: &trained.model,
        conv: Conversation::default(),
        sampling,
        turn: 0,
    };
    s.reset();
    install_sigint();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(p) = &a.prompt {
        let text = clean_line(p.as_bytes());
        anyhow::ensure!(!text.is_empty(), "the prompt is empty");
        return s.ask(text, &mut out);
    }
    writeln!(
        out,
        "frugal chat | {} ({} checkpoint) | /help for commands, Ctrl-D to leave",
        trained.checkpoint.display(),
        trained.stage
    )?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut raw = Vec::new();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        raw.clear();
        if input.read_until(b'\n', &mut raw)? == 0 {
            writeln!(out)?;
            return Ok(());
        }
        let line = clean_line(&raw);
        if line.is_empty() {
            continue;
        }
        if line.starts_with('/') {
            if !s.command(&line, &mut out)? {
                return Ok(());
            }
            continue;
        }
        s.ask(line, &mut out)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cleaned() {
        assert_eq!(clean_line(b"  hi\x1b[A\x07 there\r\n"), "hi[A there");
        assert_eq!(clean_line(b"\xff\xfe ok"), "\u{fffd}\u{fffd} ok");
        assert_eq!(clean_line(b"\x00\x01\x02"), "");
    }
}
