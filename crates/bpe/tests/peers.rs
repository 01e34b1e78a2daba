//! Exact-id agreement with the field's tokenizers: a vocabulary trained here, exported as
//! tokenizer.json and as a tiktoken rank file, must encode text to the same ids in Hugging Face
//! `tokenizers` and in `tiktoken` (through bench/tokenizer_peers.py).
//!
//! Needs a Python with both packages: $FRUGAL_PYTHON, or the repository's .venv (scripts/test.sh
//! creates it). Set FRUGAL_SKIP_PEER_TESTS=1 to skip on purpose; the test says so loudly.

use bpe::{Trainer, TrainerOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Option<PathBuf> {
    if std::env::var("FRUGAL_SKIP_PEER_TESTS").as_deref() == Ok("1") {
        eprintln!("NOTICE: FRUGAL_SKIP_PEER_TESTS=1 — tokenizer agreement with HF tokenizers/tiktoken NOT checked");
        return None;
    }
    let py = std::env::var_os("FRUGAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import tokenizers, tiktoken"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import tokenizers and tiktoken.\nHINT: run scripts/test.sh (it installs them into .venv), \
         set FRUGAL_PYTHON, or set FRUGAL_SKIP_PEER_TESTS=1 to skip this check knowingly",
        py.display()
    );
    Some(py)
}

#[test]
fn ids_agree_with_hf_tokenizers_and_tiktoken() {
    let Some(py) = python() else { return };
    let corpus = [
        "The quick brown fox jumps over the lazy dog. It's 2024; we've 1234567 reasons.\n",
        "  Indented code:\n\tfn main() { println!(\"hi\"); }\n\n\n",
        "Ünïcödé: café, naïve, 漢字かな交じり文, Ελληνικά, русский текст, emoji 😀🎉 ①②③ Ⅻ.\n",
        "Numbers 3.14159, 1,000,000 and 2^10 = 1024. DON'T SHOUT! I'LL WHISPER... 'quoted' \"double\"\n",
    ];
    let docs: Vec<String> = (0..40)
        .map(|i| format!("{} {i}\n", corpus[i % corpus.len()].repeat(1 + i % 3)))
        .collect();
    let mut t = Trainer::new(TrainerOptions {
        vocab_size: 700,
        ..Default::default()
    })
    .unwrap();
    t.count(&docs);
    let tok = t.finish().unwrap();

    let dir = std::env::temp_dir().join(format!("bpe-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("tokenizer.json");
    tok.save(&json).unwrap();
    tok.save_tiktoken(&dir.join("tokenizer.json.tiktoken"))
        .unwrap();
    let mut texts: Vec<String> = corpus.iter().map(|s| s.to_string()).collect();
    texts.extend(
        [
            "",
            " ",
            "\n\n  \n",
            "a  b   c",
            "x\r\ny",
            "unseen words: zebra quixotic",
            "'s 'S 'll 'VE",
        ]
        .map(String::from),
    );
    texts.push(corpus.concat());
    // Long single pieces (letters without spaces), which frugal encodes by its linear-time
    // search rather than by merging.
    texts.extend([
        "ing".repeat(3000),
        "Thequickbrownfoxjumpsoverthelazydog".repeat(60),
        "reasonswhisperquoteddouble".repeat(40),
        "é".repeat(500),
    ]);
    std::fs::write(
        dir.join("texts.json"),
        serde_json::to_string(&texts).unwrap(),
    )
    .unwrap();

    let out = Command::new(&py)
        .arg(repo().join("bench/tokenizer_peers.py"))
        .args(["agree", "--tokenizer"])
        .arg(&json)
        .arg("--texts")
        .arg(dir.join("texts.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for peer in ["hf", "tiktoken"] {
        for (i, text) in texts.iter().enumerate() {
            let theirs: Vec<u32> = serde_json::from_value(peers[peer][i].clone()).unwrap();
            assert_eq!(tok.encode(text), theirs, "{peer} disagrees on {text:?}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
