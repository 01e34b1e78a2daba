//! Log-probabilities over the API, as lm-evaluation-harness's `local-completions` model asks
//! for them: `/v1/completions` with token ids, `echo` and `logprobs`, and `max_tokens` 0 or 1.
//! Every number must equal what evaluation scores for the same tokens (the model's `score`).

mod common;
#[path = "common/serving.rs"]
mod serving;

use common::post;
use model::LanguageModel;
use serde_json::{json, Value};
use serving::{model, start, Setup, KEY};

/// The eval path's log-probability of each of `tokens` after those before it (from the second).
fn scored(tokens: &[u32]) -> Vec<(f64, bool)> {
    let (m, _) = model();
    let mut cache = m.new_cache();
    let n = tokens.len();
    let s = m.score(&mut [(&mut cache, &tokens[..n - 1])], &[&tokens[1..]]);
    s[0].iter().map(|t| (t.logprob, t.greedy)).collect()
}

fn complete(addr: std::net::SocketAddr, body: Value) -> Value {
    let r = post(addr, "/v1/completions", Some(KEY), &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn echoed_prompts_are_scored_as_evaluation_scores_them() {
    let server = start(Setup::default());
    let addr = server.addr();
    let (_, tok) = model();
    let ids = tok.encode("The cat sat on the mat, and then it slept.");
    let want = scored(&ids);

    // Token ids, scored and nothing generated: the first token has no score (nothing before it).
    let r = complete(
        addr,
        json!({"model": "tiny", "prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 1}),
    );
    let c = &r["choices"][0];
    assert_eq!(c["text"], tok.decode_lossy(&ids).unwrap());
    let lp = &c["logprobs"];
    let got: Vec<Option<f64>> = lp["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::as_f64)
        .collect();
    assert_eq!(got.len(), ids.len());
    assert_eq!(got[0], None);
    for (i, (&(logprob, greedy), g)) in want.iter().zip(&got[1..]).enumerate() {
        let g = g.unwrap();
        assert!(
            (g - logprob).abs() < 1e-4,
            "token {}: {g} against {logprob}",
            i + 1
        );
        // The single likeliest token: the scored one exactly when evaluation calls it greedy.
        let top = lp["top_logprobs"][i + 1].as_object().unwrap();
        assert_eq!(top.len(), 1);
        let best = top.values().next().unwrap().as_f64().unwrap();
        assert!(best >= g - 1e-9);
        assert_eq!((best - g).abs() < 1e-9, greedy, "token {}", i + 1);
    }
    let texts: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(texts.concat(), tok.decode_lossy(&ids).unwrap());
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert_eq!(offsets[3], texts[..3].concat().chars().count() as u64);
    assert_eq!(r["usage"]["completion_tokens"], 0);

    // lm-evaluation-harness's own request: max_tokens 1, the generated token last. Greedy, it is
    // the likeliest after the prompt, and its score is the prompt's continuation's.
    let r = complete(
        addr,
        json!({"model": "tiny", "prompt": ids, "max_tokens": 1, "echo": true, "logprobs": 3, "temperature": 0}),
    );
    let lp = &r["choices"][0]["logprobs"];
    let all = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(all.len(), ids.len() + 1);
    for (w, g) in want.iter().zip(&all[1..ids.len()]) {
        assert!((g.as_f64().unwrap() - w.0).abs() < 1e-4);
    }
    let last = all[ids.len()].as_f64().unwrap();
    let top = lp["top_logprobs"][ids.len()].as_object().unwrap();
    assert_eq!(top.len(), 3);
    let best = top
        .values()
        .map(|v| v.as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert!(
        (best - last).abs() < 1e-9,
        "greedy picks the likeliest: {best} against {last}"
    );
    let next = tok.encode(lp["tokens"][ids.len()].as_str().unwrap());
    let mut with_next = ids.clone();
    with_next.extend(&next);
    if next.len() == 1 {
        let s = scored(&with_next);
        assert!((s[s.len() - 1].0 - last).abs() < 1e-4);
    }

    // Text after the server's <|bos|>: every echoed token has a score, the first one too.
    let text = "The cat sat on the mat.";
    let r = complete(
        addr,
        json!({"model": "tiny", "prompt": text, "max_tokens": 0, "echo": true, "logprobs": 0}),
    );
    let lp = &r["choices"][0]["logprobs"];
    let mut with_bos = vec![tok.special_id("<|bos|>").unwrap()];
    with_bos.extend(tok.encode(text));
    let want = scored(&with_bos);
    let got = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (w, g) in want.iter().zip(got) {
        assert!((g.as_f64().unwrap() - w.0).abs() < 1e-4);
    }
    assert!(
        lp["top_logprobs"][0].as_object().unwrap().is_empty(),
        "logprobs 0: no alternatives"
    );
    assert_eq!(r["choices"][0]["text"], text);
}

#[test]
fn generated_tokens_carry_their_logprobs_and_bad_prompts_are_named() {
    let server = start(Setup::default());
    let addr = server.addr();
    let r = complete(
        addr,
        json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 6, "logprobs": 2, "temperature": 0.8, "seed": 3, "ignore_eos": true}),
    );
    let c = &r["choices"][0];
    let lp = &c["logprobs"];
    let n = r["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert_eq!(
        lp["tokens"].as_array().unwrap().len(),
        n,
        "no echo: the reply's tokens only"
    );
    let scores = lp["token_logprobs"].as_array().unwrap();
    assert!(scores.iter().any(Value::is_f64), "{r}");
    for v in scores.iter().filter_map(Value::as_f64) {
        assert!(v <= 0.0);
    }
    assert!(c["text"].is_string());
    // Without logprobs, none; with echo alone, the prompt's text and no numbers.
    let r = complete(
        addr,
        json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 2}),
    );
    assert!(r["choices"][0]["logprobs"].is_null());
    let r = complete(
        addr,
        json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 0, "echo": true}),
    );
    assert_eq!(r["choices"][0]["text"], "Once upon");
    assert!(r["choices"][0]["logprobs"].is_null());

    for (body, says) in [
        (
            json!({"model": "tiny", "prompt": [1, 2, 100000], "max_tokens": 1}),
            "prompt[2] is token 100000, outside the vocabulary",
        ),
        (
            json!({"model": "tiny", "prompt": vec![65; 500], "max_tokens": 0, "echo": true, "logprobs": 1}),
            "the context is",
        ),
    ] {
        let r = post(addr, "/v1/completions", Some(KEY), &body.to_string());
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"]["param"], "prompt");
        assert!(r.body.contains(says), "{}", r.body);
    }
}

