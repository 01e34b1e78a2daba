//! Named tensors in safetensors files, in f32 or bf16, sharded past a size the way
//! `save_pretrained` shards (`model-00001-of-00003.safetensors` and
//! `model.safetensors.index.json` mapping each tensor to its file).

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
            Dtype::Bf16 => "bfloat16",
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }
    fn safetensors(self) -> StDtype {
        match self {
            Dtype::F32 => StDtype::F32,
            Dtype::Bf16 => StDtype::BF16,
        }
    }
    /// `values` as little-endian bytes of this type.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::Bf16 => values
                .iter()
                .flat_map(|&v| to_bf16(v).to_le_bytes())
                .collect(),
        }
    }
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
