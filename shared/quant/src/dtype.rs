//! Float element types of stored and original tensors (the models hold only float tensors), and
//! the exact conversions between them.
//!
//! Conversions to the narrow float types round to nearest, ties to even, as torch's `.to(dtype)`
//! does, so a value decoded here equals the value torch would hold after the same cast.

use half::{bf16, f16};

/// The types and the reading conversions are the evaluator's.
pub use pgolf_evaluator::dtype::{floats_from_bytes, round_through, DType};

/// The libtorch kind of a dtype.
#[cfg(feature = "torch")]
pub fn to_kind(dtype: DType) -> tch::Kind {
    match dtype {
        DType::F32 => tch::Kind::Float,
        DType::F16 => tch::Kind::Half,
        DType::Bf16 => tch::Kind::BFloat16,
    }
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
