//! `softcap_cross_entropy`: per-token NLL of soft-capped logits `y = c·tanh(z)`, from the head
//! GEMM's bf16 output `z [N, V]` (the soft-cap's `1/c` folded into the head's weight, as
//! shared/model's fast formulation does) and `targets [N]` (int64):
//! `nll_i = lse_i − y_i,tᵢ`, `lse_i = log Σ_j exp(y_ij)` (f32 `[N]`). The training loss is
//! `nll.mean()`; evaluation takes the per-token NLL (without grad, no node is recorded).
//!
//! Backward (hand-derived; `g = dnll`): `dz_ij = g_i·(softmax(y_i)_j − [j = t_i])·c·(1 − tanh²(z_ij))`,
//! from the saved `z`, `targets` and `lse` (no `[N, V]` f32 tensor is ever stored).
//!
//! bf16 `z` on CUDA runs `cuda/softcap_cross_entropy.cu` (one block per row, V ≤ 8192); anything
//! else (the CPU, f32, larger vocabularies) the same formulas in tch ops, with the same backward.
//! A target outside `[0, V)` gives NaN from the kernel (it cannot raise without a sync); the tch
//! path raises an error.

use anyhow::{bail, ensure, Result};
use tch::{Kind, Reduction, Tensor};

use super::{kernel_input, math_kind};
use crate::autograd::{apply, Forward, FusedFunction};
use crate::launch::{launch, Kernel};

const SOURCE: &str = include_str!("../../cuda/softcap_cross_entropy.cu");
pub static FORWARD: Kernel = Kernel::new(
    "softcap_cross_entropy.cu",
    SOURCE,
    "softcap_cross_entropy_forward",
);
pub static BACKWARD: Kernel = Kernel::new(
    "softcap_cross_entropy.cu",
    SOURCE,
    "softcap_cross_entropy_backward",
);

/// The forward keeps a row of f32 logits in shared memory: 8192 × 4 B = 32 KiB, under the 48 KiB
/// a block gets without opting in.
pub const MAX_VOCAB: i64 = 8192;

/// Per-row NLL (f32 `[N]`, nats) of `c·tanh(z)` against `targets`, differentiable w.r.t. `z`.
pub fn softcap_cross_entropy(z: &Tensor, targets: &Tensor, cap: f64) -> Result<Tensor> {
    ensure!(
        cap.is_finite() && cap > 0.0,
        "softcap_cross_entropy: the soft-cap must be positive and finite, got {cap}"
    );
    Ok(apply(&SoftcapCrossEntropy, &[z, targets], &[cap])?.remove(0))
}

/// The same math in plain tch ops (f32 math, or f64 for f64 `z`): per-row NLL of `c·tanh(z)`,
/// differentiable by autograd; what tests compare the fused op against.
pub fn reference(z: &Tensor, targets: &Tensor, cap: f64) -> Tensor {
    let y = z.to_kind(math_kind(z.kind())).tanh() * cap;
    y.cross_entropy_loss::<Tensor>(targets, None, Reduction::None, -100, 0.0)
}

/// Forward in tch ops: `(nll, lse)` in the math kind.
fn forward_formula(z: &Tensor, targets: &Tensor, cap: f64) -> (Tensor, Tensor) {
    let y = z.to_kind(math_kind(z.kind())).tanh() * cap;
    let lse = y.logsumexp([-1i64], false);
    let nll = &lse - y.gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1);
    (nll, lse)
}

/// The hand-derived backward in tch ops:
/// `dz = g·(exp(c·tanh z − lse) − onehot(t))·c·(1 − tanh² z)`, in `z`'s kind.
pub fn backward_formula(
    z: &Tensor,
    targets: &Tensor,
    lse: &Tensor,
    g: &Tensor,
    cap: f64,
) -> Tensor {
    let k = math_kind(z.kind());
    let th = z.to_kind(k).tanh();
    let p = (&th * cap - lse.to_kind(k).unsqueeze(-1)).exp();
    let onehot = targets.one_hot(z.size()[1]).to_kind(k);
    let dy = (p - onehot) * g.to_kind(k).unsqueeze(-1);
    (dy * (th.square().neg() + 1.0) * cap).to_kind(z.kind())
}

/// Threads per row: 8 logits per thread in one 16-byte load, whole warps, at most 256.
fn threads_for(v: i64) -> u32 {
    (((v + 7) / 8 + 31) / 32 * 32).clamp(32, 256) as u32
}

/// The kernel takes bf16 `z` on CUDA with V ≤ [`MAX_VOCAB`] (the training and evaluation path);
/// anything else runs the tch formulas, with the same hand-written backward.
fn on_kernel(z: &Tensor) -> bool {
    z.device().is_cuda()
        && z.kind() == Kind::BFloat16
        && z.size().last().is_some_and(|&v| v <= MAX_VOCAB)
}

pub struct SoftcapCrossEntropy;

impl SoftcapCrossEntropy {
    fn check(z: &Tensor, targets: &Tensor) -> Result<(i64, i64)> {
        let &[n, v] = z.size().as_slice() else {
            bail!("z must be [N, V], got {:?}", z.size());
        };
        ensure!(
            targets.size() == [n],
            "targets must be [{n}] for z {:?}, got {:?}",
            z.size(),
            targets.size()
        );
        ensure!(
            targets.kind() == Kind::Int64,
            "targets must be Int64, got {:?}",
            targets.kind()
        );
        ensure!(
            targets.device() == z.device(),
            "targets on {:?}, z on {:?}",
            targets.device(),
            z.device()
        );
        ensure!(v >= 1, "empty vocabulary");
        ensure!(
            n <= i32::MAX as i64,
            "{n} rows: above a grid's {} blocks",
            i32::MAX
        );
        Ok((n, v))
    }
}

