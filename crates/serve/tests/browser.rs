//! The annotation page in headless Chromium, driven over the DevTools protocol: it logs in
//! with the token from the link, shows markup in replies as text (and runs none of it), votes
//! with the keyboard, keeps the item when the server is gone, and every vote lands in SQLite.
//! Chromium is the Debian package `chromium`; scripts/test.sh installs it.

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use cdp::{launch, Cdp};
use common::{store_with_items, temp, SCRIPT};
use serde_json::json;
use serve::annotate::Server;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use store::{Choice, Store};

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
    let (path, tokens) = store_with_items(&dir, 3, &["amy", "bob"]);
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
    // A link carrying another annotator's token does not log this tab in silently (login
    // CSRF): amy stays until she chooses to switch.
    cdp.call(
        "Page.navigate",
        json!({"url": server.url(Some(&tokens[1]))}),
    );
    cdp.wait_for("document.body.dataset.state", json!("ready"));
    assert_eq!(
        cdp.eval("document.getElementById('who').textContent"),
        json!("amy")
    );
    assert_eq!(
        cdp.eval("document.getElementById('switch').hidden"),
        json!(false)
    );
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
