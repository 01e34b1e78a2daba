//! The Hugging Face export against the real readers.
//!
//! - Live, in every test run: transformers' tokenizer and `apply_chat_template` on an export
//!   give frugal's ids (needs transformers in $FRUGAL_PYTHON or .venv; scripts/test.sh
//!   installs it; FRUGAL_SKIP_PEER_TESTS=1 skips knowingly and says so).
//! - From fixtures transformers wrote (its models need PyTorch, a download too large for the
//!   test command): an export of a seeded model that `fixtures/export-logits.safetensors` holds
//!   transformers' logits for. The test exports the same model again, checks the files are the
//!   ones transformers read, and compares logits. Regenerate with scripts/interop-fixtures.sh.

use interop::hf::{export, ExportOptions};
use interop::Dtype;
use model::{save_safetensors, Llama};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};
use train::checkpoint::load_stage;

mod support;
use support::{fixtures, python, run_script, temp};

/// Text the fixture tokenizer is trained on: words, numbers, code and other scripts, so its
/// merges cover what the prompts hold.
fn corpus() -> Vec<String> {
    let lines = [
        "It was a dark and stormy night, and the rain fell in torrents.",
        "Fellow citizens, the state of the Union is strong. What is 48/2? It is 24.",
        "def add(a, b):\n    return a + b\n\nprint(add(3, 4))  # 7",
        "Ünïcödé café naïve, 漢字, Ελληνικά, русский 😀 3.14159 1,000,000",
        "The quick brown fox jumps over the lazy dog. DON'T SHOUT! I'll whisper...",
    ];
    (0..30)
        .map(|i| format!("{} {i}\n", lines[i % lines.len()].repeat(1 + i % 3)))
        .collect()
}

/// A run with a tokenizer trained here (320 tokens with the chat specials), a grouped-query
/// tiny model, and two stages: base (seed 1) and SFT (seed 2).
fn fixture_run(dir: &Path) -> PathBuf {
    fixture_run_with(dir, &[], "")
}

/// DeepSeek-V3's shape of the fixture: latent attention, a dense layer then a mixture of
/// experts with a shared one.
const DEEPSEEK: (&[(&str, &str)], &str) = (
    &[("attention = \"gqa\"", "attention = \"mla\""), ("mlp = \"swiglu\"", "mlp = \"moe\""), ("n_kv_heads = 2", "n_kv_heads = 4")],
    "[model.mla]\nkv_rank = 12\nrope_dim = 4\nlatent_eps = 1e-6\n\n[model.moe]\nrouted_experts = 4\ntop_k = 2\nshared_experts = 1\n\
     expert_hidden = 16\ndense_layers = 1\nroute_scale = 2.5\n\n",
);

