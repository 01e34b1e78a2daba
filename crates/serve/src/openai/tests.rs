use super::*;

fn chat(body: &str) -> ApiResult<ChatRequest> {
    chat_request(body.as_bytes())
}

fn err(body: &str) -> ApiError {
    chat(body).unwrap_err()
}

#[test]
fn a_full_chat_request_is_read() {
    let r = chat(
        r#"{"model": "m", "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"}],
            "max_completion_tokens": 9, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "seed": -3, "stop": ["\n\n", "END"], "stream": true,
            "stream_options": {"include_usage": true}, "n": 1, "presence_penalty": 0,
            "user": "someone", "response_format": {"type": "text"}, "ignore_eos": true}"#,
    )
    .unwrap();
    assert_eq!(r.gen.model, "m");
    assert_eq!(r.gen.max_tokens, Some(9));
    assert_eq!(r.gen.sampling.temperature, 0.5);
    assert_eq!(r.gen.sampling.top_k, 40);
    assert_eq!(r.gen.seed, Some(-3i64 as u64));
    assert_eq!(r.gen.stop, vec!["\n\n", "END"]);
    assert!(r.gen.stream && r.gen.include_usage && r.gen.ignore_eos);
    let shown: Vec<(Role, String)> = r
        .conversation
        .messages
        .iter()
        .map(|m| (m.role, m.display()))
        .collect();
    assert_eq!(
        shown,
        vec![
            (Role::System, "be brief".into()),
            (Role::User, "hi there".into()),
            (Role::Assistant, "hello".into()),
            (Role::User, "2+2?".into()),
        ]
    );
    // OpenAI's defaults.
    let r = chat(r#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#).unwrap();
    assert_eq!(r.gen.sampling.temperature, 1.0);
    assert_eq!((r.gen.max_tokens, r.gen.stream), (None, false));
}

#[test]
fn bad_requests_name_their_field() {
    let cases = [
        ("[1, 2]", None, "must be a JSON object"),
        ("{\"model\": \"m\", ", None, "not valid JSON"),
        (r#"{"messages": []}"#, Some("model"), "model is required"),
        (
            r#"{"model": 3}"#,
            Some("model"),
            "must be a string, not a number",
        ),
        (
            r#"{"model": "m"}"#,
            Some("messages"),
            "messages is required",
        ),
        (
            r#"{"model": "m", "messages": {}}"#,
            Some("messages"),
            "must be an array",
        ),
        (
            r#"{"model": "m", "messages": []}"#,
            Some("messages"),
            "is empty",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user"}]}"#,
            Some("messages[0].content"),
            "is required",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "tool", "content": "x"}]}"#,
            Some("messages[0].role"),
            "not one of",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#,
            Some("messages[0].content"),
            "not a number",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
            Some("messages[0].content"),
            "only text parts",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "assistant", "content": "x"}]}"#,
            Some("messages"),
            "expected a User message",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}"#,
            Some("messages"),
            "must be the user's",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}"#,
            Some("max_tokens"),
            "at least 0",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#,
            Some("max_tokens"),
            "at least 1",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}"#,
            Some("max_tokens"),
            "must be an integer, not a string",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5}"#,
            Some("max_tokens"),
            "must be an integer",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}"#,
            Some("temperature"),
            "between 0 and 2",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
            Some("temperature"),
            "must be a number",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0}"#,
            Some("top_p"),
            "(0, 1]",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}"#,
            Some("n"),
            "not supported",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "frequency_penalty": 0.5}"#,
            Some("frequency_penalty"),
            "repetition_penalty",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": []}"#,
            Some("tools"),
            "calculator",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}"#,
            Some("stop"),
            "array of strings",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e"]}"#,
            Some("stop"),
            "up to 4",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#,
            Some("stream"),
            "must be a boolean",
        ),
        (
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}"#,
            Some("stream_options"),
            "only allowed when stream",
        ),
    ];
    for (body, param, says) in cases {
        let e = err(body);
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(e.param.as_deref(), param, "{body}: {}", e.message);
        assert!(e.message.contains(says), "{body}: {}", e.message);
        let shape = e.body();
        assert_eq!(shape["error"]["type"], "invalid_request_error");
        assert!(shape["error"]["message"].is_string());
    }
    // Invalid UTF-8 is a JSON error, not a panic.
    let e = chat_request(b"{\"model\": \"m\xff\"}").unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
}

