//! Full-Hessian GPTQ (REFERENCE.md §5.10; Frantar et al. 2023) with per-row fp16 scales given by
//! the caller (SDClip or a percentile clip):
//!
//! ```text
//! dead = diag(H) == 0; H[dead,dead] = 1; H += damp·mean(diag H)·I
//! perm = argsort(diag H, descending)                     (act-order)
//! W' = W[:, perm] (dead columns zeroed), U = upper Cholesky factor of H'^-1 (H'^-1 = UᵀU)
//! for each block of columns [i1, i2):
//!     for j in block: q_j = clamp(round(w_j / s), ±R); e_j = (w_j − q_j·s) / U[j,j]
//!                     w_{j..i2} −= e_j ⊗ U[j, j..i2]
//!     W'[:, i2:] −= E_block · U[i1:i2, i2:]               (lazy batch update)
//! Q = Q[:, inverse perm]
//! ```
//!
//! The Hessian is prepared in f64 and factored by libtorch (LAPACK/cuSOLVER) on the chosen device,
//! once per weight, and reused for every candidate scale vector; the column sweep runs here in f32
//! on the transposed weight, so each column is a contiguous slice.

use anyhow::{anyhow, bail, Result};
use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

use crate::numeric::{max_level, quantize_value};
use crate::rows::Matrix;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GptqSettings {
    /// Columns per lazy-update block.
    pub block_size: usize,
    /// Damping, as a fraction of the mean Hessian diagonal.
    pub damp: f64,
    /// Quantize columns in order of decreasing Hessian diagonal.
    pub act_order: bool,
}

impl Default for GptqSettings {
    fn default() -> Self {
        GptqSettings {
            block_size: 128,
            damp: 0.01,
            act_order: true,
        }
    }
}

/// A weight with its factored Hessian, ready for one GPTQ sweep per candidate scale vector.
pub struct Prepared {
    rows: usize,
    cols: usize,
    block_size: usize,
    /// Column order: position k holds original column perm[k].
    perm: Vec<usize>,
    /// W' transposed: `cols × rows`, column k of W' is the contiguous slice k.
    wt: Vec<f32>,
    /// U, upper triangular, `cols × cols` row-major.
    u: Vec<f32>,
    /// Entries held at the integer 0 (pruned ones), laid out as `wt`; empty = none.
    pinned: Vec<bool>,
}

/// Prepares `w` (`rows × cols`) with its Hessian `h` (`cols × cols`, row-major). `Ok(None)` when
/// the damped Hessian is not positive definite (the caller falls back to round-to-nearest).
pub fn prepare(
    w: Matrix,
    h: &[f32],
    settings: &GptqSettings,
    device: Device,
) -> Result<Option<Prepared>> {
    let (rows, cols) = (w.rows, w.cols);
    if h.len() != cols * cols {
        bail!("Hessian has {} values, expected {cols}×{cols}", h.len());
    }
    if settings.block_size == 0 {
        bail!("gptq.block_size must be positive");
    }
    let mut hd: Vec<f64> = h.iter().map(|v| *v as f64).collect();
    if hd.iter().any(|v| !v.is_finite()) {
        bail!("Hessian holds non-finite values");
    }
    let dead: Vec<bool> = (0..cols).map(|i| hd[i * cols + i] == 0.0).collect();
    for i in (0..cols).filter(|i| dead[*i]) {
        hd[i * cols + i] = 1.0;
    }
    let damp = settings.damp * (0..cols).map(|i| hd[i * cols + i]).sum::<f64>() / cols as f64;
    for i in 0..cols {
        hd[i * cols + i] += damp;
    }
    let mut perm: Vec<usize> = (0..cols).collect();
    if settings.act_order {
        // Descending diagonal; ties keep the lower index first (deterministic).
        perm.sort_by(|a, b| hd[b * cols + b].total_cmp(&hd[a * cols + a]).then(a.cmp(b)));
    }
    let hp: Vec<f64> = perm
        .iter()
        .flat_map(|&i| perm.iter().map(move |&j| (i, j)))
        .map(|(i, j)| hd[i * cols + j])
        .collect();
    let Some(u) = inverse_cholesky_upper(&hp, cols, device)? else {
        return Ok(None);
    };
    let mut wt = vec![0f32; rows * cols];
    for (k, &c) in perm.iter().enumerate() {
        if dead[c] {
            continue;
        }
        for r in 0..rows {
            wt[k * rows + r] = w.data[r * cols + c];
        }
    }
    Ok(Some(Prepared {
        rows,
        cols,
        block_size: settings.block_size,
        perm,
        wt,
        u,
        pinned: Vec::new(),
    }))
}

