//! `smear_gate`: R0322's SmearGate v1 on the normed embedding, `out_t = (1−σ(g))⊙x_t +
//! σ(g)⊙x_{t−1}` (`x_{−1} = 0`), forward and hand-derived backward (for `x` and the gate `g`), one
//! pass each.
//!
//! In tch ops (pgolf-model's `Gpt::smear`) the forward is ~5 passes over `[N, d]` (the shifted
//! copy, two products, the sum, plus the gate's sigmoid and `1 − σ`) and autograd's backward ~8
//! more with two reductions for the gate; here one read of `x` (and of the row before, mostly
//! from cache) and one write forward, one read of `x` and `d out` and one write of `dx` backward,
//! the gate's gradient as per-block partial sums (deterministic, no atomics) reduced by one tch
//! sum.
//!
//! Saves only its inputs. On CUDA (bf16 `x`, f32 gate) it runs `cuda/smear_gate.cu`; on the CPU
//! (any float kind) the same formulas in tch ops.

use anyhow::{bail, ensure, Result};
use tch::{Device, Kind, Tensor};

use super::{grid_for, kernel_input, math_kind};
use crate::autograd::{apply, Forward, FusedFunction};
use crate::launch::{launch, resident_blocks, Arg, Kernel};

const FILE: &str = "smear_gate.cu";
const SOURCE: &str = include_str!("../../cuda/smear_gate.cu");
pub static FORWARD: Kernel = Kernel::new(FILE, SOURCE, "smear_gate_forward");
pub static BACKWARD: Kernel = Kernel::new(FILE, SOURCE, "smear_gate_backward");

/// `SMEAR_MAX_THREADS` in the kernel source (the backward's shared memory).
const MAX_THREADS: i64 = 256;

/// The op (pass to [`crate::apply`]); inputs `[x, gate]`, no scalars, outputs `[out]`.
pub struct SmearGate;
pub static SMEAR_GATE: SmearGate = SmearGate;

/// `x` `[B, T, d]` (bf16 on CUDA), `gate` `[d]` (f32 on CUDA; the parameter before its sigmoid):
/// `(1−σ(g))⊙x_t + σ(g)⊙x_{t−1}` in `x`'s shape and kind, as one autograd node (gradients for
/// both). [`reference`] is the same function in tch ops.
pub fn smear_gate(x: &Tensor, gate: &Tensor) -> Result<Tensor> {
    Ok(apply(&SMEAR_GATE, &[x, gate], &[])?.remove(0))
}

/// `(B, T, d)` after checking that `x` and `gate` fit together.
fn shape(x: &Tensor, gate: &Tensor) -> Result<(i64, i64, i64)> {
    let (b, t, d) = x
        .size3()
        .map_err(|_| anyhow::anyhow!("smear_gate: x must be [B, T, d], got {:?}", x.size()))?;
    ensure!(
        gate.size() == [d],
        "smear_gate: gate must be [{d}], got {:?}",
        gate.size()
    );
    Ok((b, t, d))
}

/// `x` shifted one position later along T, zeros at position 0.
fn previous(x: &Tensor) -> Tensor {
    let t = x.size()[1];
    Tensor::cat(&[x.narrow(1, 0, 1).zeros_like(), x.narrow(1, 0, t - 1)], 1)
}

/// `x` shifted one position earlier along T, zeros at the last position.
fn next(x: &Tensor) -> Tensor {
    let t = x.size()[1];
    Tensor::cat(&[x.narrow(1, 1, t - 1), x.narrow(1, 0, 1).zeros_like()], 1)
}

/// The same function in plain tch ops (differentiable by autograd; any device): math in f32 (f64
/// for f64 inputs), the result in `x`'s kind.
pub fn reference(x: &Tensor, gate: &Tensor) -> Result<Tensor> {
    shape(x, gate)?;
    let mk = math_kind(x.kind());
    let s = gate.to_kind(mk).sigmoid();
    let xf = x.to_kind(mk);
    Ok(((1f64 - &s) * &xf + s * previous(&xf)).to_kind(x.kind()))
}

