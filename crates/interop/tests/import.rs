//! `frugal import hf` against checkpoints transformers saved itself (fixtures/llama-gqa: GQA,
//! Llama 3.1 RoPE scaling, a padded vocabulary, a Llama-3-style template; fixtures/qwen2: q/k/v
//! biases, tied embeddings, ChatML), the round trip through an export, and bad input.
//! The fixtures' logits and chat ids are transformers'; scripts/interop-fixtures.sh writes them.

use data::chat::template::{ModelTemplate, Template};
use interop::hf::{export, import, ExportOptions, ImportOptions};
use model::config::RopeScalingConfig;
use serde_json::Value;
use std::path::Path;
use train::checkpoint::load_stage;

mod support;
use support::{fixtures, temp};

const OPTS: ImportOptions = ImportOptions { context_len: None };

#[test]
fn checkpoints_transformers_saved_import_with_its_logits() {
    let dir = temp("logits");
    for (name, arch) in [
        ("llama-gqa", "LlamaForCausalLM"),
        ("qwen2", "Qwen2ForCausalLM"),
    ] {
        let run = dir.join(name);
        let s = import(&fixtures().join(name), &run, &OPTS).unwrap();
        assert_eq!(s.architecture, arch);
        assert!(s.chat_template);
        let t = load_stage(&run, None).unwrap();
        assert_eq!(t.stage, "pretrain");
        let peer =
            interop::check::read_peer_logits(&fixtures().join(name).join("logits.safetensors"))
                .unwrap();
        let gaps = interop::check::logit_gaps(&t.model, &peer).unwrap();
        for (p, gap) in peer.iter().zip(&gaps) {
            assert!(*gap <= 1e-4, "{name}: logit gap {gap} on {:?}", p.text);
            assert_eq!(
                t.tok.encode_with_specials(p.text.as_deref().unwrap()),
                p.ids,
                "{name}"
            );
        }
        let cfg = &t.model.cfg;
        match name {
            "llama-gqa" => {
                assert_eq!((cfg.n_heads, cfg.n_kv_heads), (4, 2));
                assert!(matches!(
                    cfg.rope_scaling,
                    Some(RopeScalingConfig::Llama3 {
                        original_context: 16,
                        ..
                    })
                ));
                assert_eq!(
                    cfg.vocab_size,
                    t.tok.vocab_size() + 3,
                    "the padded rows are kept"
                );
                assert!(!cfg.qkv_bias);
            }
            _ => {
                assert!(cfg.qkv_bias && cfg.rope_scaling.is_none());
                assert!(
                    s.notes.iter().any(|n| n.contains("tied embeddings")),
                    "{:?}",
                    s.notes
                );
            }
        }
    }
}

#[test]
fn imported_chat_templates_render_as_transformers_renders_them() {
    let dir = temp("templates");
    for name in ["llama-gqa", "qwen2"] {
        let run = dir.join(name);
        import(&fixtures().join(name), &run, &OPTS).unwrap();
        let tok = bpe::Tokenizer::load(&run.join("tokenizer.json")).unwrap();
        let m = ModelTemplate::load(&run)
            .unwrap()
            .expect("the import keeps the template");
        let t = Template::new(&m.chat_template, name).unwrap();
        let cases: Vec<Value> = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(name).join("chat.json")).unwrap(),
        )
        .unwrap();
        for c in &cases {
            let msgs = &c["messages"];
            let text = t.render(msgs, &m.context(false)).unwrap();
            let ids: Vec<u32> = serde_json::from_value(c["ids"].clone()).unwrap();
            assert_eq!(tok.encode_with_specials(&text), ids, "{name}: {text:?}");
            let prompt = Value::Array(
                msgs.as_array().unwrap()[..msgs.as_array().unwrap().len() - 1].to_vec(),
            );
            let text = t.render(&prompt, &m.context(true)).unwrap();
            let ids: Vec<u32> = serde_json::from_value(c["prompt_ids"].clone()).unwrap();
            assert_eq!(
                tok.encode_with_specials(&text),
                ids,
                "{name} prompt: {text:?}"
            );
        }
        // The stop ids come from generation_config.json.
        assert_eq!(
            m.stop_ids,
            vec![tok.special_id(m.eos_token.as_deref().unwrap()).unwrap()]
        );
    }
}

#[test]
fn an_imported_model_exports_in_its_own_architecture_and_format() {
    let dir = temp("reexport");
    let run = dir.join("qwen2");
    import(&fixtures().join("qwen2"), &run, &OPTS).unwrap();
    let t = load_stage(&run, None).unwrap();
    let out = dir.join("hf");
    export(&t, &out, &ExportOptions::default()).unwrap();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(cfg["tie_word_embeddings"], false);
    assert_eq!(cfg["bos_token_id"], Value::Null);
    let tc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    let m = ModelTemplate::load(&run).unwrap().unwrap();
    assert_eq!(tc["chat_template"], m.chat_template);
    assert_eq!(tc["eos_token"], "<|im_end|>");
    // Imported again, it is the same model, bit for bit.
    let again = dir.join("again");
    import(&out, &again, &OPTS).unwrap();
    let u = load_stage(&again, None).unwrap();
    assert_eq!(u.model.cfg, t.model.cfg);
    assert!(u.model.params.data == t.model.params.data);
}

