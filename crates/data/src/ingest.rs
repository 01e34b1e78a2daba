//! Reading sources: every input format becomes a stream of `Doc`s with a stable id.
//!
//! Formats: plain text (`text`: one document per file), JSON lines (`jsonl`: one document per
//! line, text in a configurable field; `.gz`/`.zst` decompressed), Parquet and Arrow IPC streams
//! (`parquet`, `arrow`: one document per row of the `field` column), and web crawls (`warc`:
//! WARC responses and WET conversions). `auto` picks by extension. Damaged input — invalid UTF-8,
//! a line that is not JSON, a missing field, a truncated record — is skipped and counted, or
//! with `on_error = "fail"` stops the run with the file and position.

use crate::warc::read_warc;
use crate::Doc;
use base::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    Text,
    Jsonl,
    Warc,
    Parquet,
    /// Arrow IPC stream files (`.arrow`).
    Arrow,
    /// The Brown corpus's tagged text (`word/tag` tokens): tags are stripped, text re-spaced.
    Brown,
    /// Raw e-mail (RFC 822): headers dropped, HTML bodies reduced to text.
    Email,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Count the damaged item in the report and go on.
    #[default]
    Skip,
    /// Stop with an error naming the file and position.
    Fail,
}

/// One `[[source]]` of a prepare config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Short name, used in document ids and the report.
    pub name: String,
    /// Files or directories (walked recursively; hidden entries skipped).
    pub paths: Vec<PathBuf>,
    pub format: Format,
    /// JSONL field holding the text.
    pub field: String,
    /// Decode text files that are not UTF-8 as Latin-1 (older e-texts) instead of skipping them.
    pub latin1_fallback: bool,
    /// Only files with these extensions (without the dot; empty = every file).
    pub extensions: Vec<String>,
    /// Relative sampling weight when mixing (1.0 = every document once; 2.0 = twice; 0.5 = half).
    pub weight: f64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            name: String::new(),
            paths: Vec::new(),
            format: Format::Auto,
            field: "text".into(),
            latin1_fallback: Default::default(),
            extensions: Default::default(),
            weight: 1.0,
        }
    }
}

/// Counts of what reading skipped, by reason.
pub type Skips = BTreeMap<String, usize>;

