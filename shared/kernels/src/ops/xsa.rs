//! `xsa`: R0322's XSA (`_xsa_efficient`), each attention head's output `y` minus its component
//! along its kv head's normalised value: `out = y − (y·v̂)v̂`, `v̂ = v / max(‖v‖, 1e-12)`, per
//! (token, head), head h reading kv head h/(H/Hkv) — forward and a hand-derived backward (for `y`
//! and `v`), one pass each.
//!
//! In tch ops (pgolf-model's `addons::xsa`, and autograd of it) this is ~7 launches forward
//! (norm, clamp, divide, multiply, sum, multiply, subtract) and ~2× that backward, each a pass
//! over `[N, H·hd]` or `[N, Hkv·hd]` bf16; here one read of `y` and `v` and one write of `out`
//! forward, one read of `y`, `v`, `d out` and one write of `dy`, `dv` backward. `y` is read with
//! its own strides (SDPA's `[B, H, T, hd]` output seen as `[B, T, H, hd]`: no transpose copy) and
//! `out` written contiguous, so the caller's `reshape([B, T, H·hd])` is a view; `dy` is written
//! in `y`'s layout, the one SDPA's backward wants for its output's gradient.
//!
//! Saves only its inputs (`y` is SDPA's output, `v` its input: alive anyway). On CUDA (bf16) it
//! runs `cuda/xsa.cu`; on the CPU (any float kind) the same formulas in tch ops.

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::{kernel_input, math_kind, strided_rows};
use crate::autograd::{apply, Forward, FusedFunction};
use crate::launch::{launch, Arg, Kernel};

const FILE: &str = "xsa.cu";
const SOURCE: &str = include_str!("../../cuda/xsa.cu");
pub static FORWARD: Kernel = Kernel::new(FILE, SOURCE, "xsa_forward");
pub static BACKWARD: Kernel = Kernel::new(FILE, SOURCE, "xsa_backward");

/// F.normalize's floor on ‖v‖ (R0322 calls it with the default eps).
pub const MIN_NORM: f64 = 1e-12;

/// Threads per block we aim for (whole rows per block: rows_per_block · Hkv·hd/8 threads).
const TARGET_BLOCK_THREADS: i64 = 256;

/// The op (pass to [`crate::apply`]); inputs `[y, v]`, no scalars, outputs `[out]`.
pub struct Xsa;
pub static XSA: Xsa = Xsa;

/// `y` `[B, T, H, hd]` (any strides), `v` `[B, T, Hkv, hd]`, H a multiple of Hkv, bf16 on CUDA:
/// `y − (y·v̂)v̂` `[B, T, H, hd]` contiguous in `y`'s kind, as one autograd node (gradients for
/// both). [`reference`] is the same function in tch ops.
pub fn xsa(y: &Tensor, v: &Tensor) -> Result<Tensor> {
    Ok(apply(&XSA, &[y, v], &[])?.remove(0))
}

/// `(B, T, H, Hkv, hd)` after checking that `y` and `v` fit together.
fn shape(y: &Tensor, v: &Tensor) -> Result<(i64, i64, i64, i64, i64)> {
    let (b, t, h, hd) = y
        .size4()
        .map_err(|_| anyhow::anyhow!("xsa: y must be [B, T, H, hd], got {:?}", y.size()))?;
    let (vb, vt, hkv, vhd) = v
        .size4()
        .map_err(|_| anyhow::anyhow!("xsa: v must be [B, T, Hkv, hd], got {:?}", v.size()))?;
    ensure!(
        (vb, vt, vhd) == (b, t, hd) && hkv > 0 && h % hkv == 0,
        "xsa: y {:?} and v {:?} do not fit (v must be [B, T, Hkv, hd] with H a multiple of Hkv)",
        y.size(),
        v.size()
    );
    Ok((b, t, h, hkv, hd))
}

/// `v / max(‖v‖, MIN_NORM)` over the last dimension, with the unclamped norm.
fn unit(v: &Tensor) -> (Tensor, Tensor, Tensor) {
    let raw = v.norm_scalaropt_dim(2.0, [-1], true);
    let n = raw.clamp_min(MIN_NORM);
    (v / &n, n, raw)
}

/// The same function in plain tch ops (differentiable by autograd; any device): math in f32 (f64
/// for f64 inputs), the result contiguous in `y`'s kind. pgolf-model's `addons::xsa` (the literal
/// formulation's) is the same formula in the compute kind.
pub fn reference(y: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, t, h, hkv, hd) = shape(y, v)?;
    let mk = math_kind(y.kind());
    let yf = y.to_kind(mk).reshape([b, t, hkv, h / hkv, hd]);
    let (vh, _, _) = unit(&v.to_kind(mk));
    let vh = vh.unsqueeze(-2);
    let along = (&yf * &vh).sum_dim_intlist(-1, true, mk) * &vh;
    Ok((yf - along)
        .reshape([b, t, h, hd])
        .to_kind(y.kind())
        .contiguous())
}

