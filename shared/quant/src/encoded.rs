//! A tensor as the artifact stores it, and its exact dequantization.
//!
//! Integers are stored one per byte (int5..int8 alike, REFERENCE.md §5.8): the entropy coder absorbs
//! the unused high bits, and a byte-aligned layout keeps the decoder trivial.

use anyhow::{bail, Result};
use half::f16;

use crate::dtype::{floats_from_bytes, round_through, DType};
use crate::numeric::max_level;

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
        let numel = self.numel();
        let name = &self.name;
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
    /// exactly representable in that dtype).
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let values = match &self.encoding {
            Encoding::Raw { stored, bytes } => floats_from_bytes(*stored, bytes)?,
            Encoding::Rows { q, scales, .. } => {
                let cols = self.numel() / scales.len().max(1);
                q.chunks(cols.max(1))
                    .zip(scales)
                    .flat_map(|(row, s)| {
                        let s = s.to_f32();
                        row.iter().map(move |v| *v as f32 * s)
                    })
                    .collect()
            }
            Encoding::Tensor { q, scale, .. } => {
                let s = scale.value();
                q.iter().map(|v| *v as f32 * s).collect()
            }
        };
        Ok(values
            .into_iter()
            .map(|v| round_through(self.dtype, v))
            .collect())
    }

    /// Bytes this tensor occupies before compression (integers, scales, raw values).
    pub fn stored_bytes(&self) -> usize {
        match &self.encoding {
            Encoding::Raw { bytes, .. } => bytes.len(),
            Encoding::Rows { q, scales, .. } => q.len() + 2 * scales.len(),
            Encoding::Tensor { q, scale, .. } => {
                q.len() + if matches!(scale, Scale::F32(_)) { 4 } else { 2 }
            }
        }
    }
}
