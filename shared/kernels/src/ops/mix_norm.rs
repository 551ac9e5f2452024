//! `mix_norm`: a block's entry, `xm = m0 ⊙ x + m1 ⊙ x0` (upstream's `resid_mix`) and
//! `n = f · rms_norm(xm)` (the attention's input norm, no weight; `f` an output factor: R0322's LN
//! scale 1/√(i+1), 1 otherwise, bit-identical to the norm without one), in one pass each way.
//!
//! Outputs both `xm` (the residual stream continues from it) and `n` (to the QKV GEMM). `xm` is
//! rounded to bf16 before it is normalised, so `n` is exactly `rms_norm` of the `xm` returned.
//! Backward from `dxm` and `dn` (hand-derived; `r = 1/sqrt(mean(xm²) + eps)`, `n̂ = r·xm`):
//! `dt = dxm + f·r·(dn − n̂·mean(dn·n̂))`, `dx = m0 ⊙ dt`, `dx0 = m1 ⊙ dt`,
//! `d mix = [Σ_rows dt ⊙ x, Σ_rows dt ⊙ x0]` (per-block partial sums reduced with one tch sum:
//! deterministic). Saves `x`, `x0` and `mix` (alive anyway); `xm` is recomputed bit-identically.
//!
//! On CUDA (bf16) it runs `cuda/mix_norm.cu`; on the CPU (any float kind) the same formulas in
//! tch ops, so the autograd bridge and the backward formula are testable without a GPU.

use anyhow::{bail, ensure, Result};
use tch::{Device, Kind, Tensor};

use super::{grid_for, kernel_input, math_kind};
use crate::autograd::{apply, Forward, FusedFunction};
use crate::launch::{launch, resident_blocks, Arg, Kernel};

const FILE: &str = "mix_norm.cu";
const SOURCE: &str = include_str!("../../cuda/mix_norm.cu");

/// The entry point `name` of `cuda/mix_norm.cu`, which also holds [`super::rms_norm`]'s kernels
/// (one family: the same row machinery).
pub(crate) const fn kernel(name: &'static str) -> Kernel {
    Kernel::new(FILE, SOURCE, name)
}

/// The kernels `<name>_k1`, `_k2`, `_k4` of `cuda/mix_norm.cu` (its `NORM_KERNELS(K)`), in the
/// order [`variant`] indexes them.
macro_rules! per_chunk_count {
    ($name:literal) => {
        [
            $crate::ops::mix_norm::kernel(concat!($name, "_k1")),
            $crate::ops::mix_norm::kernel(concat!($name, "_k2")),
            $crate::ops::mix_norm::kernel(concat!($name, "_k4")),
        ]
    };
}
pub(crate) use per_chunk_count;

/// Kernels per chunk count K = 1, 2, 4 (each lane owns K chunks of 8 columns: d ≤ 256, 512, 1024).
pub static FORWARD: [Kernel; 3] = per_chunk_count!("mix_norm_forward");
pub static BACKWARD: [Kernel; 3] = per_chunk_count!("mix_norm_backward");

/// One warp per row; `WARPS_PER_BLOCK` in the kernel source (the backward's shared memory).
pub(crate) const WARPS_PER_BLOCK: u32 = 4;
const THREADS: u32 = 32 * WARPS_PER_BLOCK;

/// Launches a kernel of `cuda/mix_norm.cu` on `blocks` blocks of one warp per row, with its
/// tensor arguments followed by `n_rows`, `d`, `eps` and the output factor `scale` (how every
/// entry point there takes them).
pub(crate) fn launch_rows(
    kernel: &Kernel,
    blocks: u32,
    tensors: &[&Tensor],
    rows: i64,
    d: i64,
    [eps, scale]: [f64; 2],
) -> Result<()> {
    let mut args: Vec<Arg> = tensors.iter().map(|&t| Arg::from(t)).collect();
    args.extend([
        Arg::I64(rows),
        Arg::I32(d as i32),
        Arg::F32(eps as f32),
        Arg::F32(scale as f32),
    ]);
    launch(kernel, (blocks, 1, 1), (THREADS, 1, 1), 0, &args)
}

/// Which of the K = 1, 2, 4 kernels serves rows of `d` columns.
pub(crate) fn variant(d: i64, op: &str) -> Result<usize> {
    ensure!(
        d > 0 && d % 8 == 0 && d <= 1024,
        "{op}: rows of {d} columns unsupported by the kernels (a multiple of 8, at most 1024)"
    );
    Ok(if d <= 256 {
        0
    } else if d <= 512 {
        1
    } else {
        2
    })
}

