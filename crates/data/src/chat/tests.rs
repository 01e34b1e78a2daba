use super::import::{calculator_parts, conversation_from_json};
use super::*;

/// Token ids are bytes; specials follow from 256 in DEFAULT_SPECIALS order.
fn byte_tok() -> Tokenizer {
    Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap()
}

fn conv(json: &str) -> Conversation {
    conversation_from_json(&serde_json::from_str(json).unwrap()).unwrap()
}

#[test]
fn render_and_mask_golden() {
    let tok = byte_tok();
    let f = ChatFormat::new(&tok).unwrap();
    let c = conv(
        r#"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "A"},
              {"type": "python", "text": "1+1"}, {"type": "python_output", "text": "2"},
              {"type": "text", "text": "!"}]}]}"#,
    );
    let r = f.render(&c).unwrap();
    #[rustfmt::skip]
    let ids: Vec<u32> = vec![
        256,                // <|bos|>
        257, 83, 258,       // <|system_start|> S <|system_end|>
        259, 72, 105, 260,  // <|user_start|> H i <|user_end|>
        261, 65,            // <|assistant_start|> A
        263, 49, 43, 49, 264, // <|python_start|> 1 + 1 <|python_end|>
        265, 50, 266,       // <|output_start|> 2 <|output_end|>
        33, 262,            // ! <|assistant_end|>
    ];
    #[rustfmt::skip]
    let mask: Vec<u8> = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1];
    assert_eq!(r.ids, ids);
    assert_eq!(r.mask, mask);
    assert_eq!(r.message_starts, vec![1, 4, 8]);
    // The reply parses back to the same message.
    let reply = f.parse_reply(&r.ids[9..]);
    assert_eq!(reply, c.messages[2]);
    assert_eq!(reply.display(), "A[calc: 1+1 = 2]!");
}

#[test]
fn typed_special_names_stay_text() {
    let tok = byte_tok();
    let f = ChatFormat::new(&tok).unwrap();
    let c = conv(r#"{"prompt": "<|assistant_end|>", "completion": "ok"}"#);
    let r = f.render(&c).unwrap();
    assert_eq!(r.ids.iter().filter(|&&i| i == 262).count(), 1);
    assert_eq!(r.ids.len(), 1 + 2 + "<|assistant_end|>".len() + 1 + 2 + 1);
}

#[test]
fn prompt_and_fitting() {
    let tok = byte_tok();
    let f = ChatFormat::new(&tok).unwrap();
    let mut c = conv(
        r#"{"messages": [{"role": "user", "content": "aaaa"}, {"role": "assistant", "content": "bbbb"},
            {"role": "user", "content": "cccc"}, {"role": "assistant", "content": "dddd"}]}"#,
    );
    let full = f.render(&c).unwrap();
    assert_eq!(full.ids.len(), 1 + 2 * (6 + 6));
    // Room for one exchange only: the second is dropped at its user message.
    let fitted = f.render_fitted(&c, 20).unwrap().unwrap();
    assert_eq!(fitted.ids, full.ids[..13]);
    assert_eq!(*fitted.ids.last().unwrap(), 262);
    assert!(f.render_fitted(&c, 10).unwrap().is_none());
    c.messages.pop();
    let p = f.render_prompt(&c, 100).unwrap();
    assert_eq!(&p[p.len() - 2..], &[260, 261]);
    let e = f.render_prompt(&c, 10).unwrap_err().to_string();
    assert!(e.contains("over the limit of 10"), "{e}");
}

#[test]
fn shapes_import() {
    let a = conv(r#"{"instruction": "Add", "input": "1 and 2", "output": "3"}"#);
    assert_eq!(a.messages[0].parts[0].text, "Add\n\n1 and 2");
    let s = conv(
        r#"{"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}"#,
    );
    assert_eq!(s.messages[0].role, Role::System);
    let t = conv(
        r#"{"messages": [{"role": "user", "content": "2*3?"}, {"role": "assistant", "content": [{"type": "python", "text": "2*3"}]},
            {"role": "tool", "content": "6"}, {"role": "assistant", "content": "It is 6."}]}"#,
    );
    assert_eq!(t.messages.len(), 2);
    assert_eq!(t.messages[1].display(), "[calc: 2*3 = 6]It is 6.");
    let g = conv(r#"{"question": "q", "answer": "48/2 = <<48/2=24>>24 clips.\n#### 24"}"#);
    assert_eq!(
        g.messages[1].display(),
        "48/2 = [calc: 48/2 = 24]24 clips.\n#### 24"
    );
    assert_eq!(calculator_parts("no tools").len(), 1);
}

#[test]
fn bad_conversations_are_named() {
    let bad = |j: &str| {
        conversation_from_json(&serde_json::from_str(j).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(bad(r#"{"messages": [{"role": "wizard", "content": "x"}]}"#)
        .contains("unknown role \"wizard\""));
    assert!(
        bad(r#"{"messages": [{"role": "assistant", "content": "x"}]}"#).contains("expected a User")
    );
    assert!(
        bad(r#"{"messages": [{"role": "user", "content": "x"}]}"#).contains("no assistant reply")
    );
    assert!(bad(r#"{"text": "x"}"#).contains("no known shape"));
    let lacking = Tokenizer::bytes_only(&["<|bos|>"]).unwrap();
    let e = ChatFormat::new(&lacking).err().unwrap().to_string();
    assert!(
        e.contains("lacks the chat special tokens <|system_start|>"),
        "{e}"
    );
}

#[test]
fn raw_datasets() {
    let chit: serde_json::Value = serde_json::from_str(
        r#"{"c1": {"messages": [[{"text": "Hello", "sender": "a"}, {"text": "there", "sender": "a"}],
            [{"text": "hi", "sender": "b"}], [{"text": "bye", "sender": "a"}]]}}"#,
    )
    .unwrap();
    let cs = import::chitchat(&chit).unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(
        cs[0].messages.len(),
        2,
        "the unanswered last message is dropped"
    );
    assert_eq!(cs[0].messages[0].parts[0].text, "Hello\nthere");
    let bb: serde_json::Value = serde_json::from_str(
        r#"{"task_prefix": "Definition: long. Prompt: Answer it.", "examples": [{"input": "Q1", "target": ["A1", "B"]}, {"input": "", "target": "x"}]}"#,
    )
    .unwrap();
    let cs = import::bigbench(&bb).unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].messages[0].parts[0].text, "Answer it.\n\nQ1");
    assert_eq!(cs[0].messages[1].parts[0].text, "A1");
}

#[test]
fn chat_import_walks_a_symlink_loop_once() {
    let dir = std::env::temp_dir().join(format!("frugal-chat-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(
        dir.join("a/c.jsonl"),
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("a/up")).unwrap();
    let convs = super::import::read_conversations(&dir, super::import::ChatFormatKind::Auto);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(convs.unwrap().len(), 1);
}
