//! `frugal data prepare`: sources → cleaned, filtered, deduplicated, mixed documents.
//!
//! Order matters and follows FineWeb/Gopher practice: normalise and strip boilerplate first (so
//! filters see the text a model would), filter for quality and toxicity, remove exact then near
//! duplicates (the first document in source order is kept), split off validation documents by
//! a hash of their id (so the split never changes when sources are added), and only then mix
//! sources by weight, so that an upsampled document never straddles train and validation.

use crate::clean::{normalize, strip_boilerplate_lines, strip_gutenberg};
use crate::dedup::{exact_key, NearDedup, NearDupConfig};
use crate::filters::{check_quality, QualityConfig, Toxicity};
use crate::ingest::{read_source, OnError, Skips, SourceConfig};
use crate::jsonl::JsonlWriter;
use crate::Doc;
use base::config::Validate;
use base::progress::bar;
use base::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Fraction of documents held out for validation.
    pub val_fraction: f64,
    /// Seed of the validation split and of the mixing order.
    pub seed: u64,
    pub on_error: OnError,
    pub quality: QualityConfig,
    pub toxicity: ToxicityConfig,
    pub near_dup: NearDupConfig,
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            out_dir: PathBuf::new(),
            val_fraction: 0.01,
            seed: Default::default(),
            on_error: OnError::Skip,
            quality: Default::default(),
            toxicity: Default::default(),
            near_dup: Default::default(),
            sources: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToxicityConfig {
    pub enabled: bool,
    /// A word list (one word per line) replacing the built-in one.
    pub word_list: Option<PathBuf>,
}

impl Default for ToxicityConfig {
    fn default() -> Self {
        ToxicityConfig {
            enabled: true,
            word_list: None,
        }
    }
}

impl PrepareConfig {
    pub fn load(path: &Path) -> Result<Self> {
        base::config::load(path, &[])
    }
}

impl Validate for PrepareConfig {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.out_dir.as_os_str().is_empty() {
            return Err(("out_dir", "is not set: name the output directory".into()));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(("val_fraction", "must be in [0, 1), e.g. 0.01".into()));
        }
        if self.sources.is_empty() {
            return Err(("source", "needs [[source]] tables".into()));
        }
        for s in &self.sources {
            if s.name.is_empty() || s.paths.is_empty() {
                return Err(("source", format!("{:?} lacks its name or paths", s.name)));
            }
            if !(s.weight >= 0.0 && s.weight.is_finite()) {
                return Err((
                    "source.weight",
                    format!("{} of {:?} is negative", s.weight, s.name),
                ));
            }
        }
        Ok(())
    }
}

/// Per-source accounting, written to report.json and report.md.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceReport {
    pub docs_in: usize,
    pub bytes_in: usize,
    /// Documents removed, by reason.
    pub removed: BTreeMap<String, usize>,
    /// Items skipped while reading (damaged input), by reason.
    pub read_skips: Skips,
    pub gutenberg_stripped: usize,
    pub boilerplate_lines: usize,
    pub docs_kept: usize,
    pub bytes_kept: usize,
    pub train_docs: usize,
    pub val_docs: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PrepareReport {
    pub sources: BTreeMap<String, SourceReport>,
    pub train_docs: usize,
    pub val_docs: usize,
    pub train_bytes: usize,
    pub val_bytes: usize,
    pub seconds: f64,
}

/// A 64-bit FNV-1a hash: stable across runs and platforms (the split must never move).
fn stable_hash(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf29ce484222325u64 ^ seed.wrapping_mul(0x9E3779B97F4A7C15);
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    // Final avalanche (SplitMix64) so that low bits are well mixed.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d049bb133111eb);
    h ^ (h >> 31)
}

fn unit(seed: u64, s: &str) -> f64 {
    (stable_hash(seed, s) >> 11) as f64 / (1u64 << 53) as f64
}

