//! `rms_norm`: RMSNorm over the last dimension, no weight (the MLP's input norm, the final norm,
//! the embedding norm), times an output factor `f` (R0322's LN scale 1/√(i+1) on the MLP's input
//! norm of block i; 1 elsewhere, bit-identical to the norm without one), forward and
//! hand-derived backward, from the `mix_norm` kernel family (`cuda/mix_norm.cu`: one warp per
//! row, f32 math, one rounding per output).
//!
//! Backward: `dx = f·r·(dy − ŷ·mean(dy·ŷ))`, `r = 1/sqrt(mean(x²) + eps)`, `ŷ = r·x`; saves only
//! `x`.
//! Whether it beats libtorch's own `rms_norm` on the GPU is measured by
//! `examples/check_kernels.rs`.
//!
//! On CUDA (bf16) it runs the kernels; on the CPU (any float kind) the same formulas in tch ops.

use anyhow::{bail, ensure, Result};
use tch::{Device, Kind, Tensor};

use super::mix_norm::{launch_rows, per_chunk_count, variant, WARPS_PER_BLOCK};
use super::{grid_for, kernel_input, math_kind};
use crate::autograd::{apply, Forward, FusedFunction};
use crate::launch::Kernel;

/// f32 machine epsilon: `rms_norm`'s eps when none is given, for f32 and (upcast) bf16 inputs —
/// upstream's setting (REFERENCE.md §3.2).
pub const DEFAULT_EPS: f64 = f32::EPSILON as f64;

/// Kernels per chunk count K = 1, 2, 4 (d ≤ 256, 512, 1024).
pub static FORWARD: [Kernel; 3] = per_chunk_count!("rms_norm_forward");
pub static BACKWARD: [Kernel; 3] = per_chunk_count!("rms_norm_backward");

/// The op (pass to [`crate::apply`]); inputs `[x]`, scalars `[eps, scale]`, outputs `[y]`.
pub struct RmsNorm;
pub static RMS_NORM: RmsNorm = RmsNorm;

/// `scale · x / sqrt(mean(x²) + eps)` over the last dimension, in `x`'s shape and kind, as one
/// autograd node (`scale` 1: the plain norm).
pub fn rms_norm(x: &Tensor, eps: f64, scale: f64) -> Result<Tensor> {
    ensure!(
        scale.is_finite(),
        "rms_norm: the output factor must be finite, got {scale}"
    );
    Ok(apply(&RMS_NORM, &[x], &[eps, scale])?.remove(0))
}

/// `t · scale`, or `t` itself for 1 (the plain norm, untouched).
pub(crate) fn scaled(t: Tensor, scale: f64) -> Tensor {
    match scale == 1.0 {
        true => t,
        false => t * scale,
    }
}

/// The same function in plain tch ops (libtorch's `rms_norm` in f32, or f64 for f64 inputs,
/// times `scale`; the result in `x`'s kind), differentiable by autograd.
pub fn reference(x: &Tensor, eps: f64, scale: f64) -> Tensor {
    let d = *x
        .size()
        .last()
        .expect("rms_norm: x must have a feature dimension");
    scaled(
        x.to_kind(math_kind(x.kind()))
            .rms_norm([d], None::<Tensor>, eps),
        scale,
    )
    .to_kind(x.kind())
}

/// The hand-derived backward in tch ops: `dx` in `x`'s kind.
pub fn backward_formula(x: &Tensor, dy: &Tensor, eps: f64, scale: f64) -> Tensor {
    let mk = math_kind(x.kind());
    let xf = x.to_kind(mk);
    let r = (xf.square().mean_dim(-1, true, mk) + eps).rsqrt();
    let y = &xf * &r;
    let dy = dy.to_kind(mk);
    let dot = (&dy * &y).mean_dim(-1, true, mk);
    (r * scale * (dy - y * dot)).to_kind(x.kind())
}

fn rows_and_width(x: &Tensor) -> Result<(i64, i64)> {
    ensure!(x.dim() >= 1, "rms_norm: x must have a feature dimension");
    let d = *x.size().last().unwrap();
    Ok((x.numel() as i64 / d.max(1), d))
}