/// `fixture_run` with `replace` applied to the tiny config and `tables` before its [train].
fn fixture_run_with(dir: &Path, replace: &[(&str, &str)], tables: &str) -> PathBuf {
    let mut t = bpe::Trainer::new(bpe::TrainerOptions {
        vocab_size: 320,
        ..Default::default()
    })
    .unwrap();
    t.count(&corpus());
    let tok = t.finish().unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    tok.save(&run.join("tokenizer.json")).unwrap();
    let cfg = include_str!("../../../configs/tiny.toml")
        .replace(
            "vocab_size = 128",
            &format!("vocab_size = {}", tok.vocab_size()),
        )
        .replace("context_len = 32", "context_len = 64")
        .replace("init_std = 0.02", "init_std = 0.2");
    let mut cfg = replace.iter().fold(cfg, |c, (a, b)| c.replace(a, b));
    cfg = cfg.replace("[train]", &format!("{tables}[train]"));
    std::fs::write(run.join("config.toml"), &cfg).unwrap();
    let model_cfg = train::Config::parse(&cfg, "fixture", &[]).unwrap().model;
    for (sub, seed) in [("", 1), ("sft", 2)] {
        let ckpt = run.join(sub).join("checkpoints/step-5");
        std::fs::create_dir_all(&ckpt).unwrap();
        let mut m = Llama::init(model_cfg.clone(), seed);
        // Balancing biases off zero, so that they steer the experts' choice as trained ones do.
        for spec in m.params.specs.clone() {
            if spec.name.ends_with("e_score_correction_bias") {
                tensor::Rng::new(spec.offset as u64)
                    .fill_normal(&mut m.params.data[spec.range()], 0.3);
            }
        }
        save_safetensors(&m.params, &ckpt.join("model.safetensors")).unwrap();
    }
    run
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn an_export_is_a_llama_checkpoint_directory() {
    let dir = temp("layout");
    let run = fixture_run(&dir);
    let sft = load_stage(&run, None).unwrap();
    assert_eq!(sft.stage, "sft");
    let out = dir.join("hf");
    let s = export(&sft, &out, &ExportOptions::default()).unwrap();
    let cfg = json(&out.join("config.json"));
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["num_key_value_heads"], 2);
    assert_eq!(cfg["num_attention_heads"], 4);
    assert_eq!(cfg["head_dim"], 8);
    assert_eq!(cfg["rms_norm_eps"], 1e-5);
    assert_eq!(cfg["vocab_size"], sft.tok.vocab_size());
    assert_eq!(cfg["tie_word_embeddings"], false);
    let stops = &cfg["eos_token_id"];
    let end = sft.tok.special_id("<|assistant_end|>").unwrap();
    assert_eq!(stops[0], end, "a chat stage stops at the reply's end first");
    assert_eq!(
        json(&out.join("generation_config.json"))["eos_token_id"],
        *stops
    );
    let tc = json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], data::chat::template::FRUGAL_TEMPLATE);
    assert_eq!(tc["eos_token"], "<|assistant_end|>");
    assert_eq!(tc["added_tokens_decoder"][end.to_string()]["special"], true);
    // Every parameter, by its HF name and shape, in f32.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), sft.model.params.specs.len());
    for spec in &sft.model.params.specs {
        let t = st.tensor(&spec.name).unwrap();
        assert_eq!(t.shape(), spec.shape.as_slice(), "{}", spec.name);
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
    }
    assert_eq!(s.params, sft.model.params.len());
    // No partial directory is left beside it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "{names:?}"
    );

    // The base stage stops at the next document.
    let base = load_stage(&run, Some("base")).unwrap();
    export(&base, &dir.join("hf-base"), &ExportOptions::default()).unwrap();
    let bos = base.tok.special_id("<|bos|>").unwrap();
    assert_eq!(json(&dir.join("hf-base/config.json"))["eos_token_id"], bos);
}

#[test]
fn exports_in_bf16_and_in_shards_cover_every_tensor() {
    let dir = temp("shards");
    let run = fixture_run(&dir);
    let t = load_stage(&run, Some("sft")).unwrap();
    let opts = ExportOptions {
        dtype: Dtype::Bf16,
        max_shard_bytes: 30_000,
    };
    let out = dir.join("hf");
    let s = export(&t, &out, &opts).unwrap();
    assert_eq!(json(&out.join("config.json"))["torch_dtype"], "bfloat16");
    let index = json(&out.join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), t.model.params.specs.len());
    let shards: std::collections::BTreeSet<&str> =
        map.values().map(|v| v.as_str().unwrap()).collect();
    assert!(shards.len() > 2, "{shards:?}");
    let mut total = 0;
    for file in &shards {
        assert!(s.files.iter().any(|f| f == file));
        let bytes = std::fs::read(out.join(file)).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            assert_eq!(map[&name], *file);
            assert_eq!(view.dtype(), safetensors::Dtype::BF16);
            let spec = t.model.params.spec(&name).unwrap();
            let want = &t.model.params.data[spec.range()];
            let got: Vec<f32> = view
                .data()
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= w.abs() / 128.0, "{name}: {g} for {w}");
            }
            total += view.data().len();
        }
    }
    assert_eq!(index["metadata"]["total_size"], total);
}

