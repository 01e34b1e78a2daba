//! `frugal annotate` and `frugal prefs` end to end: the server samples replies from a tiny run's
//! newest chat stage, takes a vote, is killed with SIGKILL, and the vote is in the store;
//! preference files import once however often they are imported, export reads back, and stats
//! report agreement.

mod common;
#[path = "../../stages/tests/common/mod.rs"]
mod lib_common;
#[path = "../../serve/tests/common/mod.rs"]
mod serve_common;

use common::{frugal, out};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use store::{Choice, Store};

/// A server process, killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Killed(Child);

impl Killed {
    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `frugal annotate ARGS` in the background; returns it once it printed the page's URL.
fn annotate(args: &[&str]) -> (Killed, Vec<String>, String) {
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_frugal"))
            .arg("annotate")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.0.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            let status = child.0.wait().unwrap();
            panic!("frugal annotate ended ({status}) before serving: {lines:#?}");
        }
        let line = line.trim_end().to_string();
        if let Some(i) = line.find("http://") {
            let url = line[i..].split_whitespace().next().unwrap().to_string();
            lines.push(line);
            return (child, lines, url);
        }
        lines.push(line);
    }
}

/// (address, token) of a URL like http://127.0.0.1:PORT/?token=T.
fn split_url(url: &str) -> (SocketAddr, Option<String>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, query) = rest.split_once('/').unwrap();
    let token = query.strip_prefix("?token=").map(str::to_string);
    (host.parse().unwrap(), token)
}

