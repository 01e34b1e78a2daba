//! Helpers shared by the server's tests: a scratch store with items and annotators, and a
//! minimal HTTP/1.1 client over `std::net::TcpStream` (one request per connection).
#![allow(dead_code)] // each test binary uses a subset

use data::chat::{Conversation, Message, Role};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::Store;

/// What a response to show as text, never run, looks like.
pub const SCRIPT: &str =
    "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";

/// An empty scratch directory named for the test and the process.
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("frugal-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A store at `dir/prefs.sqlite` with `items` two-reply items (item 1's second reply is
/// [`SCRIPT`], its prompt holds markup too) and one annotator per name; returns the path and
/// the annotators' tokens.
pub fn store_with_items(dir: &Path, items: usize, names: &[&str]) -> (PathBuf, Vec<String>) {
    let path = dir.join("prefs.sqlite");
    let mut s = Store::open(&path).unwrap();
    for i in 0..items {
        let text = if i == 0 {
            "Prompt <b>bold</b> & <i>tags</i>".to_string()
        } else {
            format!("Prompt number {i}")
        };
        let conv = Conversation {
            messages: vec![Message::text(Role::User, text)],
        };
        let (p, _) = s.add_prompt(&conv, "test").unwrap();
        let second = if i == 0 {
            SCRIPT.to_string()
        } else {
            format!("second reply to {i}")
        };
        s.add_sampled(
            p,
            &[
                (format!("first reply to {i}"), "sft:step-1".into()),
                (second, "sft:step-1".into()),
            ],
        )
        .unwrap();
    }
    let tokens = names.iter().map(|n| s.add_annotator(n).unwrap()).collect();
    (path, tokens)
}

/// Marks every item as shown to every annotator, as if each had paged through them all: what
/// tests that vote on items by id need (the store refuses votes on items never served).
pub fn serve_all(path: &Path) {
    let s = Store::open(path).unwrap();
    let annotators = s.stats().unwrap().annotators.len() as i64;
    let items = s.stats().unwrap().items as i64;
    for a in 1..=annotators {
        for i in 1..=items {
            s.mark_served(i, a).unwrap();
        }
    }
}

/// A response: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    // Read the head, then the body by Content-Length when there is one (some servers, such as
    // Chromium's DevTools endpoint, keep the connection open despite `Connection: close`).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if raw.len() >= end + 4 + len {
                    raw.truncate(end + 4 + len);
                    break;
                }
            }
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8(raw.to_vec()).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("a chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    request(addr, "GET", path, token, None)
}

pub fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Reply {
    request(addr, "POST", path, token, Some(body))
}

/// Sends raw bytes as a request and reads the response until the server closes.
pub fn raw_request(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    parse(&out)
}

/// The `data:` payloads of a server-sent event stream, in order.
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// Trickles `head` (cycled, at most `bytes` of it) to a new connection one byte at a time,
/// reading between bytes, and calls `between` after each; stops when the server closes the
/// connection (true) or `between` returns false or the bytes run out (false).
pub fn trickled_until_closed(
    addr: SocketAddr,
    head: &[u8],
    bytes: usize,
    mut between: impl FnMut() -> bool,
) -> bool {
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for b in head.iter().cycle().take(bytes) {
        if slow.write_all(&[*b]).is_err() {
            return true;
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
        if !between() {
            return false;
        }
    }
    false
}
