//! `frugal export --format gguf`: one file for llama.cpp, written to the GGUF v3 spec by
//! frugal's own writer: the model's hyperparameters, its tokenizer (BPE tokens, merges, special
//! tokens, pre-tokenizer, chat template) as metadata, then the tensors, each 32-byte aligned.
//!
//! - Architectures: `llama` (dense frugal models) and `qwen2` (with q/k/v biases).
//! - Types: F32, F16, BF16 and Q8_0 (blocks of 32: an f16 scale amax/127 and 32 int8, rounded
//!   half away from zero, bit-exact with ggml's reference). Vectors (norms, biases) stay F32, as
//!   llama.cpp's converter keeps them; a matrix whose rows are not a multiple of 32 long falls
//!   back from Q8_0 to F16.
//! - llama.cpp's `llama` architecture rotates interleaved pairs (Meta's layout) while frugal
//!   rotates halves (transformers'): each head's q and k rows are permuted so that llama.cpp's
//!   rotation meets the same pairs. `qwen2` rotates halves (NeoX) and takes the rows as they are.
//! - RoPE scaling: none, `linear` (rope.scaling.type/factor), and Llama 3.1's as the
//!   `rope_freqs.weight` factors llama.cpp divides each frequency by.
//! - `tokenizer.ggml.pre` names the llama.cpp pre-tokenizer whose split equals the run's:
//!   frugal's GPT-4 pattern is `llama-bpe` (Llama 3's), Qwen2's is `qwen2`, GPT-2's `gpt-2`.

