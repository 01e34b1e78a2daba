//! Weights in safetensors with HF Llama tensor names, so files open in the HF ecosystem as is.

use crate::Params;
use base::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Writes every parameter as an f32 tensor. The file appears whole or not at all (temp + rename).
pub fn save_safetensors(params: &Params, path: &Path) -> Result<()> {
    let bytes: Vec<Vec<u8>> = params
        .specs
        .iter()
        .map(|s| {
            params.data[s.range()]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let views = params
        .specs
        .iter()
        .zip(&bytes)
        .map(|(s, b)| {
            Ok((
                s.name.clone(),
                TensorView::new(Dtype::F32, s.shape.clone(), b)
                    .map_err(|e| safetensors_err(path, e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, &meta, &tmp).map_err(|e| safetensors_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Fills `params` from `path`. Every parameter must be present as F32 with its exact shape.
/// Returns the names of tensors in the file that the model does not use, for the caller to judge.
pub fn load_safetensors(params: &mut Params, path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| safetensors_err(path, e))?;
    for spec in &params.specs {
        let t = file.tensor(&spec.name).map_err(|_| {
            Error::weights(
                path,
                format!("tensor {} is missing", spec.name),
                "the file was written for a different model; check the config's n_layers and names",
            )
        })?;
        if t.dtype() != Dtype::F32 {
            return Err(Error::weights(
                path,
                format!("tensor {} is {:?}, expected F32", spec.name, t.dtype()),
                "convert the weights to float32",
            ));
        }
        if t.shape() != spec.shape.as_slice() {
            return Err(Error::weights(
                path,
                format!(
                    "tensor {} has shape {:?}, the config expects {:?}",
                    spec.name,
                    t.shape(),
                    spec.shape
                ),
                "use the config these weights were trained with",
            ));
        }
        for (dst, src) in params.data[spec.range()]
            .iter_mut()
            .zip(t.data().chunks_exact(4))
        {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
    }
    let mut extra: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| params.spec(n).is_none())
        .cloned()
        .collect();
    extra.sort();
    Ok(extra)
}

fn safetensors_err(path: &Path, e: safetensors::SafeTensorError) -> Error {
    Error::weights(
        path,
        e.to_string(),
        "the file is not valid safetensors; re-export it",
    )
}

/// Writes named flat f32 vectors (optimizer moments) as 1-D safetensors tensors.
pub fn save_flat(path: &Path, tensors: &[(&str, &[f32])]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, d), b)| {
            Ok((
                name.to_string(),
                TensorView::new(Dtype::F32, vec![d.len()], b)
                    .map_err(|e| safetensors_err(path, e))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, &None, path).map_err(|e| safetensors_err(path, e))
}

/// Reads a flat f32 tensor of exactly `len` values.
pub fn load_flat(path: &Path, name: &str, len: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| safetensors_err(path, e))?;
    let t = file.tensor(name).map_err(|_| {
        Error::weights(
            path,
            format!("tensor {name} is missing"),
            "the checkpoint is incomplete",
        )
    })?;
    if t.dtype() != Dtype::F32 || t.shape() != [len] {
        return Err(Error::weights(
            path,
            format!(
                "tensor {name} is {:?} {:?}, expected F32 [{len}]",
                t.dtype(),
                t.shape()
            ),
            "the checkpoint belongs to another config",
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn round_trip_and_mismatches_are_named() {
        let dir = std::env::temp_dir().join(format!("frugal-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = ModelConfig::preset("tiny", &[]).unwrap();
        let p = Params::init(&cfg, 3);
        let path = dir.join("m.safetensors");
        save_safetensors(&p, &path).unwrap();
        let mut q = Params::zeros(&cfg);
        assert!(load_safetensors(&mut q, &path).unwrap().is_empty());
        assert_eq!(p.data, q.data);

        let mut wider = cfg.clone();
        wider.d_model = 64;
        let e = load_safetensors(&mut Params::zeros(&wider), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.embed_tokens.weight")
                && e.contains("[128, 32]")
                && e.contains("HINT"),
            "{e}"
        );
        let mut deeper = cfg.clone();
        deeper.n_layers = 3;
        let e = load_safetensors(&mut Params::zeros(&deeper), &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.layers.2.input_layernorm.weight is missing"),
            "{e}"
        );
        std::fs::write(dir.join("bad.safetensors"), b"not a safetensors file").unwrap();
        assert!(load_safetensors(&mut q, &dir.join("bad.safetensors")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
