//! The OpenAI-compatible server in-process, over real sockets: response shapes whole and
//! streamed, keys, bad input, back-pressure, slow clients, disconnects, CORS and shutdown.
//! The model is the tiny config with random weights and a byte-level tokenizer.

mod common;
#[path = "common/serving.rs"]
mod serving;

use common::{get, post, raw_request, sse_events, trickled_until_closed, Reply};
use serde_json::{json, Value};
use serve::api::{Auth, RequestLimits};
use serve::http::ConnLimits;
use serve::scheduler::Limits;
use serving::{start, Setup, CONTEXT, KEY};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn chat_body(content: &str, extra: Value) -> String {
    let mut b = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 24,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b.to_string()
}

fn chat(addr: SocketAddr, body: &str) -> Reply {
    post(addr, "/v1/chat/completions", Some(KEY), body)
}

fn assert_error(r: &Reply, status: u16, says: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let e = &r.json()["error"];
    assert!(
        e["message"].as_str().unwrap().contains(says),
        "{}: wanted {says:?}",
        r.body
    );
    assert!(e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some());
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let m = get(addr, "/metrics", Some(KEY)).body;
    m.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{m}"))
        .parse()
        .unwrap()
}

#[test]
fn replies_whole_and_streamed_are_the_same_text_with_usage() {
    let server = start(Setup::default());
    let addr = server.addr();
    let r = get(addr, "/v1/models", Some(KEY));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["id"], "tiny");
    assert_eq!(r.json()["data"][0]["context_length"], CONTEXT);
    assert_eq!(get(addr, "/v1/models/tiny", Some(KEY)).status, 200);

    let whole = chat(addr, &chat_body("hello there", json!({})));
    assert_eq!(whole.status, 200, "{}", whole.body);
    let w = whole.json();
    assert_eq!(w["object"], "chat.completion");
    assert_eq!(w["model"], "tiny");
    assert_eq!(w["choices"][0]["message"]["role"], "assistant");
    let text = w["choices"][0]["message"]["content"].as_str().unwrap();
    let usage = &w["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion));
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + completion
    );
    let finish = w["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length");
    assert_eq!(finish == "length", completion == 24);

    let streamed = chat(
        addr,
        &chat_body(
            "hello there",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    let events = sse_events(&streamed.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut joined = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"], "one id per stream");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            joined.push_str(t);
        }
    }
    assert_eq!(joined, text, "the stream is the whole reply in pieces");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], finish);
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(&chunks[n - 1]["usage"], usage);

    // Plain completions, and a stop string that ends the text before it.
    let r = post(
        addr,
        "/v1/completions",
        Some(KEY),
        &json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 10, "temperature": 0})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = r.json();
    assert_eq!(c["object"], "text_completion");
    let plain = c["choices"][0]["text"].as_str().unwrap().to_string();
    let r = post(
        addr,
        "/v1/completions",
        Some(KEY),
        &json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 10, "temperature": 0, "stream": true}).to_string(),
    );
    let pieces: String = sse_events(&r.body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(pieces, plain);
    if let Some(cut) = plain.char_indices().nth(3).map(|(i, _)| i) {
        let stop = plain[cut..].chars().next().unwrap().to_string();
        let r = post(
            addr,
            "/v1/completions",
            Some(KEY),
            &json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 10, "temperature": 0, "stop": stop}).to_string(),
        );
        let c = r.json();
        let before = &plain[..plain.find(&stop).unwrap()];
        assert_eq!(c["choices"][0]["text"], before);
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
    }
}