/// U with `UᵀU = H⁻¹` (upper Cholesky factor of the inverse), `None` if H is not positive definite.
fn inverse_cholesky_upper(h: &[f64], n: usize, device: Device) -> Result<Option<Vec<f32>>> {
    linalg_ready(device)?;
    let t = Tensor::f_from_slice(h)?
        .f_view([n as i64, n as i64])?
        .f_to_device(device)?;
    let (l, info) = t
        .f_linalg_cholesky_ex(false, false)
        .map_err(|e| linalg_error("Cholesky of the Hessian", device, e))?;
    if info.f_int64_value(&[])? != 0 {
        return Ok(None);
    }
    let hinv = l
        .f_cholesky_inverse(false)
        .map_err(|e| linalg_error("inverse of the Hessian", device, e))?;
    let (u, info) = hinv
        .f_linalg_cholesky_ex(true, false)
        .map_err(|e| linalg_error("Cholesky of the inverse Hessian", device, e))?;
    if info.f_int64_value(&[])? != 0 {
        return Ok(None);
    }
    let u = u
        .f_to_kind(Kind::Float)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?
        .f_view([-1])?;
    let values = Vec::<f32>::try_from(&u)?;
    if values.iter().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    Ok(Some(values))
}

/// On CUDA, runs the linear algebra of [`inverse_cholesky_upper`] once on a 1×1 matrix, under a
/// lock, before any parallel use. libtorch registers its CUDA linear algebra lazily on first use
/// unless `libtorch_cuda_linalg` is linked (`pgolf_buildid::stage_with_torch`), and that lazy
/// path fails when several threads take it at once; this keeps a binary built either way safe.
fn linalg_ready(device: Device) -> Result<()> {
    static READY: Mutex<bool> = Mutex::new(false);
    if device == Device::Cpu {
        return Ok(());
    }
    let mut ready = READY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*ready {
        let one = Tensor::f_ones([1, 1], (Kind::Double, device))?;
        let (l, _) = one
            .f_linalg_cholesky_ex(false, false)
            .map_err(|e| linalg_error("first Cholesky", device, e))?;
        let _inverse = l
            .f_cholesky_inverse(false)
            .map_err(|e| linalg_error("first Cholesky inverse", device, e))?;
        *ready = true;
    }
    Ok(())
}

/// A libtorch linear-algebra failure as one line: libtorch's message carries a C++ backtrace,
/// of which only the first line says what happened.
fn linalg_error(what: &str, device: Device, err: tch::TchError) -> anyhow::Error {
    let text = err.to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error");
    let hint = if device == Device::Cpu {
        ""
    } else {
        " (is libtorch_cuda_linalg.so linked and found? scripts/device-build.sh checks the binaries)"
    };
    anyhow!("GPTQ: {what} on {device:?} failed in libtorch: {first}{hint}")
}

impl Prepared {
    /// Holds the entries marked in `pinned` (row-major, as the weight) at the integer 0: their
    /// error, like any other, is fed into the columns not yet quantized (a fixed-mask GPTQ, as
    /// SparseGPT with a given mask). `None` leaves the sweep as it is.
    pub fn pin_zeros(mut self, pinned: Option<&[bool]>) -> Prepared {
        if let Some(mask) = pinned {
            assert_eq!(mask.len(), self.rows * self.cols, "one flag per entry");
            let mut t = vec![false; mask.len()];
            for (k, &c) in self.perm.iter().enumerate() {
                for r in 0..self.rows {
                    t[k * self.rows + r] = mask[r * self.cols + c];
                }
            }
            self.pinned = t;
        }
        self
    }

    /// One GPTQ sweep with per-row scales; returns the integers in the original column order
    /// (row-major `rows × cols`).
    pub fn quantize(&self, scales: &[f16], bits: u8) -> Vec<i8> {
        let (rows, cols) = (self.rows, self.cols);
        assert_eq!(scales.len(), rows, "one scale per row");
        let r = max_level(bits);
        let s: Vec<f32> = scales.iter().map(|v| v.to_f32()).collect();
        let mut w = self.wt.clone();
        let mut qt = vec![0i8; rows * cols];
        let u = &self.u;
        for i1 in (0..cols).step_by(self.block_size) {
            let i2 = (i1 + self.block_size).min(cols);
            let mut err = vec![0f32; (i2 - i1) * rows];
            for j in i1..i2 {
                let d = u[j * cols + j];
                let (done, rest) = w.split_at_mut((j + 1) * rows);
                let col = &done[j * rows..];
                let e = &mut err[(j - i1) * rows..(j - i1 + 1) * rows];
                let pinned = self.pinned.get(j * rows..(j + 1) * rows);
                for ri in 0..rows {
                    let q = match pinned {
                        Some(p) if p[ri] => 0,
                        _ => quantize_value(col[ri], s[ri], r),
                    };
                    qt[j * rows + ri] = q;
                    e[ri] = (col[ri] - q as f32 * s[ri]) / d;
                }
                // w_k −= e · U[j, k] for the rest of the block.
                for (k, wk) in rest[..(i2 - j - 1) * rows].chunks_mut(rows).enumerate() {
                    axpy(-u[j * cols + j + 1 + k], e, wk);
                }
            }
            // Lazy update of the columns after the block, one column per task.
            let tail = &mut w[i2 * rows..];
            tail.par_chunks_mut(rows).enumerate().for_each(|(k, wk)| {
                for (jb, e) in err.chunks(rows).enumerate() {
                    axpy(-u[(i1 + jb) * cols + i2 + k], e, wk);
                }
            });
        }
        // Back to row-major, original column order.
        let mut q = vec![0i8; rows * cols];
        for (k, &c) in self.perm.iter().enumerate() {
            for ri in 0..rows {
                q[ri * cols + c] = qt[k * rows + ri];
            }
        }
        q
    }
}

fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{quantize_rows, sdclip_scales};

    /// A deterministic pseudo-random stream (tests need no RNG crate).
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    /// ‖(W − Ŵ) Xᵀ‖² / n: the layer's output error on the calibration inputs.
    fn output_error(w: &[f32], what: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> f64 {
        let mut total = 0.0f64;
        for t in 0..n {
            for r in 0..rows {
                let mut acc = 0.0f64;
                for c in 0..cols {
                    acc += ((w[r * cols + c] - what[r * cols + c]) as f64) * x[t * cols + c] as f64;
                }
                total += acc * acc;
            }
        }
        total / n as f64
    }

    #[test]
    fn gptq_lowers_the_output_error_versus_round_to_nearest() {
        let (rows, cols, n) = (16, 64, 512);
        let mut seed = 7u64;
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        // Correlated inputs: a shared latent per sample plus noise, and columns of different scale,
        // so the Hessian is far from diagonal and act-order matters.
        let mut x = vec![0f32; n * cols];
        for t in 0..n {
            let z = lcg(&mut seed);
            for c in 0..cols {
                x[t * cols + c] = (z * 2.0 + 0.3 * lcg(&mut seed)) * (1.0 + c as f32 / 16.0);
            }
        }
        let mut h = vec![0f32; cols * cols];
        for t in 0..n {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += x[t * cols + i] * x[t * cols + j] / n as f32;
                }
            }
        }
        let m = Matrix::new(&w, rows, cols);
        let scales = sdclip_scales(m, 6.0, 4);
        let dequant = |q: &[i8]| -> Vec<f32> {
            q.iter()
                .enumerate()
                .map(|(i, v)| *v as f32 * scales[i / cols].to_f32())
                .collect()
        };
        let rtn = dequant(&quantize_rows(m, &scales, 4));
        let prep = prepare(m, &h, &GptqSettings::default(), Device::Cpu)
            .unwrap()
            .expect("positive definite");
        let gptq_q = prep.quantize(&scales, 4);
        assert!(gptq_q.iter().all(|v| v.abs() <= 7));
        let gptq = dequant(&gptq_q);
        let e_rtn = output_error(&w, &rtn, &x, rows, cols, n);
        let e_gptq = output_error(&w, &gptq, &x, rows, cols, n);
        assert!(
            e_gptq < 0.7 * e_rtn,
            "GPTQ output error {e_gptq} is not well below round-to-nearest {e_rtn}"
        );
    }

    #[test]
    fn identity_hessian_reduces_to_round_to_nearest() {
        // With H = I every error compensation term is zero (U is diagonal), so GPTQ is exactly RTN.
        let (rows, cols) = (4, 8);
        let mut seed = 3u64;
        let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        let h: Vec<f32> = (0..cols * cols)
            .map(|i| if i % (cols + 1) == 0 { 1.0 } else { 0.0 })
            .collect();
        let m = Matrix::new(&w, rows, cols);
        let scales = sdclip_scales(m, 3.0, 6);
        let prep = prepare(m, &h, &GptqSettings::default(), Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(prep.quantize(&scales, 6), quantize_rows(m, &scales, 6));
    }

    #[test]
    fn dead_columns_are_zeroed_and_indefinite_hessians_are_reported() {
        let (rows, cols) = (2, 3);
        let w = [0.5f32, 9.0, -0.5, 0.25, 9.0, 0.75];
        // Column 1 never saw input: it is quantized as zero.
        let h = [2.0f32, 0.0, 0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 1.0];
        let m = Matrix::new(&w, rows, cols);
        let prep = prepare(m, &h, &GptqSettings::default(), Device::Cpu)
            .unwrap()
            .unwrap();
        let q = prep.quantize(&[f16::from_f32(0.125); 2], 6);
        assert_eq!(q[1], 0);
        assert_eq!(q[4], 0);
        let bad = [1.0f32, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert!(prepare(
            m,
            &bad,
            &GptqSettings {
                damp: 0.0,
                ..Default::default()
            },
            Device::Cpu
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn a_libtorch_failure_is_reported_on_one_line_without_the_backtrace() {
        let err = tch::TchError::Torch(
            "lazy wrapper should be called at most once\nException raised from \
             loadLazyTorchLinalgLibrary at BatchLinearAlgebra.cpp:1\nframe #0: c10::Error"
                .into(),
        );
        let line = linalg_error("Cholesky of the Hessian", Device::Cuda(0), err).to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("Cholesky of the Hessian on Cuda(0)"),
            "{line}"
        );
        assert!(
            line.contains("lazy wrapper should be called at most once"),
            "{line}"
        );
        assert!(!line.contains("frame #0"), "{line}");
    }
}
