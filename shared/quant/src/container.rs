//! The uncompressed body of an artifact (docs/ARTIFACT.md): a JSON directory (the model config and
//! one entry per tensor) followed by the payload, laid out in sections so like bytes sit together
//! for the compressor: all integers, then all fp16/f32 scales, then all raw values (and, when used,
//! LQER factors beside the integers and scales, and row permutations last).
//!
//! ```text
//! u32 LE  directory length D
//! D bytes directory, UTF-8 JSON: {"format": "pgq", "version": 1, "config": {...}, "tensors": [...]}
//! payload bytes, addressed by [offset, length] pairs in the directory
//! ```

use anyhow::{Context, Result};
use half::f16;
use serde_json::Value;

use crate::dtype::DType;
use crate::encoded::{Encoding, Scale, StoredTensor};
/// The layout (directory structs, format name and version) and its reader are the evaluator's.
pub use pgolf_evaluator::container::{
    decode_body, Directory, Entry, Factor, FactorEntry, Layout, LowRank, LqerEntry, FORMAT,
    VERSION, VERSION_EXTENDED,
};

/// Serialises config and tensors into a body. Sections, in order: every tensor's integers (in the
/// tensors' order, each in its layout), the LQER factors' integers, every tensor's scales, the
/// factors' scales, the raw values, the row permutations. Without LQER or layouts the last three
/// extra parts are empty and the body is the one written before they existed.
pub fn encode_body(config: &Value, tensors: &[StoredTensor]) -> Result<Vec<u8>> {
    // One buffer per section; ranges are first taken within a section, then shifted by its base.
    let [mut ints, mut factor_ints, mut scales, mut factor_scales, mut raws, mut perms] =
        std::array::from_fn(|_| Vec::<u8>::new());
    let push = |buf: &mut Vec<u8>, bytes: &[u8]| {
        let range = [buf.len(), bytes.len()];
        buf.extend_from_slice(bytes);
        range
    };
    // (entry, the section of each of its ranges, in the order `ranges_mut` yields them)
    let mut entries = Vec::with_capacity(tensors.len());
    for t in tensors {
        t.validate()?;
        let (name, shape, dtype) = (t.name.clone(), t.shape.clone(), t.dtype);
        entries.push(match &t.encoding {
            Encoding::Raw { stored, bytes } => Entry::Raw {
                name,
                shape,
                dtype,
                stored: *stored,
                data: push(&mut raws, bytes),
            },
            Encoding::Rows { bits, q, scales: s } => {
                let written = laid_out(q, t.shape[0], &t.layout);
                let q = push(&mut ints, &as_bytes(&written));
                let scale_range = push(&mut scales, &halves(s));
                let mut factor = |f: &Factor| FactorEntry {
                    bits: f.bits,
                    group: f.group,
                    q: push(&mut factor_ints, &as_bytes(&f.q)),
                    scales: push(&mut factor_scales, &halves(&f.scales)),
                };
                let lqer = t.lqer.as_ref().map(|l| LqerEntry {
                    rank: l.rank,
                    a: factor(&l.a),
                    b: factor(&l.b),
                });
                let perm = t.layout.perm.as_ref().map(|p| {
                    let b: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
                    push(&mut perms, &b)
                });
                Entry::Rows {
                    name,
                    shape,
                    dtype,
                    bits: *bits,
                    q,
                    scales: scale_range,
                    lqer,
                    perm,
                    cols: t.layout.column_major,
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
    let base_factor_ints = ints.len();
    let base_scales = base_factor_ints + factor_ints.len();
    let base_factor_scales = base_scales + scales.len();
    let base_raws = base_factor_scales + factor_scales.len();
    let base_perms = base_raws + raws.len();
    for e in &mut entries {
        match e {
            Entry::Raw { data, .. } => data[0] += base_raws,
            Entry::Rows {
                scales, lqer, perm, ..
            } => {
                scales[0] += base_scales;
                if let Some(l) = lqer {
                    for f in [&mut l.a, &mut l.b] {
                        f.q[0] += base_factor_ints;
                        f.scales[0] += base_factor_scales;
                    }
                }
                if let Some(p) = perm {
                    p[0] += base_perms;
                }
            }
            Entry::Tensor { scale, .. } => scale[0] += base_scales,
        }
    }
    let dir = Directory {
        format: FORMAT.into(),
        // Version 2 only where needed: a plain body stays the one written before it existed.
        version: if tensors.iter().any(StoredTensor::extended) {
            VERSION_EXTENDED
        } else {
            VERSION
        },
        config: config.clone(),
        tensors: entries,
    };
    let dir_bytes = serde_json::to_vec(&dir)?;
    let mut body = Vec::with_capacity(4 + dir_bytes.len() + base_perms + perms.len());
    body.extend_from_slice(
        &u32::try_from(dir_bytes.len())
            .context("directory over 4 GiB")?
            .to_le_bytes(),
    );
    body.extend_from_slice(&dir_bytes);
    for section in [ints, factor_ints, scales, factor_scales, raws, perms] {
        body.extend_from_slice(&section);
    }
    Ok(body)
}

/// `q` (row-major, `rows` rows) as `layout` writes it: rows in `perm` order, then column-major if
/// asked. The evaluator's reader undoes it with [`Layout::position`].
pub fn laid_out(q: &[i8], rows: usize, layout: &Layout) -> Vec<i8> {
    if *layout == Layout::default() {
        return q.to_vec();
    }
    let cols = q.len() / rows.max(1);
    let order: Vec<usize> = match &layout.perm {
        Some(p) => p.iter().map(|r| *r as usize).collect(),
        None => (0..rows).collect(),
    };
    let mut out = Vec::with_capacity(q.len());
    if layout.column_major {
        for c in 0..cols {
            out.extend(order.iter().map(|r| q[r * cols + c]));
        }
    } else {
        for r in order {
            out.extend_from_slice(&q[r * cols..(r + 1) * cols]);
        }
    }
    out
}

fn halves(s: &[f16]) -> Vec<u8> {
    s.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn as_bytes(q: &[i8]) -> Vec<u8> {
    q.iter().map(|v| *v as u8).collect()
}
