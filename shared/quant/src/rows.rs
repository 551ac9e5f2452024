//! Per-row `bits`-bit quantization with fp16 row scales: how the scales are chosen (percentile clip,
//! REFERENCE.md §5.9; SDClip, §5.11) and round-to-nearest with given scales.
//!
//! Unlike the baseline int8 routine, these quantize with the *fp16* scale and do not pre-clip:
//! `q = clamp(round(w / f32(s_fp16)), ±R)`, as the records' `quantize_int6_per_row` and GPTQ do.

use half::f16;
use rayon::prelude::*;

use crate::numeric::{fp16, max_level, quantile_sorted, quantize_value, sorted_abs};

/// The GPTQ-lite candidate percentiles (1.0 = the row maximum).
pub const LITE_PERCENTILES: [f64; 5] = [0.999, 0.9995, 0.9999, 0.99999, 1.0];

/// A `rows × cols` f32 matrix, row-major.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Matrix<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Matrix<'a> {
        assert_eq!(
            data.len(),
            rows * cols,
            "matrix data does not match its shape"
        );
        Matrix { data, rows, cols }
    }

    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Percentile-clip scales: `s_r = fp16(max(c_r / R, 1/R))` with `c_r` the row's `p`-quantile of
/// |w| (the row maximum when p ≥ 1). `sorted_rows` are the rows' sorted |w| (see [`sorted_rows`]).
pub fn percentile_scales(sorted_rows: &[Vec<f32>], p: f64, bits: u8) -> Vec<f16> {
    let r = max_level(bits) as f32;
    let floor = (1.0f64 / r as f64) as f32;
    sorted_rows
        .iter()
        .map(|a| {
            let c = if p >= 1.0 {
                *a.last().expect("non-empty row")
            } else {
                quantile_sorted(a, p)
            };
            fp16((c / r).max(floor))
        })
        .collect()
}

pub fn sorted_rows(m: Matrix) -> Vec<Vec<f32>> {
    (0..m.rows)
        .into_par_iter()
        .map(|r| sorted_abs(m.row(r)))
        .collect()
}

/// SDClip scales: `s_r = fp16(max(k·std(W_r) / R, 1e-10))`, `std` unbiased. A scale that fp16 would
/// flush to zero (a constant row) is raised to fp16's smallest step, 2^-24: upstream would divide
/// by zero there and store NaN-derived integers.
pub fn sdclip_scales(m: Matrix, k: f64, bits: u8) -> Vec<f16> {
    let r = max_level(bits) as f32;
    (0..m.rows)
        .into_par_iter()
        .map(|i| {
            let s = fp16(((k as f32) * row_std(m.row(i)) / r).max(1e-10));
            if s.to_f32() > 0.0 {
                s
            } else {
                f16::from_bits(1)
            }
        })
        .collect()
}

/// Unbiased standard deviation, accumulated in f64 (as torch's CPU reduction does), as f32.
fn row_std(row: &[f32]) -> f32 {
    let n = row.len() as f64;
    if row.len() < 2 {
        return 0.0;
    }
    let mean = row.iter().map(|v| *v as f64).sum::<f64>() / n;
    let ss = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>();
    (ss / (n - 1.0)).sqrt() as f32
}

/// Round-to-nearest with per-row fp16 scales.
pub fn quantize_rows(m: Matrix, scales: &[f16], bits: u8) -> Vec<i8> {
    let r = max_level(bits);
    let mut q = vec![0i8; m.data.len()];
    q.par_chunks_mut(m.cols)
        .zip(m.data.par_chunks(m.cols))
        .zip(scales.par_iter())
        .for_each(|((qr, wr), s)| {
            let s = s.to_f32();
            for (qv, wv) in qr.iter_mut().zip(wr) {
                *qv = quantize_value(*wv, s, r);
            }
        });
    q
}

/// Mean squared error of `q·s` against `m` (over the whole matrix, f64 accumulation).
pub fn rows_mse(m: Matrix, q: &[i8], scales: &[f16]) -> f64 {
    let sum: f64 = m
        .data
        .par_chunks(m.cols)
        .zip(q.par_chunks(m.cols))
        .zip(scales.par_iter())
        .map(|((wr, qr), s)| {
            let s = s.to_f32();
            wr.iter()
                .zip(qr)
                .map(|(w, q)| ((*w - *q as f32 * s) as f64).powi(2))
                .sum::<f64>()
        })
        .sum();
    sum / m.data.len().max(1) as f64
}

