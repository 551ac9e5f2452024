//! The uncompressed body of an artifact (docs/ARTIFACT.md): a JSON directory (the model config and
//! one entry per tensor) followed by the payload, laid out in three sections so like bytes sit
//! together for the compressor: all integers, then all fp16/f32 scales, then all raw values.
//!
//! ```text
//! u32 LE  directory length D
//! D bytes directory, UTF-8 JSON: {"format": "pgq", "version": 1, "config": {...}, "tensors": [...]}
//! payload bytes, addressed by [offset, length] pairs in the directory
//! ```

use anyhow::{Context, Result};
use serde_json::Value;

use crate::dtype::DType;
use crate::encoded::{Encoding, Scale, StoredTensor};
/// The layout (directory structs, format name and version) and its reader are the evaluator's.
pub use pgolf_evaluator::container::{decode_body, Directory, Entry, FORMAT, VERSION};

/// Serialises config and tensors into a body.
pub fn encode_body(config: &Value, tensors: &[StoredTensor]) -> Result<Vec<u8>> {
    let mut ints = Vec::new();
    let mut scales = Vec::new();
    let mut raws = Vec::new();
    // Offsets are first taken within each section, then shifted once the section sizes are known.
    let mut entries = Vec::with_capacity(tensors.len());
    for t in tensors {
        t.validate()?;
        let (name, shape, dtype) = (t.name.clone(), t.shape.clone(), t.dtype);
        let push = |buf: &mut Vec<u8>, bytes: &[u8]| {
            let range = [buf.len(), bytes.len()];
            buf.extend_from_slice(bytes);
            range
        };
        entries.push(match &t.encoding {
            Encoding::Raw { stored, bytes } => Entry::Raw {
                name,
                shape,
                dtype,
                stored: *stored,
                data: push(&mut raws, bytes),
            },
            Encoding::Rows { bits, q, scales: s } => {
                let sb: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
                Entry::Rows {
                    name,
                    shape,
                    dtype,
                    bits: *bits,
                    q: push(&mut ints, &as_bytes(q)),
                    scales: push(&mut scales, &sb),
                }
            }
            Encoding::Tensor { bits, q, scale } => {
                let (scale_dtype, sb) = match scale {
                    Scale::F32(v) => (DType::F32, v.to_le_bytes().to_vec()),
                    Scale::F16(v) => (DType::F16, v.to_le_bytes().to_vec()),
                };
                let q = push(&mut ints, &as_bytes(q));
                Entry::Tensor {
                    name,
                    shape,
                    dtype,
                    bits: *bits,
                    scale_dtype,
                    q,
                    scale: push(&mut scales, &sb),
                }
            }
        });
    }
    let (scale_base, raw_base) = (ints.len(), ints.len() + scales.len());
    for e in &mut entries {
        match e {
            Entry::Raw { data, .. } => data[0] += raw_base,
            Entry::Rows { scales, .. } => scales[0] += scale_base,
            Entry::Tensor { scale, .. } => scale[0] += scale_base,
        }
    }
    let dir = Directory {
        format: FORMAT.into(),
        version: VERSION,
        config: config.clone(),
        tensors: entries,
    };
    let dir_bytes = serde_json::to_vec(&dir)?;
    let mut body = Vec::with_capacity(4 + dir_bytes.len() + raw_base + raws.len());
    body.extend_from_slice(
        &u32::try_from(dir_bytes.len())
            .context("directory over 4 GiB")?
            .to_le_bytes(),
    );
    body.extend_from_slice(&dir_bytes);
    body.extend_from_slice(&ints);
    body.extend_from_slice(&scales);
    body.extend_from_slice(&raws);
    Ok(body)
}

fn as_bytes(q: &[i8]) -> Vec<u8> {
    q.iter().map(|v| *v as u8).collect()
}