/// The hand-derived backward in tch ops (math in f32, or f64 for f64 inputs): `(dx, d gate)` in
/// the kinds of `x` and `gate`, from `g = d out`, `s = σ(gate)`: `dx_t = (1−s)⊙g_t + s⊙g_{t+1}`,
/// `d gate = s(1−s)⊙Σ_{b,t} g_t⊙(x_{t−1} − x_t)`.
pub fn backward_formula(x: &Tensor, gate: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    shape(x, gate)?;
    ensure!(
        g.size() == x.size(),
        "smear_gate backward: gradient {:?} for output {:?}",
        g.size(),
        x.size()
    );
    let mk = math_kind(x.kind());
    let s = gate.to_kind(mk).sigmoid();
    let (xf, gf) = (x.to_kind(mk), g.to_kind(mk));
    let dx = (1f64 - &s) * &gf + &s * next(&gf);
    let sum = (&gf * (previous(&xf) - &xf)).sum_dim_intlist([0, 1].as_slice(), false, mk);
    let dgate = &s * (1f64 - &s) * sum;
    Ok((dx.to_kind(x.kind()), dgate.to_kind(gate.kind())))
}

/// The launch geometry of both kernels: `(rows_per_block, threads_per_block)`, whole rows of d/8
/// threads, at most [`MAX_THREADS`]; whole warps where that fits (the kernels do not shuffle, so
/// a partial warp is legal, but whole ones waste no lanes).
pub(crate) fn block_shape(d: i64) -> Result<(i64, i64)> {
    ensure!(
        d > 0 && d % 8 == 0 && d / 8 <= MAX_THREADS,
        "smear_gate kernels: rows of {d} columns unsupported (a multiple of 8, at most {})",
        8 * MAX_THREADS
    );
    let row_threads = d / 8;
    let warp_rows = 32 / super::gcd(row_threads, 32);
    let rows = ((MAX_THREADS / row_threads) / warp_rows).max(1) * warp_rows;
    let rows = match rows * row_threads <= MAX_THREADS {
        true => rows,
        false => MAX_THREADS / row_threads,
    };
    Ok((rows, rows * row_threads))
}

