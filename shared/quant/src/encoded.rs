//! A tensor as the artifact stores it, and its exact dequantization (pgolf-evaluator's types; the
//! writer's size report is here).
//!
//! Integers are stored one per byte (int5..int8 alike, REFERENCE.md §5.8): the entropy coder absorbs
//! the unused high bits, and a byte-aligned layout keeps the decoder trivial.

pub use pgolf_evaluator::container::{Encoding, Scale, StoredTensor};

/// Bytes a tensor occupies before compression (integers, scales, raw values).
pub fn stored_bytes(t: &StoredTensor) -> usize {
    match &t.encoding {
        Encoding::Raw { bytes, .. } => bytes.len(),
        Encoding::Rows { q, scales, .. } => q.len() + 2 * scales.len(),
        Encoding::Tensor { q, scale, .. } => {
            q.len() + if matches!(scale, Scale::F32(_)) { 4 } else { 2 }
        }
    }
}
