//! `frugal sft` and `frugal chat` end to end on a tiny model: instruction tuning from
//! conversation files, its errors on bad input, the one-shot chat, and an interactive chat
//! driven through a real pseudo-terminal (streaming, commands, odd input, Ctrl-C, Ctrl-D).

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{conversations, copy_dir, frugal, out, sft_config};

/// A tiny pretrained run with room for short chats (context 96).
fn pretrained(name: &str) -> PathBuf {
    common::pretrained(name, 96)
}

#[test]
fn sft_trains_reports_resumes_and_chat_answers() {
    let run = pretrained("sft");
    let dir = run.parent().unwrap().to_path_buf();
    let cfg = sft_config(&dir, &conversations(&dir, 8));
    let (r, c) = (run.to_str().unwrap(), cfg.to_str().unwrap());
    let o = frugal(&["sft", "--run", r, "--config", c]);
    let log = out(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("source mixed: 40 conversations, 32 train, 8 val"),
        "{log}"
    );
    assert!(log.contains("sft step 8 | val loss"), "{log}");
    assert!(
        log.contains("format check:") && log.contains("well-formed"),
        "{log}"
    );
    assert!(run
        .join("sft/checkpoints/step-8/model.safetensors")
        .exists());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("sft/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["steps"], 8);
    assert_eq!(report["format"]["prompts"], 4);
    assert!(report["val_loss"].as_f64().unwrap().is_finite());
    // The loss went down from the pretrained model's.
    let metrics = std::fs::read_to_string(run.join("sft/metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect();
    assert!(losses[7] < losses[0], "{losses:?}");

    // A second run into the same directory is refused; --resume finds the work done.
    let o = frugal(&["sft", "--run", r, "--config", c]);
    assert!(
        !o.status.success() && out(&o).contains("--resume"),
        "{}",
        out(&o)
    );
    let o = frugal(&["sft", "--run", r, "--config", c, "--resume"]);
    assert!(
        o.status.success() && out(&o).contains("resumed from"),
        "{}",
        out(&o)
    );

    // One-shot chat uses the SFT checkpoint and exits cleanly.
    let o = frugal(&["chat", "--run", r, "-p", "say hi", "--max-tokens", "8"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(!out(&o).contains("no SFT checkpoint"), "{}", out(&o));
    let o = frugal(&["chat", "--run", r, "-p", "   ", "--max-tokens", "8"]);
    assert!(
        !o.status.success() && out(&o).contains("empty"),
        "{}",
        out(&o)
    );
    let o = frugal(&["chat", "--run", r, "-p", "x", "--top-p", "0"]);
    assert!(
        !o.status.success() && out(&o).contains("top_p"),
        "{}",
        out(&o)
    );
}

#[test]
fn sft_bad_input_is_named() {
    let run = pretrained("sft-bad");
    let dir = run.parent().unwrap().to_path_buf();
    let r = run.to_str().unwrap();
    // An unknown role: the file and line are named.
    let data = dir.join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}\n",
    )
    .unwrap();
    let cfg = sft_config(&dir, &data);
    let o = frugal(&["sft", "--run", r, "--config", cfg.to_str().unwrap()]);
    let e = out(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("bad.jsonl, line 2") && e.contains("unknown role \"wizard\""),
        "{e}"
    );
    // An empty dataset.
    std::fs::write(&data, "").unwrap();
    let o = frugal(&["sft", "--run", r, "--config", cfg.to_str().unwrap()]);
    assert!(out(&o).contains("no training conversations"), "{}", out(&o));
    // Every turn longer than the context: nothing fits.
    let long = format!(
        "{{\"prompt\": \"{}\", \"completion\": \"b\"}}\n",
        "cat ".repeat(200)
    );
    std::fs::write(&data, long.repeat(4)).unwrap();
    let o = frugal(&["sft", "--run", r, "--config", cfg.to_str().unwrap()]);
    let e = out(&o);
    assert!(
        e.contains("no training conversations fit in seq_len 64") && e.contains("4 too long"),
        "{e}"
    );
    // A missing source.
    let o = frugal(&[
        "sft",
        "--run",
        r,
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "sft.sources=[{name = \"x\", path = \"/nonexistent/convs.jsonl\"}]",
    ]);
    assert!(
        out(&o).contains("/nonexistent/convs.jsonl: does not exist"),
        "{}",
        out(&o)
    );
    // A tokenizer without the chat special tokens.
    let tok_path = run.join("tokenizer.json");
    let text = std::fs::read_to_string(&tok_path).unwrap();
    std::fs::write(
        &tok_path,
        text.replace("<|user_start|>", "<|not_a_chat_token|>"),
    )
    .unwrap();
    let good = conversations(&dir, 8);
    let cfg = sft_config(&dir, &good);
    let o = frugal(&["sft", "--run", r, "--config", cfg.to_str().unwrap()]);
    let e = out(&o);
    assert!(
        e.contains("lacks the chat special tokens <|user_start|>"),
        "{e}"
    );
    let o = frugal(&["chat", "--run", r, "-p", "hi"]);
    assert!(
        out(&o).contains("lacks the chat special tokens"),
        "{}",
        out(&o)
    );
}

/// A child process on a pseudo-terminal, with everything it writes collected by a thread.
struct Pty {
    child: Child,
    master: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
    /// How much of `output` earlier expectations consumed.
    seen: usize,
}

impl Pty {
    fn spawn(args: &[&str]) -> Pty {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty fills two descriptors; the null pointers ask for defaults.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_frugal"));
        cmd.args(args);
        // SAFETY: only async-signal-safe calls between fork and exec. The child becomes a
        // session leader with the pty as its controlling terminal, so ^C reaches it as SIGINT.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::ioctl(slave, libc::TIOCSCTTY as _, 0);
                for fd in 0..3 {
                    libc::dup2(slave, fd);
                }
                libc::close(master);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("frugal chat starts");
        // SAFETY: both descriptors are ours; the parent keeps only the master.
        unsafe { libc::close(slave) };
        let master = unsafe { std::fs::File::from_raw_fd(master) };
        let output = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Reading fails (EIO) once the child has exited and closed the terminal.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            output,
            seen: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits until `needle` appears in output not yet consumed; returns that output.
    fn expect(&mut self, needle: &str) -> String {
        let t0 = Instant::now();
        loop {
            let text =
                String::from_utf8_lossy(&self.output.lock().unwrap()[self.seen..]).into_owned();
            if let Some(i) = text.find(needle) {
                self.seen += text[..i + needle.len()].len();
                return text;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "timed out waiting for {needle:?}; output so far:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "chat did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn interactive_chat_through_a_terminal() {
    let run = pretrained("pty");
    let r = run.to_str().unwrap();
    // The pretrained model (no SFT here) rarely ends a reply early, so an answer is still
    // streaming when Ctrl-C arrives; the delay paces the stream.
    let mut p = Pty::spawn(&[
        "chat",
        "--run",
        r,
        "--max-tokens",
        "60",
        "--token-delay-ms",
        "40",
    ]);
    p.expect("/help for commands");
    p.expect("> ");
    p.send(b"/temp 0.7\n");
    p.expect("[temperature 0.7]");
    p.send(b"/temp hot\n");
    p.expect("/temp takes a number");
    p.send(b"/help\n");
    p.expect("Ctrl-C stops an answer");
    // Control characters and escape sequences in a line are dropped, never fatal.
    p.send(b"\x1b[A\x07the \x01cat\n");
    p.expect("> ");
    // A line longer than the context gets an error and the chat goes on.
    let long = "cat ".repeat(300);
    p.send(format!("{long}\n").as_bytes());
    p.expect("over the limit");
    p.send(b"/reset\n");
    p.expect("[conversation reset]");
    // Ctrl-C while the answer streams stops the answer, not the program.
    p.send(b"the dog\n");
    p.expect("the dog");
    std::thread::sleep(Duration::from_millis(300));
    p.send(b"\x03");
    p.expect("[stopped]");
    p.expect("> ");
    p.send(b"/bogus\n");
    p.expect("unknown command");
    // Ctrl-D at the prompt leaves cleanly.
    p.send(b"\x04");
    let status = p.wait();
    assert!(status.success(), "exit status {status:?}");

    // Ctrl-C at the prompt leaves too, with the shell's 130.
    let mut p = Pty::spawn(&["chat", "--run", r]);
    p.expect("> ");
    p.send(b"\x03");
    let status = p.wait();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn sft_resumed_after_a_crash_matches_an_uninterrupted_run() {
    let run = pretrained("sft-resume");
    let dir = run.parent().unwrap().to_path_buf();
    let cfg = sft_config(&dir, &conversations(&dir, 8));
    let c = cfg.to_str().unwrap();
    let o = frugal(&["sft", "--run", run.to_str().unwrap(), "--config", c]);
    assert!(o.status.success(), "{}", out(&o));
    // The state a crash between the step-4 and step-8 checkpoints leaves behind.
    let crashed = dir.join("crashed");
    copy_dir(&run, &crashed);
    std::fs::remove_dir_all(crashed.join("sft/checkpoints/step-8")).unwrap();
    std::fs::remove_file(crashed.join("sft/report.json")).unwrap();
    let o = frugal(&[
        "sft",
        "--run",
        crashed.to_str().unwrap(),
        "--config",
        c,
        "--resume",
    ]);
    let log = out(&o);
    assert!(
        o.status.success() && log.contains("resumed from") && log.contains("(step 4)"),
        "{log}"
    );
    let weights =
        |r: &Path| std::fs::read(r.join("sft/checkpoints/step-8/model.safetensors")).unwrap();
    assert!(weights(&run) == weights(&crashed), "resumed weights differ");
    // The metrics of steps 5..8 are not duplicated.
    let metrics = std::fs::read_to_string(crashed.join("sft/metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"step\":5,").count(), 1, "{metrics}");
}