impl FusedFunction for SmearGate {
    fn name(&self) -> &'static str {
        "smear_gate"
    }

    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
        let ([x, gate], []) = (inputs, scalars) else {
            bail!(
                "smear_gate: expected [x, gate] and no scalars, got {} tensors and {} scalars",
                inputs.len(),
                scalars.len()
            );
        };
        let (b, t, d) = shape(x, gate)?;
        match x.device() {
            Device::Cpu => {
                let _guard = tch::no_grad_guard();
                Ok(Forward {
                    outputs: vec![reference(x, gate)?],
                    saved: vec![x.shallow_clone(), gate.shallow_clone()],
                })
            }
            Device::Cuda(_) => {
                let (rows_per_block, threads) = block_shape(d)?;
                let x = kernel_input(x, "smear_gate x", Kind::BFloat16)?;
                let gate = kernel_input(gate, "smear_gate gate", Kind::Float)?;
                let out = x.empty_like();
                let rows = b * t;
                launch(
                    &FORWARD,
                    (grid_for(rows, rows_per_block as u32), 1, 1),
                    (threads as u32, 1, 1),
                    0,
                    &[
                        Arg::from(&x),
                        Arg::from(&gate),
                        Arg::from(&out),
                        Arg::I64(rows),
                        Arg::I32(t as i32),
                        Arg::I32(d as i32),
                    ],
                )?;
                Ok(Forward {
                    outputs: vec![out],
                    saved: vec![x, gate],
                })
            }
            other => bail!("smear_gate: unsupported device {other:?}"),
        }
    }

    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        _scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let ([x, gate], [g]) = (saved, grad_outputs) else {
            bail!("smear_gate backward: expected 2 saved tensors and 1 gradient");
        };
        let (b, t, d) = shape(x, gate)?;
        ensure!(
            g.size() == x.size(),
            "smear_gate backward: gradient {:?} for output {:?}",
            g.size(),
            x.size()
        );
        let (dx, dgate) = match x.device() {
            Device::Cpu => backward_formula(x, gate, g)?,
            Device::Cuda(ordinal) => {
                let (rows_per_block, threads) = block_shape(d)?;
                let g = kernel_input(g, "smear_gate d out", Kind::BFloat16)?;
                let rows = b * t;
                // One wave of blocks, each looping over rows: one partial row per block.
                let resident = resident_blocks(&BACKWARD, ordinal, threads as u32)?;
                let blocks = grid_for(rows, rows_per_block as u32).min(resident);
                let dx = x.empty_like();
                let partial = Tensor::empty([blocks as i64, d], (Kind::Float, x.device()));
                launch(
                    &BACKWARD,
                    (blocks, 1, 1),
                    (threads as u32, 1, 1),
                    0,
                    &[
                        Arg::from(x),
                        Arg::from(gate),
                        Arg::from(&g),
                        Arg::from(&dx),
                        Arg::from(&partial),
                        Arg::I64(rows),
                        Arg::I32(t as i32),
                        Arg::I32(d as i32),
                    ],
                )?;
                (dx, partial.sum_dim_intlist(0, false, Kind::Float))
            }
            other => bail!("smear_gate: unsupported device {other:?}"),
        };
        Ok(vec![Some(dx), Some(dgate)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::assert_all_close;

    /// Random f64 `x` [2, 5, 16] and a gate away from 0 (σ away from ½).
    fn inputs() -> (Tensor, Tensor) {
        tch::manual_seed(23);
        let opts = (Kind::Double, Device::Cpu);
        (
            Tensor::randn([2, 5, 16], opts),
            Tensor::randn([16], opts) * 2.0,
        )
    }

    #[test]
    fn hand_derived_backward_equals_autograd_of_the_reference() {
        let (x, gate) = inputs();
        let (x, gate) = (x.set_requires_grad(true), gate.set_requires_grad(true));
        let out = reference(&x, &gate).unwrap();
        let g = Tensor::randn(out.size(), (Kind::Double, Device::Cpu));
        let grads =
            Tensor::run_backward(&[(&out * &g).sum(Kind::Double)], &[&x, &gate], false, false);
        let (dx, dgate) = backward_formula(&x.detach(), &gate.detach(), &g).unwrap();
        assert_all_close([(&dx, &grads[0]), (&dgate, &grads[1])], 1e-12);
        for t in &grads {
            assert!(t.abs().max().double_value(&[]) > 0.1, "must be non-trivial");
        }
    }

    #[test]
    fn the_op_through_autograd_equals_the_reference() {
        let (x0, gate0) = inputs();
        let run = |fused: bool| {
            let (x, gate) = (
                x0.copy().set_requires_grad(true),
                gate0.copy().set_requires_grad(true),
            );
            let out = if fused {
                smear_gate(&x, &gate).unwrap()
            } else {
                reference(&x, &gate).unwrap()
            };
            tch::manual_seed(29);
            let g = Tensor::randn(out.size(), (Kind::Double, Device::Cpu));
            let grads =
                Tensor::run_backward(&[(&out * &g).sum(Kind::Double)], &[&x, &gate], false, false);
            (out.detach(), grads)
        };
        let ((out_f, g_f), (out_r, g_r)) = (run(true), run(false));
        assert_all_close(
            [(&out_f, &out_r), (&g_f[0], &g_r[0]), (&g_f[1], &g_r[1])],
            1e-12,
        );
    }

    /// A hand case: gate 0 (σ = ½) averages each position with the one before (x_{−1} = 0), per
    /// sequence.
    #[test]
    fn gate_zero_averages_neighbours_within_each_sequence() {
        let x = Tensor::from_slice(&[2.0f64, 4.0, 6.0, 8.0, 10.0, 12.0]).view([2, 3, 1]);
        let gate = Tensor::zeros([1], (Kind::Double, Device::Cpu));
        let got: Vec<f64> = Vec::try_from(reference(&x, &gate).unwrap().view([-1])).unwrap();
        assert_eq!(got, vec![1.0, 3.0, 5.0, 4.0, 9.0, 11.0]);
    }

    #[test]
    fn bad_shapes_are_one_line_errors_and_rows_fit_a_block() {
        let (x, gate) = inputs();
        let err = reference(&x, &gate.narrow(0, 0, 8)).unwrap_err();
        assert!(err.to_string().contains("[16]"), "{err}");
        assert!(reference(&x.view([10, 16]), &gate).is_err());
        assert_eq!(block_shape(512).unwrap(), (4, 256));
        assert_eq!(block_shape(2048).unwrap(), (1, 256));
        assert_eq!(block_shape(24).unwrap(), (64, 192)); // whole warps
        assert_eq!(block_shape(2040).unwrap(), (1, 255)); // a partial warp: no whole ones fit
        assert!(block_shape(2056).is_err());
        assert!(block_shape(12).is_err());
    }
}
