//! The uncompressed body of an artifact (docs/ARTIFACT.md): a JSON directory (the model config and
//! one entry per tensor) followed by the payload, laid out in three sections so like bytes sit
//! together for the compressor: all integers, then all fp16/f32 scales, then all raw values.
//!
//! ```text
//! u32 LE  directory length D
//! D bytes directory, UTF-8 JSON: {"format": "pgq", "version": 1, "config": {...}, "tensors": [...]}
//! payload bytes, addressed by [offset, length] pairs in the directory
//! ```

use anyhow::{anyhow, bail, Context, Result};
use half::f16;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dtype::DType;
use crate::encoded::{Encoding, Scale, StoredTensor};

pub const FORMAT: &str = "pgq";
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Directory {
    format: String,
    version: u32,
    config: Value,
    tensors: Vec<Entry>,
}

/// One tensor: `[offset, length]` ranges into the payload.
#[derive(Serialize, Deserialize)]
#[serde(tag = "enc", rename_all = "lowercase")]
enum Entry {
    Raw {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        stored: DType,
        data: [usize; 2],
    },
    Rows {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        bits: u8,
        q: [usize; 2],
        scales: [usize; 2],
    },
    Tensor {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        bits: u8,
        scale_dtype: DType,
        q: [usize; 2],
        scale: [usize; 2],
    },
}

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

/// Parses a body, checking every range and size; the payload must be covered exactly once.
pub fn decode_body(body: &[u8]) -> Result<(Value, Vec<StoredTensor>)> {
    if body.len() < 4 {
        bail!("body of {} bytes has no directory", body.len());
    }
    let dir_len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    let dir_end = 4usize
        .checked_add(dir_len)
        .filter(|e| *e <= body.len())
        .ok_or_else(|| anyhow!("directory length {dir_len} runs past the body"))?;
    let dir: Directory = serde_json::from_slice(&body[4..dir_end])
        .map_err(|e| anyhow!("directory is not valid JSON: {e}"))?;
    if dir.format != FORMAT || dir.version != VERSION {
        bail!(
            "directory says format {:?} version {}, expected {FORMAT:?} version {VERSION}",
            dir.format,
            dir.version
        );
    }
    let payload = &body[dir_end..];
    let mut used: Vec<[usize; 2]> = Vec::new();
    let mut take = |name: &str, range: [usize; 2]| -> Result<&[u8]> {
        let end = range[0]
            .checked_add(range[1])
            .filter(|e| *e <= payload.len());
        let end = end.ok_or_else(|| {
            anyhow!(
                "tensor {name}: range {range:?} runs past the payload ({} bytes)",
                payload.len()
            )
        })?;
        used.push(range);
        Ok(&payload[range[0]..end])
    };
    let mut tensors = Vec::with_capacity(dir.tensors.len());
    for e in dir.tensors {
        let t = match e {
            Entry::Raw {
                name,
                shape,
                dtype,
                stored,
                data,
            } => {
                let bytes = take(&name, data)?.to_vec();
                StoredTensor {
                    name,
                    shape,
                    dtype,
                    encoding: Encoding::Raw { stored, bytes },
                }
            }
            Entry::Rows {
                name,
                shape,
                dtype,
                bits,
                q,
                scales,
            } => {
                let q = take(&name, q)?.iter().map(|b| *b as i8).collect();
                let sb = take(&name, scales)?;
                if sb.len() % 2 != 0 {
                    bail!("tensor {name}: odd number of fp16 scale bytes");
                }
                let scales = sb
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect();
                StoredTensor {
                    name,
                    shape,
                    dtype,
                    encoding: Encoding::Rows { bits, q, scales },
                }
            }
            Entry::Tensor {
                name,
                shape,
                dtype,
                bits,
                scale_dtype,
                q,
                scale,
            } => {
                let q = take(&name, q)?.iter().map(|b| *b as i8).collect();
                let sb = take(&name, scale)?;
                let scale = match (scale_dtype, sb.len()) {
                    (DType::F32, 4) => Scale::F32(f32::from_le_bytes(sb.try_into().unwrap())),
                    (DType::F16, 2) => Scale::F16(f16::from_le_bytes(sb.try_into().unwrap())),
                    (d, n) => bail!("tensor {name}: {n}-byte {} scale", d.name()),
                };
                StoredTensor {
                    name,
                    shape,
                    dtype,
                    encoding: Encoding::Tensor { bits, q, scale },
                }
            }
        };
        t.validate()?;
        tensors.push(t);
    }
    used.sort_unstable();
    let mut next = 0;
    for r in used {
        if r[0] != next {
            bail!("payload ranges overlap or leave a gap at byte {next}");
        }
        next = r[0] + r[1];
    }
    if next != payload.len() {
        bail!(
            "payload has {} bytes, the directory accounts for {next}",
            payload.len()
        );
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("tensor {} appears twice", w[0]);
    }
    Ok((dir.config, tensors))
}