#[test]
fn a_frugal_export_imports_back_as_the_same_run() {
    let dir = temp("roundtrip");
    let src = fixtures().join("export");
    let run = dir.join("run");
    let s = import(&src, &run, &OPTS).unwrap();
    // frugal's own format needs no template of its own: the run uses the native chat format.
    assert!(ModelTemplate::load(&run).unwrap().is_none(), "{s:?}");
    let t = load_stage(&run, None).unwrap();
    data::chat::ChatTokens::from_tokenizer(&t.tok).unwrap();
    let out = dir.join("hf");
    // Exported again, it is the export it came from (an imported run's base stage is its
    // "pretrain" stage, so it stops at <|bos|> rather than at the reply's end).
    export(&t, &out, &ExportOptions::default()).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// Copies a fixture checkpoint, lets `damage` change it, and returns the import's error.
fn import_error(name: &str, damage: impl FnOnce(&Path)) -> String {
    let dir = temp(&format!("bad-{}", std::process::id()));
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    for e in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), ck.join(e.file_name())).unwrap();
    }
    damage(&ck);
    let run = dir.join("run");
    let e = import(&ck, &run, &OPTS).unwrap_err().to_string();
    assert!(!run.exists(), "a failed import leaves no run directory");
    let _ = std::fs::remove_dir_all(&dir);
    e
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn bad_checkpoints_are_refused_naming_the_file_and_field() {
    // An unknown model type.
    let e = import_error("llama-gqa", |d| {
        edit_json(&d.join("config.json"), |c| {
            c["model_type"] = "gemma2".into()
        })
    });
    assert!(
        e.contains("config.json") && e.contains("model_type") && e.contains("\"gemma2\""),
        "{e}"
    );
    // A RoPE scaling frugal does not compute.
    let e = import_error("llama-gqa", |d| {
        edit_json(&d.join("config.json"), |c| {
            c["rope_parameters"]["rope_type"] = "yarn".into()
        })
    });
    assert!(
        e.contains("rope_parameters.rope_type") && e.contains("yarn"),
        "{e}"
    );
    // A tensor of the wrong shape: config.json and the weights disagree.
    let e = import_error("llama-gqa", |d| {
        edit_json(&d.join("config.json"), |c| {
            c["intermediate_size"] = 48.into()
        })
    });
    assert!(
        e.contains("model.safetensors") && e.contains(".mlp.") && e.contains("has shape"),
        "{e}"
    );
    // A missing tensor.
    let e = import_error("qwen2", |d| {
        edit_json(&d.join("config.json"), |c| {
            c["num_hidden_layers"] = 3.into()
        })
    });
    assert!(e.contains("lacks") && e.contains("model.layers.2."), "{e}");
    // A config far larger than its weights is refused before anything is allocated.
    let e = import_error("qwen2", |d| {
        edit_json(&d.join("config.json"), |c| {
            c["hidden_size"] = 4_000_000.into()
        })
    });
    assert!(
        e.contains("implies") && e.contains("more than its weight files"),
        "{e}"
    );
    // A shard the index names is missing.
    let e = import_error("llama-gqa", |d| {
        std::fs::rename(
            d.join("model.safetensors"),
            d.join("model-00001-of-00002.safetensors"),
        )
        .unwrap();
        let index = serde_json::json!({"metadata": {}, "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors"}});
        std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    });
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
    // A SentencePiece tokenizer (Llama 2, Mistral).
    let e = import_error("llama-gqa", |d| {
        edit_json(&d.join("tokenizer.json"), |t| {
            t["model"]["byte_fallback"] = true.into();
            t["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "▁"});
        })
    });
    assert!(
        e.contains("tokenizer.json") && e.contains("SentencePiece"),
        "{e}"
    );
    // Merges in another order than the ids: frugal would encode differently.
    let e = import_error("qwen2", |d| {
        edit_json(&d.join("tokenizer.json"), |t| {
            t["model"]["merges"].as_array_mut().unwrap().swap(3, 4)
        })
    });
    assert!(
        e.contains("model.merges[3]") && e.contains("id order"),
        "{e}"
    );
    // A template that does not compile.
    let e = import_error("qwen2", |d| {
        std::fs::write(d.join("chat_template.jinja"), "{% for %}").unwrap()
    });
    assert!(
        e.contains("chat_template.jinja") && e.contains("chat template"),
        "{e}"
    );
    // Not JSON.
    let e = import_error("qwen2", |d| {
        std::fs::write(d.join("config.json"), "{").unwrap()
    });
    assert!(e.contains("config.json") && e.contains("not JSON"), "{e}");
}

#[test]
fn an_import_never_writes_into_a_directory_with_files() {
    let dir = temp("taken");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let e = import(&fixtures().join("qwen2"), &run, &OPTS)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "mine"
    );
}
