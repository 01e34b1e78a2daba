//! The tokenizer stage: train a byte-level BPE tokenizer on text files and measure encoding.
//! Inputs are read line by line (lines keep their newline), the unit the peers train on too.

use base::fs::{list_files, read_text};
use base::{Error, Result};
use bpe::{Tokenizer, Trainer, TrainerOptions};
use std::path::{Path, PathBuf};

/// Starts billing tokenizer training to the ledger beside `out` (the tokenizer.json to be
/// written), after the data stage's entries from `prepared` when it trains on prepared text.
pub fn meter(out: &Path, prepared: Option<&Path>) -> Result<ledger::Meter> {
    let upstream: Vec<&Path> = prepared.into_iter().collect();
    ledger::Meter::start_after(&ledger::dir_of(out), "tokenizer", None, &upstream)
}
use std::time::Instant;

/// Splits text into lines that keep their `\n`.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

pub struct TrainReport {
    pub files: usize,
    pub bytes: usize,
    pub read_s: f64,
    pub count_s: f64,
    pub merge_s: f64,
    pub distinct_pieces: usize,
}

/// Trains on every line of every file under `paths`.
pub fn train_from_files(
    paths: &[PathBuf],
    opts: TrainerOptions,
) -> Result<(Tokenizer, TrainReport)> {
    let t0 = Instant::now();
    let files = list_files(paths)?;
    let texts: Vec<String> = files.iter().map(|f| read_text(f)).collect::<Result<_>>()?;
    let read_s = t0.elapsed().as_secs_f64();
    let docs: Vec<&str> = texts.iter().flat_map(|t| lines(t)).collect();
    train_on(&docs, opts, files.len(), read_s)
}

/// Trains on the training documents of a prepared directory (`train.jsonl.zst`).
pub fn train_from_prepared(
    prepared: &Path,
    opts: TrainerOptions,
) -> Result<(Tokenizer, TrainReport)> {
    let t0 = Instant::now();
    let docs = crate::jsonl::read_docs(&prepared.join("train.jsonl.zst"))?;
    let read_s = t0.elapsed().as_secs_f64();
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    train_on(&texts, opts, 1, read_s)
}

fn train_on(
    docs: &[&str],
    opts: TrainerOptions,
    files: usize,
    read_s: f64,
) -> Result<(Tokenizer, TrainReport)> {
    let t1 = Instant::now();
    let mut trainer = Trainer::new(opts).map_err(|e| {
        Error::input(
            "tokenizer options",
            e.to_string(),
            "check vocab_size and pattern",
        )
    })?;
    trainer.count(docs);
    let count_s = t1.elapsed().as_secs_f64();
    let distinct_pieces = trainer.distinct_pieces();
    let t2 = Instant::now();
    let tok = trainer
        .finish()
        .map_err(|e| Error::input("tokenizer training", e.to_string(), "report this as a bug"))?;
    let bytes = docs.iter().map(|d| d.len()).sum();
    Ok((
        tok,
        TrainReport {
            files,
            bytes,
            read_s,
            count_s,
            merge_s: t2.elapsed().as_secs_f64(),
            distinct_pieces,
        },
    ))
}

/// Documents for encoding benchmarks: the files' lines regrouped into chunks of at least
/// `chunk_bytes` (bench/tokenizer_peers.py builds the same chunks for the peers).
pub fn chunk_documents(texts: &[String], chunk_bytes: usize) -> Vec<&str> {
    let mut out = Vec::new();
    for text in texts {
        let mut start = 0;
        let mut end = 0;
        for line in lines(text) {
            end += line.len();
            if end - start >= chunk_bytes {
                out.push(&text[start..end]);
                start = end;
            }
        }
        if end > start {
            out.push(&text[start..end]);
        }
    }
    out
}

/// Encoding throughput in MB/s (median of `reps` passes over `docs`, batch-parallel), and the
/// number of tokens produced.
pub fn bench_encode(tok: &Tokenizer, docs: &[&str], reps: usize) -> (f64, usize) {
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let mut tokens = 0;
    let mut rates: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            let ids = tok.encode_batch(docs);
            let s = t.elapsed().as_secs_f64();
            tokens = ids.iter().map(Vec::len).sum();
            bytes as f64 / 1e6 / s
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], tokens)
}
