//! WARC (ISO 28500) web-crawl files, as Common Crawl distributes them: `.warc(.gz)` holds HTTP
//! `response` records (HTML is reduced to its main text), `.wet(.gz)` holds `conversion` records
//! with text already extracted. Other record types (request, metadata, warcinfo) are skipped.

use crate::html::html_to_text;
use crate::jsonl::open_maybe_compressed;
use base::{Error, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// One text-bearing record.
#[derive(Clone, Debug, PartialEq)]
pub struct WarcText {
    /// `WARC-Target-URI`, or the record id when absent.
    pub uri: String,
    pub text: String,
}

/// What happened to the records of a file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WarcStats {
    pub records: usize,
    pub texts: usize,
    /// Records of other types, or responses that are not HTML/text.
    pub skipped: usize,
}

/// What one record may hold: a file is untrusted input, and without bounds one line without a
/// newline, or one record's Content-Length, would be read into memory whole.
#[derive(Clone, Copy, Debug)]
pub struct WarcLimits {
    /// Bytes of one header line (longer: the file is refused as corrupt).
    pub line: u64,
    /// Header lines of one record (more: refused).
    pub headers: usize,
    /// Bytes of one record's content; larger records are skipped, read through unkept.
    pub record: u64,
}

impl Default for WarcLimits {
    fn default() -> Self {
        WarcLimits {
            line: 64 << 10,
            headers: 256,
            record: 64 << 20,
        }
    }
}

/// Reads every record of `path`, calling `f` for each text-bearing one. A truncated or malformed
/// record is an error naming the file and the record's byte offset in the (decompressed) stream.
pub fn read_warc(path: &Path, f: impl FnMut(WarcText)) -> Result<WarcStats> {
    read_warc_within(path, WarcLimits::default(), f)
}

/// `read_warc` under `limits`.
pub fn read_warc_within(
    path: &Path,
    limits: WarcLimits,
    mut f: impl FnMut(WarcText),
) -> Result<WarcStats> {
    let mut r = BufReader::with_capacity(1 << 20, open_maybe_compressed(path)?);
    let mut stats = WarcStats::default();
    let mut offset: u64 = 0;
    let bad = |offset: u64, msg: &str| {
        Error::input(
            format!("{}, record at byte {offset}", path.display()),
            msg.to_string(),
            "the WARC file is truncated or corrupt; re-fetch it",
        )
    };
    loop {
        // Skip blank lines between records.
        let mut line = String::new();
        let start = offset;
        loop {
            line.clear();
            let n = read_line(&mut r, &mut line, limits.line).map_err(|e| bad(offset, &e))?;
            offset += n as u64;
            if n == 0 {
                return Ok(stats);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        if !line.starts_with("WARC/") {
            return Err(bad(
                start,
                &format!("expected a WARC version line, found {:?}", line.trim_end()),
            ));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            line.clear();
            let n = read_line(&mut r, &mut line, limits.line).map_err(|e| bad(start, &e))?;
            offset += n as u64;
            if n == 0 {
                return Err(bad(start, "end of file inside the record headers"));
            }
            if line.trim().is_empty() {
                break;
            }
            if headers.len() == limits.headers {
                return Err(bad(
                    start,
                    &format!("more than {} header lines", limits.headers),
                ));
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |k: &str| {
            headers
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.as_str())
        };
        let len: u64 = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(start, "missing or invalid Content-Length"))?;
        let mut body = Vec::with_capacity(len.min(limits.record) as usize);
        let got = if len > limits.record {
            std::io::copy(&mut (&mut r).take(len), &mut std::io::sink())
        } else {
            (&mut r).take(len).read_to_end(&mut body).map(|n| n as u64)
        }
        .map_err(|e| bad(start, &e.to_string()))?;
        offset += got;
        if (got as u64) < len {
            return Err(bad(
                start,
                &format!("content is {got} bytes, Content-Length says {len}"),
            ));
        }
        stats.records += 1;
        if len > limits.record {
            stats.skipped += 1;
            continue;
        }
        let uri = header("warc-target-uri")
            .or(header("warc-record-id"))
            .unwrap_or("")
            .to_string();
        let text = match header("warc-type") {
            Some("conversion") => Some(String::from_utf8_lossy(&body).into_owned()),
            Some("response") => http_body_text(&body),
            _ => None,
        };
        match text {
            Some(text) if !text.trim().is_empty() => {
                stats.texts += 1;
                f(WarcText { uri, text });
            }
            _ => stats.skipped += 1,
        }
    }
}

/// One line into `line`, at most `max` bytes of it; a longer one is an error.
fn read_line(
    r: &mut impl BufRead,
    line: &mut String,
    max: u64,
) -> std::result::Result<usize, String> {
    let n = r.take(max).read_line(line).map_err(|e| e.to_string())?;
    if n as u64 == max && !line.ends_with('\n') {
        return Err(format!("a line longer than {max} bytes"));
    }
    Ok(n)
}

/// The text of an HTTP response: HTML reduced to its main text, plain text as is, else None.
fn http_body_text(resp: &[u8]) -> Option<String> {
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            resp.windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        })?;
    let head = String::from_utf8_lossy(&resp[..split.0]).to_ascii_lowercase();
    let body = String::from_utf8_lossy(&resp[split.1..]);
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap_or("text/html")
        .trim()
        .to_string();
    if ctype.starts_with("text/html") || ctype.starts_with("application/xhtml") {
        Some(html_to_text(&body))
    } else if ctype.starts_with("text/plain") {
        Some(body.into_owned())
    } else {
        None
    }
}

