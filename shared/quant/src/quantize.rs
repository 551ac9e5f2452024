//! Applies a [`Routing`] to a model's weights: every tensor becomes a [`StoredTensor`] plus a line
//! of the per-tensor report (scheme, bits, clip, reconstruction error).

use anyhow::{anyhow, bail, Context, Result};
use half::f16;
use rayon::prelude::*;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

use crate::dtype::floats_to_bytes;
use crate::encoded::{Encoding, Scale, StoredTensor};
use crate::gptq::{self, GptqSettings};
use crate::int8::{int8_rows, int8_tensor, INT8_CLIP_Q};
use crate::lqer::{self, LqerSettings};
use crate::plan::{Decision, Method, Routing, Rule};
use crate::prune::prune_smallest;
use crate::rows::{
    lite_search, lite_tensor, percentile_scales, quantize_rows, rows_mse, sdclip_scales,
    sorted_rows, Matrix,
};
use crate::weights::Weight;

/// What was done to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    /// `int8_upstream`, `lite`, `rtn`, `gptq`, `gptq>lite` (Cholesky failed), `raw_f32`, `raw_f16`, …
    pub scheme: String,
    /// Integer width; `None` for raw tensors.
    pub bits: Option<u8>,
    /// The clip: `q=0.9999984`, `p=0.99999`, `k=12.85`, or empty for raw tensors.
    pub clip: String,
    /// Mean squared error of the decoded tensor against the original.
    pub mse: f64,
    /// With a Hessian H for this weight: the layer's output error energy on the calibration inputs
    /// relative to its output energy, `tr(E H Eᵀ) / tr(W H Wᵀ)` with `E = W − Ŵ`. What GPTQ
    /// minimises (where the weight MSE may rise).
    pub rel_output_err: Option<f64>,
    /// Bytes stored before compression (integers + scales, or raw values).
    pub stored_bytes: usize,
    /// Entries set to 0 by magnitude pruning before quantization (the rule's `prune`); 0 when off.
    pub pruned: usize,
    /// LQER: the correction (`r4 asym g64`, `r4 sym int4`), empty when none.
    pub lqer: String,
    /// LQER: the factors' bytes before compression (part of `stored_bytes`); 0 when none.
    pub lqer_bytes: usize,
    /// LQER: `mse` and `rel_output_err` of the tensor without its correction (`None` when none).
    pub mse_before_lqer: Option<f64>,
    pub rel_output_err_before_lqer: Option<f64>,
}

/// The inputs every tensor's quantization may need.
pub struct QuantInputs<'a> {
    pub routing: &'a Routing,
    pub gptq: &'a GptqSettings,
    /// Name → XᵀX (`cols × cols`) for the weights a GPTQ rule covers.
    pub hessians: &'a HashMap<String, Weight>,
    /// Where Hessians are factored.
    pub device: Device,
}

