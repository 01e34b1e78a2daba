//! An imported model goes through the recipe in its own chat format: SFT on conversations
//! rendered by its template (the loss only on its replies), generation that stops at its
//! stop token, the preference stages (reward model, DPO and GRPO, with LoRA) on pairs and
//! rollouts in that format, and an export that carries its template on.

use data::chat::{ChatFormat, Conversation, Message, Role};
use engine::{generate, Request, SamplingParams, Tools};
use interop::hf::{export, import, ExportOptions, ImportOptions};
use std::path::{Path, PathBuf};
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
    imported_qwen2(&run);
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

/// The Qwen2 fixture imported as `run`. ChatML's default system prompt makes the tests'
/// conversations longer than the fixture's 64 positions: RoPE extends to a longer context as
/// it is.
fn imported_qwen2(run: &Path) {
    let options = ImportOptions {
        context_len: Some(128),
    };
    import(&fixtures().join("qwen2"), run, &options).unwrap();
}

/// The imported Qwen2 after SFT, then the preference stages on it: the reward model and DPO
/// (LoRA) learn a consistent preference on pairs rendered by its ChatML template, and GRPO
/// (LoRA) samples ChatML rollouts scored by that reward model. Each stage reads back and
/// exports as a Qwen2 with its template.
#[test]
fn an_imported_qwen2_learns_preferences_in_its_own_format() {
    let dir = temp("qwen2-pref");
    let run = dir.join("run");
    imported_qwen2(&run);
    stages::sft::sft(&sft_config(&dir), &run, false, |_| {}).unwrap();
    let sft = load_stage(&run, Some("sft")).unwrap();
    let f = ChatFormat::for_run(&sft.tok, &run).unwrap();

    // What the preference stages score: ChatML's prompt up to the assistant's header, the
    // reply, and the template's closing <|im_end|>.
    let prompt = Conversation {
        messages: vec![Message::text(Role::User, "Question 1?")],
    };
    let (p, reply, end) = f.prompt_and_reply(&prompt, "Yes, gladly.").unwrap();
    let text = |ids: &[u32]| sft.tok.decode_lossy(ids).unwrap();
    assert!(
        text(&p).ends_with("<|im_start|>user\nQuestion 1?<|im_end|>\n<|im_start|>assistant\n"),
        "{:?}",
        text(&p)
    );
    assert_eq!(text(&reply), "Yes, gladly.");
    assert!(text(&end).starts_with("<|im_end|>"), "{:?}", text(&end));

    let pairs = common::preference_pairs(&dir);
    let rm_cfg = stage_config(
        &dir,
        "rm",
        "[rm]\nval_pairs = 10\nmax_reply_tokens = 16\nhead_lr = 1e-2",
        &pairs,
        "",
    );
    let rm_cfg = stages::pref::rm::RmConfig::load(&rm_cfg, &[]).unwrap();
    let s = stages::pref::rm::train(&rm_cfg, &run, false, |_| {}).unwrap();
    assert!(s.after.accuracy >= 0.9, "reward model: {s:?}");

    let lora = "\n[lora]\nrank = 4\nalpha = 8.0\n";
    let dpo_cfg = stage_config(
        &dir,
        "dpo",
        "[dpo]\nbeta = 0.5\nval_pairs = 10\nmax_reply_tokens = 16",
        &pairs,
        lora,
    );
    let dpo_cfg = stages::pref::dpo::DpoConfig::load(&dpo_cfg, &["train.lr=1e-2".into()]).unwrap();
    let s = stages::pref::dpo::train(&dpo_cfg, &run, false, |_| {}).unwrap();
    assert_eq!(s.before.accuracy, 0.0, "the policy starts as the reference");
    assert!(
        s.after.accuracy >= 0.9 && s.after.margin > 0.0,
        "DPO: {s:?}"
    );

    let grpo_cfg = stage_config(
        &dir,
        "grpo",
        "[grpo]\nreward = \"reward_model\"\ngroup_size = 4\nmax_reply_tokens = 8\nval_prompts = 4\nbeta = 0.01",
        &pairs,
        lora,
    );
    let grpo_cfg =
        stages::pref::grpo::GrpoConfig::load(&grpo_cfg, &["train.lr=1e-2".into()]).unwrap();
    let s = stages::pref::grpo::train(&grpo_cfg, &run, false, |_| {}).unwrap();
    assert_eq!(s.steps, 8);
    assert!(s.after.mean_reward.is_finite(), "GRPO: {s:?}");

    for stage in ["dpo", "grpo"] {
        let last = run.join(format!("{stage}/checkpoints/step-8"));
        assert!(
            last.join("adapter_model.safetensors").is_file()
                && !last.join("model.safetensors").exists(),
            "{stage}: a LoRA stage checkpoints its adapters alone"
        );
        let t = load_stage(&run, Some(stage)).unwrap();
        let hf = dir.join(format!("hf-{stage}"));
        export(&t, &hf, &ExportOptions::default()).unwrap();
        let read = |name: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(hf.join(name)).unwrap()).unwrap()
        };
        assert_eq!(read("config.json")["architectures"][0], "Qwen2ForCausalLM");
        assert!(read("tokenizer_config.json")["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A preference stage's config on `pairs`: 8 steps of 4 rows of 96 tokens (room for ChatML's
/// system prompt), then `section` and `more`.
fn stage_config(dir: &Path, name: &str, section: &str, pairs: &Path, more: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[train]\nbatch_size = 4\nseq_len = 96\nlr = 3e-3\nweight_decay = 0.0\nsteps = 8\nwarmup_steps = 1\n\
             eval_every = 4\ncheckpoint_every = 4\nseed = 3\n\n{section}\nsources = [{pairs:?}]\n{more}"
        ),
    )
    .unwrap();
    path
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