#[test]
fn a_vote_survives_a_killed_server() {
    let dir = lib_common::temp("annotate-kill");
    let run = lib_common::tiny_run(&dir);
    let prompts = dir.join("prompts.txt");
    std::fs::write(
        &prompts,
        "say hi\nwhat is 2+2?\n<script>alert(1)</script>\n",
    )
    .unwrap();
    // A DPO checkpoint (the SFT weights under another name): the newest chat stage is used.
    let dpo = run.join("dpo/checkpoints/step-3");
    std::fs::create_dir_all(&dpo).unwrap();
    std::fs::copy(
        run.join("sft/checkpoints/step-5/model.safetensors"),
        dpo.join("model.safetensors"),
    )
    .unwrap();
    let r = run.to_str().unwrap();
    let (mut child, lines, url) = annotate(&[
        "--run",
        r,
        "--prompts",
        prompts.to_str().unwrap(),
        "--port",
        "0",
        "--responses",
        "3",
        "--max-tokens",
        "8",
    ]);
    let log = lines.join("\n");
    assert!(log.contains("prompts: 3 read from"), "{log}");
    assert!(log.contains("3 new"), "{log}");
    assert!(
        log.contains("sampling 3 replies to each of 3 prompts with dpo:step-3"),
        "{log}"
    );
    assert!(
        log.contains("annotate as operator: http://127.0.0.1:"),
        "{log}"
    );
    let (addr, token) = split_url(&url);
    let token = token.expect("the operator's link carries a token");
    let next = serve_common::get(addr, "/api/next", Some(&token)).json();
    let item = next["item"]["id"].as_i64().unwrap();
    assert_eq!(next["item"]["responses"].as_array().unwrap().len(), 3);
    assert_eq!(next["progress"]["total"], 3);
    let body = format!(r#"{{"item": {item}, "choice": 2}}"#);
    let voted = serve_common::post(addr, "/api/vote", Some(&token), &body);
    assert_eq!(voted.status, 200, "{voted:?}");
    assert_eq!(voted.json()["status"], "recorded");
    child.kill(); // SIGKILL: no chance to flush anything
    let db = run.join("prefs.sqlite");
    let store = Store::open(&db).unwrap();
    assert_eq!(
        store.votes().unwrap(),
        vec![(item, "operator".to_string(), Choice::Response(2))]
    );
    let stats = store.stats().unwrap();
    assert_eq!((stats.items, stats.votes), (3, 1));
    drop(store);
    // Again on the same store: nothing left to sample, and the operator already has a token.
    let (mut child, lines, url) = annotate(&["--run", r, "--port", "0"]);
    let log = lines.join("\n");
    assert!(!log.contains("sampling"), "{log}");
    assert!(log.contains("3 items, 1 judged, 1 votes"), "{log}");
    assert!(url.ends_with("?token=TOKEN"), "{url}");
    let (addr, _) = split_url(&url);
    let next = serve_common::get(addr, "/api/next", Some(&token)).json();
    assert_ne!(next["item"]["id"].as_i64().unwrap(), item);
    assert_eq!(next["progress"]["voted"], 1);
    child.kill();
    // Bad input: a run directory that is not one, a prompt file with nothing usable.
    let o = frugal(&["annotate", "--run", dir.to_str().unwrap(), "--port", "0"]);
    assert!(!o.status.success());
    assert!(out(&o).contains("not a run directory"), "{}", out(&o));
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"chosen\": \"x\"}\n").unwrap();
    let o = frugal(&["annotate", "--run", r, "--prompts", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(out(&o).contains("no usable prompt"), "{}", out(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

const HH: &str = r#"{"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.", "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Use a pin."}
{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
{"chosen": "\n\nHuman: broken row"}
"#;

const HHH: &str =
    r#"{"examples": [{"input": "Can you help?", "target_scores": {"Yes, gladly.": 1, "No.": 0}}]}"#;

#[test]
fn prefs_import_once_export_back_and_manage_annotators() {
    let dir = lib_common::temp("prefs-cli");
    let (hh, task) = (dir.join("hh.jsonl"), dir.join("task.json"));
    std::fs::write(&hh, HH).unwrap();
    std::fs::write(&task, HHH).unwrap();
    let db = dir.join("p.sqlite");
    let d = db.to_str().unwrap();
    let files = [hh.to_str().unwrap(), task.to_str().unwrap()];
    let o = frugal(&["prefs", "import", files[0], files[1], "--db", d]);
    let log = out(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("hh.jsonl: 2 pairs | 2 items and 2 votes added | 0 already there | 1 rows skipped (first:")
            && log.contains("line 3"),
        "{log}"
    );
    assert!(
        log.contains("task.json: 1 pairs | 1 items and 1 votes added"),
        "{log}"
    );
    let o = frugal(&["prefs", "import", files[0], files[1], "--db", d]);
    let log = out(&o);
    assert!(
        log.contains("hh.jsonl: 2 pairs | 0 items and 0 votes added | 2 already there"),
        "{log}"
    );
    // Annotators: a token once, names unique, a listing with the datasets' judgements.
    let o = frugal(&["prefs", "annotator", "add", "amy", "--db", d]);
    let log = out(&o);
    assert!(o.status.success(), "{log}");
    let token = log
        .split("token ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(token.len(), 32);
    let o = frugal(&["prefs", "annotator", "add", "amy", "--db", d]);
    assert!(
        !o.status.success() && out(&o).contains("already exists"),
        "{}",
        out(&o)
    );
    let o = frugal(&["prefs", "annotator", "list", "--db", d]);
    let log = out(&o);
    for row in ["amy", "hh-rlhf", "hhh_alignment"] {
        assert!(log.contains(row), "{log}");
    }
    assert!(log.contains("person") && log.contains("dataset"), "{log}");
    // Export reads back through the pair reader.
    let exported = dir.join("out.jsonl");
    let o = frugal(&[
        "prefs",
        "export",
        "--out",
        exported.to_str().unwrap(),
        "--db",
        d,
    ]);
    let log = out(&o);
    assert!(
        log.contains("wrote 3 pairs") && log.contains("0 ties, 0 both harmful"),
        "{log}"
    );
    let back = data::pairs::read_pairs(&exported).unwrap();
    assert_eq!((back.pairs.len(), back.skipped), (3, 0));
    assert!(back
        .pairs
        .iter()
        .any(|p| p.chosen == "I can't help with that." && p.annotator == "dataset:hh-rlhf"));
    // Kept to the page's people, the export holds none of the imported judgements.
    let o = frugal(&[
        "prefs",
        "export",
        "--out",
        exported.to_str().unwrap(),
        "--source",
        "page",
        "--db",
        d,
    ]);
    assert!(out(&o).contains("wrote 0 pairs"), "{}", out(&o));
    let o = frugal(&["prefs", "stats", "--db", d]);
    let log = out(&o);
    assert!(log.contains("imported: 3 items, 3 votes"), "{log}");
    let o = frugal(&["prefs", "stats", "--json", "--db", d]);
    let v: serde_json::Value = serde_json::from_str(&common::text(&o).0).unwrap();
    assert_eq!(v["imported_votes"], 3);
    // A missing store is an error, not a new empty one.
    let missing = dir.join("none.sqlite");
    let o = frugal(&["prefs", "stats", "--db", missing.to_str().unwrap()]);
    assert!(
        !o.status.success() && out(&o).contains("no preference store"),
        "{}",
        out(&o)
    );
    assert!(!missing.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
