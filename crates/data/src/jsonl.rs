//! JSON-lines files, plain or compressed (`.gz`, `.zst`), read line by line and written as zstd.

use base::{Error, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// Opens a file, transparently decompressing `.gz` and `.zst`.
pub fn open_maybe_compressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let name = path.to_string_lossy();
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, e))?)
    } else {
        Box::new(file)
    })
}

/// Calls `f(line_number, line)` for each line (1-based). A read error — a truncated or corrupt
/// compressed stream, invalid UTF-8 — is reported with the line where it happened.
pub fn for_each_line(path: &Path, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    let reader = BufReader::with_capacity(1 << 20, open_maybe_compressed(path)?);
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| {
            Error::input(
                format!("{}, line {}", path.display(), i + 1),
                e.to_string(),
                "the file is truncated, corrupt or not UTF-8; re-fetch or re-encode it",
            )
        })?;
        f(i + 1, &line)?;
    }
    Ok(())
}

/// Writes serialisable records as zstd-compressed JSON lines; the file appears (renamed from a
/// temporary name) only when `finish` succeeds.
pub struct JsonlWriter {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    enc: zstd::stream::write::Encoder<'static, std::io::BufWriter<std::fs::File>>,
    pub records: usize,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let enc = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), 3)
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            tmp,
            enc,
            records: 0,
        })
    }

    pub fn write<T: serde::Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| {
            Error::input(
                self.path.display().to_string(),
                e.to_string(),
                "report this as a bug",
            )
        })?;
        line.push(b'\n');
        self.enc
            .write_all(&line)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.records += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<usize> {
        let buf = self.enc.finish().map_err(|e| Error::io(&self.tmp, e))?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.records)
    }
}

/// Reads the documents of a prepared `*.jsonl.zst` file.
pub fn read_docs(path: &Path) -> Result<Vec<crate::Doc>> {
    let mut docs = Vec::new();
    for_each_line(path, |n, line| {
        let doc = serde_json::from_str(line).map_err(|e| {
            Error::input(
                format!("{}, line {n}", path.display()),
                format!("not a document record: {e}"),
                "re-run `frugal data prepare`",
            )
        })?;
        docs.push(doc);
        Ok(())
    })?;
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Doc;

    #[test]
    fn zstd_round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("frugal-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docs.jsonl.zst");
        let mut w = JsonlWriter::create(&path).unwrap();
        let docs: Vec<Doc> = (0..500)
            .map(|i| Doc {
                id: format!("s/f#{i}"),
                source: "s".into(),
                text: format!("text {i} ünï\nline"),
            })
            .collect();
        for d in &docs {
            w.write(d).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 500);
        assert_eq!(read_docs(&path).unwrap(), docs);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(dir.join("cut.jsonl.zst"), &bytes[..bytes.len() / 2]).unwrap();
        let e = read_docs(&dir.join("cut.jsonl.zst"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cut.jsonl.zst, line") && e.contains("HINT"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
