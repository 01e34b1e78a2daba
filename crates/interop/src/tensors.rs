//! The element types exports write and imports read (f32, f16, bf16: encoding, decoding and
//! IEEE half conversion, shared by the HF and GGUF writers and the HF reader), and named
//! tensors in safetensors files, sharded past a size the way `save_pretrained` shards
//! (`model-00001-of-00003.safetensors` and `model.safetensors.index.json` mapping each tensor
//! to its file).

use base::{Error, Result};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tensor::matmul::bf16::to_bf16;

/// The element type an export stores weights in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    /// IEEE half, rounded to nearest even (GGUF's F16; HF exports offer f32 and bf16).
    F16,
    /// Rounded to nearest even, as PyTorch's `.to(torch.bfloat16)` does.
    Bf16,
}

impl Dtype {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(Dtype::F32),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            _ => Err(Error::input(
                format!("--dtype {s}"),
                "is not a supported type",
                "use f32 or bf16",
            )),
        }
    }
    /// The name `config.json`'s `torch_dtype` uses.
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
    fn safetensors(self) -> StDtype {
        match self {
            Dtype::F32 => StDtype::F32,
            Dtype::F16 => StDtype::F16,
            Dtype::Bf16 => StDtype::BF16,
        }
    }
    /// `values` as little-endian bytes of this type.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values
                .iter()
                .flat_map(|&v| f32_to_f16(v).to_le_bytes())
                .collect(),
            Dtype::Bf16 => values
                .iter()
                .flat_map(|&v| to_bf16(v).to_le_bytes())
                .collect(),
        }
    }
}

/// f32 → IEEE half, rounding to nearest even (NaN stays NaN, overflow goes to infinity).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal or zero: shift the mantissa (with its implicit 1) into place.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let round = (rem > mid || (rem == mid && half & 1 == 1)) as u32;
        return sign | (half + round) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let round = (rem > 0x1000 || (rem == 0x1000 && half & 1 == 1)) as u32;
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    sign | (half + round) as u16
}

/// Little-endian `bytes` of `dtype` into f32 `dst` (same element count, checked by shape).
pub fn decode_into(
    dst: &mut [f32],
    dtype: StDtype,
    bytes: &[u8],
) -> std::result::Result<(), String> {
    match dtype {
        StDtype::F32 => {
            for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        StDtype::BF16 => {
            for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        StDtype::F16 => {
            for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                *d = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        other => return Err(format!("is {other:?}")),
    }
    Ok(())
}

/// IEEE half → single, subnormals and infinities included.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: f · 2^-24.
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7fc0_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// One tensor to write: its name, shape and values.
pub struct Named<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: &'a [f32],
}

/// Parses a shard size such as `5GB`, `500MB` or a byte count.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(n) if scale > 0 && n > 0 => Ok(n * scale),
        _ => Err(Error::input(
            format!("--max-shard-size {s}"),
            "is not a size",
            "write it as 5GB, 500MB or a byte count",
        )),
    }
}

/// Splits tensors, in order, into shards of at most `max_bytes` each (a larger tensor gets a
/// shard of its own), as `save_pretrained` does.
fn shard(tensors: &[Named], dtype: Dtype, max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut shards = Vec::new();
    let (mut start, mut size) = (0, 0u64);
    for (i, t) in tensors.iter().enumerate() {
        let bytes = (t.values.len() * dtype.bytes()) as u64;
        if i > start && size + bytes > max_bytes {
            shards.push(start..i);
            (start, size) = (i, 0);
        }
        size += bytes;
    }
    if start < tensors.len() {
        shards.push(start..tensors.len());
    }
    shards
}

/// Writes `tensors` as `{stem}.safetensors`, or as numbered shards with
/// `{stem}.safetensors.index.json` when they exceed `max_bytes`. Returns the files written.
pub fn write_safetensors(
    dir: &Path,
    stem: &str,
    tensors: &[Named],
    dtype: Dtype,
    max_bytes: u64,
) -> Result<Vec<String>> {
    let shards = shard(tensors, dtype, max_bytes);
    let n = shards.len();
    let name = |i: usize| {
        if n == 1 {
            format!("{stem}.safetensors")
        } else {
            format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1)
        }
    };
    let mut files = Vec::new();
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for (i, range) in shards.into_iter().enumerate() {
        let file = name(i);
        let part = &tensors[range];
        let bytes: Vec<Vec<u8>> = part.iter().map(|t| dtype.encode(t.values)).collect();
        let views = part
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                weight_map.insert(t.name.clone(), file.clone());
                total += b.len() as u64;
                TensorView::new(dtype.safetensors(), t.shape.clone(), b)
                    .map(|v| (t.name.clone(), v))
                    .map_err(|e| Error::input(&t.name, e.to_string(), "report this as a bug"))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        let path = dir.join(&file);
        safetensors::serialize_to_file(views, &meta, &path)
            .map_err(|e| Error::weights(&path, e.to_string(), "check the disk"))?;
        files.push(file);
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let file = format!("{stem}.safetensors.index.json");
        let path = dir.join(&file);
        let text = serde_json::to_string_pretty(&index).expect("JSON values serialise");
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        files.push(file);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_to_nearest_even_like_numpy() {
        // (f32, f16 bits) pairs numpy's astype(float16) gives.
        let cases: &[(f32, u16)] = &[
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00), // rounds up to infinity
            (1e-8, 0x0000),
            (5.960_464_5e-8, 0x0001), // the smallest subnormal
            (2.980_232_2e-8, 0x0000), // half of it: ties to even (zero)
            (0.333_333_34, 0x3555),
            (1.000_488_3, 0x3c00),  // 1 + 2^-11: halfway, to even
            (1.001_464_8, 0x3c02),  // 1 + 3·2^-11: halfway, to even (up)
            (6.097_555e-5, 0x03ff), // largest subnormal
        ];
        for &(x, h) in cases {
            assert_eq!(f32_to_f16(x), h, "{x}");
        }
        assert_eq!(f32_to_f16(f32::NAN) & 0x7c00, 0x7c00);
        assert_ne!(f32_to_f16(f32::NAN) & 0x3ff, 0);
    }

    #[test]
    fn half_precision_decodes_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn sizes_parse_and_bad_ones_are_named() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("500 MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("123").unwrap(), 123);
        for bad in ["", "GB", "5XB", "0", "-1MB"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.contains("--max-shard-size"), "{e}");
        }
    }

    #[test]
    fn shards_respect_the_limit_and_keep_big_tensors_whole() {
        let v = vec![0f32; 100];
        let t = |n: usize| Named {
            name: format!("t{n}"),
            shape: vec![n],
            values: &v[..n],
        };
        let ts = [t(10), t(20), t(100), t(5), t(5)];
        // 4-byte values: 40, 80, 400, 20, 20 bytes.
        assert_eq!(shard(&ts, Dtype::F32, 200), vec![0..2, 2..3, 3..5]);
        assert_eq!(shard(&ts, Dtype::F32, 10_000), vec![0..5]);
        assert_eq!(shard(&ts, Dtype::Bf16, 60), vec![0..2, 2..3, 3..5]);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between two bf16 values and rounds to the even one, 1.0.
        let halfway = f32::from_bits(0x3F80_8000);
        assert_eq!(Dtype::Bf16.encode(&[halfway]), 0x3F80u16.to_le_bytes());
        let above = f32::from_bits(0x3F80_8001);
        assert_eq!(Dtype::Bf16.encode(&[above]), 0x3F81u16.to_le_bytes());
    }
}
