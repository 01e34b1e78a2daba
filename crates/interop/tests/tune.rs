//! An imported model goes through the recipe in its own chat format: SFT on conversations
//! rendered by its template (the loss only on its replies), generation that stops at its
//! stop token, and an export that carries its template on.

use data::chat::{ChatFormat, Conversation, Message, Role};
use engine::{generate, Request, SamplingParams, Tools};
use interop::hf::{export, import, ExportOptions, ImportOptions};
use std::path::Path;
use train::checkpoint::load_stage;

mod support;
use support::{fixtures, temp};

// The SFT tests' conversations and config ("what is i plus one?"), from the stages crate.
#[path = "../../stages/tests/common/mod.rs"]
mod common;
#[path = "../../stages/tests/common/sft.rs"]
mod sft_common;

#[test]
fn an_imported_qwen2_is_tuned_prompted_and_exported_in_its_own_format() {
    let dir = temp("qwen2");
    let run = dir.join("run");
    // ChatML's default system prompt makes these conversations longer than the fixture's 64
    // positions: RoPE extends to a longer context as it is.
    import(
        &fixtures().join("qwen2"),
        &run,
        &ImportOptions {
            context_len: Some(128),
        },
    )
    .unwrap();
    let summary = stages::sft::sft(&sft_config(&dir), &run, false, |_| {}).unwrap();
    assert_eq!(summary.steps, 8);
    assert!(summary.val_loss.is_finite() && summary.final_loss.is_finite());
    let t = load_stage(&run, Some("sft")).unwrap();
    let f = ChatFormat::for_run(&t.tok, &run).unwrap();
    assert!(
        Tools::for_format(&f).is_none(),
        "a ChatML model has no calculator parts"
    );
    // The prompt is ChatML's, and the reply stops at <|im_end|> or runs to its limit.
    let conv = Conversation {
        messages: vec![Message::text(Role::User, "what is 3 plus one?")],
    };
    let prompt = f.render_prompt(&conv, 100).unwrap();
    let text = t.tok.decode_lossy(&prompt).unwrap();
    assert!(
        text.ends_with("<|im_start|>user\nwhat is 3 plus one?<|im_end|>\n<|im_start|>assistant\n"),
        "{text:?}"
    );
    let req = Request {
        prompt,
        sampling: SamplingParams::greedy(),
        max_tokens: 8,
        stop: f.reply_stops(),
        seed: 0,
    };
    let out = generate(&t.model, &[req], None, |_| true).unwrap();
    let im_end = t.tok.special_id("<|im_end|>").unwrap();
    assert!(
        out[0].tokens.len() == 8 || out[0].stop_token == Some(im_end),
        "{:?}",
        out[0]
    );
    // The tuned stage exports as a Qwen2 with its template.
    let hf = dir.join("hf");
    export(&t, &hf, &ExportOptions::default()).unwrap();
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(tc["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "Qwen2ForCausalLM");
}

/// The SFT tests' config with room for ChatML's system prompt: 8 steps of 96 tokens.
fn sft_config(dir: &Path) -> stages::sft::SftConfig {
    let set = [
        "train.seq_len=96",
        "train.lr=3e-3",
        "train.steps=8",
        "train.eval_every=4",
        "train.checkpoint_every=4",
    ];
    sft_common::sft_config(dir, &set.map(String::from))
}
