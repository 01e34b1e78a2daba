//! Headless Chromium driven over the DevTools protocol, for the pages' browser tests
//! (included by path, next to `common`, by the tests that drive a browser).
//! Chromium is the Debian package `chromium`; scripts/test.sh installs it.
#![allow(dead_code)] // each test binary uses a subset

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Chromium in its own process group, killed with it when dropped.
pub struct Browser {
    child: Child,
    pub ws_url: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: signalling the process group this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub fn launch(profile: &std::path::Path) -> Browser {
    let spawned = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            "about:blank",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot start chromium ({e}); the browser test needs the Debian package `chromium`: run scripts/test.sh, which installs it"
        ),
    };
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr; the rest of
    // stderr is drained by a thread so that Chromium never blocks on a full pipe.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("ws://") {
                let _ = tx.send(line[i..].trim().to_string());
            }
        }
    });
    let mut browser = Browser {
        child,
        ws_url: String::new(),
    };
    browser.ws_url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("chromium prints its DevTools address within a minute");
    browser
}

/// A DevTools connection to one page.
pub struct Cdp {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    pub fn connect(browser: &Browser) -> Cdp {
        let host = browser.ws_url["ws://".len()..].split('/').next().unwrap();
        let addr: SocketAddr = host.parse().unwrap();
        let targets = crate::common::get(addr, "/json/list", None).json();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("chromium opened a page");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let (ws, _) = tungstenite::connect(url).expect("the DevTools websocket opens");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        Cdp { ws, next_id: 1 }
    }

    /// Calls a method and returns its result; events in between are skipped.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).unwrap();
        loop {
            let Message::Text(text) = self.ws.read().expect("a DevTools message") else {
                continue;
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it evaluates to `want`. While a navigation is under way the document
    /// may have no body yet: an expression that throws then counts as not there yet.
    pub fn wait_for(&mut self, expr: &str, want: Value) {
        let start = Instant::now();
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (e) {{ return null; }} }})()");
        loop {
            let got = self.eval(&guarded);
            if got == want {
                return;
            }
            let error = self.eval("document.getElementById('error')?.textContent ?? null");
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{expr} stayed {got}, not {want}; page error: {error}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses and releases a printable key.
    pub fn press(&mut self, key: char) {
        let code = if key.is_ascii_digit() {
            format!("Digit{key}")
        } else {
            format!("Key{}", key.to_ascii_uppercase())
        };
        let vk = key.to_ascii_uppercase() as u32;
        for kind in ["keyDown", "keyUp"] {
            let mut p = json!({"type": kind, "key": key.to_string(), "code": code,
                               "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk});
            if kind == "keyDown" {
                p["text"] = json!(key.to_string());
            }
            self.call("Input.dispatchKeyEvent", p);
        }
    }
}
