//! The `frugal` binary end to end: benchmarks on the tiny preset, and bad input.

mod common;

use common::{frugal, text};

#[test]
fn bench_train_reports_the_documented_lines_last() {
    let o = frugal(&[
        "bench",
        "train",
        "--preset",
        "tiny",
        "--steps",
        "5",
        "--threads",
        "1",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let last: Vec<&str> = out.lines().rev().take(3).collect();
    assert!(last[2].starts_with("step_ms_median: "), "{out}");
    assert!(last[1].starts_with("tokens_per_s: "), "{out}");
    assert!(last[0].starts_with("peak_rss_mb: "), "{out}");
    let tps: f64 = last[1]["tokens_per_s: ".len()..].parse().unwrap();
    assert!(tps > 0.0 && tps.is_finite());
    assert!(out.contains("mfu: "), "{out}");
}

#[test]
fn bench_gemm_reports_a_peak() {
    let o = frugal(&["bench", "gemm", "--reps", "1"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let peak: f64 = out
        .lines()
        .last()
        .unwrap()
        .strip_prefix("gemm_gflops_peak: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(peak > 0.0);
}

#[test]
fn bad_configs_fail_cleanly_naming_the_problem() {
    let dir = std::env::temp_dir().join(format!("frugal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = include_str!("../../../configs/tiny.toml");
    let cases = [
        (
            "typo.toml",
            tiny.replace("ffn_hidden", "ffn_hiden"),
            "ffn_hiden",
        ),
        (
            "heads.toml",
            tiny.replace("n_kv_heads = 2", "n_kv_heads = 3"),
            "model.n_kv_heads",
        ),
        (
            "syntax.toml",
            tiny.replace("d_model = 32", "d_model = = 32"),
            "syntax.toml",
        ),
        (
            "seq.toml",
            tiny.replace("seq_len = 16", "seq_len = 64"),
            "train.seq_len",
        ),
    ];
    for (name, body, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let o = frugal(&[
            "bench",
            "train",
            "--config",
            path.to_str().unwrap(),
            "--steps",
            "4",
        ]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(needle) && err.contains("HINT") && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    let o = frugal(&[
        "bench",
        "train",
        "--config",
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    assert!(text(&o).1.contains("missing.toml"), "{}", text(&o).1);
    let o = frugal(&["bench", "train", "--preset", "huge"]);
    assert!(text(&o).1.contains("no such preset"), "{}", text(&o).1);
    let o = frugal(&["bench", "train", "--preset", "tiny", "--set", "train.lr=-1"]);
    assert!(text(&o).1.contains("train.lr"), "{}", text(&o).1);
    std::fs::remove_dir_all(&dir).ok();
}

/// Raw sources in four formats → `data prepare` → `tokenizer train` → `data tokenize`.
#[test]
fn data_pipeline_end_to_end() {
    let dir = std::env::temp_dir().join(format!("frugal-pipeline-{}", std::process::id()));
    let raw = dir.join("raw");
    std::fs::create_dir_all(raw.join("books")).unwrap();
    let sentence = common::prose;
    for b in 0..6 {
        let text: String = (0..40).map(|i| sentence(b * 100 + i)).collect();
        std::fs::write(raw.join(format!("books/book{b}.txt")), format!("*** START OF THE PROJECT GUTENBERG EBOOK {b} ***\n{text}\n*** END OF THE PROJECT GUTENBERG EBOOK ***\nlicence")).unwrap();
    }
    // A near copy of book 0 and an exact copy of book 1: both must be removed.
    let book0 = std::fs::read_to_string(raw.join("books/book0.txt")).unwrap();
    std::fs::write(
        raw.join("books/book0-copy.txt"),
        book0.replacen("The", "A", 1),
    )
    .unwrap();
    std::fs::copy(
        raw.join("books/book1.txt"),
        raw.join("books/book1-copy.txt"),
    )
    .unwrap();
    let jsonl: String = (0..5)
        .map(|i| {
            format!(
                "{{\"body\": {:?}}}\n",
                (0..12)
                    .map(|k| sentence(1000 + i * 20 + k))
                    .collect::<String>()
            )
        })
        .collect();
    std::fs::write(
        raw.join("web.jsonl"),
        format!("{jsonl}this line is not json\n"),
    )
    .unwrap();
    let page = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body><nav>Home</nav><article><p>{}</p></article></body></html>", (0..12).map(|k| sentence(2000 + k)).collect::<String>());
    std::fs::write(
        raw.join("crawl.warc"),
        data::warc::record("response", "http://example.test/", page.as_bytes()),
    )
    .unwrap();
    let config = format!(
        "out_dir = {:?}\nval_fraction = 0.2\n[[source]]\nname = \"books\"\npaths = [{:?}]\n[[source]]\nname = \"web\"\npaths = [{:?}]\nfield = \"body\"\n[[source]]\nname = \"crawl\"\npaths = [{:?}]\n",
        dir.join("prepared"),
        raw.join("books"),
        raw.join("web.jsonl"),
        raw.join("crawl.warc")
    );
    std::fs::write(dir.join("prepare.toml"), config).unwrap();

    let o = frugal(&[
        "data",
        "prepare",
        "--config",
        dir.join("prepare.toml").to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("| books | exact_duplicate | 1 |")
            && out.contains("| books | near_duplicate | 1 |"),
        "{out}"
    );
    assert!(out.contains("| web | bad_json_line | 1 |"), "{out}");
    assert!(
        out.contains("| books | gutenberg header/licence stripped | 8 |"),
        "{out}"
    );
    let prepared = dir.join("prepared");
    let tok = dir.join("tokenizer.json");
    let out = common::tokenize_prepared(&prepared, &tok, 400);
    assert!(out.contains("train: "), "{out}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(prepared.join("shards/manifest.json")).unwrap(),
    )
    .unwrap();
    let docs: u64 = manifest["train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["docs"].as_u64().unwrap())
        .sum::<u64>()
        + manifest["val"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["docs"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(
        docs,
        6 + 5 + 1,
        "six books, five JSONL documents, one web page"
    );
    // A shard from this tokenizer must be refused by another one.
    let other = dir.join("other.json");
    let o = frugal(&[
        "tokenizer",
        "train",
        "--prepared",
        prepared.to_str().unwrap(),
        "--vocab-size",
        "300",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let shard = prepared.join("shards/train_00000.bin");
    let fingerprint =
        u64::from_str_radix(manifest["tokenizer_fingerprint"].as_str().unwrap(), 16).unwrap();
    assert!(data::shards::Shard::open(&shard, Some(fingerprint)).is_ok());
    let other_fp = bpe::Tokenizer::load(&other).unwrap().fingerprint();
    assert!(data::shards::Shard::open(&shard, Some(other_fp))
        .err()
        .unwrap()
        .to_string()
        .contains("another tokenizer"));
    // An empty corpus is an error, not an empty run.
    std::fs::write(
        dir.join("empty.toml"),
        format!(
            "out_dir = {:?}\n[[source]]\nname = \"e\"\npaths = [{:?}]\n",
            dir.join("e"),
            raw.join("crawl.warc")
        ),
    )
    .unwrap();
    std::fs::write(raw.join("crawl.warc"), b"").unwrap();
    let o = frugal(&[
        "data",
        "prepare",
        "--config",
        dir.join("empty.toml").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).1.contains("no training documents"),
        "{:?}",
        text(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}
