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

/// Conversations that exercise every part of the format, for the template's tests.
fn template_cases() -> Vec<Conversation> {
    [
        r#"{"prompt": "Hi", "completion": "Hello there"}"#,
        r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"}]}"#,
        r#"{"messages": [{"role": "user", "content": "What is 48/2?"},
            {"role": "assistant", "content": [{"type": "text", "text": "It is "},
              {"type": "python", "text": "48/2"}, {"type": "python_output", "text": "24"},
              {"type": "text", "text": ", so 24."}]}]}"#,
        r#"{"messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "python", "text": "1+1"},
              {"type": "python_output", "text": "2"}, {"type": "python", "text": "2*3"},
              {"type": "python_output", "text": "6"}]}]}"#,
        r#"{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"}"#,
    ]
    .iter()
    .map(|s| conv(s))
    .collect()
}

#[test]
fn the_frugal_template_renders_the_ids_the_chat_format_trains_on() {
    use super::template::{to_messages, Template, TemplateContext, FRUGAL_TEMPLATE};
    let tok = byte_tok();
    let f = ChatFormat::new(&tok).unwrap();
    let t = Template::new(FRUGAL_TEMPLATE, "test").unwrap();
    for c in template_cases() {
        let text = t
            .render(&to_messages(&c), &TemplateContext::default())
            .unwrap();
        assert_eq!(
            tok.encode_with_specials(&text),
            f.render(&c).unwrap().ids,
            "{text}"
        );
        // A prompt ends with the conversation's last user message and opens the reply.
        let mut prompt = c.clone();
        prompt.messages.pop();
        let ctx = TemplateContext {
            add_generation_prompt: true,
            ..Default::default()
        };
        let text = t.render(&to_messages(&prompt), &ctx).unwrap();
        assert_eq!(
            tok.encode_with_specials(&text),
            f.render_prompt(&prompt, 1 << 20).unwrap()
        );
    }
}

#[test]
fn template_messages_read_back_as_the_same_conversation() {
    use super::template::to_messages;
    for c in template_cases() {
        let back = conversation_from_json(&serde_json::json!({"messages": to_messages(&c)}));
        assert_eq!(back.unwrap(), c);
    }
}

#[test]
fn templates_fail_with_the_reason_and_loops_run_out_of_fuel() {
    use super::template::{Template, TemplateContext};
    let msgs = serde_json::json!([{"role": "user", "content": "hi"}]);
    let ctx = TemplateContext::default();
    let e = Template::new("{% if %}", "cfg.json")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cfg.json") && e.contains("chat template"), "{e}");
    let raising = Template::new("{{ raise_exception('roles must alternate') }}", "t").unwrap();
    let e = raising.render(&msgs, &ctx).unwrap_err().to_string();
    assert!(e.contains("roles must alternate"), "{e}");
    let endless =
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let e = Template::new(endless, "t")
        .unwrap()
        .render(&msgs, &ctx)
        .unwrap_err();
    assert!(e.to_string().contains("fuel"), "{e}");
    // Python's string methods, which real templates call, work as in transformers.
    let py = Template::new("{{ messages[0].content.strip().upper() }}", "t").unwrap();
    let msgs = serde_json::json!([{"role": "user", "content": "  hi "}]);
    assert_eq!(py.render(&msgs, &ctx).unwrap(), "HI");
}

/// A ChatML template over a byte tokenizer with ChatML's specials: the mask covers each reply
/// through its `<|im_end|>` and nothing of the prompt or of what follows the end.
#[test]
fn an_imported_template_renders_and_masks_the_replies() {
    use super::template::{ModelTemplate, Template};
    use super::{ChatStyle, TemplateStyle};
    let tok = Tokenizer::bytes_only(&["<|endoftext|>", "<|im_start|>", "<|im_end|>"]).unwrap();
    let chatml = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let model = ModelTemplate {
        chat_template: chatml.into(),
        bos_token: None,
        eos_token: Some("<|im_end|>".into()),
        stop_ids: vec![],
    };
    let style = ChatStyle::Template(std::sync::Arc::new(TemplateStyle {
        template: Template::new(chatml, "t").unwrap(),
        model,
        bos: 256,
        stops: vec![258],
    }));
    let f = ChatFormat::with_style(&tok, style);
    assert!(f.tokens().is_none());
    assert_eq!(
        (f.bos(), f.reply_end(), f.reply_stops()),
        (256, 258, vec![258])
    );
    let c = conv(
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": [{"type": "text", "text": "it is "},
              {"type": "python", "text": "2+2"}, {"type": "python_output", "text": "4"}]}]}"#,
    );
    let r = f.render(&c).unwrap();
    let text = String::from_utf8_lossy(&tok.decode(&r.ids).unwrap()).into_owned();
    assert_eq!(
        text,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\nit is <<2+2=4>><|im_end|>\n"
    );
    let trained: Vec<u32> = r
        .ids
        .iter()
        .zip(&r.mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&i, _)| i)
        .collect();
    let trained = String::from_utf8_lossy(&tok.decode(&trained).unwrap()).into_owned();
    assert_eq!(trained, "yo<|im_end|>it is <<2+2=4>><|im_end|>");
    assert_eq!(r.message_starts.len(), 4);
    assert_eq!(r.message_starts[0], 0);
    // The prompt opens the assistant's turn; a reply parses back to its text.
    let mut p = c.clone();
    p.messages.truncate(3);
    let ids = f.render_prompt(&p, 1000).unwrap();
    assert!(String::from_utf8_lossy(&tok.decode(&ids).unwrap())
        .ends_with("2+2?<|im_end|>\n<|im_start|>assistant\n"));
    let reply = f.parse_reply(&tok.encode_with_specials("four<|im_end|>\nignored"));
    assert_eq!(reply, Message::text(Role::Assistant, "four"));
    // A preference pair's reply and its closing tokens.
    let (prompt, body, end) = f.prompt_and_reply(&p, "four").unwrap();
    assert_eq!(prompt, ids);
    assert_eq!(tok.decode(&body).unwrap(), b"four");
    assert_eq!(tok.decode(&end).unwrap(), b"<|im_end|>\n");
}