/// Builds a WARC record (used by tests and fixtures).
pub fn record(kind: &str, uri: &str, content: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {uri}\r\nContent-Length: {}\r\n\r\n",
        content.len()
    )
    .into_bytes();
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn long_lines_many_headers_and_huge_records_are_bounded() {
        let dir = std::env::temp_dir().join(format!("frugal-warc-bounds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let limits = WarcLimits {
            line: 1000,
            headers: 8,
            record: 2000,
        };
        let read = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            let mut texts = vec![];
            read_warc_within(&path, limits, |t| texts.push(t.text)).map(|s| (s, texts))
        };
        // A header line with no end: refused at the bound, not read whole.
        let mut long = b"WARC/1.0\r\nX-Long: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        let e = read("long.warc", &long).err().unwrap().to_string();
        assert!(e.contains("longer than 1000 bytes"), "{e}");
        // Too many headers.
        let mut many = b"WARC/1.0\r\n".to_vec();
        for i in 0..20 {
            many.extend(format!("X-{i}: v\r\n").as_bytes());
        }
        let e = read("many.warc", &many).err().unwrap().to_string();
        assert!(e.contains("more than 8 header lines"), "{e}");
        // A record over the size bound is read through and skipped; the next one is kept.
        let big = record("conversion", "http://big.test/", &[b'x'; 3000]);
        let small = record("conversion", "http://small.test/", b"kept text");
        let (stats, texts) = read("big.warc", &[big, small].concat()).unwrap();
        assert_eq!((stats.records, stats.skipped, stats.texts), (2, 1, 1));
        assert_eq!(texts, vec!["kept text".to_string()]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn reads_responses_and_conversions_from_a_gzipped_fixture() {
        let dir = std::env::temp_dir().join(format!("frugal-warc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><nav>menu</nav><p>Hello from the web.</p></body></html>";
        let records = [
            record("warcinfo", "", b"software: test"),
            record("request", "http://example.test/", b"GET / HTTP/1.1\r\n\r\n"),
            record("response", "http://example.test/", html),
            record(
                "response",
                "http://example.test/img.png",
                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n\x89PNG",
            ),
            record(
                "conversion",
                "http://example.test/wet",
                b"Already extracted text.",
            ),
        ];
        // One gzip member per record, as crawlers write them.
        let mut gz = Vec::new();
        for rec in &records {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(rec).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let raw = records.concat();
        let path = dir.join("crawl.warc.gz");
        std::fs::write(&path, &gz).unwrap();
        let mut texts = vec![];
        let stats = read_warc(&path, |t| texts.push(t)).unwrap();
        assert_eq!(
            stats,
            WarcStats {
                records: 5,
                texts: 2,
                skipped: 3
            }
        );
        assert_eq!(
            texts[0],
            WarcText {
                uri: "http://example.test/".into(),
                text: "Hello from the web.\n".into()
            }
        );
        assert_eq!(texts[1].text, "Already extracted text.");

        let cut = &raw[..raw.len() - 10];
        std::fs::write(dir.join("cut.warc"), cut).unwrap();
        let e = read_warc(&dir.join("cut.warc"), |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cut.warc, record at byte") && e.contains("Content-Length"),
            "{e}"
        );
        std::fs::write(dir.join("junk.warc"), b"not a warc\n").unwrap();
        assert!(read_warc(&dir.join("junk.warc"), |_| {})
            .unwrap_err()
            .to_string()
            .contains("WARC version"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
