//! The chat page in headless Chromium: it finds the model with the key typed in, streams a
//! reply that equals the API's own answer, keeps the conversation across turns, shows markup as
//! text, and its stop button ends a generation on the server too.

#[path = "common/cdp.rs"]
mod cdp;
mod common;
#[path = "common/serving.rs"]
mod serving;

use cdp::{launch, Cdp};
use common::{get, post, temp};
use serde_json::{json, Value};
use serve::scheduler::Limits;
use serving::{start, Setup, KEY};
use std::time::Duration;

/// Types `text` into the focused prompt and presses Enter.
fn send(cdp: &mut Cdp, text: &str) {
    cdp.eval("document.getElementById('prompt').focus()");
    cdp.call("Input.insertText", json!({"text": text}));
    for kind in ["keyDown", "keyUp"] {
        cdp.call(
            "Input.dispatchKeyEvent",
            json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
        );
    }
}

fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let m = get(addr, "/metrics", Some(KEY)).body;
    m.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_page_streams_keeps_history_and_stops() {
    let server = start(Setup {
        limits: Limits {
            step_delay: Duration::from_millis(10),
            ..Limits::default()
        },
        ..Setup::default()
    });
    let addr = server.addr();
    let dir = temp("chat-page");
    let browser = launch(&dir.join("profile"));
    let mut cdp = Cdp::connect(&browser);
    cdp.call("Page.enable", json!({}));
    cdp.call("Page.navigate", json!({"url": server.url() + "/"}));
    // Without the key the page says why it cannot list the model; with it, it can.
    cdp.wait_for(
        "document.getElementById('model').textContent.includes('no API key')",
        json!(true),
    );
    cdp.eval(&format!(
        "(() => {{ const k = document.getElementById('key'); k.value = '{KEY}'; k.dispatchEvent(new Event('change')); }})()"
    ));
    cdp.wait_for(
        "document.getElementById('model').textContent.startsWith('tiny')",
        json!(true),
    );
    // Greedy, so the page's reply can be checked against the API's; short, so that two turns
    // fit the tiny context.
    cdp.eval("(() => { const t = document.getElementById('temperature'); t.value = '0'; t.dispatchEvent(new Event('input')); })()");
    cdp.eval("document.getElementById('max-tokens').value = '20'");
    let first = "Hello <b>there</b> & <script>window.__pwned=1</script>";
    send(&mut cdp, first);
    let finished = "(() => { const m = document.querySelectorAll('.msg.assistant'); return m.length + ':' + (m[m.length - 1]?.dataset.finish ?? ''); })()";
    let done = |cdp: &mut Cdp, n: usize| {
        let t0 = std::time::Instant::now();
        loop {
            let s = cdp.eval(finished);
            let s = s.as_str().unwrap();
            if s == format!("{n}:stop") || s == format!("{n}:length") {
                return;
            }
            assert_ne!(
                s,
                format!("{n}:error"),
                "{}",
                cdp.eval("[...document.querySelectorAll('.msg.error')].pop().textContent")
            );
            assert!(t0.elapsed() < Duration::from_secs(60), "reply {n}: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    done(&mut cdp, 1);
    assert_eq!(
        cdp.eval("document.querySelector('.msg.user').textContent"),
        json!(first)
    );
    assert_eq!(
        cdp.eval("document.querySelectorAll('#log b, #log script').length"),
        json!(0)
    );
    assert_eq!(cdp.eval("typeof window.__pwned"), json!("undefined"));
    // The reply's text (its first child) is what the API answers to the same conversation.
    let reply = |cdp: &mut Cdp, i: usize| -> String {
        cdp.eval(&format!(
            "document.querySelectorAll('.msg.assistant')[{i}].firstChild?.textContent ?? ''"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let r1 = reply(&mut cdp, 0);
    let api = |messages: Value| -> String {
        let r = post(
            addr,
            "/v1/chat/completions",
            Some(KEY),
            &json!({"model": "tiny", "messages": messages, "temperature": 0, "max_tokens": 20})
                .to_string(),
        );
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(r1, api(json!([{"role": "user", "content": first}])));
    // The second turn is asked with the first in its history.
    send(&mut cdp, "and then?");
    done(&mut cdp, 2);
    let r2 = reply(&mut cdp, 1);
    assert_eq!(
        r2,
        api(json!([
            {"role": "user", "content": first},
            {"role": "assistant", "content": r1},
            {"role": "user", "content": "and then?"},
        ]))
    );
    // Stop: the page ends the reply, and the server ends the generation.
    let cancelled = metric(addr, "frugal_requests_cancelled_total");
    cdp.eval("document.getElementById('reset').click()");
    assert_eq!(
        cdp.eval("document.querySelectorAll('.msg').length"),
        json!(0)
    );
    cdp.eval("(() => { const t = document.getElementById('temperature'); t.value = '1.5'; t.dispatchEvent(new Event('input')); })()");
    cdp.eval("document.getElementById('max-tokens').value = ''");
    // A sampled reply may end on its own before the click lands, or just after the page stopped
    // it but before the server saw the closed stream; then ask again.
    let (mut stopped, mut ended) = (false, false);
    for attempt in 0..6 {
        send(&mut cdp, "tell me everything");
        cdp.wait_for(
            &format!(
                "document.querySelectorAll('.msg.assistant').length === {}",
                attempt + 1
            ),
            json!(true),
        );
        cdp.wait_for(
            "(document.querySelector('.msg.assistant:last-of-type')?.textContent.length ?? 0) > 0 || !document.body.classList.contains('busy')",
            json!(true),
        );
        cdp.eval("document.getElementById('stop').click()");
        cdp.wait_for("document.body.classList.contains('busy')", json!(false));
        let finish =
            cdp.eval("[...document.querySelectorAll('.msg.assistant')].pop().dataset.finish");
        if finish != json!("stopped") {
            continue;
        }
        stopped = true;
        let t0 = std::time::Instant::now();
        while !ended && t0.elapsed() < Duration::from_secs(10) {
            ended = metric(addr, "frugal_requests_cancelled_total") > cancelled;
            std::thread::sleep(Duration::from_millis(50));
        }
        if ended {
            break;
        }
    }
    assert!(stopped, "no reply was still running when stop was clicked");
    assert!(ended, "the server never ended a stopped generation");
    assert_eq!(
        cdp.eval("[...document.querySelectorAll('.meta')].pop().textContent.startsWith('stopped')"),
        json!(true)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
