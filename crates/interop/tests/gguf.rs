//! GGUF exports read by the `gguf` package, llama.cpp's own reader (live: scripts/test.sh
//! installs it; FRUGAL_SKIP_PEER_TESTS=1 skips knowingly and says so): every metadata key
//! round-trips, every F32 tensor holds frugal's values in llama.cpp's layout (q and k rows
//! interleaved for `llama`), and the F16, BF16 and Q8_0 files hold exactly the bytes gguf's own
//! quantizer makes of those values. Models: the frugal export fixture (frugal's chat format),
//! the transformers-saved Llama (grouped-query, Llama 3.1 RoPE scaling, padded vocabulary) and
//! Qwen2 (biases, ChatML).

use interop::gguf::{export, interleave_heads, metadata, GgufType, Meta};
use interop::hf::{import, ImportOptions};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};
use train::checkpoint::load_stage;

mod support;
use support::{fixtures, python, run_script, temp};

fn as_json(m: &Meta) -> Value {
    match m {
        Meta::U32(v) => (*v).into(),
        Meta::I32(v) => (*v).into(),
        Meta::F32(v) => (*v as f64).into(),
        Meta::Bool(v) => (*v).into(),
        Meta::Str(s) => s.clone().into(),
        Meta::Strs(v) => v.clone().into(),
        Meta::I32s(v) => v.clone().into(),
    }
}

#[test]
fn the_gguf_reader_reads_back_every_key_and_tensor() {
    let Some(py) = python("gguf, safetensors", "GGUF exports with the gguf reader") else {
        return;
    };
    let fixtures = fixtures();
    let dir = temp("read");
    for name in ["export", "llama-gqa", "qwen2"] {
        let run = dir.join(name);
        import(
            &fixtures.join(name),
            &run,
            &ImportOptions { context_len: None },
        )
        .unwrap();
        let t = load_stage(&run, None).unwrap();
        let mut files = Vec::new();
        for ty in [GgufType::F32, GgufType::F16, GgufType::Bf16, GgufType::Q8_0] {
            let s = export(&t, &dir.join(format!("{name}-{ty:?}")), ty).unwrap();
            assert!(s.fallbacks.is_empty(), "{:?}", s.fallbacks);
            files.push(s.path);
        }
        let back = dir.join(format!("{name}.safetensors"));
        run_script(&py, "gguf_check.py", &[Path::new("read"), &files[0], &back]);
        let quantized: Vec<&Path> = files[1..].iter().map(PathBuf::as_path).collect();
        let args = [&[Path::new("quant"), &files[0]][..], &quantized[..]].concat();
        run_script(&py, "gguf_check.py", &args);

        let bytes = std::fs::read(&back).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let fields: Value =
            serde_json::from_str(&header.metadata().as_ref().unwrap()["gguf"]).unwrap();
        let meta = metadata(&t, GgufType::F32).unwrap();
        assert_eq!(fields.as_object().unwrap().len(), meta.len(), "{name}");
        for (k, v) in &meta {
            assert_eq!(fields[k], as_json(v), "{name}: {k}");
        }
        let arch = fields["general.architecture"].as_str().unwrap();
        assert_eq!(arch, if name == "qwen2" { "qwen2" } else { "llama" });
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let cfg = &t.model.cfg;
        let expected_tensors = t.model.params.specs.len() + usize::from(name == "llama-gqa");
        assert_eq!(
            st.len(),
            expected_tensors,
            "{name}: rope_freqs.weight only with llama3 scaling"
        );
        for spec in &t.model.params.specs {
            let gname = spec
                .name
                .replace("model.embed_tokens.weight", "token_embd.weight")
                .replace("model.norm.weight", "output_norm.weight")
                .replace("lm_head.weight", "output.weight")
                .replace("model.layers.", "blk.")
                .replace("input_layernorm", "attn_norm")
                .replace("post_attention_layernorm", "ffn_norm")
                .replace("self_attn.q_proj", "attn_q")
                .replace("self_attn.k_proj", "attn_k")
                .replace("self_attn.v_proj", "attn_v")
                .replace("self_attn.o_proj", "attn_output")
                .replace("mlp.gate_proj", "ffn_gate")
                .replace("mlp.up_proj", "ffn_up")
                .replace("mlp.down_proj", "ffn_down");
            let view = st
                .tensor(&gname)
                .unwrap_or_else(|_| panic!("{name}: no {gname}"));
            assert_eq!(view.shape(), spec.shape.as_slice(), "{gname}");
            let got: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let ours = &t.model.params.data[spec.range()];
            let rotated = gname.contains("attn_q") || gname.contains("attn_k");
            let want = if arch == "llama" && rotated {
                interleave_heads(ours, spec.shape[0], cfg.head_dim())
            } else {
                ours.to_vec()
            };
            assert!(got == want, "{name}: {gname} differs");
        }
    }
}

#[test]
fn gguf_exports_refuse_splits_llama_cpp_cannot_reproduce() {
    let dir = temp("refuse");
    let run = dir.join("run");
    import(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2"),
        &run,
        &ImportOptions { context_len: None },
    )
    .unwrap();
    // A tokenizer with a pattern of its own.
    let path = run.join("tokenizer.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+|[^\w\s]+".into();
    std::fs::write(&path, doc.to_string()).unwrap();
    let t = load_stage(&run, None).unwrap();
    let e = export(&t, &dir.join("out"), GgufType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("no llama.cpp pre-tokenizer"),
        "{e}"
    );
    assert!(!dir.join("out").exists());
    assert!(GgufType::parse("q4_k")
        .unwrap_err()
        .to_string()
        .contains("--dtype q4_k"));
}
