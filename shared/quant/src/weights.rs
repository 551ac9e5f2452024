//! Named float tensors read from and written to safetensors files (the weights and Hessians the
//! stages exchange), held as f32 values together with the dtype they come in.

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

use crate::dtype::{floats_from_bytes, floats_to_bytes, DType};

#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub name: String,
    pub shape: Vec<usize>,
    /// The dtype in the file (and the model).
    pub dtype: DType,
    /// The values, exactly (every f16/bf16 value is an f32).
    pub data: Vec<f32>,
}

impl Weight {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

fn dtype_of(d: Dtype) -> Result<DType> {
    Ok(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::Bf16,
        other => bail!("{other:?} tensors are not supported (float tensors only)"),
    })
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::BF16,
    }
}

/// Orders names so that `blocks.10` follows `blocks.9` (digit runs compare as numbers): a stable,
/// readable order independent of the file's.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x, y) {
            ((true, xs), (true, ys)) => xs.len().cmp(&ys.len()).then(xs.cmp(ys)),
            ((_, xs), (_, ys)) => xs.cmp(ys),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Every tensor of a safetensors file, in natural name order.
pub fn read_safetensors(path: &Path) -> Result<Vec<Weight>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", path.display()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let dtype =
            dtype_of(view.dtype()).with_context(|| format!("{}: tensor {name}", path.display()))?;
        let data = floats_from_bytes(dtype, view.data())?;
        if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
            bail!(
                "{}: tensor {name} holds a non-finite value ({bad})",
                path.display()
            );
        }
        out.push(Weight {
            name,
            shape: view.shape().to_vec(),
            dtype,
            data,
        });
    }
    out.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Ok(out)
}

/// Name → tensor of a safetensors file.
pub fn read_safetensors_map(path: &Path) -> Result<HashMap<String, Weight>> {
    Ok(read_safetensors(path)?
        .into_iter()
        .map(|w| (w.name.clone(), w))
        .collect())
}

/// Writes tensors, each in its own dtype (values are rounded to it).
pub fn write_safetensors(path: &Path, weights: &[Weight]) -> Result<()> {
    let mut buffers = Vec::with_capacity(weights.len());
    for w in weights {
        if w.data.len() != w.numel() {
            bail!(
                "tensor {}: {} values for shape {:?}",
                w.name,
                w.data.len(),
                w.shape
            );
        }
        buffers.push(floats_to_bytes(w.dtype, &w.data));
    }
    let views = weights
        .iter()
        .zip(&buffers)
        .map(|(w, b)| {
            Ok((
                w.name.clone(),
                safetensors::tensor::TensorView::new(st_dtype(w.dtype), w.shape.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_numbers_layers() {
        let mut v = vec![
            "blocks.10.a",
            "blocks.9.a",
            "blocks.1.b",
            "tok_emb.weight",
            "blocks.1.a",
            "skip_weights",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "blocks.1.a",
                "blocks.1.b",
                "blocks.9.a",
                "blocks.10.a",
                "skip_weights",
                "tok_emb.weight"
            ]
        );
    }

    #[test]
    fn safetensors_round_trip_keeps_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let ws = vec![
            Weight {
                name: "b".into(),
                shape: vec![2],
                dtype: DType::Bf16,
                data: vec![1.0, -0.5],
            },
            Weight {
                name: "a".into(),
                shape: vec![1, 2],
                dtype: DType::F32,
                data: vec![0.1, 0.2],
            },
        ];
        write_safetensors(&p, &ws).unwrap();
        let back = read_safetensors(&p).unwrap();
        assert_eq!(back, vec![ws[1].clone(), ws[0].clone()]);
    }
}

/// R0323's parameter banks (`pgolf_evaluator::bank_slices`) split into their per-layer matrices,
/// which is how an artifact stores them (R0323 quantizes its unbanked state dict); weights
/// without banks come back as they are. The layer count is `mlp_up_bank`'s first dim.
pub fn unbank(weights: Vec<Weight>) -> Result<Vec<Weight>> {
    let Some(layers) = weights
        .iter()
        .find(|w| w.name == "mlp_up_bank")
        .map(|w| w.shape[0])
    else {
        return Ok(weights);
    };
    let banks = pgolf_evaluator::bank_slices(layers);
    let mut out = Vec::with_capacity(weights.len());
    for w in weights {
        let Some((_, slices)) = banks.iter().find(|(bank, _)| *bank == w.name) else {
            out.push(w);
            continue;
        };
        if w.shape.len() != 3 || w.shape[0] != slices.len() {
            bail!(
                "{}: shape {:?}, expected {} slices of a matrix",
                w.name,
                w.shape,
                slices.len()
            );
        }
        let per = w.shape[1] * w.shape[2];
        for (k, name) in slices.iter().enumerate() {
            out.push(Weight {
                name: name.clone(),
                shape: w.shape[1..].to_vec(),
                dtype: w.dtype,
                data: w.data[k * per..(k + 1) * per].to_vec(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod bank_tests {
    use super::*;

    #[test]
    fn banks_split_into_their_layers_in_order() {
        // 2 layers, d = 1: qo_bank holds [q0, q1, o0, o1].
        let w = |name: &str, shape: Vec<usize>, data: Vec<f32>| Weight {
            name: name.into(),
            shape,
            dtype: DType::F32,
            data,
        };
        let weights = vec![
            w("qo_bank", vec![4, 1, 1], vec![1.0, 2.0, 3.0, 4.0]),
            w("kv_bank", vec![4, 1, 1], vec![5.0, 6.0, 7.0, 8.0]),
            w("mlp_up_bank", vec![2, 2, 1], vec![9.0, 10.0, 11.0, 12.0]),
            w("mlp_down_bank", vec![2, 1, 2], vec![13.0, 14.0, 15.0, 16.0]),
            w("tok_emb.weight", vec![1, 1], vec![0.5]),
        ];
        let out: HashMap<String, (Vec<usize>, Vec<f32>)> = unbank(weights)
            .unwrap()
            .into_iter()
            .map(|w| (w.name, (w.shape, w.data)))
            .collect();
        assert_eq!(out.len(), 13);
        assert_eq!(out["blocks.1.attn.c_q.weight"].1, vec![2.0]);
        assert_eq!(out["blocks.0.attn.proj.weight"].1, vec![3.0]);
        assert_eq!(out["blocks.1.attn.c_v.weight"].1, vec![8.0]);
        assert_eq!(
            out["blocks.1.mlp.fc.weight"],
            (vec![2, 1], vec![11.0, 12.0])
        );
        assert_eq!(
            out["blocks.0.mlp.proj.weight"],
            (vec![1, 2], vec![13.0, 14.0])
        );
        assert_eq!(out["tok_emb.weight"].1, vec![0.5]);
    }
}