use crate::hf::export::{chat_identity, mtp_free_tensors};
use crate::outdir::OutDir;
use crate::tensors::{f32_to_f16, Dtype, Named};
use base::{Error, Result};
use model::config::{ModelConfig, RopeScalingConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use train::checkpoint::Trained;

/// Weight types of a GGUF export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl GgufType {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(GgufType::F32),
            "f16" => Ok(GgufType::F16),
            "bf16" => Ok(GgufType::Bf16),
            "q8_0" => Ok(GgufType::Q8_0),
            _ => Err(Error::input(
                format!("--dtype {s}"),
                "is not a GGUF weight type frugal writes",
                "use f32, f16, bf16 or q8_0",
            )),
        }
    }
    /// ggml_type.
    fn ggml(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 8,
            GgufType::Bf16 => 30,
        }
    }
    /// general.file_type (llama_ftype).
    fn file_type(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 7,
            GgufType::Bf16 => 32,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// Value type ids of the spec.
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

const ALIGNMENT: usize = 32;
const QK8_0: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Meta {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Meta::U32(v) => {
                out.extend(T_U32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::I32(v) => {
                out.extend(T_I32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                out.extend(T_F32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Bool(v) => {
                out.extend(T_BOOL.to_le_bytes());
                out.push(*v as u8);
            }
            Meta::Str(s) => {
                out.extend(T_STRING.to_le_bytes());
                put_str(out, s);
            }
            Meta::Strs(v) => {
                out.extend(T_ARRAY.to_le_bytes());
                out.extend(T_STRING.to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                for s in v {
                    put_str(out, s);
                }
            }
            Meta::I32s(v) => {
                out.extend(T_ARRAY.to_le_bytes());
                out.extend(T_I32.to_le_bytes());
                out.extend((v.len() as u64).to_le_bytes());
                for x in v {
                    out.extend(x.to_le_bytes());
                }
            }
        }
    }
}

/// One tensor as GGUF stores it: llama.cpp's name, dims fastest first, type and bytes.
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgufType,
    pub data: Vec<u8>,
}

/// What an export wrote.
#[derive(Debug)]
pub struct GgufSummary {
    pub path: PathBuf,
    pub architecture: &'static str,
    pub tensors: usize,
    pub bytes: u64,
    /// Matrices written as F16 because Q8_0 needs rows in multiples of 32.
    pub fallbacks: Vec<String>,
}

/// Writes `t` to `out/model-<type>.gguf` (the directory must not exist or be empty).
pub fn export(t: &Trained, out: &Path, ty: GgufType) -> Result<GgufSummary> {
    let cfg = &t.model.cfg;
    if let Some(why) = crate::hf::config::llama_incompatibility(cfg) {
        return Err(Error::config(
            "config.toml",
            why,
            "export a dense model (attention = \"gqa\", mlp = \"swiglu\", logit_softcap = 0)",
        ));
    }
    let arch = architecture(cfg);
    let meta = metadata(t, ty)?;
    let mut fallbacks = Vec::new();
    let tensors = gguf_tensors(t, arch, ty, &mut fallbacks)?;
    let dir = OutDir::create(out)?;
    let name = format!("model-{}.gguf", format!("{ty:?}").to_lowercase());
    let bytes = write_file(&dir.path(&name), &meta, &tensors)?;
    let dir = dir.finish()?;
    Ok(GgufSummary {
        path: dir.join(name),
        architecture: arch,
        tensors: tensors.len(),
        bytes,
        fallbacks,
    })
}

/// llama.cpp's architecture for `cfg`.
fn architecture(cfg: &ModelConfig) -> &'static str {
    if cfg.qkv_bias {
        "qwen2"
    } else {
        "llama"
    }
}

/// Every metadata key and value an export of `t` in `ty` writes, in order.
pub fn metadata(t: &Trained, ty: GgufType) -> Result<Vec<(String, Meta)>> {
    let cfg = &t.model.cfg;
    let mut meta = hyperparameters(cfg, architecture(cfg), ty, t.stage);
    meta.extend(tokenizer_metadata(t)?);
    Ok(meta)
}

fn hyperparameters(
    cfg: &ModelConfig,
    arch: &str,
    ty: GgufType,
    stage: &str,
) -> Vec<(String, Meta)> {
    let k = |s: &str| format!("{arch}.{s}");
    let mut m = vec![
        ("general.architecture".into(), Meta::Str(arch.into())),
        ("general.name".into(), Meta::Str(format!("frugal {stage}"))),
        ("general.file_type".into(), Meta::U32(ty.file_type())),
        ("general.quantization_version".into(), Meta::U32(2)),
        (k("vocab_size"), Meta::U32(cfg.vocab_size as u32)),
        (k("context_length"), Meta::U32(cfg.context_len as u32)),
        (k("embedding_length"), Meta::U32(cfg.d_model as u32)),
        (k("block_count"), Meta::U32(cfg.n_layers as u32)),
        (k("feed_forward_length"), Meta::U32(cfg.ffn_hidden as u32)),
        (k("attention.head_count"), Meta::U32(cfg.n_heads as u32)),
        (
            k("attention.head_count_kv"),
            Meta::U32(cfg.n_kv_heads as u32),
        ),
        (
            k("attention.layer_norm_rms_epsilon"),
            Meta::F32(cfg.norm_eps),
        ),
        (k("rope.freq_base"), Meta::F32(cfg.rope_theta)),
        (k("rope.dimension_count"), Meta::U32(cfg.head_dim() as u32)),
    ];
    if let Some(RopeScalingConfig::Linear { factor }) = cfg.rope_scaling {
        m.push((k("rope.scaling.type"), Meta::Str("linear".into())));
        m.push((k("rope.scaling.factor"), Meta::F32(factor)));
    }
    m
}

/// The pre-tokenizer llama.cpp implements with the same split as `pattern`.
fn pre_tokenizer(pattern: &str) -> Option<&'static str> {
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pattern {
        p if p == bpe::GPT4_PATTERN || p == LLAMA3 => Some("llama-bpe"),
        QWEN2 => Some("qwen2"),
        p if p == bpe::GPT2_PATTERN => Some("gpt-2"),
        _ => None,
    }
}

/// Token types of the spec.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const UNUSED: i32 = 5;

fn tokenizer_metadata(t: &Trained) -> Result<Vec<(String, Meta)>> {
    let tok = &t.tok;
    let pre = pre_tokenizer(tok.pattern()).ok_or_else(|| {
        Error::input(
            "tokenizer.json",
            format!(
                "splits text with {:?}, a pattern no llama.cpp pre-tokenizer reproduces",
                tok.pattern()
            ),
            "train the tokenizer with frugal's default (GPT-4) pattern, or Qwen2's or GPT-2's",
        )
    })?;
    if tok.nfc() && pre != "qwen2" {
        return Err(Error::input(
            "tokenizer.json",
            "normalises text to NFC, which llama.cpp's llama-bpe pre-tokenizer does not",
            "export it as HF instead",
        ));
    }
    let chat = chat_identity(t)?;
    let mut tokens: Vec<String> = (0..tok.n_ordinary() as u32)
        .map(|id| tok.token_name(id))
        .collect();
    let mut types = vec![NORMAL; tokens.len()];
    for (s, _) in tok.specials() {
        tokens.push(s.clone());
        types.push(CONTROL);
    }
    // Embedding rows past the tokenizer's (a padded vocabulary) need names of their own.
    for i in tokens.len()..t.model.cfg.vocab_size {
        tokens.push(format!("[PAD{i}]"));
        types.push(UNUSED);
    }
    let merges = tok
        .merge_names()
        .map_err(|e| Error::input("tokenizer.json", e.to_string(), "retrain the tokenizer"))?;
    let mut m = vec![
        ("tokenizer.ggml.model".into(), Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Meta::Str(pre.into())),
        ("tokenizer.ggml.tokens".into(), Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type".into(), Meta::I32s(types)),
        ("tokenizer.ggml.merges".into(), Meta::Strs(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Meta::Bool(false)),
        ("tokenizer.ggml.add_eos_token".into(), Meta::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Meta::Str(chat.template.clone()),
        ),
    ];
    if let Some(bos) = chat.ids.bos {
        m.push(("tokenizer.ggml.bos_token_id".into(), Meta::U32(bos)));
        m.push(("tokenizer.ggml.padding_token_id".into(), Meta::U32(bos)));
    }
    if let Some(&eos) = chat.ids.eos.first() {
        m.push(("tokenizer.ggml.eos_token_id".into(), Meta::U32(eos)));
        m.push(("tokenizer.ggml.eot_token_id".into(), Meta::U32(eos)));
    }
    Ok(m)
}

/// llama.cpp's name of a frugal (HF) tensor name.
fn gguf_name(hf: &str) -> Option<String> {
    Some(match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.")?;
            let (layer, part) = rest.split_once('.')?;
            let part = match part {
                "input_layernorm.weight" => "attn_norm.weight",
                "post_attention_layernorm.weight" => "ffn_norm.weight",
                "self_attn.q_proj.weight" => "attn_q.weight",
                "self_attn.k_proj.weight" => "attn_k.weight",
                "self_attn.v_proj.weight" => "attn_v.weight",
                "self_attn.q_proj.bias" => "attn_q.bias",
                "self_attn.k_proj.bias" => "attn_k.bias",
                "self_attn.v_proj.bias" => "attn_v.bias",
                "self_attn.o_proj.weight" => "attn_output.weight",
                "mlp.gate_proj.weight" => "ffn_gate.weight",
                "mlp.up_proj.weight" => "ffn_up.weight",
                "mlp.down_proj.weight" => "ffn_down.weight",
                _ => return None,
            };
            format!("blk.{layer}.{part}")
        }
    })
}

/// Rows of a q or k projection (or its bias) reordered from rotate-half pairs (j, j + hd/2)
/// to interleaved pairs (2i, 2i + 1) within each head, as llama.cpp's `llama` expects:
/// new row h·hd + 2i + j is old row h·hd + j·hd/2 + i.
pub fn interleave_heads(values: &[f32], rows: usize, head_dim: usize) -> Vec<f32> {
    let cols = values.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..rows / head_dim {
        for i in 0..half {
            for j in 0..2 {
                let (new, old) = (h * head_dim + 2 * i + j, h * head_dim + j * half + i);
                out[new * cols..(new + 1) * cols]
                    .copy_from_slice(&values[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

fn gguf_tensors(
    t: &Trained,
    arch: &str,
    ty: GgufType,
    fallbacks: &mut Vec<String>,
) -> Result<Vec<GgufTensor>> {
    let cfg = &t.model.cfg;
    let (named, _) = mtp_free_tensors(t);
    let mut out = Vec::with_capacity(named.len() + 1);
    if let Some(RopeScalingConfig::Llama3 { .. }) = cfg.rope_scaling {
        out.push(GgufTensor {
            name: "rope_freqs.weight".into(),
            dims: vec![(cfg.head_dim() / 2) as u64],
            ty: GgufType::F32,
            data: encode(GgufType::F32, &llama3_factors(cfg)),
        });
    }
    for Named {
        name,
        shape,
        values,
    } in named
    {
        let gname = gguf_name(&name).ok_or_else(|| {
            Error::input(
                &name,
                "has no llama.cpp tensor name",
                "report this as a bug",
            )
        })?;
        let permute = arch == "llama" && (name.contains(".q_proj.") || name.contains(".k_proj."));
        let values: Vec<f32> = if permute {
            interleave_heads(values, shape[0], cfg.head_dim())
        } else {
            values.to_vec()
        };
        let mut this = if shape.len() == 1 { GgufType::F32 } else { ty };
        if this == GgufType::Q8_0 && shape[shape.len() - 1] % QK8_0 != 0 {
            fallbacks.push(gname.clone());
            this = GgufType::F16;
        }
        out.push(GgufTensor {
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            data: encode(this, &values),
            name: gname,
            ty: this,
        });
    }
    Ok(out)
}

/// The factor llama.cpp divides each RoPE frequency by for Llama 3.1's scaling.
fn llama3_factors(cfg: &ModelConfig) -> Vec<f32> {
    let scaling = RopeScalingConfig::to_kernel(cfg.rope_scaling.as_ref());
    let hd = cfg.head_dim();
    (0..hd / 2)
        .map(|j| {
            let f = (1.0 / (cfg.rope_theta as f64).powf(2.0 * j as f64 / hd as f64)) as f32;
            f / scaling.apply(f)
        })
        .collect()
}

/// `values` as bytes of `ty` (Q8_0: blocks along the rows, which are multiples of 32 long).
pub fn encode(ty: GgufType, values: &[f32]) -> Vec<u8> {
    match ty {
        GgufType::F32 => Dtype::F32.encode(values),
        GgufType::F16 => Dtype::F16.encode(values),
        GgufType::Bf16 => Dtype::Bf16.encode(values),
        GgufType::Q8_0 => {
            let mut out = Vec::with_capacity(values.len() / QK8_0 * (2 + QK8_0));
            for block in values.chunks(QK8_0) {
                let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
                let d = amax / 127.0;
                let id = if d == 0.0 { 0.0 } else { 1.0 / d };
                out.extend(f32_to_f16(d).to_le_bytes());
                // roundf: half away from zero, as ggml's reference.
                out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
            }
            out
        }
    }
}

/// Header, metadata, tensor infos, padding, data; returns the file's size.
fn write_file(path: &Path, meta: &[(String, Meta)], tensors: &[GgufTensor]) -> Result<u64> {
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        put_str(&mut head, k);
        v.write(&mut head);
    }
    let pad = |n: usize| n.div_ceil(ALIGNMENT) * ALIGNMENT;
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut head, &t.name);
        head.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend(d.to_le_bytes());
        }
        head.extend(t.ty.ggml().to_le_bytes());
        head.extend((offset as u64).to_le_bytes());
        offset = pad(offset + t.data.len());
    }
    head.resize(pad(head.len()), 0);
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e| Error::io(path, e);
    w.write_all(&head).map_err(io)?;
    let mut size = head.len();
    for t in tensors {
        w.write_all(&t.data).map_err(io)?;
        let padded = pad(t.data.len());
        w.write_all(&vec![0u8; padded - t.data.len()]).map_err(io)?;
        size += padded;
    }
    w.flush().map_err(io)?;
    Ok(size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_meets_the_same_pairs() {
        // One head of 4 rows × 1 column: rotate-half pairs (0, 2) and (1, 3) become (0, 1), (2, 3).
        assert_eq!(
            interleave_heads(&[0.0, 1.0, 2.0, 3.0], 4, 4),
            vec![0.0, 2.0, 1.0, 3.0]
        );
        // Two heads of two rows × 2 columns: each head alone.
        let v: Vec<f32> = (0..8).map(|x| x as f32).collect();
        assert_eq!(interleave_heads(&v, 4, 2), v);
    }

    #[test]
    fn q8_0_blocks_hold_a_half_scale_and_rounded_quanta() {
        let mut v = vec![0f32; 32];
        v[0] = 127.0;
        v[1] = -63.5; // exactly halfway: away from zero
        v[2] = 0.49;
        let b = encode(GgufType::Q8_0, &v);
        assert_eq!(b.len(), 34);
        assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x3c00, "scale 1.0");
        assert_eq!(b[2] as i8, 127);
        assert_eq!(b[3] as i8, -64);
        assert_eq!(b[4] as i8, 0);
        assert_eq!(encode(GgufType::Q8_0, &[0.0; 32])[2..], [0u8; 32]);
    }

    #[test]
    fn pre_tokenizers_are_named_for_the_patterns_llama_cpp_has() {
        assert_eq!(pre_tokenizer(bpe::GPT4_PATTERN), Some("llama-bpe"));
        assert_eq!(pre_tokenizer(bpe::GPT2_PATTERN), Some("gpt-2"));
        assert_eq!(pre_tokenizer(r"\w+"), None);
    }
}
