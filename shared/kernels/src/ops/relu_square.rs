//! `relu_square`: the MLP's activation `h = u²`, `u = (a > 0 ? a : slope·a)`, on the fc GEMM's
//! bf16 output `[N, hidden]` (slope 0: relu², the baseline; slope > 0: LeakyReLU², the records').
//!
//! Backward (hand-derived): `da = dh · 2u · du/da = 2·(a > 0 ? a : slope²·a)·dh`. Only `a` is
//! saved (not `h`): the backward recomputes from it.
//!
//! bf16 on CUDA runs `cuda/relu_square.cu`; anything else (the CPU, f32) the same formulas in tch
//! ops, with the same hand-written backward: so the autograd bridge and the backward formula are
//! testable without a GPU.

use anyhow::{bail, ensure, Result};
use tch::{Kind, Tensor};

use super::{grid_for, kernel_input, math_kind};
use crate::autograd::{apply, Forward, FusedFunction};
use crate::launch::{launch, Kernel};

const SOURCE: &str = include_str!("../../cuda/relu_square.cu");
pub static FORWARD: Kernel = Kernel::new("relu_square.cu", SOURCE, "relu_square_forward");
pub static BACKWARD: Kernel = Kernel::new("relu_square.cu", SOURCE, "relu_square_backward");

const THREADS: u32 = 256;

/// `(a > 0 ? a : slope·a)²`, differentiable (one autograd node).
pub fn relu_square(a: &Tensor, slope: f64) -> Result<Tensor> {
    ensure!(
        slope.is_finite(),
        "relu_square: slope must be finite, got {slope}"
    );
    Ok(apply(&ReluSquare, &[a], &[slope])?.remove(0))
}

/// The same math in plain tch ops (f32 math, or f64 for f64 inputs; the result in `a`'s kind),
/// differentiable by autograd; what tests compare the fused op against.
pub fn reference(a: &Tensor, slope: f64) -> Tensor {
    let x = a.to_kind(math_kind(a.kind()));
    let u = x.where_self(&x.gt(0.0), &(&x * slope));
    u.square().to_kind(a.kind())
}

/// The hand-derived backward in tch ops: `2·(a > 0 ? a : slope²·a)·dh`, in `a`'s kind.
pub fn backward_formula(a: &Tensor, dh: &Tensor, slope: f64) -> Tensor {
    let k = math_kind(a.kind());
    let x = a.to_kind(k);
    let r = x.where_self(&x.gt(0.0), &(&x * (slope * slope)));
    (r * dh.to_kind(k) * 2.0).to_kind(a.kind())
}

/// The kernel takes bf16 on CUDA (the training path); anything else runs the tch formulas.
fn on_kernel(a: &Tensor) -> bool {
    a.device().is_cuda() && a.kind() == Kind::BFloat16
}

pub struct ReluSquare;

impl FusedFunction for ReluSquare {
    fn name(&self) -> &'static str {
        "relu_square"
    }

    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
        let ([a], [slope]) = (inputs, scalars) else {
            bail!(
                "expected 1 tensor and 1 scalar, got {} and {}",
                inputs.len(),
                scalars.len()
            );
        };
        if !on_kernel(a) {
            let _guard = tch::no_grad_guard();
            return Ok(Forward {
                outputs: vec![reference(a, *slope)],
                saved: vec![a.shallow_clone()],
            });
        }
        let a = kernel_input(a, "relu_square input", Kind::BFloat16)?;
        let h = a.empty_like();
        let n = a.numel() as i64;
        launch(
            &FORWARD,
            (grid_for(n / 8, THREADS), 1, 1),
            (THREADS, 1, 1),
            0,
            &[(&a).into(), (&h).into(), n.into(), (*slope as f32).into()],
        )?;
        Ok(Forward {
            outputs: vec![h],
            saved: vec![a],
        })
    }

    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let ([a], [dh], [slope]) = (saved, grad_outputs, scalars) else {
            bail!("expected 1 saved, 1 gradient and 1 scalar");
        };
        ensure!(
            a.size() == dh.size(),
            "gradient {:?} for output {:?}",
            dh.size(),
            a.size()
        );
        if !on_kernel(a) {
            return Ok(vec![Some(backward_formula(a, dh, *slope))]);
        }
        let dh = kernel_input(dh, "relu_square output gradient", Kind::BFloat16)?;
        let da = a.empty_like();
        let n = a.numel() as i64;
        launch(
            &BACKWARD,
            (grid_for(n / 8, THREADS), 1, 1),
            (THREADS, 1, 1),
            0,
            &[
                a.into(),
                (&dh).into(),
                (&da).into(),
                n.into(),
                (*slope as f32).into(),
            ],
        )?;
        Ok(vec![Some(da)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Inputs with both signs, exact zeros among them.
    fn input(kind: Kind) -> Tensor {
        let a = Tensor::randn([64, 40], (Kind::Double, Device::Cpu));
        let _ = a.narrow(1, 0, 3).fill_(0.0);
        a.to_kind(kind)
    }

    #[test]
    fn backward_formula_matches_autograd_in_f64() {
        for slope in [0.0, 0.5, 0.1] {
            let a = input(Kind::Double).set_requires_grad(true);
            let dh = a.randn_like();
            let out = reference(&a, slope);
            let want = Tensor::run_backward(&[(&out * &dh).sum(Kind::Double)], &[&a], false, false);
            let got = backward_formula(&a.detach(), &dh, slope);
            assert!(got.allclose(&want[0], 1e-12, 1e-12, false), "slope {slope}");
        }
    }

    #[test]
    fn reference_is_the_model_activation() {
        // shared/model's relu² and leaky_relu² (gpt.rs `activation`), in f64.
        let a = input(Kind::Double);
        assert!(reference(&a, 0.0).allclose(&a.relu().square(), 0.0, 0.0, false));
        let leaky = a.where_self(&a.gt(0.0), &(&a * 0.5)).square();
        assert!(reference(&a, 0.5).allclose(&leaky, 0.0, 0.0, false));
    }

    #[test]
    fn fused_op_through_the_bridge_on_cpu() {
        let a = input(Kind::Double).set_requires_grad(true);
        let h = relu_square(&a, 0.5).unwrap();
        let dh = a.randn_like();
        let got = crate::grad(&[&h], &[&dh], &[&a]).unwrap();
        let ar = a.detach().set_requires_grad(true);
        let hr = reference(&ar, 0.5);
        assert!(h.allclose(&hr, 0.0, 0.0, false));
        let want = crate::grad(&[&hr], &[&dh], &[&ar]).unwrap();
        assert!(got[0].allclose(&want[0], 1e-12, 1e-12, false));
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        let a = input(Kind::Float);
        let err = relu_square(&a, f64::NAN).unwrap_err().to_string();
        assert!(err.contains("slope must be finite"), "{err}");
    }
}
