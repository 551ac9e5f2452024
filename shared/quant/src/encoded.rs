//! A tensor as the artifact stores it, and its exact dequantization (pgolf-evaluator's types; the
//! writer's size report is here).
//!
//! Integers are stored one per byte (int5..int8 alike, REFERENCE.md §5.8): the entropy coder absorbs
//! the unused high bits, and a byte-aligned layout keeps the decoder trivial.

pub use pgolf_evaluator::container::{Encoding, Factor, Layout, LowRank, Scale, StoredTensor};

/// Bytes a tensor occupies before compression (integers, scales, raw values, LQER factors, row
/// permutation).
pub fn stored_bytes(t: &StoredTensor) -> usize {
    let extra =
        t.lqer.as_ref().map_or(0, lqer_bytes) + t.layout.perm.as_ref().map_or(0, |p| 2 * p.len());
    extra
        + match &t.encoding {
            Encoding::Raw { bytes, .. } => bytes.len(),
            Encoding::Rows { q, scales, .. } => q.len() + 2 * scales.len(),
            Encoding::Tensor { q, scale, .. } => {
                q.len() + if matches!(scale, Scale::F32(_)) { 4 } else { 2 }
            }
        }
}

/// Bytes of an LQER correction before compression: one per integer, two per fp16 scale.
pub fn lqer_bytes(l: &LowRank) -> usize {
    [&l.a, &l.b]
        .iter()
        .map(|f| f.q.len() + 2 * f.scales.len())
        .sum()
}

/// A tensor's stored bytes as one blob (the per-tensor compressed size of `tensors.parquet`):
/// integers (in their layout) then scales, then any LQER factors and row permutation; or the raw
/// values.
pub fn payload(t: &StoredTensor) -> Vec<u8> {
    let halves = |s: &[half::f16]| s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let ints = |q: &[i8]| q.iter().map(|v| *v as u8).collect::<Vec<u8>>();
    match &t.encoding {
        Encoding::Raw { bytes, .. } => bytes.clone(),
        Encoding::Rows { q, scales, .. } => {
            let mut b = ints(&crate::container::laid_out(q, t.shape[0], &t.layout));
            b.extend(halves(scales));
            for f in t.lqer.iter().flat_map(|l| [&l.a, &l.b]) {
                b.extend(ints(&f.q));
                b.extend(halves(&f.scales));
            }
            b.extend(t.layout.perm.iter().flatten().flat_map(|v| v.to_le_bytes()));
            b
        }
        Encoding::Tensor { q, scale, .. } => {
            let mut b = ints(q);
            match scale {
                Scale::F32(v) => b.extend(v.to_le_bytes()),
                Scale::F16(v) => b.extend(v.to_le_bytes()),
            }
            b
        }
    }
}
