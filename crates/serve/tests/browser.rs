//! The annotation page in headless Chromium, driven over the DevTools protocol: it logs in
//! with the token from the link, shows markup in replies as text (and runs none of it), votes
//! with the keyboard, keeps the item when the server is gone, and every vote lands in SQLite.
//! Chromium is the Debian package `chromium`; scripts/test.sh installs it.

mod common;

use common::{store_with_items, temp, SCRIPT};
use serde_json::{json, Value};
use serve::annotate::Server;
use serve::store::{Choice, Store};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Chromium in its own process group, killed with it when dropped.
struct Browser {
    child: Child,
    ws_url: String,
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

fn launch(profile: &std::path::Path) -> Browser {
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
struct Cdp {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    fn connect(browser: &Browser) -> Cdp {
        let host = browser.ws_url["ws://".len()..].split('/').next().unwrap();
        let addr: SocketAddr = host.parse().unwrap();
        let targets = common::get(addr, "/json/list", None).json();
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
    fn call(&mut self, method: &str, params: Value) -> Value {
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

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it evaluates to `want`. While a navigation is under way the document
    /// may have no body yet: an expression that throws then counts as not there yet.
    fn wait_for(&mut self, expr: &str, want: Value) {
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
    fn press(&mut self, key: char) {
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

/// Waits for a just-closed port to bind again.
fn restart(path: &std::path::Path, addr: SocketAddr) -> Server {
    let start = Instant::now();
    loop {
        match Server::start(Store::open(path).unwrap(), &addr.to_string()) {
            Ok(s) => return s,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot serve on {addr} again: {e}"),
        }
    }
}

#[test]
fn the_page_votes_with_the_keyboard_and_never_runs_reply_markup() {
    let dir = temp("browser");
    let (path, tokens) = store_with_items(&dir, 3, &["amy"]);
    let server = Server::start(Store::open(&path).unwrap(), "127.0.0.1:0").unwrap();
    let addr = server.addr;
    let browser = launch(&dir.join("profile"));
    let mut cdp = Cdp::connect(&browser);
    cdp.call("Page.enable", json!({}));
    cdp.call(
        "Page.navigate",
        json!({"url": server.url(Some(&tokens[0]))}),
    );
    cdp.wait_for("document.body.dataset.state", json!("ready"));
    assert_eq!(cdp.eval("document.body.dataset.item"), json!("1"));
    assert_eq!(
        cdp.eval("document.getElementById('who').textContent"),
        json!("amy")
    );
    // The token left the address bar for the session's storage.
    assert_eq!(cdp.eval("location.search"), json!(""));
    assert_eq!(
        cdp.eval("sessionStorage.getItem('frugal-token')"),
        json!(tokens[0])
    );
    // Markup in the prompt and the replies is shown as text and never run.
    let shown = cdp.eval("document.getElementById('responses').textContent");
    assert!(shown.as_str().unwrap().contains(SCRIPT), "{shown}");
    let prompt = cdp.eval("document.getElementById('prompt').textContent");
    assert!(
        prompt
            .as_str()
            .unwrap()
            .contains("Prompt <b>bold</b> & <i>tags</i>"),
        "{prompt}"
    );
    assert_eq!(cdp.eval("typeof window.__pwned"), json!("undefined"));
    assert_eq!(cdp.eval("document.scripts.length"), json!(1));
    assert_eq!(
        cdp.eval(
            "document.querySelectorAll('#prompt b, #responses img, #responses script').length"
        ),
        json!(0)
    );
    // Key 2 prefers the second reply; the page moves on once the server said OK.
    cdp.press('2');
    cdp.wait_for(
        "document.body.dataset.state + ' ' + document.body.dataset.item",
        json!("ready 2"),
    );
    let votes = || Store::open(&path).unwrap().votes().unwrap();
    assert_eq!(votes(), vec![(1, "amy".to_string(), Choice::Response(1))]);
    cdp.press('t');
    cdp.wait_for("document.body.dataset.item", json!("3"));
    assert_eq!(votes()[1], (2, "amy".to_string(), Choice::Tie));
    // With the server gone, a vote fails visibly and the item stays.
    drop(server);
    cdp.press('x');
    cdp.wait_for("document.body.classList.contains('has-error')", json!(true));
    cdp.wait_for(
        "document.body.dataset.state + ' ' + document.body.dataset.item",
        json!("ready 3"),
    );
    let error = cdp.eval("document.getElementById('error').textContent");
    assert!(error.as_str().unwrap().contains("NOT saved"), "{error}");
    assert_eq!(votes().len(), 2);
    // Back up on the same address: the same key now saves the vote, and all is judged.
    let _server = restart(&path, addr);
    cdp.press('x');
    cdp.wait_for("document.body.dataset.state", json!("done"));
    assert_eq!(votes()[2], (3, "amy".to_string(), Choice::BothHarmful));
    cdp.wait_for(
        "document.getElementById('summary').textContent.startsWith('3 items, 3 judged')",
        json!(true),
    );
    assert_eq!(cdp.eval("typeof window.__pwned"), json!("undefined"));
    drop(browser);
    let _ = std::fs::remove_dir_all(&dir);
}