/// The op (pass to [`crate::apply`]); inputs `[x, x0, mix]`, scalars `[eps, scale]`, outputs
/// `[xm, n]`.
pub struct MixNorm;
pub static MIX_NORM: MixNorm = MixNorm;

/// `x`, `x0` bf16 `[..., d]` (same shape), `mix` f32 `[2, d]`: `(xm, n)` of `x`'s shape and
/// kind, as one autograd node (gradients for all three inputs). `eps`: rms_norm's, normally
/// [`super::rms_norm::DEFAULT_EPS`]; `scale`: the norm's output factor (1: the plain norm).
pub fn mix_norm(
    x: &Tensor,
    x0: &Tensor,
    mix: &Tensor,
    eps: f64,
    scale: f64,
) -> Result<(Tensor, Tensor)> {
    ensure!(
        scale.is_finite(),
        "mix_norm: the output factor must be finite, got {scale}"
    );
    let mut out = apply(&MIX_NORM, &[x, x0, mix], &[eps, scale])?;
    ensure!(
        out.len() == 2,
        "mix_norm: {} outputs, expected 2",
        out.len()
    );
    let n = out.pop().unwrap();
    Ok((out.pop().unwrap(), n))
}

/// `d` after checking that `x`, `x0` and `mix` fit together.
fn width(x: &Tensor, x0: &Tensor, mix: &Tensor) -> Result<i64> {
    ensure!(x.dim() >= 1, "mix_norm: x must have a feature dimension");
    let d = *x.size().last().unwrap();
    ensure!(
        x0.size() == x.size(),
        "mix_norm: x0 {:?} and x {:?} differ in shape",
        x0.size(),
        x.size()
    );
    ensure!(
        mix.size() == [2, d],
        "mix_norm: mix must be [2, {d}], got {:?}",
        mix.size()
    );
    Ok(d)
}

/// `t + (round(t) − t)` with the difference detached: the value rounded to `kind` (as the kernel
/// stores `xm`), the gradient straight through in `t`'s kind.
fn rounded_to(t: &Tensor, kind: Kind) -> Tensor {
    t + (t.to_kind(kind).to_kind(t.kind()) - t).detach()
}

/// The same function in plain tch ops (differentiable by autograd; any device): math in f32
/// (f64 for f64 inputs), `xm` rounded to `x`'s kind before the norm, outputs in `x`'s kind.
pub fn reference(
    x: &Tensor,
    x0: &Tensor,
    mix: &Tensor,
    eps: f64,
    scale: f64,
) -> Result<(Tensor, Tensor)> {
    let d = width(x, x0, mix)?;
    let kind = x.kind();
    let mk = math_kind(kind);
    let m = mix.to_kind(mk);
    let xm = rounded_to(
        &(x.to_kind(mk) * m.get(0) + x0.to_kind(mk) * m.get(1)),
        kind,
    );
    let n = super::rms_norm::scaled(xm.rms_norm([d], None::<Tensor>, eps), scale);
    Ok((xm.to_kind(kind), n.to_kind(kind)))
}

/// The hand-derived backward in tch ops (math in f32, or f64 for f64 inputs):
/// `(dx, dx0, d mix)` in the kinds of `x`, `x0`, `mix`.
pub fn backward_formula(
    x: &Tensor,
    x0: &Tensor,
    mix: &Tensor,
    [eps, scale]: [f64; 2],
    dxm: &Tensor,
    dn: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let d = width(x, x0, mix)?;
    let mk = math_kind(x.kind());
    let (xf, x0f, m) = (x.to_kind(mk), x0.to_kind(mk), mix.to_kind(mk));
    let (m0, m1) = (m.get(0), m.get(1));
    let xm = (&xf * &m0 + &x0f * &m1).to_kind(x.kind()).to_kind(mk);
    let r = (xm.square().mean_dim(-1, true, mk) + eps).rsqrt();
    let nh = &xm * &r;
    let dn = dn.to_kind(mk);
    let dot = (&dn * &nh).mean_dim(-1, true, mk);
    let dt = dxm.to_kind(mk) + &r * scale * (dn - &nh * dot);
    let rows = |t: Tensor| t.reshape([-1, d]).sum_dim_intlist(0, false, mk);
    let dmix = Tensor::stack(&[rows(&dt * &xf), rows(&dt * &x0f)], 0);
    Ok((
        (&dt * &m0).to_kind(x.kind()),
        (&dt * &m1).to_kind(x0.kind()),
        dmix.to_kind(mix.kind()),
    ))
}

