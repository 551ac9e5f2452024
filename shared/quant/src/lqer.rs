//! LQER (REFERENCE.md §5.12; R0427, PR #1797): after quantization, the `top_k` quantized matrices
//! with the largest error `‖E‖_F`, `E = W − Q·s`, get a rank-r correction from E's SVD,
//!
//! ```text
//! E = U S Vᵀ;  A = U[:, :r]·diag(S[:r])  (rows × r);  B = Vᵀ[:r, :]  (r × cols)
//! ```
//!
//! stored as integers with fp16 scales, and the decoder adds `(qA·sA)(qB·sB)` to `Q·s`. Packing:
//!
//! - asymmetric (`asym`, when `numel(B) % group == 0`): A in INT2 with one scale
//!   `sA = fp16(max|A| / 1.5)`, `qA = clamp(round(A / sA), −2, 1)`; B in INT4 per group of
//!   `group` consecutive values of the flattened B, `sB = fp16(max|B_g| / 7.5)`,
//!   `qB = clamp(round(B / sB), −8, 7)`;
//! - symmetric (otherwise): A and B per row in `factor_bits` bits, `s = fp16(max|row| / R)`,
//!   `q = clamp(round(x / s), ±R)`, `R = 2^(bits−1) − 1`.
//!
//! Every max is clamped below at 1e-10 first; division, rounding (half to even) and the fp16 casts
//! are the record's f32 operations, so the factors equal its `_lqer_pack_asym` / `_lqer_pack`. The
//! SVD is libtorch's, in f32 on the CPU, as the record's (its signs decide where the asymmetric
//! INT2 range falls, so only the same SVD gives the same integers).

use anyhow::{bail, Result};
use half::f16;
use serde::{Deserialize, Serialize};

use crate::encoded::{Encoding, Factor, LowRank, StoredTensor};
use crate::numeric::fp16;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LqerSettings {
    /// Off by default: artifacts stay as they were.
    pub enabled: bool,
    /// r, the rank of the correction (at most min(rows, cols) is used).
    pub rank: usize,
    /// How many matrices, those of largest ‖E‖_F, are corrected.
    pub top_k: usize,
    /// The asymmetric INT2/INT4-per-group packing (else the symmetric per-row one).
    pub asym: bool,
    /// B's group size in the asymmetric packing.
    pub group: usize,
    /// Bits of both factors in the symmetric packing (R0427's `LQER_FACTOR_BITS`).
    pub factor_bits: u8,
}

impl Default for LqerSettings {
    /// R0427's values (`LQER_RANK` 4, `LQER_TOP_K` 3, `LQER_ASYM_ENABLED` 1, group 64, 4 bits),
    /// switched off.
    fn default() -> Self {
        LqerSettings {
            enabled: false,
            rank: 4,
            top_k: 3,
            asym: true,
            group: 64,
            factor_bits: 4,
        }
    }
}

impl LqerSettings {
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.top_k == 0 || self.group == 0 {
            bail!("lqer: rank, top_k and group must be positive");
        }
        if !(2..=8).contains(&self.factor_bits) {
            bail!("lqer: factor_bits {} outside 2..=8", self.factor_bits);
        }
        Ok(())
    }
}

/// `clamp(round_half_even(x / s), lo, hi)`.
fn quantize(x: f32, s: f32, lo: f32, hi: f32) -> i8 {
    (x / s).round_ties_even().clamp(lo, hi) as i8
}

/// `fp16(max(max|x|, 1e-10) / d)`.
fn max_scale(x: &[f32], d: f32) -> f16 {
    fp16(x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-10) / d)
}

/// Integers and one scale per `group` values: `clamp(round(x / s_g), lo, hi)`,
/// `s_g = fp16(max|x_g| / d)`.
fn grouped(x: &[f32], group: usize, d: f32, bits: u8, lo: f32, hi: f32) -> Factor {
    let scales: Vec<f16> = x.chunks(group).map(|g| max_scale(g, d)).collect();
    let q = (x.chunks(group).zip(&scales))
        .flat_map(|(g, s)| g.iter().map(move |v| quantize(*v, s.to_f32(), lo, hi)))
        .collect();
    Factor {
        bits,
        group,
        q,
        scales,
    }
}