/// GPTQ-lite: the candidate percentile whose round-to-nearest error over the whole matrix is
/// lowest (the first one on a tie). Returns (percentile, q, scales).
pub fn lite_search(m: Matrix, bits: u8, percentiles: &[f64]) -> (f64, Vec<i8>, Vec<f16>) {
    let sorted = sorted_rows(m);
    let mut best: Option<(f64, f64, Vec<i8>, Vec<f16>)> = None;
    for &p in percentiles {
        let scales = percentile_scales(&sorted, p, bits);
        let q = quantize_rows(m, &scales, bits);
        let err = rows_mse(m, &q, &scales);
        if best.as_ref().is_none_or(|b| err < b.0) {
            best = Some((err, p, q, scales));
        }
    }
    let (_, p, q, s) = best.expect("at least one candidate percentile");
    (p, q, s)
}

/// GPTQ-lite for a tensor that is not a matrix: one fp16 scale `amax/R` (1 if all zero), computed
/// from a double as upstream (`torch.tensor(amax / R, dtype=float16)`).
pub fn lite_tensor(w: &[f32], bits: u8) -> (Vec<i8>, f16) {
    let r = max_level(bits);
    let amax = w.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let s = if amax > 0.0 {
        f16::from_f64(amax as f64 / r as f64)
    } else {
        f16::ONE
    };
    (
        w.iter()
            .map(|v| quantize_value(*v, s.to_f32(), r))
            .collect(),
        s,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_scales_have_the_1_over_r_floor_and_use_row_max_at_1() {
        let w = [0.1f32, -0.2, 0.05, 0.0, 62.0, -31.0, 15.5, 0.0];
        let m = Matrix::new(&w, 2, 4);
        let s = percentile_scales(&sorted_rows(m), 1.0, 6);
        // row 0: max 0.2 → 0.2/31 < 1/31 → floor 1/31; row 1: 62/31 = 2.
        assert_eq!(s, vec![fp16((1.0f64 / 31.0) as f32), fp16(2.0)]);
        let q = quantize_rows(m, &s, 6);
        // row 0 with step fp16(1/31) ≈ 0.032257: 0.1→3.1→3, −0.2→−6.2→−6, 0.05→1.55→2
        assert_eq!(&q[..4], &[3, -6, 2, 0]);
        // row 1 with step 2: 62→31, −31→−15.5→−16 (tie to even), 15.5→7.75→8
        assert_eq!(&q[4..], &[31, -16, 8, 0]);
    }

    #[test]
    fn rtn_rounds_ties_to_even_and_clamps_to_the_range() {
        let w = [2.5f32, 3.5, -0.5, 100.0, -100.0];
        let m = Matrix::new(&w, 1, 5);
        let q = quantize_rows(m, &[f16::ONE], 5);
        assert_eq!(q, vec![2, 4, 0, 15, -15]);
    }

    #[test]
    fn lite_search_picks_the_lowest_error_percentile() {
        // A row with one mild outlier (1.1 among values in [−1, 1]): clipping it (p < 1) costs one
        // small error but gives the 999 other values a finer step, which the mean rewards.
        let mut w: Vec<f32> = (0..2000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        w[7] = 1.1;
        let m = Matrix::new(&w, 2, 1000);
        let (p, q, s) = lite_search(m, 6, &LITE_PERCENTILES);
        let err = rows_mse(m, &q, &s);
        for cand in LITE_PERCENTILES {
            let sc = percentile_scales(&sorted_rows(m), cand, 6);
            let e = rows_mse(m, &quantize_rows(m, &sc, 6), &sc);
            assert!(
                err <= e,
                "{p} chosen with error {err}, but {cand} gives {e}"
            );
        }
        assert!(p < 1.0);
    }

    #[test]
    fn sdclip_scale_is_k_std_over_r() {
        let w = [1.0f32, -1.0, 1.0, -1.0];
        let m = Matrix::new(&w, 1, 4);
        // unbiased std = sqrt(4/3)
        let s = sdclip_scales(m, 12.0, 6)[0];
        assert_eq!(s, fp16(12.0 * (4.0f32 / 3.0).sqrt() / 31.0));
        let flat = [0.5f32; 4];
        assert_eq!(
            sdclip_scales(Matrix::new(&flat, 1, 4), 12.0, 6)[0],
            f16::from_bits(1)
        );
    }

    #[test]
    fn lite_tensor_scale_is_amax_over_r() {
        let (q, s) = lite_tensor(&[3.1, -6.2, 0.0], 6);
        assert_eq!(s, f16::from_f64(6.2f32 as f64 / 31.0));
        assert_eq!(q, vec![16, -31, 0]);
    }
}