#[test]
fn keys_are_required_where_they_should_be() {
    let server = start(Setup::default());
    let addr = server.addr();
    let body = chat_body("hi", json!({}));
    let none = post(addr, "/v1/chat/completions", None, &body);
    assert_error(&none, 401, "no API key");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert_error(
        &post(
            addr,
            "/v1/chat/completions",
            Some("test-key-0123456789abcdeX"),
            &body,
        ),
        401,
        "not valid",
    );
    assert_error(&get(addr, "/v1/models", Some("wrong")), 401, "not valid");
    assert_error(&get(addr, "/metrics", None), 401, "no API key");
    let basic = raw_request(
        addr,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\nConnection: close\r\n\r\n",
    );
    assert_error(&basic, 401, "Bearer");
    // The scheme is case-insensitive.
    let lower = raw_request(
        addr,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: bearer test-key-0123456789abcdef\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(lower.status, 200, "{}", lower.body);
    assert_eq!(chat(addr, &body).status, 200);
    // Health and the page need no key; the page carries a strict policy.
    assert_eq!(get(addr, "/health", None).status, 200);
    let page = get(addr, "/", None);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'sha256-"));
    // No CORS headers unless an origin is allowed by name.
    let r = raw_request(
        addr,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\nAuthorization: Bearer test-key-0123456789abcdef\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    drop(server);

    let server = start(Setup {
        allow_origin: Some("http://localhost:3000"),
        auth: Auth::Open,
        ..Setup::default()
    });
    let pre = raw_request(
        server.addr(),
        b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert!(pre
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    let other = raw_request(
        server.addr(),
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
    // Open on purpose: no key needed.
    assert_eq!(get(server.addr(), "/v1/models", None).status, 200);
    // But only under an IP address or localhost (a name may be an attacker's, rebound to this
    // machine), only from this server's own page or the allowed origin, and only JSON bodies
    // (a text/plain post is what another site's page can send without asking).
    let port = server.addr().port();
    let ask = |host: &str, origin: Option<&str>, content_type: &str| {
        let body = chat_body("hi", json!({"max_tokens": 1}));
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        raw_request(server.addr(), raw.as_bytes())
    };
    let json = "application/json";
    assert_eq!(ask(&format!("localhost:{port}"), None, json).status, 200);
    assert_eq!(ask(&format!("[::1]:{port}"), None, json).status, 200);
    let rebound = ask(&format!("evil.example:{port}"), None, json);
    assert_error(&rebound, 403, "not an IP address or localhost");
    let own = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");
    assert_eq!(ask(&host, Some(&own), json).status, 200);
    assert_eq!(ask(&host, Some("http://localhost:3000"), json).status, 200);
    assert_error(
        &ask(&host, Some("http://evil.example"), json),
        403,
        "not allowed",
    );
    assert_error(&ask(&host, None, "text/plain"), 415, "application/json");
}

#[test]
fn bad_input_gets_openai_errors_and_the_server_keeps_serving() {
    let server = start(Setup {
        request: RequestLimits { max_body: 4096 },
        conn: ConnLimits {
            body_timeout: Duration::from_millis(500),
            shutdown_grace: Duration::from_millis(300),
            ..ConnLimits::default()
        },
        ..Setup::default()
    });
    let addr = server.addr();
    let long = "word ".repeat(200);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"model\": ".into(), 400, "not valid JSON"),
        ("[]".into(), 400, "JSON object"),
        (
            r#"{"model": "tiny", "messages": "hi"}"#.into(),
            400,
            "must be an array",
        ),
        (
            r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}"#.into(),
            404,
            "does not exist",
        ),
        (
            chat_body("hi", json!({"max_tokens": -1})),
            400,
            "at least 0",
        ),
        (
            chat_body("hi", json!({"max_tokens": 1_000_000_000_000u64})),
            400,
            "over the context",
        ),
        (chat_body(&long[..900], json!({})), 400, "over the limit"),
        (
            chat_body("hi", json!({"temperature": -1})),
            400,
            "between 0 and 2",
        ),
        (chat_body("hi", json!({"n": 3})), 400, "not supported"),
        // Values that are positive in f64 but 0 in the engine's f32: a client error, not a 500.
        (
            chat_body("hi", json!({"top_p": 1e-300})),
            400,
            "at least 1e-38",
        ),
        (
            chat_body("hi", json!({"repetition_penalty": 1e-300})),
            400,
            "at least 1e-38",
        ),
        // A one-piece word longer than the context can cover is refused by its length,
        // before it is encoded.
        (
            chat_body(&"ing".repeat(1200), json!({})),
            400,
            "bytes that 159 tokens",
        ),
    ];
    for (body, status, says) in &cases {
        let t0 = Instant::now();
        let r = chat(addr, body);
        assert!(
            r.status == *status,
            "{body:?} after {:?}: {}",
            t0.elapsed(),
            r.body
        );
        assert_error(&r, *status, says);
    }
    let body = b"{\"model\": \"tiny\xff\xfe\", \"a\":1}";
    let mut bad_utf8 = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    bad_utf8.extend_from_slice(body);
    assert_error(&raw_request(addr, &bad_utf8), 400, "not valid JSON");
    // Oversized: by the declared length, and by a chunked body that grows past the limit.
    assert_error(
        &chat(addr, &chat_body(&"x".repeat(5000), json!({}))),
        413,
        "over 4096 bytes",
    );
    let mut chunked = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key-0123456789abcdef\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_error(&raw_request(addr, &chunked), 413, "over 4096 bytes");
    assert_error(
        &get(addr, "/v2/nothing", Some(KEY)),
        404,
        "no such endpoint",
    );
    assert_error(&get(addr, "/v1/chat/completions", Some(KEY)), 405, "method");
    // A body that never finishes arriving: 408 once the body timeout passes.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key-0123456789abcdef\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"mo").unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // After all that, a good request is answered.
    assert_eq!(
        chat(addr, &chat_body("still there?", json!({}))).status,
        200
    );
    assert!(metric(addr, "frugal_running_sequences") == 0.0);
}

#[test]
fn a_slow_loris_is_cut_off_while_others_are_served() {
    let server = start(Setup {
        conn: ConnLimits {
            header_timeout: Duration::from_millis(800),
            ..ConnLimits::default()
        },
        ..Setup::default()
    });
    let addr = server.addr();
    // Headers trickled a byte at a time, never finished.
    let t0 = Instant::now();
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let closed = trickled_until_closed(addr, head, 400, || {
        // Meanwhile everyone else is served.
        if t0.elapsed() < Duration::from_millis(600) && t0.elapsed() > Duration::from_millis(300) {
            assert_eq!(get(addr, "/health", None).status, 200);
        }
        t0.elapsed() <= Duration::from_secs(20)
    });
    assert!(closed, "the trickling connection was never closed");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(chat(addr, &chat_body("hi", json!({}))).status, 200);
}

/// Starts a streaming request and returns the connection after its first event arrived.
fn open_stream(addr: SocketAddr, max_tokens: usize) -> TcpStream {
    let body = chat_body(
        "tell me a long story",
        // ignore_eos: a random tiny model may sample its end token at any step, and the
        // tests that use this stream need it still running when they act.
        json!({"stream": true, "max_tokens": max_tokens, "temperature": 1.0, "ignore_eos": true}),
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("data: ") {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    s
}

fn wait_for(addr: SocketAddr, name: &str, want: f64) {
    let t0 = Instant::now();
    while metric(addr, name) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{name} never became {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_answers_429_and_a_gone_client_is_cancelled() {
    let server = start(Setup {
        limits: Limits {
            max_batch: 1,
            max_queue: 1,
            step_delay: Duration::from_millis(20),
        },
        ..Setup::default()
    });
    let addr = server.addr();
    let running = open_stream(addr, 120);
    wait_for(addr, "frugal_running_sequences", 1.0);
    // The second waits in the queue; the third finds it full.
    let queued =
        std::thread::spawn(move || chat(addr, &chat_body("queued", json!({"max_tokens": 3}))));
    wait_for(addr, "frugal_queue_depth", 1.0);
    let r = chat(addr, &chat_body("one too many", json!({})));
    assert_error(&r, 429, "capacity");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(metric(addr, "frugal_requests_rejected_total"), 1.0);
    // The client of the running stream leaves: its sequence ends at once, the queued one runs.
    drop(running);
    let q = queued.join().unwrap();
    assert_eq!(q.status, 200, "{}", q.body);
    wait_for(addr, "frugal_requests_cancelled_total", 1.0);
    wait_for(addr, "frugal_running_sequences", 0.0);
    let generated = metric(addr, "frugal_generation_tokens_total");
    assert!(
        generated < 150.0,
        "the cancelled stream ran on: {generated} tokens"
    );
}

#[test]
fn concurrent_requests_share_forward_passes() {
    let server = start(Setup {
        limits: Limits {
            step_delay: Duration::from_millis(5),
            ..Limits::default()
        },
        ..Setup::default()
    });
    let addr = server.addr();
    let clients: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                chat(
                    addr,
                    &chat_body(
                        &format!("question {i}"),
                        json!({"max_tokens": 40, "temperature": 1.0, "seed": i}),
                    ),
                )
            })
        })
        .collect();
    let mut tokens = 0;
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200);
        tokens += r.json()["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let steps = metric(addr, "frugal_engine_steps_total");
    assert!(
        (steps as u64) < tokens * 2 / 3,
        "{tokens} tokens took {steps} forward passes: the requests were not batched"
    );
}

#[test]
fn shutdown_finishes_or_cleanly_ends_streams() {
    let mut server = start(Setup {
        limits: Limits {
            step_delay: Duration::from_millis(30),
            ..Limits::default()
        },
        ..Setup::default()
    });
    let addr = server.addr();
    // A short stream finishes within the grace period; a long one is ended with an error event.
    let short = std::thread::spawn(move || {
        chat(
            addr,
            &chat_body("short", json!({"stream": true, "max_tokens": 4})),
        )
    });
    let mut long = open_stream(addr, 120);
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    server.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let mut rest = String::new();
    let _ = long.read_to_string(&mut rest);
    assert!(
        rest.contains("shutting down") && rest.contains("data: [DONE]"),
        "{rest}"
    );
    let s = short.join().unwrap();
    let events = sse_events(&s.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(!s.body.contains("shutting down"), "{}", s.body);
    assert!(TcpStream::connect(addr).is_err() || request_fails(addr));
}

/// After shutdown, a connection may still be accepted by the kernel's backlog, but it is
/// never answered.
fn request_fails(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    !matches!(s.read(&mut buf), Ok(n) if n > 0)
}

#[test]
fn a_client_that_leaves_a_whole_reply_ends_its_generation_too() {
    let server = start(Setup {
        limits: Limits {
            step_delay: Duration::from_millis(20),
            ..Limits::default()
        },
        ..Setup::default()
    });
    let addr = server.addr();
    let body = chat_body("go on", json!({"max_tokens": 120, "ignore_eos": true}));
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_for(addr, "frugal_running_sequences", 1.0);
    drop(s);
    wait_for(addr, "frugal_requests_cancelled_total", 1.0);
    wait_for(addr, "frugal_running_sequences", 0.0);
    let generated = metric(addr, "frugal_generation_tokens_total");
    assert!(
        generated < 120.0,
        "the abandoned reply ran on: {generated} tokens"
    );
}