/// The asymmetric packing: A (`a`, row-major) in INT2 with one scale, B (`b`) in INT4 per group.
pub fn pack_asym(a: &[f32], b: &[f32], group: usize) -> (Factor, Factor) {
    (
        grouped(a, a.len().max(1), 1.5, 2, -2.0, 1.0),
        grouped(b, group, 7.5, 4, -8.0, 7.0),
    )
}

/// The symmetric packing: A (`rows × rank`) and B (`rank × cols`) per row in `bits` bits.
pub fn pack_sym(a: &[f32], b: &[f32], rank: usize, bits: u8) -> (Factor, Factor) {
    let r = crate::numeric::max_level(bits) as f32;
    let cols = b.len() / rank.max(1);
    (
        grouped(a, rank.max(1), r, bits, -r, r),
        grouped(b, cols.max(1), r, bits, -r, r),
    )
}

/// The packed correction of factors `a` (`rows × rank`) and `b` (`rank × cols`): asymmetric when
/// asked and B's length is a multiple of the group, else symmetric.
pub fn pack(a: &[f32], b: &[f32], rank: usize, s: &LqerSettings) -> LowRank {
    let (a, b) = if s.asym && b.len().is_multiple_of(s.group) {
        pack_asym(a, b, s.group)
    } else {
        pack_sym(a, b, rank, s.factor_bits)
    };
    LowRank { rank, a, b }
}

/// `E = W − Q·s` of a `rows` tensor (f32, as the record: the product rounded, then subtracted);
/// `None` for other encodings or non-matrices.
pub fn residual(t: &StoredTensor, w: &[f32]) -> Option<Vec<f32>> {
    let Encoding::Rows { q, scales, .. } = &t.encoding else {
        return None;
    };
    if t.shape.len() != 2 || w.len() != q.len() {
        return None;
    }
    let cols = t.shape[1];
    Some(
        (q.chunks(cols.max(1)).zip(scales))
            .zip(w.chunks(cols.max(1)))
            .flat_map(|((qr, s), wr)| {
                let s = s.to_f32();
                wr.iter().zip(qr).map(move |(w, q)| w - *q as f32 * s)
            })
            .collect(),
    )
}

/// Indices of the `top_k` candidates of largest norm (norms given; ties keep the earlier one, as
/// Python's stable sort does).
pub fn top_k(norms: &[(usize, f64)], k: usize) -> Vec<usize> {
    let mut order = norms.to_vec();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.into_iter().take(k).map(|(i, _)| i).collect()
}