/// The hand-derived backward in tch ops (math in f32, or f64 for f64 inputs): `(dy, dv)` in the
/// kinds of `y` and `v`, from `g = d out`: `dy = g − (g·v̂)v̂`;
/// `dv̂ = −Σ_group [(g·v̂)·y + (y·v̂)·g]`; `dv = (dv̂ − v̂(v̂·dv̂))/‖v‖`, or `dv̂/1e-12` where
/// ‖v‖ is clamped.
pub fn backward_formula(y: &Tensor, v: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, t, h, hkv, hd) = shape(y, v)?;
    ensure!(
        g.size() == y.size(),
        "xsa backward: gradient {:?} for output {:?}",
        g.size(),
        y.size()
    );
    let mk = math_kind(y.kind());
    let group = [b, t, hkv, h / hkv, hd];
    let (yf, gf) = (y.to_kind(mk).reshape(group), g.to_kind(mk).reshape(group));
    let (vh, n, raw) = unit(&v.to_kind(mk));
    let vhu = vh.unsqueeze(-2);
    let a = (&yf * &vhu).sum_dim_intlist(-1, true, mk);
    let bd = (&gf * &vhu).sum_dim_intlist(-1, true, mk);
    let dy = &gf - &bd * &vhu;
    let dvh = -(&bd * &yf + &a * &gf).sum_dim_intlist(-2, false, mk);
    let c = (&vh * &dvh).sum_dim_intlist(-1, true, mk);
    let projected = (&dvh - &vh * c) / &n;
    let dv = projected.where_self(&raw.ge(MIN_NORM), &(dvh / &n));
    Ok((
        dy.reshape([b, t, h, hd]).to_kind(y.kind()),
        dv.to_kind(v.kind()),
    ))
}

/// The launch geometry of both kernels: `(rows_per_block, threads_per_block)`, whole rows per
/// block and whole warps (the kernels shuffle with full-warp masks).
pub(crate) fn block_shape(hkv: i64, hd: i64) -> Result<(i64, i64)> {
    ensure!(
        [16, 32, 64, 128, 256].contains(&hd),
        "xsa kernels: head_dim {hd} unsupported (16, 32, 64, 128 or 256)"
    );
    let row_threads = hkv * hd / 8;
    let rows_per_warp_multiple = 32 / super::gcd(row_threads, 32);
    let rows_per_block = ((TARGET_BLOCK_THREADS / row_threads) / rows_per_warp_multiple).max(1)
        * rows_per_warp_multiple;
    let threads = rows_per_block * row_threads;
    ensure!(
        threads <= 1024,
        "xsa kernels: rows of {hkv} kv heads of {hd} do not fit a block in whole warps"
    );
    Ok((rows_per_block, threads))
}

/// An empty tensor of `t`'s size with `t`'s strides when they are a dense layout (a permutation
/// of a contiguous one, as a transposed view's), else contiguous.
fn empty_in_layout_of(t: &Tensor) -> Tensor {
    let (size, stride) = (t.size(), t.stride());
    let mut order: Vec<usize> = (0..size.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(stride[i]));
    let mut expect = 1;
    let mut dense = true;
    for &i in order.iter().rev() {
        dense &= size[i] == 1 || stride[i] == expect;
        expect *= size[i];
    }
    let opts = (t.kind(), t.device());
    match dense {
        true => Tensor::empty_strided(&size, &stride, opts),
        false => Tensor::empty(&size, opts),
    }
}

