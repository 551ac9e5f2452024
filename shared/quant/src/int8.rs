//! The baseline's int8 quantizer (`quantize_float_tensor` of the upstream `train_gpt.py`,
//! REFERENCE.md §4.2), operation for operation:
//!
//! per row r:  c = quantile(|W_r|, 0.9999984)          linear interpolation, f32
//!             s = max(c / 127, 1/127)                  f32; the floor gives rows with c < 1 step 1/127
//!             q = clamp(round_half_even(clamp(W_r, ±c) / s), ±127)
//!             store s as fp16 (q was computed with the f32 s)
//! per tensor: c = quantile(|W|, 0.9999984); s = c/127 (1 if c = 0), f32, no floor.

use half::f16;
use rayon::prelude::*;

use crate::encoded::{Encoding, Scale};
use crate::numeric::{fp16, quantile_sorted, quantize_value, sorted_abs};

/// `INT8_CLIP_PERCENTILE / 100` of the baseline.
pub const INT8_CLIP_Q: f64 = 99.99984 / 100.0;

/// The 1/127 floor, a Python double cast to f32 by `clamp_min` on an f32 tensor.
fn floor_127() -> f32 {
    (1.0f64 / 127.0) as f32
}

/// Per-row int8 of a `rows × cols` matrix (row-major).
pub fn int8_rows(w: &[f32], cols: usize) -> Encoding {
    let rows: Vec<(Vec<i8>, f16)> = w.par_chunks(cols).map(int8_row).collect();
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows.len());
    for (row_q, s) in rows {
        q.extend(row_q);
        scales.push(s);
    }
    Encoding::Rows { bits: 8, q, scales }
}

fn int8_row(row: &[f32]) -> (Vec<i8>, f16) {
    let c = quantile_sorted(&sorted_abs(row), INT8_CLIP_Q);
    let s = (c / 127.0).max(floor_127());
    let q = row
        .iter()
        .map(|v| quantize_value(v.min(c).max(-c), s, 127))
        .collect();
    (q, fp16(s))
}

/// Per-tensor int8 (tensors that are not matrices), f32 scale.
pub fn int8_tensor(w: &[f32]) -> Encoding {
    let c = quantile_sorted(&sorted_abs(w), INT8_CLIP_Q);
    // Upstream divides Python doubles (c/127.0) and casts to f32: the same as an f32 division.
    let s = if c > 0.0 { c / 127.0 } else { 1.0 };
    let q = w
        .iter()
        .map(|v| quantize_value(v.clamp(-c, c), s, 127))
        .collect();
    Encoding::Tensor {
        bits: 8,
        q,
        scale: Scale::F32(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(e: &Encoding) -> (&[i8], &[f16]) {
        match e {
            Encoding::Rows { q, scales, bits: 8 } => (q, scales),
            other => panic!("expected int8 rows, got {other:?}"),
        }
    }

    #[test]
    fn small_rows_use_the_1_over_127_floor() {
        // Row max 0.5 < 1: the clip is just below 0.5, but the step is the floor 1/127, so values
        // map to round(w·127); 0.5·127 = 63.5 would tie, but the clip pulls it under 63.5.
        let w = [0.5f32, -0.25, 0.0, 0.1];
        let e = int8_rows(&w, 4);
        let (q, s) = rows(&e);
        assert_eq!(s[0], f16::from_f32((1.0f64 / 127.0) as f32));
        // c = lerp over sorted |w| = [0, .1, .25, .5] at rank 0.9999984·3 ≈ 2.9999952 → c ≈ 0.4999993
        let c = quantile_sorted(&[0.0, 0.1, 0.25, 0.5], INT8_CLIP_Q);
        assert!(c < 0.5 && c > 0.49999);
        assert_eq!(q, &[63, -32, 0, 13]); // 63.49…→63, −31.75→−32, 12.7→13
    }

    #[test]
    fn large_rows_scale_by_the_clip_and_round_ties_to_even() {
        // One row of 8: values chosen so that w/s lands on exact .5 ties. With a row max of 254
        // and every other |w| ≤ 2.5, the clip c sits between 2.5 and 254 close to 254.
        let w = [254.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.0];
        let e = int8_rows(&w, 8);
        let (q, s) = rows(&e);
        let mut sorted = [254.0f32, 0.5, 1.5, 2.5, 0.5, 1.5, 2.5, 0.0];
        sorted.sort_by(f32::total_cmp);
        let c = quantile_sorted(&sorted, INT8_CLIP_Q);
        let sf = c / 127.0;
        assert_eq!(s[0], f16::from_f32(sf));
        // q is computed with the f32 scale, not the fp16 one.
        let expect: Vec<i8> = w
            .iter()
            .map(|v| (v.clamp(-c, c) / sf).round_ties_even() as i8)
            .collect();
        assert_eq!(q, expect.as_slice());
        assert_eq!(q[0], 127);
    }

    #[test]
    fn exact_ties_go_to_even() {
        // A row whose clip is exactly 127 (its top two |w| are equal), so s = 1 and w/s = w.
        let w = [127.0f32, 127.0, 0.5, 1.5, 2.5, -2.5, -3.5, 100.5];
        let (q, s) = match int8_rows(&w, 8) {
            Encoding::Rows { q, scales, .. } => (q, scales),
            _ => unreachable!(),
        };
        assert_eq!(s[0].to_f32(), 1.0);
        assert_eq!(q, vec![127, 127, 0, 2, 2, -2, -4, 100]);
    }

    #[test]
    fn per_tensor_uses_an_f32_scale_without_floor() {
        let w = [0.0f32; 10];
        assert_eq!(
            int8_tensor(&w),
            Encoding::Tensor {
                bits: 8,
                q: vec![0; 10],
                scale: Scale::F32(1.0)
            }
        );
        let w = [127.0f32, 127.0, 63.5, -64.5, 0.25];
        match int8_tensor(&w) {
            Encoding::Tensor {
                q,
                scale: Scale::F32(s),
                ..
            } => {
                assert_eq!(s, 1.0);
                assert_eq!(q, vec![127, 127, 64, -64, 0]);
            }
            other => panic!("{other:?}"),
        }
    }
}