/// Reads every document of a source, in a deterministic order (sorted files, then position).
pub fn read_source(
    src: &SourceConfig,
    base: &Path,
    on_error: OnError,
    skips: &mut Skips,
) -> Result<Vec<Doc>> {
    let paths: Vec<PathBuf> = src
        .paths
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        })
        .collect();
    let files = base::fs::list_files(&paths).map_err(|e| {
        Error::input(
            format!("source {}", src.name),
            e.to_string(),
            "fix the source's paths (relative to the config file)",
        )
    })?;
    let wanted = |f: &Path| {
        src.extensions.is_empty()
            || f.extension().is_some_and(|e| {
                src.extensions
                    .iter()
                    .any(|x| e.eq_ignore_ascii_case(x.as_str()))
            })
    };
    let mut docs = Vec::new();
    for file in files.into_iter().filter(|f| wanted(f)) {
        let rel = file
            .strip_prefix(base)
            .unwrap_or(&file)
            .display()
            .to_string();
        let mut skip = |reason: &str, err: Error| -> Result<()> {
            match on_error {
                OnError::Fail => Err(err),
                OnError::Skip => {
                    *skips.entry(reason.to_string()).or_insert(0) += 1;
                    Ok(())
                }
            }
        };
        match detect(&file, src.format) {
            Format::Text | Format::Auto => match base::fs::read_text(&file) {
                Ok(text) => docs.push(Doc {
                    id: format!("{}/{rel}", src.name),
                    source: src.name.clone(),
                    text,
                }),
                Err(_) if src.latin1_fallback => {
                    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
                    *skips.entry("decoded_as_latin1".into()).or_insert(0) += 1;
                    let text = bytes.iter().map(|&b| b as char).collect();
                    docs.push(Doc {
                        id: format!("{}/{rel}", src.name),
                        source: src.name.clone(),
                        text,
                    });
                }
                Err(e) => skip("invalid_utf8", e)?,
            },
            Format::Jsonl => {
                let mut bad: Option<Error> = None;
                let res = crate::jsonl::for_each_line(&file, |n, line| {
                    if line.trim().is_empty() {
                        return Ok(());
                    }
                    let at = || format!("{}, line {n}", file.display());
                    match serde_json::from_str::<serde_json::Value>(line) {
                        Ok(v) => match v.get(&src.field).and_then(|t| t.as_str()) {
                            Some(text) => docs.push(Doc {
                                id: format!("{}/{rel}#{n}", src.name),
                                source: src.name.clone(),
                                text: text.to_string(),
                            }),
                            None => {
                                let e = Error::input(
                                    at(),
                                    format!("no string field {:?}", src.field),
                                    "set the source's `field` to the key holding the text",
                                );
                                if let Err(e) = skip("missing_field", e) {
                                    bad = Some(e);
                                }
                            }
                        },
                        Err(err) => {
                            let e = Error::input(
                                at(),
                                format!("not JSON: {err}"),
                                "fix or remove the line, or set on_error = \"skip\"",
                            );
                            if let Err(e) = skip("bad_json_line", e) {
                                bad = Some(e);
                            }
                        }
                    }
                    bad.take().map_or(Ok(()), Err)
                });
                if let Err(e) = res {
                    skip("unreadable_file", e)?;
                }
            }
            Format::Brown => match base::fs::read_text(&file) {
                Ok(text) => docs.push(Doc {
                    id: format!("{}/{rel}", src.name),
                    source: src.name.clone(),
                    text: untag_brown(&text),
                }),
                Err(e) => skip("invalid_utf8", e)?,
            },
            Format::Email => match std::fs::read(&file) {
                // Mail archives mix encodings; undecodable bytes become U+FFFD rather than losing
                // the message.
                Ok(bytes) => docs.push(Doc {
                    id: format!("{}/{rel}", src.name),
                    source: src.name.clone(),
                    text: email_body(&String::from_utf8_lossy(&bytes)),
                }),
                Err(e) => skip("unreadable_file", Error::io(&file, e))?,
            },
            Format::Parquet | Format::Arrow => {
                let mut push = |row: usize, text: &str| {
                    docs.push(Doc {
                        id: format!("{}/{rel}#{row}", src.name),
                        source: src.name.clone(),
                        text: text.to_string(),
                    })
                };
                let res = if detect(&file, src.format) == Format::Parquet {
                    crate::columnar::read_parquet(&file, &src.field, &mut push)
                } else {
                    crate::columnar::read_arrow_stream(&file, &src.field, &mut push)
                };
                if let Err(e) = res {
                    skip("unreadable_file", e)?;
                }
            }
            Format::Warc => {
                let mut k = 0;
                let res = read_warc(&file, |t| {
                    k += 1;
                    docs.push(Doc {
                        id: format!("{}/{rel}#{k}:{}", src.name, t.uri),
                        source: src.name.clone(),
                        text: t.text,
                    });
                });
                match res {
                    Ok(stats) => {
                        *skips.entry("warc_non_text_records".into()).or_insert(0) += stats.skipped
                    }
                    Err(e) => skip("truncated_warc", e)?,
                }
            }
        }
    }
    Ok(docs)
}

/// `The/at jury/nn said/vbd ``/`` no/at ''/''` → `The jury said "no"`: drops the tags, turns
/// the corpus's quote tokens into quotes, and attaches punctuation to its word. One paragraph
/// per input paragraph.
pub fn untag_brown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() / 2);
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let mut line = String::new();
        // True right after an opening quote or bracket: the next word attaches to it.
        let mut just_opened = false;
        for tok in para.split_whitespace() {
            let word = tok.rsplit_once('/').map_or(tok, |(w, _)| w);
            let (text, attach_left) = match word {
                "``" => ("\"", false),
                "''" => ("\"", true),
                w => (w, w.chars().all(|c| ".,;:!?)'".contains(c))),
            };
            if !line.is_empty() && !attach_left && !just_opened {
                line.push(' ');
            }
            line.push_str(text);
            just_opened = word == "``" || word == "(";
        }
        out.push_str(line.trim());
        out.push_str("\n\n");
    }
    out.trim_end().to_string()
}