#[test]
fn exports_refuse_what_would_lose_data_or_change_the_model() {
    let dir = temp("refuse");
    let run = fixture_run(&dir);
    let t = load_stage(&run, None).unwrap();
    // A directory with a user's files in it is never written into.
    let taken = dir.join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let e = export(&t, &taken, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(
        std::fs::read_to_string(taken.join("notes.txt")).unwrap(),
        "mine"
    );
    // An unknown stage names the ones there are.
    let e = load_stage(&run, Some("rlhf")).err().unwrap().to_string();
    assert!(e.contains("base, sft, dpo, grpo"), "{e}");
    let e = load_stage(&run, Some("dpo")).err().unwrap().to_string();
    assert!(e.contains("no checkpoint of the dpo stage"), "{e}");
    // Architectures no Hugging Face model computes the same are refused, naming the field.
    for (field, why) in [
        ("logit_softcap = 15.0", "logit_softcap"),
        (
            "mlp = \"moe\"\n[model.moe]\nrouted_experts = 4\ntop_k = 2\nexpert_hidden = 16",
            "mlp = \"moe\" with attention = \"gqa\"",
        ),
        (
            "attention = \"mla\"\nn_kv_heads = 4\n[model.mla]\nkv_rank = 12\nrope_dim = 4",
            "model.mla.latent_eps is 0.00001",
        ),
    ] {
        let mut cfg = t.model.cfg.clone();
        let text = format!("[model]\n{}\n", field);
        let patch: toml::Value = toml::from_str(&text).unwrap();
        let mut base = toml::Value::try_from(&cfg).unwrap();
        for (k, v) in patch["model"].as_table().unwrap() {
            base.as_table_mut().unwrap().insert(k.clone(), v.clone());
        }
        cfg = base.try_into().unwrap();
        let e = interop::hf::config::hf_config(&cfg, &ids(&t), "float32").unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
}

fn ids(t: &train::checkpoint::Trained) -> interop::hf::config::SpecialIds {
    interop::hf::config::SpecialIds {
        bos: t.tok.special_id("<|bos|>"),
        eos: vec![t.tok.special_id("<|assistant_end|>").unwrap()],
    }
}

/// The files of the committed export that transformers scored, byte for byte.
const EXPORT_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

#[test]
fn transformers_logits_on_the_export_equal_frugals() {
    let dir = temp("fixture");
    let run = fixture_run(&dir);
    let t = load_stage(&run, Some("sft")).unwrap();
    let out = dir.join("hf");
    export(&t, &out, &ExportOptions::default()).unwrap();
    for f in EXPORT_FILES {
        assert!(
            std::fs::read(out.join(f)).unwrap()
                == std::fs::read(fixtures().join("export").join(f)).unwrap(),
            "{f} differs from the export transformers scored: if the change is meant, run \
             scripts/interop-fixtures.sh (it needs PyTorch) and commit the new fixtures"
        );
    }
    let prompts =
        interop::check::read_peer_logits(&fixtures().join("export-logits.safetensors")).unwrap();
    assert!(prompts.len() >= 4);
    let gaps = interop::check::logit_gaps(&t.model, &prompts).unwrap();
    for (p, gap) in prompts.iter().zip(&gaps) {
        assert!(*gap <= 1e-4, "logit gap {gap} on {:?}", p.text);
        // transformers' tokenizer gave the ids frugal gives.
        assert_eq!(
            t.tok.encode_with_specials(p.text.as_deref().unwrap()),
            p.ids
        );
    }
}

/// Writes the fixtures the test above reads (run by scripts/interop-fixtures.sh, which then
/// has transformers score them).
#[test]
#[ignore]
fn write_fixtures() {
    let dir = temp("write");
    let run = fixture_run(&dir);
    let t = load_stage(&run, Some("sft")).unwrap();
    let out = fixtures().join("export");
    let _ = std::fs::remove_dir_all(&out);
    export(&t, &out, &ExportOptions::default()).unwrap();
    std::fs::copy(
        run.join("tokenizer.json"),
        fixtures().join("tokenizer.json"),
    )
    .unwrap();
    // The DeepSeek-V3 shape, for transformers' DeepseekV3ForCausalLM.
    let ds = fixture_run_with(&dir.join("deepseek"), DEEPSEEK.0, DEEPSEEK.1);
    let out = fixtures().join("export-deepseek");
    let _ = std::fs::remove_dir_all(&out);
    export(
        &load_stage(&ds, Some("sft")).unwrap(),
        &out,
        &ExportOptions::default(),
    )
    .unwrap();
    // Adapters on the exported model, for peft to load onto it.
    let peft = fixtures().join("peft");
    let _ = std::fs::remove_dir_all(&peft);
    std::fs::create_dir_all(&peft).unwrap();
    fixture_adapters(&t.model)
        .write_peft(&peft, "../export", None)
        .unwrap();
    // Tokenizers with other models' special tokens, for the checkpoints transformers saves.
    for (name, specials, pattern) in TEMPLATE_SPECIALS {
        let tok = train_tokenizer(specials, pattern);
        tok.save(&fixtures().join(format!("tokenizer-{name}.json")))
            .unwrap();
    }
}

/// The special tokens and split patterns of the chat formats the transformers-saved fixtures
/// use. transformers 5 loads a `qwen2` checkpoint's tokenizer with Qwen2's own split pattern
/// whatever tokenizer.json says, so that fixture's tokenizer is trained with it, as real Qwen2
/// tokenizers are.
const TEMPLATE_SPECIALS: &[(&str, &[&str], &str)] = &[
    (
        "llama3",
        &[
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        bpe::GPT4_PATTERN,
    ),
    (
        "chatml",
        &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
];

/// A byte-level BPE of 320 ordinary tokens trained here on `corpus()`, with `specials`.
fn train_tokenizer(specials: &[&str], pattern: &str) -> bpe::Tokenizer {
    let mut t = bpe::Trainer::new(bpe::TrainerOptions {
        vocab_size: 320 + specials.len(),
        specials: specials.iter().map(|s| s.to_string()).collect(),
        pattern: pattern.to_string(),
        ..Default::default()
    })
    .unwrap();
    t.count(&corpus());
    t.finish().unwrap()
}

#[test]
fn transformers_tokenizes_and_renders_chats_as_frugal_does() {
    let Some(py) = python("transformers", "the export with transformers' tokenizer") else {
        return;
    };
    use data::chat::import::conversation_from_json;
    use data::chat::template::to_messages;
    use data::chat::ChatFormat;
    let dir = temp("live");
    let run = fixture_run(&dir);
    let t = load_stage(&run, None).unwrap();
    let out = dir.join("hf");
    export(&t, &out, &ExportOptions::default()).unwrap();

    let texts: Vec<String> = corpus()
        .into_iter()
        .take(5)
        .chain(["<|user_start|>hi".into()])
        .collect();
    std::fs::write(
        dir.join("texts.json"),
        serde_json::to_string(&texts).unwrap(),
    )
    .unwrap();
    let args = [Path::new("tokenize"), &out, &dir.join("texts.json")];
    let theirs: Vec<Vec<u32>> =
        serde_json::from_str(&run_script(&py, "hf_readers.py", &args)).unwrap();
    for (text, ids) in texts.iter().zip(&theirs) {
        assert_eq!(&t.tok.encode_with_specials(text), ids, "{text:?}");
    }

    let f = ChatFormat::new(&t.tok).unwrap();
    let convs = [
        r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is 48/2?"},
            {"role": "assistant", "content": [{"type": "text", "text": "It is "},
              {"type": "python", "text": "48/2"}, {"type": "python_output", "text": "24"},
              {"type": "text", "text": ", so 24."}]}]}"#,
        r#"{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"}"#,
        r#"{"prompt": "def add(a, b):", "completion": "\n    return a + b"}"#,
    ];
    let cases: Vec<Value> = convs
        .iter()
        .map(|c| {
            let conv = conversation_from_json(&serde_json::from_str(c).unwrap()).unwrap();
            let mut prompt = conv.clone();
            prompt.messages.pop();
            serde_json::json!({
                "messages": to_messages(&conv),
                "ids": f.render(&conv).unwrap().ids,
                "prompt_messages": to_messages(&prompt),
                "prompt_ids": f.render_prompt(&prompt, 1 << 20).unwrap(),
            })
        })
        .collect();
    std::fs::write(
        dir.join("cases.json"),
        serde_json::to_string(&cases).unwrap(),
    )
    .unwrap();
    let said = run_script(
        &py,
        "hf_readers.py",
        &["template".as_ref(), &out, &dir.join("cases.json")],
    );
    assert!(said.contains("agrees"), "{said}");
}

/// LoRA adapters (rank 4, every projection) with every entry drawn, B included, so that the
/// merge moves every adapted weight.
fn fixture_adapters(model: &Llama) -> train::lora::Adapters {
    let cfg = train::lora::LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..Default::default()
    };
    let mut ad = train::lora::Adapters::new(&cfg, model, Path::new("base")).unwrap();
    tensor::Rng::new(11).fill_normal(&mut ad.data, 0.2);
    ad
}

/// A PEFT adapter written by frugal, loaded by peft onto transformers' model of the export:
/// its logits equal frugal's model with the adapters merged.
#[test]
fn peft_loads_frugals_adapters_with_the_merged_models_logits() {
    let dir = temp("peft");
    let run = fixture_run(&dir);
    let t = load_stage(&run, Some("sft")).unwrap();
    // The committed adapters are what frugal writes for them today.
    let ours = dir.join("peft");
    std::fs::create_dir_all(&ours).unwrap();
    fixture_adapters(&t.model)
        .write_peft(&ours, "../export", None)
        .unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(
            std::fs::read(ours.join(f)).unwrap()
                == std::fs::read(fixtures().join("peft").join(f)).unwrap(),
            "{f} differs from the adapters peft loaded: run scripts/interop-fixtures.sh and commit"
        );
    }
    let ad = train::lora::Adapters::from_peft(&fixtures().join("peft"), &t.model).unwrap();
    let mut merged = Llama::new(t.model.cfg.clone(), t.model.params.clone());
    ad.merge_into(&mut merged.params);
    let peer =
        interop::check::read_peer_logits(&fixtures().join("peft/logits.safetensors")).unwrap();
    let gaps = interop::check::logit_gaps(&merged, &peer).unwrap();
    let unmerged = interop::check::logit_gaps(&t.model, &peer).unwrap();
    for ((p, gap), far) in peer.iter().zip(&gaps).zip(&unmerged) {
        assert!(*gap <= 1e-4, "logit gap {gap} on {:?}", p.text);
        assert!(*far > 1e-2, "the adapters change the logits ({far})");
    }
}