impl FusedFunction for Xsa {
    fn name(&self) -> &'static str {
        "xsa"
    }

    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
        let ([y, v], []) = (inputs, scalars) else {
            bail!(
                "xsa: expected [y, v] and no scalars, got {} tensors and {} scalars",
                inputs.len(),
                scalars.len()
            );
        };
        let (b, t, h, hkv, hd) = shape(y, v)?;
        match y.device() {
            Device::Cpu => {
                let _guard = tch::no_grad_guard();
                Ok(Forward {
                    outputs: vec![reference(y, v)?],
                    saved: vec![y.shallow_clone(), v.shallow_clone()],
                })
            }
            Device::Cuda(_) => {
                let (rows_per_block, threads) = block_shape(hkv, hd)?;
                let (y, sy) = strided_rows(y, "xsa y")?;
                let v = kernel_input(v, "xsa v", Kind::BFloat16)?;
                let out = Tensor::empty([b, t, h, hd], (Kind::BFloat16, y.device()));
                let rows = b * t;
                let blocks = u32::try_from((rows + rows_per_block - 1) / rows_per_block)
                    .context("xsa: too many rows for one grid")?;
                launch(
                    &FORWARD,
                    (blocks, 1, 1),
                    (threads as u32, 1, 1),
                    0,
                    &[
                        Arg::from(&y),
                        Arg::I64(sy[0]),
                        Arg::I64(sy[1]),
                        Arg::I64(sy[2]),
                        Arg::from(&v),
                        Arg::from(&out),
                        Arg::I64(rows),
                        Arg::I32(t as i32),
                        Arg::I32(h as i32),
                        Arg::I32(hkv as i32),
                        Arg::I32(hd as i32),
                    ],
                )?;
                Ok(Forward {
                    outputs: vec![out],
                    saved: vec![y, v],
                })
            }
            other => bail!("xsa: unsupported device {other:?}"),
        }
    }

    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        _scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let ([y, v], [g]) = (saved, grad_outputs) else {
            bail!("xsa backward: expected 2 saved tensors and 1 gradient");
        };
        let (b, t, h, hkv, hd) = shape(y, v)?;
        ensure!(
            g.size() == y.size(),
            "xsa backward: gradient {:?} for output {:?}",
            g.size(),
            y.size()
        );
        let (dy, dv) = match y.device() {
            Device::Cpu => backward_formula(y, v, g)?,
            Device::Cuda(_) => {
                let (rows_per_block, threads) = block_shape(hkv, hd)?;
                let (g, sg) = strided_rows(g, "xsa d out")?;
                // `y` was made kernel-ready in the forward: its strides are usable as they are.
                let sy = y.stride();
                let dy = empty_in_layout_of(y);
                let sdy = dy.stride();
                let dv = v.empty_like();
                let rows = b * t;
                let blocks = u32::try_from((rows + rows_per_block - 1) / rows_per_block)
                    .context("xsa: too many rows for one grid")?;
                launch(
                    &BACKWARD,
                    (blocks, 1, 1),
                    (threads as u32, 1, 1),
                    0,
                    &[
                        Arg::from(y),
                        Arg::I64(sy[0]),
                        Arg::I64(sy[1]),
                        Arg::I64(sy[2]),
                        Arg::from(v),
                        Arg::from(&g),
                        Arg::I64(sg[0]),
                        Arg::I64(sg[1]),
                        Arg::I64(sg[2]),
                        Arg::from(&dy),
                        Arg::I64(sdy[0]),
                        Arg::I64(sdy[1]),
                        Arg::I64(sdy[2]),
                        Arg::from(&dv),
                        Arg::I64(rows),
                        Arg::I32(t as i32),
                        Arg::I32(h as i32),
                        Arg::I32(hkv as i32),
                        Arg::I32(hd as i32),
                    ],
                )?;
                (dy, dv)
            }
            other => bail!("xsa: unsupported device {other:?}"),
        };
        Ok(vec![Some(dy), Some(dv)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_all_close, max_abs_diff};

    /// Random f64 `y` [2, 5, H, 8] (seen through a transpose, as SDPA's output) and `v`
    /// [2, 5, Hkv, 8], with one value vector tiny (‖v‖ < 1e-12: the clamp) and one zero.
    fn inputs(h: i64, hkv: i64) -> (Tensor, Tensor) {
        tch::manual_seed(17);
        let opts = (Kind::Double, Device::Cpu);
        let y = Tensor::randn([2, h, 5, 8], opts).transpose(1, 2);
        let v = Tensor::randn([2, 5, hkv, 8], opts);
        tch::no_grad(|| {
            let _ = v.get(1).get(3).get(0).g_mul_scalar_(1e-14);
            let _ = v.get(0).get(2).get(hkv - 1).zero_();
        });
        (y, v)
    }

    /// GQA (4 heads on 2 kv heads) and plain multi-head attention.
    const LAYOUTS: [(i64, i64); 2] = [(4, 2), (3, 3)];

    #[test]
    fn hand_derived_backward_equals_autograd_of_the_reference() {
        for (h, hkv) in LAYOUTS {
            let (y, v) = inputs(h, hkv);
            let (y, v) = (y.set_requires_grad(true), v.set_requires_grad(true));
            let out = reference(&y, &v).unwrap();
            let g = Tensor::randn(out.size(), (Kind::Double, Device::Cpu));
            let grads =
                Tensor::run_backward(&[(&out * &g).sum(Kind::Double)], &[&y, &v], false, false);
            let (dy, dv) = backward_formula(&y.detach(), &v.detach(), &g).unwrap();
            assert_eq!(dy.size(), y.size());
            assert_eq!(dv.size(), v.size());
            let e_y = max_abs_diff(&dy, &grads[0]);
            // dv is 1e12× larger where ‖v‖ is clamped: relative to its scale.
            let scale = grads[1].abs().max().double_value(&[]);
            let e_v = max_abs_diff(&dv, &grads[1]) / scale;
            assert!(e_y < 1e-12, "H {h}: dy differs from autograd by {e_y:e}");
            assert!(
                e_v < 1e-12,
                "H {h}: dv differs from autograd by {e_v:e} (relative)"
            );
            assert!(scale > 1e6, "the clamped row must take part");
            // Away from the clamped rows dv is of order 1.
            let normal = grads[1].get(0).get(0).abs().max().double_value(&[]);
            assert!(normal > 0.1 && normal < 100.0, "{normal}");
        }
    }

    #[test]
    fn the_op_through_autograd_equals_the_reference() {
        for (h, hkv) in LAYOUTS {
            let (y0, v0) = inputs(h, hkv);
            let run = |fused: bool| {
                let (y, v) = (
                    y0.copy().set_requires_grad(true),
                    v0.copy().set_requires_grad(true),
                );
                let out = if fused {
                    xsa(&y, &v).unwrap()
                } else {
                    reference(&y, &v).unwrap()
                };
                tch::manual_seed(5);
                let g = Tensor::randn(out.size(), (Kind::Double, Device::Cpu));
                let grads =
                    Tensor::run_backward(&[(&out * &g).sum(Kind::Double)], &[&y, &v], false, false);
                (out.detach(), grads)
            };
            let ((out_f, g_f), (out_r, g_r)) = (run(true), run(false));
            assert!(out_f.is_contiguous());
            let scale = g_r[1].abs().max().double_value(&[]);
            assert_all_close([(&out_f, &out_r), (&g_f[0], &g_r[0])], 1e-12);
            assert!(max_abs_diff(&g_f[1], &g_r[1]) / scale < 1e-12);
        }
    }

    /// Outputs are orthogonal to their kv head's value, and a hand case: y = (1, 1), v = (2, 0)
    /// gives (0, 1).
    #[test]
    fn outputs_lose_their_value_component() {
        let (y, v) = inputs(4, 2);
        let out = reference(&y, &v).unwrap().view([2, 5, 2, 2, 8]);
        let dots = (out * v.unsqueeze(3)).sum_dim_intlist(-1, false, Kind::Double);
        assert!(dots.abs().max().double_value(&[]) < 1e-12);
        let y = Tensor::from_slice(&[1.0f64, 1.0]).view([1, 1, 1, 2]);
        let v = Tensor::from_slice(&[2.0f64, 0.0]).view([1, 1, 1, 2]);
        let got: Vec<f64> = Vec::try_from(reference(&y, &v).unwrap().view([-1])).unwrap();
        assert_eq!(got, vec![0.0, 1.0]);
    }

    #[test]
    fn bad_shapes_are_one_line_errors_and_blocks_hold_whole_warps() {
        let (y, v) = inputs(4, 2);
        let err = reference(&y, &v.narrow(2, 0, 1).narrow(3, 0, 4)).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let err = reference(&y, &inputs(3, 3).1).unwrap_err();
        assert!(err.to_string().contains("multiple of Hkv"), "{err}");
        // R0322: 4 kv heads of 64 = 32 threads a row, 8 rows a block.
        assert_eq!(block_shape(4, 64).unwrap(), (8, 256));
        for (hkv, hd) in [(1, 16), (3, 32), (5, 64), (1, 256)] {
            let (rows, threads) = block_shape(hkv, hd).unwrap();
            assert_eq!(threads % 32, 0, "({hkv}, {hd})");
            assert_eq!(threads, rows * hkv * hd / 8);
        }
        assert!(block_shape(4, 48).is_err());
    }

    /// A transposed view's layout is kept (dense), a strided slice's is not.
    #[test]
    fn gradients_take_the_layout_of_a_dense_input() {
        let t = Tensor::zeros([2, 3, 4, 8], (Kind::Float, Device::Cpu));
        let transposed = t.transpose(1, 2).contiguous().transpose(1, 2);
        assert_eq!(
            empty_in_layout_of(&transposed).stride(),
            transposed.stride()
        );
        let sliced = t.narrow(2, 0, 2);
        assert!(empty_in_layout_of(&sliced).is_contiguous());
    }
}