impl FusedFunction for RmsNorm {
    fn name(&self) -> &'static str {
        "rms_norm"
    }

    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
        let ([x], &[eps, scale]) = (inputs, scalars) else {
            bail!(
                "rms_norm: expected [x] and [eps, scale], got {} tensors and {} scalars",
                inputs.len(),
                scalars.len()
            );
        };
        let (rows, d) = rows_and_width(x)?;
        let y = match x.device() {
            Device::Cpu => {
                let _guard = tch::no_grad_guard();
                reference(x, eps, scale)
            }
            Device::Cuda(_) => {
                let k = variant(d, "rms_norm")?;
                let x = kernel_input(x, "rms_norm x", Kind::BFloat16)?;
                let y = x.empty_like();
                launch_rows(
                    &FORWARD[k],
                    grid_for(rows, WARPS_PER_BLOCK),
                    &[&x, &y],
                    rows,
                    d,
                    [eps, scale],
                )?;
                return Ok(Forward {
                    outputs: vec![y],
                    saved: vec![x],
                });
            }
            other => bail!("rms_norm: unsupported device {other:?}"),
        };
        Ok(Forward {
            outputs: vec![y],
            saved: vec![x.shallow_clone()],
        })
    }

    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let ([x], [dy], &[eps, scale]) = (saved, grad_outputs, scalars) else {
            bail!("rms_norm backward: expected 1 saved tensor, 1 gradient and 2 scalars");
        };
        ensure!(
            dy.size() == x.size(),
            "rms_norm backward: gradient {:?} for output {:?}",
            dy.size(),
            x.size()
        );
        let (rows, d) = rows_and_width(x)?;
        let dx = match x.device() {
            Device::Cpu => backward_formula(x, dy, eps, scale),
            Device::Cuda(_) => {
                let k = variant(d, "rms_norm")?;
                let dy = kernel_input(dy, "rms_norm dy", Kind::BFloat16)?;
                let dx = x.empty_like();
                launch_rows(
                    &BACKWARD[k],
                    grid_for(rows, WARPS_PER_BLOCK),
                    &[x, &dy, &dx],
                    rows,
                    d,
                    [eps, scale],
                )?;
                dx
            }
            other => bail!("rms_norm: unsupported device {other:?}"),
        };
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_abs_diff;

    fn run(fused: bool, eps: f64, scale: f64) -> (Tensor, Tensor, Tensor, Tensor) {
        tch::manual_seed(3);
        let opts = (Kind::Double, Device::Cpu);
        let x = Tensor::randn([3, 4, 24], opts).set_requires_grad(true);
        let y = if fused {
            rms_norm(&x, eps, scale).unwrap()
        } else {
            reference(&x, eps, scale)
        };
        let dy = Tensor::randn(y.size(), opts);
        let grads = Tensor::run_backward(&[(&y * &dy).sum(Kind::Double)], &[&x], false, false);
        (x.detach(), y.detach(), dy, grads[0].shallow_clone())
    }

    /// The plain norm and R0322's LN scale of block 1 (1/√2) and block 8 (1/3).
    const SCALES: [f64; 3] = [1.0, std::f64::consts::FRAC_1_SQRT_2, 1.0 / 3.0];

    #[test]
    fn hand_derived_backward_equals_autograd_of_the_reference() {
        let eps = 1e-2; // large enough that a formula ignoring eps would fail
        for scale in SCALES {
            let (x, _, dy, dx) = run(false, eps, scale);
            let e = max_abs_diff(&backward_formula(&x, &dy, eps, scale), &dx);
            assert!(
                e < 1e-12,
                "scale {scale}: dx differs from autograd by {e:e}"
            );
            assert!(dx.abs().max().double_value(&[]) > 0.1);
        }
    }

    #[test]
    fn the_op_through_autograd_equals_the_reference() {
        for scale in SCALES {
            let (_, y_f, _, dx_f) = run(true, 1e-2, scale);
            let (_, y_r, _, dx_r) = run(false, 1e-2, scale);
            assert!(max_abs_diff(&y_f, &y_r) < 1e-12);
            assert!(max_abs_diff(&dx_f, &dx_r) < 1e-12);
        }
        let (_, y1, _, _) = run(false, 1e-2, 1.0);
        let (_, y3, _, _) = run(false, 1e-2, 1.0 / 3.0);
        assert!(max_abs_diff(&(y1 / 3.0), &y3) < 1e-15);
        assert!(rms_norm(&y3, 1e-2, f64::INFINITY).is_err());
    }

    #[test]
    fn default_eps_is_f32_machine_epsilon() {
        // What libtorch uses when eps is None for a bf16 input (computed in f32).
        let x = Tensor::from_slice(&[1e-4f32, -2e-4, 3e-4, 0.0]).to_kind(Kind::BFloat16);
        let ours = reference(&x, DEFAULT_EPS, 1.0).to_kind(Kind::Float);
        let torch = x.rms_norm([4], None::<Tensor>, None).to_kind(Kind::Float);
        assert_eq!(max_abs_diff(&ours, &torch), 0.0);
    }
}