/// The DeepSeek-V3 shape (latent attention, a dense layer, then shared and routed experts with
/// sigmoid gates scaled by 2.5): transformers' DeepseekV3ForCausalLM reads the export with
/// frugal's logits.
#[test]
fn transformers_reads_a_deepseek_v3_export_with_frugals_logits() {
    let dir = temp("deepseek");
    let run = fixture_run_with(&dir, DEEPSEEK.0, DEEPSEEK.1);
    let t = load_stage(&run, Some("sft")).unwrap();
    let out = dir.join("hf");
    export(&t, &out, &ExportOptions::default()).unwrap();
    for f in EXPORT_FILES {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(fixtures().join("export-deepseek").join(f)).unwrap(),
            "{f} differs from the export transformers scored: run scripts/interop-fixtures.sh and commit"
        );
    }
    let cfg = json(&out.join("config.json"));
    assert_eq!(cfg["architectures"][0], "DeepseekV3ForCausalLM");
    assert_eq!(cfg["first_k_dense_replace"], 1);
    let prompts =
        interop::check::read_peer_logits(&fixtures().join("export-deepseek/logits.safetensors"))
            .unwrap();
    for (p, gap) in prompts
        .iter()
        .zip(interop::check::logit_gaps(&t.model, &prompts).unwrap())
    {
        assert!(gap <= 1e-4, "logit gap {gap} on {:?}", p.text);
    }
}
