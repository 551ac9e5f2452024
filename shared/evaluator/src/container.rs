//! The uncompressed body of an artifact (docs/ARTIFACT.md): a JSON directory (the model config and
//! one entry per tensor) followed by the payload, laid out in three sections so like bytes sit
//! together for the compressor: all integers, then all fp16/f32 scales, then all raw values.
//!
//! ```text
//! u32 LE  directory length D
//! D bytes directory, UTF-8 JSON: {"format": "pgq", "version": 1, "config": {...}, "tensors": [...]}
//! payload bytes, addressed by [offset, length] pairs in the directory
//! ```
//!
//! Integers are stored one per byte (int5..int8 alike, REFERENCE.md §5.8): the entropy coder
//! absorbs the unused high bits, and a byte-aligned layout keeps this decoder trivial.

use anyhow::{anyhow, bail, Result};
use half::f16;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dtype::{floats_from_bytes, round_through, DType};

pub const FORMAT: &str = "pgq";
pub const VERSION: u32 = 1;

/// The directory as JSON (the writer in pgolf-quant fills the same structs).
#[derive(Serialize, Deserialize)]
pub struct Directory {
    pub format: String,
    pub version: u32,
    pub config: Value,
    pub tensors: Vec<Entry>,
}

/// One tensor: `[offset, length]` ranges into the payload.
#[derive(Serialize, Deserialize)]
#[serde(tag = "enc", rename_all = "lowercase")]
pub enum Entry {
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

/// How a tensor's values are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoding {
    /// Float values in `stored` dtype (f32 kept as is, or narrowed to f16/bf16).
    Raw { stored: DType, bytes: Vec<u8> },
    /// Signed `bits`-bit integers, row-major, with one fp16 scale per row (dimension 0).
    Rows {
        bits: u8,
        q: Vec<i8>,
        scales: Vec<f16>,
    },
    /// Signed `bits`-bit integers with one scale for the whole tensor (f32 in the upstream int8
    /// per-tensor routine, f16 in GPTQ-lite's).
    Tensor { bits: u8, q: Vec<i8>, scale: Scale },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    F32(f32),
    F16(f16),
}

impl Scale {
    pub fn value(self) -> f32 {
        match self {
            Scale::F32(v) => v,
            Scale::F16(v) => v.to_f32(),
        }
    }
}

/// The largest integer level of a signed `bits`-bit code: 127 for int8, 31 for int6, 15 for int5.
pub fn max_level(bits: u8) -> i32 {
    (1i32 << (bits - 1)) - 1
}

/// One named tensor of the artifact: its original shape and dtype, and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// The dtype the model holds this tensor in (what decoding casts back to).
    pub dtype: DType,
    pub encoding: Encoding,
}

impl StoredTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks that sizes agree with the shape and integers lie in their range.
    pub fn validate(&self) -> Result<()> {
        let name = &self.name;
        // Checked, with room for 4-byte elements: a product that wrapped would pass the checks below.
        let numel = (self.shape.iter())
            .try_fold(4usize, |n, &d| n.checked_mul(d))
            .map(|n| n / 4)
            .ok_or_else(|| anyhow!("tensor {name}: shape {:?} is too large", self.shape))?;
        let check_q = |bits: u8, q: &[i8]| -> Result<()> {
            if !(2..=8).contains(&bits) {
                bail!("tensor {name}: {bits}-bit integers are not supported (2..=8)");
            }
            if q.len() != numel {
                bail!("tensor {name}: {} integers for {numel} elements", q.len());
            }
            let r = max_level(bits);
            if let Some(v) = q.iter().find(|v| (**v as i32).abs() > r) {
                bail!("tensor {name}: integer {v} outside the {bits}-bit range ±{r}");
            }
            Ok(())
        };
        match &self.encoding {
            Encoding::Raw { stored, bytes } => {
                if bytes.len() != numel * stored.size() {
                    bail!(
                        "tensor {name}: {} bytes for {numel} {} elements",
                        bytes.len(),
                        stored.name()
                    );
                }
            }
            Encoding::Rows { bits, q, scales } => {
                check_q(*bits, q)?;
                if self.shape.len() < 2 || scales.len() != self.shape[0] {
                    bail!(
                        "tensor {name}: {} row scales for shape {:?}",
                        scales.len(),
                        self.shape
                    );
                }
            }
            Encoding::Tensor { bits, q, .. } => check_q(*bits, q)?,
        }
        Ok(())
    }

    /// The values the model gets: `q·s` in f32, then cast to the original dtype (returned as f32,
    /// exactly representable in that dtype), as upstream's `dequantize_state_dict_int8`.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let values = match &self.encoding {
            Encoding::Raw { stored, bytes } => floats_from_bytes(*stored, bytes)?,
            Encoding::Rows { q, scales, .. } => {
                let cols = (self.numel() / scales.len().max(1)).max(1);
                q.chunks(cols)
                    .zip(scales)
                    .flat_map(|(row, s)| row.iter().map(move |v| *v as f32 * s.to_f32()))
                    .collect()
            }
            Encoding::Tensor { q, scale, .. } => {
                q.iter().map(|v| *v as f32 * scale.value()).collect()
            }
        };
        Ok(values
            .into_iter()
            .map(|v| round_through(self.dtype, v))
            .collect())
    }
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
            .filter(|e| *e <= payload.len())
            .ok_or_else(|| {
                anyhow!(
                    "tensor {name}: range {range:?} runs past the payload ({} bytes)",
                    payload.len()
                )
            })?;
        used.push(range);
        Ok(&payload[range[0]..end])
    };
    let ints = |b: &[u8]| -> Vec<i8> { b.iter().map(|v| *v as i8).collect() };
    let mut tensors = Vec::with_capacity(dir.tensors.len());
    for e in dir.tensors {
        let (name, shape, dtype, encoding) = match e {
            Entry::Raw {
                name,
                shape,
                dtype,
                stored,
                data,
            } => {
                let bytes = take(&name, data)?.to_vec();
                (name, shape, dtype, Encoding::Raw { stored, bytes })
            }
            Entry::Rows {
                name,
                shape,
                dtype,
                bits,
                q,
                scales,
            } => {
                let q = ints(take(&name, q)?);
                let sb = take(&name, scales)?;
                if sb.len() % 2 != 0 {
                    bail!("tensor {name}: odd number of fp16 scale bytes");
                }
                let scales = sb
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect();
                (name, shape, dtype, Encoding::Rows { bits, q, scales })
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
                let q = ints(take(&name, q)?);
                let sb = take(&name, scale)?;
                let scale = match (scale_dtype, sb.len()) {
                    (DType::F32, 4) => Scale::F32(f32::from_le_bytes(sb.try_into().unwrap())),
                    (DType::F16, 2) => Scale::F16(f16::from_le_bytes(sb.try_into().unwrap())),
                    (d, n) => bail!("tensor {name}: {n}-byte {} scale", d.name()),
                };
                (name, shape, dtype, Encoding::Tensor { bits, q, scale })
            }
        };
        let t = StoredTensor {
            name,
            shape,
            dtype,
            encoding,
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