/// The body of an e-mail: everything after the header block, HTML reduced to its text.
pub fn email_body(raw: &str) -> String {
    let body = raw.split_once("\n\n").map_or("", |(_, b)| b);
    if body.to_ascii_lowercase().contains("<html") {
        crate::html::html_to_text(body)
    } else {
        body.to_string()
    }
}

fn detect(path: &Path, format: Format) -> Format {
    if format != Format::Auto {
        return format;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = name.trim_end_matches(".gz").trim_end_matches(".zst");
    if name.ends_with(".jsonl") || name.ends_with(".json") || name.ends_with(".ndjson") {
        Format::Jsonl
    } else if name.ends_with(".warc") || name.ends_with(".wet") {
        Format::Warc
    } else if name.ends_with(".parquet") {
        Format::Parquet
    } else if name.ends_with(".arrow") {
        Format::Arrow
    } else {
        Format::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_format_and_counts_damage() {
        let dir = std::env::temp_dir().join(format!("frugal-ingest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/a.txt"), "A book.").unwrap();
        std::fs::write(dir.join("src/b.txt"), b"bad \xff utf8").unwrap();
        std::fs::write(
            dir.join("src/c.jsonl"),
            "{\"text\": \"one\"}\nnot json\n{\"other\": 1}\n\n{\"text\": \"two\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("src/d.warc"),
            crate::warc::record("conversion", "u", b"web text"),
        )
        .unwrap();
        let src = SourceConfig {
            name: "mix".into(),
            paths: vec!["src".into()],
            format: Format::Auto,
            field: "text".into(),
            extensions: vec![],
            latin1_fallback: false,
            weight: 1.0,
        };
        let mut skips = Skips::new();
        let docs = read_source(&src, &dir, OnError::Skip, &mut skips).unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["A book.", "one", "two", "web text"]);
        assert_eq!(docs[1].id, "mix/src/c.jsonl#1");
        assert_eq!(
            (
                skips["invalid_utf8"],
                skips["bad_json_line"],
                skips["missing_field"]
            ),
            (1, 1, 1)
        );
        let e = read_source(&src, &dir, OnError::Fail, &mut Skips::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b.txt") && e.contains("invalid UTF-8 at byte 4"),
            "{e}"
        );
        std::fs::remove_file(dir.join("src/b.txt")).unwrap();
        let e = read_source(&src, &dir, OnError::Fail, &mut Skips::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.jsonl, line 2") && e.contains("not JSON"),
            "{e}"
        );
        std::fs::write(dir.join("src/b.txt"), b"caf\xe9").unwrap();
        let latin1 = SourceConfig {
            extensions: vec!["txt".into()],
            latin1_fallback: true,
            ..src
        };
        let mut skips = Skips::new();
        let docs = read_source(&latin1, &dir, OnError::Fail, &mut skips).unwrap();
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["A book.", "café"]
        );
        assert_eq!(skips["decoded_as_latin1"], 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn email_headers_are_dropped() {
        let mail = "From: a@b\nSubject: hi\n\nHello there.\nBye.\n";
        assert_eq!(email_body(mail), "Hello there.\nBye.\n");
        assert_eq!(
            email_body("Subject: x\n\n<html><body><p>Hi</p></body></html>"),
            "Hi\n"
        );
        assert_eq!(email_body("no body"), "");
    }

    #[test]
    fn brown_tags_are_stripped() {
        let tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, it/pps said/vbd ./.\n\n\n\tAtlanta's/np$ mayor/nn (/( Hartsfield/np )/) spoke/vbd ./.\n";
        assert_eq!(
            untag_brown(tagged),
            "The jury said \"no evidence\", it said.\n\nAtlanta's mayor (Hartsfield) spoke."
        );
    }
}