impl FusedFunction for MixNorm {
    fn name(&self) -> &'static str {
        "mix_norm"
    }

    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
        let ([x, x0, mix], &[eps, scale]) = (inputs, scalars) else {
            bail!(
                "mix_norm: expected [x, x0, mix] and [eps, scale], got {} tensors and {} scalars",
                inputs.len(),
                scalars.len()
            );
        };
        let d = width(x, x0, mix)?;
        match x.device() {
            Device::Cpu => {
                let _guard = tch::no_grad_guard();
                let (xm, n) = reference(x, x0, mix, eps, scale)?;
                let saved = Vec::from([x, x0, mix].map(Tensor::shallow_clone));
                Ok(Forward {
                    outputs: vec![xm, n],
                    saved,
                })
            }
            Device::Cuda(_) => {
                let k = variant(d, "mix_norm")?;
                let x = kernel_input(x, "mix_norm x", Kind::BFloat16)?;
                let x0 = kernel_input(x0, "mix_norm x0", Kind::BFloat16)?;
                let mix = kernel_input(mix, "mix_norm mix", Kind::Float)?;
                let (xm, n) = (x.empty_like(), x.empty_like());
                let rows = x.numel() as i64 / d;
                launch_rows(
                    &FORWARD[k],
                    grid_for(rows, WARPS_PER_BLOCK),
                    &[&x, &x0, &mix, &xm, &n],
                    rows,
                    d,
                    [eps, scale],
                )?;
                Ok(Forward {
                    outputs: vec![xm, n],
                    saved: vec![x, x0, mix],
                })
            }
            other => bail!("mix_norm: unsupported device {other:?}"),
        }
    }

    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let ([x, x0, mix], [dxm, dn], &[eps, scale]) = (saved, grad_outputs, scalars) else {
            bail!("mix_norm backward: expected 3 saved tensors, 2 gradients and 2 scalars");
        };
        let d = width(x, x0, mix)?;
        ensure!(
            dxm.size() == x.size() && dn.size() == x.size(),
            "mix_norm backward: gradients {:?} and {:?} for outputs {:?}",
            dxm.size(),
            dn.size(),
            x.size()
        );
        let (dx, dx0, dmix) = match x.device() {
            Device::Cpu => backward_formula(x, x0, mix, [eps, scale], dxm, dn)?,
            Device::Cuda(ordinal) => {
                let k = variant(d, "mix_norm")?;
                let dxm = kernel_input(dxm, "mix_norm dxm", Kind::BFloat16)?;
                let dn = kernel_input(dn, "mix_norm dn", Kind::BFloat16)?;
                let (dx, dx0) = (x.empty_like(), x.empty_like());
                let rows = x.numel() as i64 / d;
                // One wave of blocks, each looping over rows: one partial row per block.
                let resident = resident_blocks(&BACKWARD[k], ordinal, THREADS)?;
                let blocks = grid_for(rows, WARPS_PER_BLOCK).min(resident);
                let partial = Tensor::empty([blocks as i64, 2, d], (Kind::Float, x.device()));
                launch_rows(
                    &BACKWARD[k],
                    blocks,
                    &[x, x0, mix, &dxm, &dn, &dx, &dx0, &partial],
                    rows,
                    d,
                    [eps, scale],
                )?;
                // Per-block partials reduced by one deterministic tch sum (no float atomics).
                (dx, dx0, partial.sum_dim_intlist(0, false, Kind::Float))
            }
            other => bail!("mix_norm: unsupported device {other:?}"),
        };
        Ok(vec![Some(dx), Some(dx0), Some(dmix)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_all_close, max_abs_diff};

    /// f64 inputs [2, 3, 16] (leading dims kept), a mix away from (1, 0).
    fn inputs() -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(5);
        let opts = (Kind::Double, Device::Cpu);
        (
            Tensor::randn([2, 3, 16], opts),
            Tensor::randn([2, 3, 16], opts),
            Tensor::randn([2, 16], opts),
        )
    }

    /// Autograd of the reference (or of the op through the bridge) for random output gradients:
    /// `([xm, n, dxm, dn], [dx, dx0, dmix])`.
    fn run(fused: bool, eps: f64, scale: f64) -> (Vec<Tensor>, Vec<Tensor>) {
        let (x, x0, mix) = inputs();
        let (x, x0, mix) = (
            x.set_requires_grad(true),
            x0.set_requires_grad(true),
            mix.set_requires_grad(true),
        );
        let (xm, n) = if fused {
            mix_norm(&x, &x0, &mix, eps, scale).unwrap()
        } else {
            reference(&x, &x0, &mix, eps, scale).unwrap()
        };
        tch::manual_seed(6);
        let dxm = Tensor::randn(xm.size(), (Kind::Double, Device::Cpu));
        let dn = Tensor::randn(n.size(), (Kind::Double, Device::Cpu));
        let loss = (&xm * &dxm).sum(Kind::Double) + (&n * &dn).sum(Kind::Double);
        let grads = Tensor::run_backward(&[&loss], &[&x, &x0, &mix], false, false);
        (vec![xm.detach(), n.detach(), dxm, dn], grads)
    }

    /// The plain norm and R0322's LN scale of block 3 (1/2) and block 10 (1/√11).
    const SCALES: [f64; 3] = [1.0, 0.5, 0.301_511_344_577_763_6];

    #[test]
    fn hand_derived_backward_equals_autograd_of_the_reference() {
        let eps = 1e-2; // large enough that a formula ignoring eps would fail
        for scale in SCALES {
            let (out, grads) = run(false, eps, scale);
            let (x, x0, mix) = inputs();
            let (dx, dx0, dmix) =
                backward_formula(&x, &x0, &mix, [eps, scale], &out[2], &out[3]).unwrap();
            for (name, a, b) in [
                ("dx", &dx, &grads[0]),
                ("dx0", &dx0, &grads[1]),
                ("dmix", &dmix, &grads[2]),
            ] {
                assert_eq!(a.size(), b.size(), "{name}");
                let e = max_abs_diff(a, b);
                assert!(
                    e < 1e-12,
                    "scale {scale}: {name} differs from autograd by {e:e}"
                );
                assert!(
                    b.abs().max().double_value(&[]) > 0.1,
                    "{name} must be non-trivial"
                );
            }
        }
    }

    #[test]
    fn the_op_through_autograd_equals_the_reference() {
        for scale in SCALES {
            let (out_f, g_f) = run(true, 1e-2, scale);
            let (out_r, g_r) = run(false, 1e-2, scale);
            let outputs = out_f[..2].iter().zip(&out_r[..2]);
            assert_all_close(outputs.chain(g_f.iter().zip(&g_r)), 1e-12);
        }
    }

    /// The output factor scales `n` only (the stream `xm` continues unscaled), and 1 is the plain
    /// norm exactly.
    #[test]
    fn the_output_factor_scales_n_only() {
        let (x, x0, mix) = inputs();
        let (xm1, n1) = reference(&x, &x0, &mix, 1e-6, 1.0).unwrap();
        let (xm, n) = reference(&x, &x0, &mix, 1e-6, 0.25).unwrap();
        assert!(xm.equal(&xm1));
        assert!(max_abs_diff(&n, &(&n1 * 0.25)) < 1e-15);
        let plain = xm1.rms_norm([16], None::<Tensor>, 1e-6);
        assert!(n1.equal(&plain));
        assert!(mix_norm(&x, &x0, &mix, 1e-6, f64::NAN).is_err());
    }

    /// In bf16, `n` is the norm of the rounded `xm` that is returned (what the kernel does).
    #[test]
    fn n_is_the_norm_of_the_returned_bf16_xm() {
        let (x, x0, mix) = inputs();
        let (x, x0, mix) = (
            x.to_kind(Kind::BFloat16),
            x0.to_kind(Kind::BFloat16),
            mix.to_kind(Kind::Float),
        );
        let (xm, n) = reference(&x, &x0, &mix, 1e-6, 1.0).unwrap();
        assert_eq!(xm.kind(), Kind::BFloat16);
        let direct = (x.to_kind(Kind::Float) * mix.get(0) + x0.to_kind(Kind::Float) * mix.get(1))
            .to_kind(Kind::BFloat16);
        assert_eq!(
            max_abs_diff(&xm.to_kind(Kind::Float), &direct.to_kind(Kind::Float)),
            0.0
        );
        let norm = xm
            .to_kind(Kind::Float)
            .rms_norm([16], None::<Tensor>, 1e-6)
            .to_kind(Kind::BFloat16);
        assert_eq!(
            max_abs_diff(&n.to_kind(Kind::Float), &norm.to_kind(Kind::Float)),
            0.0
        );
    }

    #[test]
    fn bad_shapes_and_widths_are_one_line_errors() {
        let (x, x0, mix) = inputs();
        let err = reference(&x, &x0.narrow(0, 0, 1), &mix, 1e-6, 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("differ in shape"), "{err}");
        let err = reference(&x, &x0, &mix.narrow(1, 0, 8), 1e-6, 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 16]"), "{err}");
        assert!(variant(1028, "mix_norm")
            .unwrap_err()
            .to_string()
            .contains("1028"));
        assert!(variant(500, "mix_norm").is_err());
        assert_eq!(
            [256, 512, 768, 1024].map(|d| variant(d, "t").unwrap()),
            [0, 1, 2, 2]
        );
    }
}
