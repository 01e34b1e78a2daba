//! `frugal serve` end to end on a tiny pretrained run: the official `openai` Python client,
//! a load test from a second process (64 concurrent streaming clients for 60 s: no errors,
//! bounded memory), and a graceful exit on SIGTERM. The Python side lives in .venv, which
//! scripts/test.sh fills (openai; the load generator needs only the standard library).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{fixture, frugal, out, pretrained};

const KEY: &str = "serve-test-key-0123456789";

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh, which creates .venv with the openai client",
        p.display()
    );
    p
}

/// The server, killed if a test fails before it is stopped.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(run: &Path, keys: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(["serve", "--port", "0", "--api-key-file"])
        .arg(keys)
        .arg("--run")
        .arg(run)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .expect("the server prints its address")
        .unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Served { child, url }
}

fn tiny_run(name: &str) -> (PathBuf, PathBuf) {
    let run = pretrained(name, 128);
    let keys = run.parent().unwrap().join("keys.txt");
    std::fs::write(&keys, format!("# test key\n{KEY}\n")).unwrap();
    (run, keys)
}

#[test]
fn the_openai_client_and_64_streaming_clients_are_served_then_sigterm_ends_it() {
    let (run, keys) = tiny_run("serve");
    let server = serve(&run, &keys);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let o = Command::new(python())
        .arg(&client)
        .args([&server.url, KEY])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));

    let load = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/serve_load.py");
    let o = Command::new(python())
        .arg(&load)
        .args(["--url", &server.url, "--key", KEY, "--clients", "64"])
        .args(["--seconds", "60", "--max-tokens", "48"])
        .args(["--pid", &server.child.id().to_string()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    eprintln!("load test: {report}");
    assert!(o.status.success(), "{}", out(&o));
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(r["errors"], 0, "{report}");
    assert!(r["requests"].as_u64().unwrap() >= 64, "{report}");
    assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0, "{report}");
    // Bounded memory: the peak stays near where the run was after warming up.
    let warm = r["rss_mib_warm"].as_f64().unwrap();
    let peak = r["rss_mib_peak"].as_f64().unwrap();
    assert!(
        peak <= warm * 1.25 + 16.0,
        "memory grew under load: {report}"
    );

    // SIGTERM: the server finishes and exits 0, promptly.
    let mut server = server;
    // SAFETY: signalling the child this test started.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_to_start_without_keys_or_with_bad_ones() {
    let (run, dir) = {
        let (dir, _) = fixture("serve-refuse");
        (dir.join("no-such-run"), dir)
    };
    let o = frugal(&["serve", "--run", run.to_str().unwrap(), "--no-auth"]);
    assert!(out(&o).contains("is not a run directory"), "{}", out(&o));
    let o = frugal(&[
        "serve",
        "--dummy-weights",
        "configs/tiny.toml",
        "--port",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(out(&o).contains("--api-key-file"), "{}", out(&o));
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.toml");
    let keys = dir.join("keys.txt");
    for (text, says) in [
        ("short\n", "keys need at least 16"),
        ("# nothing\n\n", "holds no API key"),
    ] {
        std::fs::write(&keys, text).unwrap();
        let o = frugal(&[
            "serve",
            "--dummy-weights",
            cfg.to_str().unwrap(),
            "--api-key-file",
            keys.to_str().unwrap(),
        ]);
        assert!(!o.status.success() && out(&o).contains(says), "{}", out(&o));
    }
}

/// An imported model (the transformers-saved Qwen2 fixture) is served in its own chat format:
/// a chat completion answers, and the prompt it reports is ChatML's.
#[test]
fn an_imported_model_is_served_with_its_own_template() {
    let dir = std::env::temp_dir().join(format!("frugal-serve-imported-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = dir.join("run");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/tests/fixtures/qwen2");
    let o = frugal(&[
        "import",
        "hf",
        fixture.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--context-len",
        "128",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    let s = serve(&run, &keys);
    let body = r#"{"model": "run", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 4, "temperature": 0}"#;
    let addr = s
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let json: serde_json::Value =
        serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["object"], "chat.completion");
    // The prompt is the run's template's rendering (ChatML, its default system prompt too).
    let tok = bpe::Tokenizer::load(&run.join("tokenizer.json")).unwrap();
    let f = data::chat::ChatFormat::for_run(&tok, &run).unwrap();
    let conv = data::chat::Conversation {
        messages: vec![data::chat::Message::text(
            data::chat::Role::User,
            "What is 2+2?",
        )],
    };
    let prompt = f.render_prompt(&conv, 128).unwrap();
    assert!(tok
        .decode_lossy(&prompt)
        .unwrap()
        .contains("<|im_start|>system\nYou are a helpful assistant."));
    assert_eq!(json["usage"]["prompt_tokens"], prompt.len(), "{json}");
    let _ = std::fs::remove_dir_all(&dir);
}