/// `A = U[:, :r]·diag(S[:r])`, `B = Vᵀ[:r, :]` of `e` (`rows × cols`) by libtorch's SVD in f32
/// on the CPU (the record's `torch.linalg.svd(E, full_matrices=False)`); r = min(rank, rows, cols).
#[cfg(feature = "torch")]
pub fn factors(
    e: &[f32],
    rows: usize,
    cols: usize,
    rank: usize,
) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    use tch::Tensor;
    let t = Tensor::f_from_slice(e)?.f_view([rows as i64, cols as i64])?;
    // torch.svd(some=True) is linalg_svd(full_matrices=False) with V = Vhᵀ: the same LAPACK call.
    let (u, s, v) = t.f_svd(true, true)?;
    let k = s.size()[0] as usize;
    let r = rank.min(k);
    let u = Vec::<f32>::try_from(u.f_contiguous()?.f_view([-1])?)?;
    let s = Vec::<f32>::try_from(s)?;
    let v = Vec::<f32>::try_from(v.f_contiguous()?.f_view([-1])?)?;
    let a = (0..rows)
        .flat_map(|i| (0..r).map(move |j| (i, j)))
        .map(|(i, j)| u[i * k + j] * s[j])
        .collect();
    // V is cols × k: row j of Vᵀ is column j of V.
    let b = (0..r)
        .flat_map(|j| (0..cols).map(move |c| (j, c)))
        .map(|(j, c)| v[c * k + j])
        .collect();
    Ok((a, b, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_packing_uses_int2_with_one_scale_and_int4_groups() {
        // max|A| = 3 → sA = fp16(2); A/sA = [1.5, −1.5, 0.25, −0.9] → round half even [2, −2, 0, −1]
        // → clamp to [−2, 1]: [1, −2, 0, −1].
        let a = [3.0f32, -3.0, 0.5, -1.8];
        // Two groups of 4: max 7.5 → s 1; max 0.75 → s 0.1 (fp16 of 0.1).
        let b = [7.5f32, -7.5, 0.5, 2.5, 0.75, -0.75, 0.05, 0.0];
        let (fa, fb) = pack_asym(&a, &b, 4);
        assert_eq!(
            (fa.bits, fa.group, fa.scales.clone()),
            (2, 4, vec![f16::from_f32(2.0)])
        );
        assert_eq!(fa.q, vec![1, -2, 0, -1]);
        assert_eq!((fb.bits, fb.group), (4, 4));
        assert_eq!(fb.scales, vec![f16::from_f32(1.0), f16::from_f32(0.1)]);
        let s1 = f16::from_f32(0.1).to_f32();
        let expect: Vec<i8> = [7.5f32, -7.5, 0.5, 2.5]
            .iter()
            .map(|v| v.round_ties_even().clamp(-8.0, 7.0) as i8)
            .chain(
                [0.75f32, -0.75, 0.05, 0.0]
                    .iter()
                    .map(|v| (v / s1).round_ties_even().clamp(-8.0, 7.0) as i8),
            )
            .collect();
        assert_eq!(fb.q, expect);
        assert_eq!(&fb.q[..4], &[7, -8, 0, 2]);
        // An all-zero factor gets the 1e-10 floor, not a zero scale.
        let (z, _) = pack_asym(&[0.0; 4], &b, 4);
        assert_eq!(z.scales[0], fp16(1e-10 / 1.5));
        assert_eq!(z.q, vec![0; 4]);
    }

    #[test]
    fn symmetric_packing_is_per_row_and_the_fallback_when_groups_do_not_fit() {
        // A 2 × 2 (rank 2), B 2 × 3; 4 bits: R = 7.
        let a = [7.0f32, -3.5, 0.7, 0.35];
        let b = [1.0f32, 2.0, -14.0, 0.1, 0.0, 0.0];
        let (fa, fb) = pack_sym(&a, &b, 2, 4);
        assert_eq!((fa.group, fb.group), (2, 3));
        assert_eq!(fa.scales, vec![fp16(1.0), fp16(0.1)]);
        assert_eq!(fa.q, vec![7, -4, 7, 4]); // −3.5 → −4 (even), 0.35/0.1 = 3.5 → 4 (even)
        assert_eq!(fb.scales, vec![fp16(2.0), fp16(0.1 / 7.0)]);
        assert_eq!(&fb.q[..3], &[0, 1, -7]); // 0.5 → 0 (even)
        let s = LqerSettings {
            group: 4,
            ..LqerSettings::default()
        };
        // B has 6 values, not a multiple of 4: symmetric.
        let l = pack(&a, &b, 2, &s);
        assert_eq!((l.a.bits, l.b.bits), (4, 4));
        assert_eq!(l.a, fa);
        let l = pack(&a, &b[..4], 2, &s);
        assert_eq!((l.a.bits, l.b.bits), (2, 4));
    }

    #[test]
    fn the_largest_errors_are_chosen_and_ties_keep_the_earlier() {
        let norms = [(0, 1.0), (1, 3.0), (2, 2.0), (3, 3.0), (4, 0.5)];
        assert_eq!(top_k(&norms, 3), vec![1, 3, 2]);
        assert_eq!(top_k(&norms, 9).len(), 5);
    }

    /// Cyclic Jacobi eigen-decomposition of a symmetric matrix in f64: (eigenvalues, eigenvectors
    /// as columns), an SVD reference independent of LAPACK.
    fn jacobi_eigen(mut m: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut v = vec![0f64; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        for _ in 0..100 {
            let off: f64 = (0..n)
                .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
                .map(|(i, j)| m[i * n + j].powi(2))
                .sum();
            if off < 1e-30 {
                break;
            }
            for p in 0..n {
                for q in p + 1..n {
                    let apq = m[p * n + q];
                    if apq.abs() < 1e-300 {
                        continue;
                    }
                    // The rotation that zeroes m[p][q] (Numerical Recipes' `jacobi`).
                    let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let c = 1.0 / (t * t + 1.0).sqrt();
                    let s = t * c;
                    for k in 0..n {
                        let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                        m[k * n + p] = c * mkp - s * mkq;
                        m[k * n + q] = s * mkp + c * mkq;
                    }
                    for k in 0..n {
                        let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                        m[p * n + k] = c * mpk - s * mqk;
                        m[q * n + k] = s * mpk + c * mqk;
                    }
                    for k in 0..n {
                        let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                        v[k * n + p] = c * vkp - s * vkq;
                        v[k * n + q] = s * vkp + c * vkq;
                    }
                }
            }
        }
        ((0..n).map(|i| m[i * n + i]).collect(), v)
    }

    /// The factors against an f64 SVD computed here: the singular values, and the rank-r product
    /// A·B (sign-free, unlike A and B themselves) equal E·V_r·V_rᵀ, the best rank-r approximation.
    #[cfg(feature = "torch")]
    #[test]
    fn factors_are_the_truncated_svd_of_the_error() {
        let (rows, cols, rank) = (7usize, 5usize, 3usize);
        let mut seed = 11u64;
        let e: Vec<f32> = (0..rows * cols)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        let (a, b, r) = factors(&e, rows, cols, rank).unwrap();
        assert_eq!((r, a.len(), b.len()), (3, rows * 3, 3 * cols));
        // EᵀE = V S² Vᵀ in f64.
        let ed: Vec<f64> = e.iter().map(|v| *v as f64).collect();
        let gram: Vec<f64> = (0..cols * cols)
            .map(|ij| {
                let (i, j) = (ij / cols, ij % cols);
                (0..rows).map(|k| ed[k * cols + i] * ed[k * cols + j]).sum()
            })
            .collect();
        let (vals, vecs) = jacobi_eigen(gram, cols);
        let mut order: Vec<usize> = (0..cols).collect();
        order.sort_by(|x, y| vals[*y].total_cmp(&vals[*x]));
        // ‖A_j‖ = S_j (U has unit columns).
        for j in 0..r {
            let norm = (0..rows)
                .map(|i| (a[i * r + j] as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let sigma = vals[order[j]].sqrt();
            assert!(
                (norm - sigma).abs() < 1e-5 * sigma.max(1.0),
                "S_{j}: {norm} vs {sigma}"
            );
        }
        for i in 0..rows {
            for c in 0..cols {
                let reference: f64 = order[..r]
                    .iter()
                    .map(|&o| {
                        let ev: f64 = (0..cols)
                            .map(|k| ed[i * cols + k] * vecs[k * cols + o])
                            .sum();
                        ev * vecs[c * cols + o]
                    })
                    .sum();
                let ours: f64 = (0..r)
                    .map(|j| a[i * r + j] as f64 * b[j * cols + c] as f64)
                    .sum();
                assert!(
                    (ours - reference).abs() < 1e-5,
                    "({i}, {c}): {ours} vs {reference}"
                );
            }
        }
        // The rank is capped by the matrix.
        let (_, _, r) = factors(&e, rows, cols, 9).unwrap();
        assert_eq!(r, cols);
    }
}