pub fn prepare(cfg: &PrepareConfig, base: &Path) -> Result<PrepareReport> {
    let t0 = std::time::Instant::now();
    let out_dir = if cfg.out_dir.is_absolute() {
        cfg.out_dir.clone()
    } else {
        base.join(&cfg.out_dir)
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let mut meter = ledger::Meter::start(&out_dir, "data", None)?;
    let toxicity = match (&cfg.toxicity.enabled, &cfg.toxicity.word_list) {
        (false, _) => None,
        (true, None) => Some(Toxicity::builtin()),
        (true, Some(p)) => {
            let p = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            Some(Toxicity::from_file(&p).map_err(|e| {
                Error::input(
                    p.display().to_string(),
                    e.to_string(),
                    "one word per line; # starts a comment",
                )
            })?)
        }
    };
    let mut report = PrepareReport::default();

    // 1. Read, clean and filter each source.
    let mut kept: Vec<Doc> = Vec::new();
    for src in &cfg.sources {
        let mut rep = SourceReport::default();
        let docs = read_source(src, base, cfg.on_error, &mut rep.read_skips)?;
        rep.docs_in = docs.len();
        rep.bytes_in = docs.iter().map(|d| d.text.len()).sum();
        let pb = bar(docs.len() as u64, &format!("clean {}", src.name));
        let results: Vec<(Result<Doc, &'static str>, bool, usize)> = docs
            .into_par_iter()
            .map(|mut doc| {
                let mut gutenberg = false;
                if let Some(body) = strip_gutenberg(&doc.text) {
                    doc.text = body.to_string();
                    gutenberg = true;
                }
                let (text, dropped_lines) = strip_boilerplate_lines(&normalize(&doc.text));
                doc.text = text;
                let verdict = check_quality(&doc.text, &cfg.quality)
                    .map_err(|r| r.as_str())
                    .and_then(|_| {
                        toxicity
                            .as_ref()
                            .map_or(Ok(()), |t| t.check(&doc.text).map_err(|r| r.as_str()))
                    });
                pb.inc(1);
                (verdict.map(|_| doc), gutenberg, dropped_lines)
            })
            .collect();
        pb.finish_and_clear();
        for (res, gutenberg, lines) in results {
            rep.gutenberg_stripped += gutenberg as usize;
            rep.boilerplate_lines += lines;
            match res {
                Ok(doc) => kept.push(doc),
                Err(reason) => *rep.removed.entry(reason.to_string()).or_insert(0) += 1,
            }
        }
        report.sources.insert(src.name.clone(), rep);
    }

    // 2. Exact, then near-duplicate removal, in source order (the first copy is kept).
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(kept.len());
    for doc in kept {
        if seen.insert(exact_key(&doc.text)) {
            unique.push(doc);
        } else {
            removed(&mut report, &doc.source, "exact_duplicate");
        }
    }
    let dedup = NearDedup::new(cfg.near_dup.clone());
    let pb = bar(unique.len() as u64, "minhash");
    let sigs: Vec<_> = unique
        .par_iter()
        .map(|d| {
            pb.inc(1);
            dedup.signature(&d.text)
        })
        .collect();
    pb.finish_and_clear();
    let mut dedup = dedup;
    let mut docs = Vec::with_capacity(unique.len());
    for (i, (doc, sig)) in unique.into_iter().zip(&sigs).enumerate() {
        match dedup.check_and_insert(i, sig) {
            None => docs.push(doc),
            Some(_) => removed(&mut report, &doc.source, "near_duplicate"),
        }
    }

    // 3. Validation split by document, then mixing by weight, then a seeded shuffle.
    let weights: BTreeMap<&str, f64> = cfg
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.weight))
        .collect();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for doc in docs {
        let rep = report
            .sources
            .get_mut(&doc.source)
            .expect("every document's source has a report");
        rep.docs_kept += 1;
        rep.bytes_kept += doc.text.len();
        if unit(cfg.seed, &doc.id) < cfg.val_fraction {
            rep.val_docs += 1;
            val.push(doc);
        } else {
            let w = weights[doc.source.as_str()];
            // floor(w) copies, plus one more with probability frac(w), decided by the id's hash.
            let copies = w.floor() as usize + (unit(cfg.seed ^ 1, &doc.id) < w.fract()) as usize;
            rep.train_docs += copies;
            for _ in 1..copies {
                train.push(doc.clone());
            }
            if copies > 0 {
                train.push(doc);
            }
        }
    }
    let mut keyed: Vec<(u64, usize, Doc)> = train
        .into_iter()
        .enumerate()
        .map(|(i, d)| (stable_hash(cfg.seed ^ 2, &format!("{}#{i}", d.id)), i, d))
        .collect();
    keyed.sort_unstable_by_key(|&(h, i, _)| (h, i));
    let train: Vec<Doc> = keyed.into_iter().map(|(_, _, d)| d).collect();

    // 4. Write: the report always (it explains an empty result), the documents only if any.
    report.train_docs = train.len();
    report.val_docs = val.len();
    report.train_bytes = train.iter().map(|d| d.text.len()).sum();
    report.val_bytes = val.iter().map(|d| d.text.len()).sum();
    report.seconds = t0.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::input("report", e.to_string(), "report this as a bug"))?;
    std::fs::write(out_dir.join("report.json"), json)
        .map_err(|e| Error::io(out_dir.join("report.json"), e))?;
    std::fs::write(out_dir.join("report.md"), report.to_markdown())
        .map_err(|e| Error::io(out_dir.join("report.md"), e))?;
    if train.is_empty() {
        return Err(Error::input(
            out_dir.display().to_string(),
            "no training documents survived cleaning, filtering and deduplication",
            format!(
                "check the sources' paths and formats against the removal counts in {}",
                out_dir.join("report.md").display()
            ),
        ));
    }
    for (name, docs) in [("train", &train), ("val", &val)] {
        let mut w = JsonlWriter::create(&out_dir.join(format!("{name}.jsonl.zst")))?;
        for d in docs {
            w.write(d)?;
        }
        w.finish()?;
    }
    meter.detail(format!(
        "{} documents kept, {:.1} MB",
        report.train_docs + report.val_docs,
        (report.train_bytes + report.val_bytes) as f64 / 1e6
    ));
    meter.finish()?;
    Ok(report)
}