/// Quantizes every weight (in parallel, results in input order); `done` is called per tensor.
pub fn quantize_all(
    weights: &[Weight],
    ctx: &QuantInputs,
    done: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(StoredTensor, TensorReport)>> {
    ctx.routing.validate()?;
    weights
        .par_iter()
        .map(|w| {
            let out = quantize_one(w, ctx).with_context(|| format!("tensor {}", w.name))?;
            done(&w.name);
            Ok(out)
        })
        .collect()
}

fn quantize_one(w: &Weight, ctx: &QuantInputs) -> Result<(StoredTensor, TensorReport)> {
    if w.data.len() != w.numel() {
        bail!("{} values for shape {:?}", w.data.len(), w.shape);
    }
    let (encoding, scheme, bits, clip, pruned) =
        match ctx.routing.decide(&w.name, w.numel(), w.dtype) {
            Decision::Raw(stored) => {
                let enc = Encoding::Raw {
                    stored,
                    bytes: floats_to_bytes(stored, &w.data),
                };
                (
                    enc,
                    format!("raw_{}", stored.name()),
                    None,
                    String::new(),
                    0,
                )
            }
            Decision::Quantize(rule) if rule.prune > 0.0 && w.shape.len() == 2 => {
                // Pruned first, then quantized as usual; the report's errors stay against the
                // original weights, so they include what pruning cost.
                let mut data = w.data.clone();
                let mask = prune_smallest(&mut data, rule.prune);
                let pruned = mask.iter().filter(|p| **p).count();
                let (enc, scheme, clip) = quantize_with(w, &data, Some(&mask), &rule, ctx)?;
                (enc, scheme, Some(rule.bits), clip, pruned)
            }
            Decision::Quantize(rule) => {
                let (enc, scheme, clip) = quantize_with(w, &w.data, None, &rule, ctx)?;
                (enc, scheme, Some(rule.bits), clip, 0)
            }
        };
    let stored = StoredTensor {
        name: w.name.clone(),
        shape: w.shape.clone(),
        dtype: w.dtype,
        encoding,
        lqer: None,
        layout: Default::default(),
    };
    let (mse, rel_output_err) = errors(w, &stored, ctx)?;
    let report = TensorReport {
        name: w.name.clone(),
        shape: w.shape.clone(),
        dtype: w.dtype.name().into(),
        scheme,
        bits,
        clip,
        mse,
        rel_output_err,
        stored_bytes: crate::encoded::stored_bytes(&stored),
        pruned,
        lqer: String::new(),
        lqer_bytes: 0,
        mse_before_lqer: None,
        rel_output_err_before_lqer: None,
    };
    Ok((stored, report))
}

/// The decoded tensor's weight MSE and, with a Hessian, its relative output error.
fn errors(w: &Weight, stored: &StoredTensor, ctx: &QuantInputs) -> Result<(f64, Option<f64>)> {
    let decoded = stored.dequantize()?;
    let mse = w
        .data
        .iter()
        .zip(&decoded)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / w.numel().max(1) as f64;
    let rel = match ctx.hessians.get(&w.name) {
        Some(h) if w.shape.len() == 2 && h.shape == [w.shape[1], w.shape[1]] => {
            Some(relative_output_error(w, &decoded, h, ctx.device)?)
        }
        _ => None,
    };
    Ok((mse, rel))
}

/// LQER ([`crate::lqer`]) over the output of [`quantize_all`] for the same `weights`: the
/// `top_k` quantized matrices of largest ‖W − Q·s‖_F get their correction, and their report lines
/// the new errors and sizes (the ones before kept in `*_before_lqer`). Off: nothing changes.
pub fn correct_lqer(
    weights: &[Weight],
    quantized: &mut [(StoredTensor, TensorReport)],
    settings: &LqerSettings,
    ctx: &QuantInputs,
) -> Result<()> {
    if !settings.enabled {
        return Ok(());
    }
    settings.validate()?;
    if weights.len() != quantized.len() {
        bail!(
            "LQER: {} weights for {} quantized tensors",
            weights.len(),
            quantized.len()
        );
    }
    let norms: Vec<(usize, f64)> = (weights.par_iter().zip(quantized.par_iter()))
        .enumerate()
        .filter_map(|(i, (w, (t, _)))| {
            let e = lqer::residual(t, &w.data)?;
            Some((i, e.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()))
        })
        .collect();
    for i in lqer::top_k(&norms, settings.top_k) {
        let w = &weights[i];
        let (t, report) = &mut quantized[i];
        if t.name != w.name {
            bail!("LQER: tensor {} paired with weight {}", t.name, w.name);
        }
        let (rows, cols) = (w.shape[0], w.shape[1]);
        let e = lqer::residual(t, &w.data).expect("a candidate has a residual");
        let (a, b, rank) = lqer::factors(&e, rows, cols, settings.rank)
            .with_context(|| format!("tensor {}: SVD of the quantization error", w.name))?;
        let correction = lqer::pack(&a, &b, rank, settings);
        report.lqer = match correction.a.bits {
            2 => format!("r{rank} asym g{}", correction.b.group),
            bits => format!("r{rank} sym int{bits}"),
        };
        report.lqer_bytes = crate::encoded::lqer_bytes(&correction);
        t.lqer = Some(correction);
        let (mse, rel) = errors(w, t, ctx).with_context(|| format!("tensor {}", w.name))?;
        report.mse_before_lqer = Some(std::mem::replace(&mut report.mse, mse));
        report.rel_output_err_before_lqer = std::mem::replace(&mut report.rel_output_err, rel);
        report.stored_bytes = crate::encoded::stored_bytes(t);
    }
    Ok(())
}

/// `tr(E H Eᵀ) / tr(W H Wᵀ)`, `E = W − Ŵ` (libtorch matmuls, f64).
fn relative_output_error(w: &Weight, decoded: &[f32], h: &Weight, device: Device) -> Result<f64> {
    let (rows, cols) = (w.shape[0] as i64, w.shape[1] as i64);
    let to = |v: &[f32], r: i64, c: i64| -> Result<Tensor> {
        Ok(Tensor::f_from_slice(v)?
            .f_view([r, c])?
            .f_to_kind(Kind::Double)?
            .f_to_device(device)?)
    };
    let wt = to(&w.data, rows, cols)?;
    let et = wt.f_sub(&to(decoded, rows, cols)?)?;
    let ht = to(&h.data, cols, cols)?;
    let energy = |x: &Tensor| -> Result<f64> {
        Ok(x.f_matmul(&ht)?
            .f_mul(x)?
            .f_sum(Kind::Double)?
            .f_double_value(&[])?)
    };
    let total = energy(&wt)?;
    Ok(if total > 0.0 {
        energy(&et)? / total
    } else {
        0.0
    })
}

/// Quantizes `data` (the weight's values, pruned where `pinned` says) by `rule`. Every scheme maps
/// 0 to the integer 0; GPTQ, whose error feedback would refill pruned entries, holds them at 0.
fn quantize_with(
    w: &Weight,
    data: &[f32],
    pinned: Option<&[bool]>,
    rule: &Rule,
    ctx: &QuantInputs,
) -> Result<(Encoding, String, String)> {
    let bits = rule.bits;
    let matrix = (w.shape.len() == 2).then(|| Matrix::new(data, w.shape[0], w.shape[1]));
    let Some(m) = matrix else {
        // Not a matrix: one scale for the whole tensor.
        return Ok(match rule.method {
            Method::Int8Upstream => (
                int8_tensor(data),
                "int8_upstream".into(),
                format!("q={INT8_CLIP_Q}"),
            ),
            _ => {
                let (q, s) = lite_tensor(data, bits);
                (
                    Encoding::Tensor {
                        bits,
                        q,
                        scale: Scale::F16(s),
                    },
                    "lite".into(),
                    "p=1".into(),
                )
            }
        });
    };
    let rows = |q: Vec<i8>, scales: Vec<f16>| Encoding::Rows { bits, q, scales };
    Ok(match (rule.method, rule.clip_sigmas) {
        (Method::Int8Upstream, _) => (
            int8_rows(data, m.cols),
            "int8_upstream".into(),
            format!("q={INT8_CLIP_Q}"),
        ),
        (Method::Lite, Some(k)) => {
            let s = sdclip_scales(m, k, bits);
            (
                rows(quantize_rows(m, &s, bits), s),
                "rtn".into(),
                format!("k={k}"),
            )
        }
        (Method::Lite, None) => {
            let (p, q, s) = lite_search(m, bits, &rule.percentiles);
            (rows(q, s), "lite".into(), format!("p={p}"))
        }
        (Method::Gptq, clip) => {
            let h = ctx.hessians.get(&w.name).ok_or_else(|| {
                anyhow!("no Hessian in the hessians input (run gptq-calibrate on these weights)")
            })?;
            if h.shape != [m.cols, m.cols] {
                bail!(
                    "Hessian has shape {:?}, the weight needs [{}, {}]",
                    h.shape,
                    m.cols,
                    m.cols
                );
            }
            match gptq::prepare(m, &h.data, ctx.gptq, ctx.device)?.map(|p| p.pin_zeros(pinned)) {
                None => {
                    // Not positive definite even after damping: GPTQ-lite, as the records do.
                    let (p, q, s) = lite_search(m, bits, &rule.percentiles);
                    (rows(q, s), "gptq>lite".into(), format!("p={p}"))
                }
                Some(prep) => match clip {
                    Some(k) => {
                        let s = sdclip_scales(m, k, bits);
                        (
                            rows(prep.quantize(&s, bits), s),
                            "gptq".into(),
                            format!("k={k}"),
                        )
                    }
                    None => {
                        // R0329: one GPTQ pass per candidate percentile, keep the lowest weight MSE.
                        let sorted = sorted_rows(m);
                        let mut best: Option<(f64, f64, Vec<i8>, Vec<f16>)> = None;
                        for &p in &rule.percentiles {
                            let s = percentile_scales(&sorted, p, bits);
                            let q = prep.quantize(&s, bits);
                            let err = rows_mse(m, &q, &s);
                            if best.as_ref().is_none_or(|b| err < b.0) {
                                best = Some((err, p, q, s));
                            }
                        }
                        let (_, p, q, s) = best.expect("percentiles validated non-empty");
                        (rows(q, s), "gptq".into(), format!("p={p}"))
                    }
                },
            }
        }
        (Method::Fp16 | Method::Keep, _) => {
            unreachable!("raw methods are decided before quantization")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn relative_output_error_is_the_hessian_weighted_energy_ratio() {
        let w = Weight {
            name: "w".into(),
            shape: vec![1, 2],
            dtype: DType::F32,
            data: vec![1.0, 2.0],
        };
        let h = Weight {
            name: "w".into(),
            shape: vec![2, 2],
            dtype: DType::F32,
            data: vec![2.0, 0.5, 0.5, 1.0],
        };
        // E = [0.5, -1]: EHEᵀ = 2·0.25 + 2·0.5·(0.5·−1) + 1 = 1.0; WHWᵀ = 2 + 2·0.5·2 + 4 = 8.
        let r = relative_output_error(&w, &[0.5, 3.0], &h, Device::Cpu).unwrap();
        assert!((r - 1.0 / 8.0).abs() < 1e-12, "{r}");
    }
}