#[test]
fn completion_requests_take_one_prompt_as_text_or_token_ids() {
    let r = completion_request(br#"{"model": "m", "prompt": ["Once"], "max_tokens": 4}"#).unwrap();
    assert_eq!(r.prompt, Prompt::Text("Once".into()));
    assert_eq!(
        (r.gen.max_tokens, r.logprobs, r.echo),
        (Some(4), None, false)
    );
    // lm-evaluation-harness's log-likelihood request: token ids, echoed and scored.
    let body =
        br#"{"model": "m", "prompt": [5, 9, 2], "max_tokens": 0, "echo": true, "logprobs": 1}"#;
    let r = completion_request(body).unwrap();
    assert_eq!(r.prompt, Prompt::Ids(vec![5, 9, 2]));
    assert_eq!(
        (r.gen.max_tokens, r.logprobs, r.echo),
        (Some(0), Some(1), true)
    );
    let r = completion_request(br#"{"model": "m", "prompt": [[7, 8]]}"#).unwrap();
    assert_eq!(r.prompt, Prompt::Ids(vec![7, 8]));
    // Each body is {"model": "m", <fields>}; the error names the field given.
    let cases = [
        ("", "prompt", "prompt is required"),
        (
            r#", "prompt": ["a", "b"]"#,
            "prompt",
            "one prompt per request",
        ),
        (
            r#", "prompt": [[1], [2]]"#,
            "prompt",
            "one prompt per request",
        ),
        (r#", "prompt": []"#, "prompt", "prompt is empty"),
        (r#", "prompt": [1, -2]"#, "prompt", "prompt[1] is -2"),
        (r#", "prompt": [1, 2.5]"#, "prompt", "prompt[1] is 2.5"),
        (r#", "prompt": 7"#, "prompt", "or an array of token ids"),
        (r#", "prompt": "a", "logprobs": 6"#, "logprobs", "0 to 5"),
        (
            r#", "prompt": "a", "logprobs": true"#,
            "logprobs",
            "integer",
        ),
        (
            r#", "prompt": "a", "max_tokens": 0"#,
            "max_tokens",
            "0 only with echo",
        ),
        (
            r#", "prompt": "a", "echo": true, "stream": true"#,
            "echo",
            "not with stream",
        ),
    ];
    for (fields, param, says) in cases {
        let body = format!(r#"{{"model": "m"{fields}}}"#);
        let e = completion_request(body.as_bytes()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        assert!(e.message.contains(says), "{body}: {}", e.message);
    }
    let r = completion_request(br#"{"model": "m", "prompt": "a", "logprobs": 2, "stream": true}"#);
    assert_eq!(
        r.unwrap().logprobs,
        Some(2),
        "streamed completions carry logprobs"
    );
}

#[test]
fn chat_requests_take_logprobs_and_up_to_20_alternatives() {
    let body = |extra: &str| {
        format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}]{extra}}}"#)
    };
    let lp = |extra: &str| chat_request(body(extra).as_bytes()).map(|r| r.logprobs);
    assert_eq!(lp("").unwrap(), None);
    assert_eq!(lp(r#", "logprobs": true"#).unwrap(), Some(0));
    assert_eq!(
        lp(r#", "logprobs": true, "top_logprobs": 20"#).unwrap(),
        Some(20)
    );
    assert_eq!(lp(r#", "logprobs": false"#).unwrap(), None);
    for (extra, says) in [
        (r#", "top_logprobs": 2"#, "needs logprobs: true"),
        (r#", "logprobs": true, "top_logprobs": 21"#, "0 to 20"),
        (r#", "logprobs": 1"#, "boolean"),
    ] {
        let e = lp(extra).unwrap_err();
        assert!(e.message.contains(says), "{extra}: {}", e.message);
    }
}

#[test]
fn stop_strings_end_the_text_and_are_never_sent_in_part() {
    let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
    assert_eq!(m.push("hello E"), ("hello ".into(), false));
    assert_eq!(m.push("N"), (String::new(), false));
    assert_eq!(m.push("Dless"), (String::new(), true));
    let mut m = StopMatcher::new(vec!["END".into()]);
    let mut sent = String::new();
    for piece in ["a", "E", "x", "EN", "é", "EN"] {
        let (s, hit) = m.push(piece);
        assert!(!hit);
        sent.push_str(&s);
    }
    assert_eq!(sent, "aExENé");
    assert_eq!(m.finish(), "EN");
    let mut m = StopMatcher::new(vec!["\n\n".into()]);
    assert_eq!(m.push("one\n"), ("one".into(), false));
    assert_eq!(m.push("\ntwo"), (String::new(), true));
    let mut none = StopMatcher::new(vec![]);
    assert_eq!(none.push("x"), ("x".into(), false));
}

#[test]
fn deeply_nested_bodies_are_refused_without_recursing() {
    // serde_json stops at 128 levels: a megabyte of brackets is a 400, not a stack overflow.
    for open in ["[", "{\"a\":"] {
        let body = open.repeat(1 << 18);
        let e = chat_request(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("recursion limit"), "{}", e.message);
    }
    // Nesting the parser accepts, where a string belongs, is named.
    let deep = format!("{}\"hi\"{}", "[".repeat(100), "]".repeat(100));
    let body = format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": {deep}}}]}}"#);
    assert_eq!(chat(&body).unwrap_err().status, StatusCode::BAD_REQUEST);
}