fn removed(report: &mut PrepareReport, source: &str, reason: &str) {
    if let Some(rep) = report.sources.get_mut(source) {
        *rep.removed.entry(reason.to_string()).or_insert(0) += 1;
    }
}

impl PrepareReport {
    /// A table per source of documents in, removed (by reason) and kept.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("# Data preparation report\n\n| source | docs in | MB in | removed | kept | MB kept | train | val |\n|---|---|---|---|---|---|---|---|\n");
        for (name, r) in &self.sources {
            let removed: usize = r.removed.values().sum();
            s += &format!(
                "| {name} | {} | {:.2} | {removed} | {} | {:.2} | {} | {} |\n",
                r.docs_in,
                r.bytes_in as f64 / 1e6,
                r.docs_kept,
                r.bytes_kept as f64 / 1e6,
                r.train_docs,
                r.val_docs
            );
        }
        s += "\n## Removed, by reason\n\n| source | reason | documents |\n|---|---|---|\n";
        for (name, r) in &self.sources {
            for (reason, n) in &r.removed {
                s += &format!("| {name} | {reason} | {n} |\n");
            }
        }
        s += "\n## Skipped while reading, and cleaning\n\n| source | what | count |\n|---|---|---|\n";
        for (name, r) in &self.sources {
            for (reason, n) in &r.read_skips {
                s += &format!("| {name} | {reason} | {n} |\n");
            }
            s += &format!(
                "| {name} | gutenberg header/licence stripped | {} |\n",
                r.gutenberg_stripped
            );
            s += &format!(
                "| {name} | boilerplate lines dropped | {} |\n",
                r.boilerplate_lines
            );
        }
        s += &format!(
            "\nTotal: {} train documents ({:.1} MB), {} validation documents ({:.1} MB), {:.1} s.\n",
            self.train_docs,
            self.train_bytes as f64 / 1e6,
            self.val_docs,
            self.val_bytes as f64 / 1e6,
            self.seconds
        );
        s
    }
}