/// The `content` entries of every chunk of a streamed reply, in order.
fn streamed_entries(body: &str, chat: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for e in common::sse_events(body) {
        let Ok(v) = serde_json::from_str::<Value>(&e) else {
            continue; // [DONE]
        };
        let Some(lp) = v["choices"].get(0).map(|c| &c["logprobs"]) else {
            continue; // the usage chunk
        };
        if chat {
            out.extend(lp["content"].as_array().cloned().unwrap_or_default());
        } else if !lp.is_null() {
            out.extend(lp["token_logprobs"].as_array().cloned().unwrap_or_default());
        }
    }
    out
}

#[test]
fn chat_replies_carry_logprobs_whole_and_streamed() {
    use data::chat::{ChatFormat, ChatStyle, ChatTokens, Conversation, Message, Role};
    let server = start(Setup::default());
    let addr = server.addr();
    let body = |stream: bool| {
        json!({"model": "tiny", "messages": [{"role": "user", "content": "Name a colour."}],
               "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 3,
               "stream": stream, "ignore_eos": true})
        .to_string()
    };
    let r = post(addr, "/v1/chat/completions", Some(KEY), &body(false));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!content.is_empty());
    for e in &content {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy, with no penalty: the chosen token is the likeliest.
        assert_eq!(top[0]["token"], e["token"], "{e}");
        assert_eq!(top[0]["logprob"], e["logprob"]);
        assert!(e["bytes"].is_array() && e["logprob"].as_f64().unwrap() <= 0.0);
    }
    // The first reply token's score is the model's, after the rendered prompt.
    let (m, tok) = model();
    let f = ChatFormat::with_style(
        &tok,
        ChatStyle::Frugal(ChatTokens::from_tokenizer(&tok).unwrap()),
    );
    let conv = Conversation {
        messages: vec![Message::text(Role::User, "Name a colour.")],
    };
    let prompt = f.render_prompt(&conv, 100).unwrap();
    let mut logits = vec![0f32; m.vocab_size()];
    m.forward(&mut [(&mut m.new_cache(), &prompt[..])], &mut logits);
    let best = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
        .unwrap();
    let want = engine::TokenLogprob::of(&logits, best as u32, 0).logprob;
    let got = content[0]["logprob"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-4, "{got} against {want}");

    // Streamed: the same entries, spread over the chunks.
    let r = post(addr, "/v1/chat/completions", Some(KEY), &body(true));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(streamed_entries(&r.body, true), content);
    // And a streamed completion's scores are the whole one's.
    let completion = |stream: bool| {
        let b = json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 6, "logprobs": 1,
                       "temperature": 0, "stream": stream, "ignore_eos": true});
        post(addr, "/v1/completions", Some(KEY), &b.to_string())
    };
    let whole = completion(false).json()["choices"][0]["logprobs"]["token_logprobs"].clone();
    assert_eq!(
        Value::Array(streamed_entries(&completion(true).body, false)),
        whole
    );
}
