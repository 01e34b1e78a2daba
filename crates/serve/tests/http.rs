//! The annotation server over real HTTP on an ephemeral port: authentication, errors,
//! idempotent votes, escaping, and many annotators voting at once.

mod common;

use common::{get, post, serve_all, store_with_items, temp, trickled_until_closed, SCRIPT};
use serve::annotate::Server;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use store::{Choice, Store};

#[test]
fn every_api_call_needs_a_valid_token() {
    let dir = temp("auth");
    let (path, tokens) = store_with_items(&dir, 2, &["amy"]);
    let server = Server::start(Store::open(&path).unwrap(), "127.0.0.1:0").unwrap();
    let a = server.addr;
    let vote = r#"{"item": 1, "choice": 0}"#;
    for token in [None, Some("wrong"), Some(&tokens[0][..31]), Some("")] {
        for r in [
            get(a, "/api/me", token),
            get(a, "/api/next", token),
            get(a, "/api/stats", token),
            post(a, "/api/vote", token, vote),
            post(a, "/api/vote", token, "not json"),
        ] {
            assert_eq!(r.status, 401, "{token:?}: {r:?}");
            assert!(r.json()["error"].as_str().unwrap().contains("token"));
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(Store::open(&path).unwrap().votes().unwrap().len(), 0);
    let me = get(a, "/api/me", Some(&tokens[0])).json();
    assert_eq!(me["name"], "amy");
    assert_eq!(me["progress"]["total"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn votes_are_idempotent_final_and_errors_are_json() {
    let dir = temp("votes");
    let (path, tokens) = store_with_items(&dir, 2, &["amy", "bob"]);
    serve_all(&path);
    let server = Server::start(Store::open(&path).unwrap(), "127.0.0.1:0").unwrap();
    let (a, amy) = (server.addr, Some(tokens[0].as_str()));
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"item": 99, "choice": 0}"#, 404, "no item 99"),
        (r#"{"item": 1, "choice": 2}"#, 400, "has 2 responses"),
        (r#"{"item": 1, "choice": "best"}"#, 400, "choice"),
        (r#"{"item": 1}"#, 400, "\"choice\""),
        (r#"{"choice": 0}"#, 400, "\"item\""),
        (r#"{"item": "1", "choice": 0}"#, 400, "integer"),
        ("{not json", 400, "not JSON"),
        ("", 400, "not JSON"),
    ];
    for (body, status, msg) in cases {
        let r = post(a, "/api/vote", amy, body);
        assert_eq!(r.status, *status, "{body}: {r:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.json()["error"].as_str().unwrap().contains(msg), "{r:?}");
    }
    // The voter comes from the token: a field naming someone else is ignored.
    let body = r#"{"item": 1, "choice": 1, "annotator": "bob"}"#;
    let r = post(a, "/api/vote", amy, body);
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("recorded"))
    );
    assert_eq!(r.json()["progress"]["voted"], 1);
    let r = post(a, "/api/vote", amy, body);
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("unchanged"))
    );
    let r = post(a, "/api/vote", amy, r#"{"item": 1, "choice": "tie"}"#);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().contains("final"));
    let votes = Store::open(&path).unwrap().votes().unwrap();
    assert_eq!(votes, vec![(1, "amy".to_string(), Choice::Response(1))]);
    // bob is now offered the item amy judged; stats see one vote.
    let next = get(a, "/api/next", Some(&tokens[1])).json();
    assert_eq!(next["item"]["id"], 1);
    let stats = get(a, "/api/stats", amy).json();
    assert_eq!(
        (stats["votes"].as_u64(), stats["items"].as_u64()),
        (Some(1), Some(2))
    );
    // Unknown paths and methods.
    assert_eq!(get(a, "/nope", amy).status, 404);
    assert_eq!(get(a, "/api/vote", amy).status, 405);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_page_holds_no_user_text_and_responses_come_as_json() {
    let dir = temp("escape");
    let (path, tokens) = store_with_items(&dir, 1, &["amy"]);
    let server = Server::start(Store::open(&path).unwrap(), "127.0.0.1:0").unwrap();
    let page = get(server.addr, &format!("/?token={}", tokens[0]), None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'sha256-") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    for text in [
        "__pwned",
        "onerror",
        "<b>bold</b>",
        "first reply",
        &tokens[0],
    ] {
        assert!(!page.body.contains(text), "the page holds {text:?}");
    }
    let next = get(server.addr, "/api/next", Some(&tokens[0]));
    assert_eq!(next.header("content-type"), Some("application/json"));
    let item = &next.json()["item"];
    assert_eq!(item["responses"][1], SCRIPT);
    assert_eq!(item["prompt"][0]["role"], "user");
    assert_eq!(
        item["prompt"][0]["content"],
        "Prompt <b>bold</b> & <i>tags</i>"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_annotators_voting_at_once_lose_and_duplicate_nothing() {
    const ANNOTATORS: usize = 16;
    const ITEMS: usize = 40;
    let dir = temp("concurrent");
    let names: Vec<String> = (0..ANNOTATORS).map(|i| format!("ann{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (path, tokens) = store_with_items(&dir, ITEMS, &refs);
    serve_all(&path);
    let server = Server::start(Store::open(&path).unwrap(), "127.0.0.1:0").unwrap();
    let addr = server.addr;
    // Annotator i's choice on item j (ids start at 1): a fixed mix of the three kinds.
    let choice = |i: usize, j: usize| match (i * 7 + j * 3) % 5 {
        0 | 1 => serde_json::json!(0),
        2 | 3 => serde_json::json!(1),
        _ => serde_json::json!("tie"),
    };
    // Two threads per annotator submit all of that annotator's votes, in different orders:
    // every vote arrives twice, often at the same moment.
    let threads = 2 * ANNOTATORS;
    let barrier = Arc::new(Barrier::new(threads));
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (token, barrier) = (tokens[t / 2].clone(), barrier.clone());
            std::thread::spawn(move || {
                let i = t / 2;
                let mut order: Vec<usize> = (1..=ITEMS).collect();
                if t % 2 == 1 {
                    order.reverse();
                }
                barrier.wait();
                let mut outcomes = BTreeMap::new();
                for j in order {
                    let body = serde_json::json!({"item": j, "choice": choice(i, j)}).to_string();
                    let r = post(addr, "/api/vote", Some(&token), &body);
                    assert_eq!(r.status, 200, "{r:?}");
                    *outcomes
                        .entry(r.json()["status"].as_str().unwrap().to_string())
                        .or_insert(0usize) += 1;
                }
                outcomes
            })
        })
        .collect();
    let mut recorded = 0;
    let mut unchanged = 0;
    for h in handles {
        let o = h.join().unwrap();
        recorded += o.get("recorded").copied().unwrap_or(0);
        unchanged += o.get("unchanged").copied().unwrap_or(0);
    }
    let secs = start.elapsed().as_secs_f64();
    let want = ANNOTATORS * ITEMS;
    println!(
        "{} requests ({want} distinct votes) from {threads} threads in {secs:.2}s: {:.0} requests/s, {:.0} committed votes/s",
        2 * want,
        2.0 * want as f64 / secs,
        want as f64 / secs
    );
    assert_eq!((recorded, unchanged), (want, want));
    drop(server);
    let votes = Store::open(&path).unwrap().votes().unwrap();
    assert_eq!(votes.len(), want, "one vote per (item, annotator)");
    for (item, name, c) in votes {
        let i: usize = name[3..].parse().unwrap();
        assert_eq!(
            c.to_json(),
            choice(i, item as usize),
            "{name} on item {item}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_vote_on_an_item_the_page_did_not_serve_is_refused() {
    let dir = temp("unserved");
    let (path, tokens) = store_with_items(&dir, 2, &["amy"]);
    let server = Server::start(Store::open(&path).unwrap(), "127.0.0.1:0").unwrap();
    let (a, amy) = (server.addr, Some(tokens[0].as_str()));
    // Ids are sequential: a guessed one is refused until the page serves it.
    let r = post(a, "/api/vote", amy, r#"{"item": 2, "choice": 0}"#);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("not shown to you"));
    let next = get(a, "/api/next", amy).json();
    let served = next["item"]["id"].as_i64().unwrap();
    let body = format!(r#"{{"item": {served}, "choice": 0}}"#);
    assert_eq!(post(a, "/api/vote", amy, &body).status, 200);
    assert!(Store::open(&path).unwrap().votes().unwrap().len() == 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_annotation_server_cuts_off_a_slow_loris_as_the_api_does() {
    use std::time::Duration;
    let dir = temp("loris");
    let (path, tokens) = store_with_items(&dir, 1, &["amy"]);
    let limits = serve::http::ConnLimits {
        header_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let server = Server::start_with(Store::open(&path).unwrap(), "127.0.0.1:0", limits).unwrap();
    // Headers trickled a byte at a time and never finished; before, nothing ever closed them.
    let head = b"GET /api/next HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaa";
    let closed = trickled_until_closed(server.addr, head, 300, || true);
    assert!(closed, "the trickling connection was never closed");
    // Others are still served.
    assert_eq!(get(server.addr, "/api/next", Some(&tokens[0])).status, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_annotation_server_bounds_bodies_and_idle_connections_as_the_api_does() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let dir = temp("bodies");
    let (path, tokens) = store_with_items(&dir, 1, &["amy"]);
    let limits = serve::http::ConnLimits {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = Server::start_with(Store::open(&path).unwrap(), "127.0.0.1:0", limits).unwrap();
    // What the server sent, and whether it then closed the connection (within 10 s).
    let read_all = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let closed = s.read_to_end(&mut out).is_ok();
        (String::from_utf8_lossy(&out).into_owned(), closed)
    };
    // A vote whose body never finishes: 408 once the body deadline passes (before, the
    // connection waited for it forever).
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /api/vote HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"item\"",
        tokens[0]
    );
    s.write_all(head.as_bytes()).unwrap();
    let (out, closed) = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 408") && closed, "{out}");
    // A declared body past the vote's size: 413 before anything is read.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /api/vote HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n",
        tokens[0]
    );
    s.write_all(head.as_bytes()).unwrap();
    let (out, _) = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // A kept-alive connection that goes quiet after its answer is closed by the header deadline.
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    let req = format!(
        "GET /api/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        tokens[0]
    );
    s.write_all(req.as_bytes()).unwrap();
    let (out, closed) = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(closed, "the idle connection stayed open");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