impl FusedFunction for SoftcapCrossEntropy {
    fn name(&self) -> &'static str {
        "softcap_cross_entropy"
    }

    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
        let ([z, targets], [cap]) = (inputs, scalars) else {
            bail!(
                "expected 2 tensors and 1 scalar, got {} and {}",
                inputs.len(),
                scalars.len()
            );
        };
        let (n, v) = Self::check(z, targets)?;
        if !on_kernel(z) {
            let _guard = tch::no_grad_guard();
            let (nll, lse) = forward_formula(z, targets, *cap);
            return Ok(Forward {
                outputs: vec![nll],
                saved: vec![z.shallow_clone(), targets.shallow_clone(), lse],
            });
        }
        let z = kernel_input(z, "softcap_cross_entropy z", Kind::BFloat16)?;
        let targets = targets.contiguous();
        let nll = Tensor::empty([n], (Kind::Float, z.device()));
        let lse = Tensor::empty([n], (Kind::Float, z.device()));
        launch(
            &FORWARD,
            (n as u32, 1, 1),
            (threads_for(v), 1, 1),
            (v * 4) as u32, // the row's soft-capped logits
            &[
                (&z).into(),
                (&targets).into(),
                (&nll).into(),
                (&lse).into(),
                (v as i32).into(),
                (*cap as f32).into(),
            ],
        )?;
        Ok(Forward {
            outputs: vec![nll],
            saved: vec![z, targets, lse],
        })
    }

    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let ([z, targets, lse], [g], [cap]) = (saved, grad_outputs, scalars) else {
            bail!("expected 3 saved, 1 gradient and 1 scalar");
        };
        let (n, v) = Self::check(z, targets)?;
        ensure!(g.size() == [n], "gradient {:?} for nll [{n}]", g.size());
        if !on_kernel(z) {
            return Ok(vec![Some(backward_formula(z, targets, lse, g, *cap)), None]);
        }
        // The loss's mean hands an expanded (stride-0) gradient: make it a plain [N].
        let g = kernel_input(
            &g.to_kind(Kind::Float),
            "softcap_cross_entropy nll gradient",
            Kind::Float,
        )?;
        let dz = z.empty_like();
        launch(
            &BACKWARD,
            (n as u32, 1, 1),
            (threads_for(v), 1, 1),
            0,
            &[
                z.into(),
                targets.into(),
                (&g).into(),
                lse.into(),
                (&dz).into(),
                (v as i32).into(),
                (*cap as f32).into(),
            ],
        )?;
        Ok(vec![Some(dz), None])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const CAP: f64 = 30.0;

    /// Head outputs of a realistic spread (|c·tanh z| up to the cap) and their targets.
    fn inputs(kind: Kind) -> (Tensor, Tensor) {
        let z = (Tensor::randn([48, 96], (Kind::Double, Device::Cpu)) * 0.8).to_kind(kind);
        let t = Tensor::randint(96, [48], (Kind::Int64, Device::Cpu));
        (z, t)
    }

    #[test]
    fn forward_formula_matches_reference_in_f64() {
        let (z, t) = inputs(Kind::Double);
        let (nll, lse) = forward_formula(&z, &t, CAP);
        assert!(nll.allclose(&reference(&z, &t, CAP), 1e-12, 1e-12, false));
        let y = z.tanh() * CAP;
        assert!(lse.allclose(
            &y.exp()
                .sum_dim_intlist(&[-1i64][..], false, Kind::Double)
                .log(),
            1e-12,
            1e-12,
            false
        ));
    }

    #[test]
    fn backward_formula_matches_autograd_in_f64() {
        let (z, t) = inputs(Kind::Double);
        let z = z.set_requires_grad(true);
        let g = Tensor::rand([48], (Kind::Double, Device::Cpu));
        let nll = reference(&z, &t, CAP);
        let want = Tensor::run_backward(&[(&nll * &g).sum(Kind::Double)], &[&z], false, false);
        let (_, lse) = forward_formula(&z.detach(), &t, CAP);
        let got = backward_formula(&z.detach(), &t, &lse, &g, CAP);
        assert!(got.allclose(&want[0], 1e-10, 1e-10, false));
    }

    #[test]
    fn fused_op_through_the_bridge_on_cpu_as_a_mean_loss() {
        let (z, t) = inputs(Kind::Double);
        let z = z.set_requires_grad(true);
        let loss = softcap_cross_entropy(&z, &t, CAP)
            .unwrap()
            .mean(Kind::Double);
        let got = Tensor::run_backward(&[&loss], &[&z], false, false);
        let zr = z.detach().set_requires_grad(true);
        let loss_r = reference(&zr, &t, CAP).mean(Kind::Double);
        assert!(loss.allclose(&loss_r, 1e-12, 1e-12, false));
        let want = Tensor::run_backward(&[&loss_r], &[&zr], false, false);
        assert!(got[0].allclose(&want[0], 1e-12, 1e-12, false));
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        let (z, t) = inputs(Kind::Float);
        let err = softcap_cross_entropy(&z, &t.narrow(0, 0, 5), CAP)
            .unwrap_err()
            .to_string();
        assert!(err.contains("targets must be [48]"), "{err}");
        let err = softcap_cross_entropy(&z, &t.to_kind(Kind::Int), CAP)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Int64"), "{err}");
        let err = softcap_cross_entropy(&z, &t, 0.0).unwrap_err().to_string();
        assert!(err.contains("positive"), "{err}");
    }

    #[test]
    fn threads_cover_rows_in_whole_warps() {
        assert_eq!(threads_for(1024), 128);
        assert_eq!(threads_for(8192), 256);
        assert_eq!(threads_for(50), 32);
    }
}
