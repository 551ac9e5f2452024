//! Float element types of stored and original tensors (the models hold only float tensors), and
//! the exact conversions between them.
//!
//! Conversions to the narrow float types round to nearest, ties to even, as torch's `.to(dtype)`
//! does, so a value decoded here equals the value torch would hold after the same cast.

use anyhow::{bail, Result};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    Bf16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }

    pub fn to_kind(self) -> tch::Kind {
        match self {
            DType::F32 => tch::Kind::Float,
            DType::F16 => tch::Kind::Half,
            DType::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// Little-endian bytes of a float tensor -> f32 values (exact for every float dtype).
pub fn floats_from_bytes(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(dtype.size()) {
        bail!(
            "{} bytes is not a whole number of {} elements",
            bytes.len(),
            dtype.name()
        );
    }
    Ok(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    })
}

/// f32 values -> little-endian bytes of `dtype` (rounding to nearest even for f16/bf16).
pub fn floats_to_bytes(dtype: DType, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        DType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        DType::Bf16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
    }
    out
}

/// The value an f32 takes after a cast to `dtype` and back (what a tensor of that dtype holds).
pub fn round_through(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::Bf16 => bf16::from_f32(v).to_f32(),
        DType::F32 => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_casts_round_half_to_even() {
        // 1 + 2^-11 lies exactly halfway between two f16 values (1 and 1 + 2^-10): even wins.
        assert_eq!(round_through(DType::F16, 1.0 + 2f32.powi(-11)), 1.0);
        // 1 + 3·2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        assert_eq!(
            round_through(DType::F16, 1.0 + 3.0 * 2f32.powi(-11)),
            1.0 + 2f32.powi(-9)
        );
        // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
        assert_eq!(round_through(DType::Bf16, 1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            round_through(DType::Bf16, 1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2f32.powi(-6)
        );
    }

    #[test]
    fn bytes_round_trip() {
        let v = [0.5f32, -3.25, 1e-3];
        for dt in [DType::F32, DType::F16, DType::Bf16] {
            let back = floats_from_bytes(dt, &floats_to_bytes(dt, &v)).unwrap();
            let expect: Vec<f32> = v.iter().map(|x| round_through(dt, *x)).collect();
            assert_eq!(back, expect);
        }
        assert!(floats_from_bytes(DType::F32, &[0u8; 5]).is_err());
    }
}
