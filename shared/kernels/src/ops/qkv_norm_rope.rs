//! `qkv_norm_rope`: from the fused QKV GEMM output to SDPA's q, k and v in one pass — per-head
//! RMSNorm (no weight) of the q and k heads, half-split RoPE over the first `rd` dims of each head
//! (partial RoPE, R0322's 16 of 64; `rd = hd` rotates whole heads), the per-head q gain, and v
//! copied through — with a one-pass backward that writes the whole d(qkv) and d(q_gain).
//!
//! Upstream (REFERENCE.md §3.2) and the literal formulation run `rms_norm`, the rotation and the gain as separate
//! ops, each a pass over q and k (and their backwards as many more); here each direction reads
//! and writes every element once. Math in f32, one rounding per output (`cuda/qkv_norm_rope.cu`
//! derives the backward). Saves only its inputs (`qkv` is what the norm's autograd keeps alive
//! now anyway) and recomputes the norm in the backward.
//!
//! On CUDA (bf16) it runs the kernels; on the CPU (any float kind) the same formulas in tch ops,
//! so the autograd bridge and the backward formula are testable without a GPU.

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::{kernel_input, math_kind};
use crate::autograd::{apply, Forward, FusedFunction};
use crate::launch::{launch, resident_blocks, Arg, Kernel};

const FILE: &str = "qkv_norm_rope.cu";
const SOURCE: &str = include_str!("../../cuda/qkv_norm_rope.cu");
pub static FORWARD: Kernel = Kernel::new(FILE, SOURCE, "qkv_norm_rope_forward");
pub static BACKWARD: Kernel = Kernel::new(FILE, SOURCE, "qkv_norm_rope_backward");

/// Threads per block we aim for (whole rows per block: rows_per_block · W/8 threads).
const TARGET_BLOCK_THREADS: i64 = 256;

/// The op (pass to [`crate::apply`]); inputs `[qkv, cos, sin, q_gain]`, scalars
/// `[head_dim, eps]`, outputs `[q, k, v]`.
pub struct QkvNormRope;
pub static QKV_NORM_ROPE: QkvNormRope = QkvNormRope;

/// `qkv` bf16 `[B, T, (H + 2·Hkv)·hd]` (q heads, k heads, v heads) with heads of `head_dim` = hd,
/// RoPE tables `cos`, `sin` f32 `[T, rd/2]` (rd ≤ hd the rotated dims: the first rd of each head,
/// half-split within them; the rest pass through after the norm), `q_gain` f32 `[H]` (on the
/// whole head), RMSNorm `eps` (f32 machine epsilon is rms_norm's default):
/// `(q [B, T, H, hd], k [B, T, Hkv, hd], v [B, T, Hkv, hd])`, bf16, as one autograd node
/// (gradients for `qkv` and `q_gain`). The caller views q, k, v as `[B, heads, T, hd]` with
/// `transpose(1, 2)` for SDPA. [`reference`] is the same function in tch ops. The kernels take
/// rd a multiple of 16 ([`kernels_support`]); the CPU path any even rd.
pub fn qkv_norm_rope(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    q_gain: &Tensor,
    head_dim: i64,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut out = apply(
        &QKV_NORM_ROPE,
        &[qkv, cos, sin, q_gain],
        &[head_dim as f64, eps],
    )?;
    ensure!(
        out.len() == 3,
        "qkv_norm_rope: {} outputs, expected 3",
        out.len()
    );
    let v = out.pop().unwrap();
    let k = out.pop().unwrap();
    let q = out.pop().unwrap();
    Ok((q, k, v))
}

/// Head layout of a `[B, T, W]` qkv with heads of `dim`, tables `[T, rope/2]` and `H` q heads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heads {
    pub batch: i64,
    pub seq: i64,
    pub q: i64,
    pub kv: i64,
    pub dim: i64,
    /// The rotated dims of each head (the first `rope`; `dim` when RoPE is not partial).
    pub rope: i64,
}

impl Heads {
    /// Infers the layout from the shapes and the head dim, with a one-line error for anything
    /// inconsistent.
    pub fn of(
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        q_gain: &Tensor,
        head_dim: i64,
    ) -> Result<Heads> {
        let (batch, seq, width) = qkv.size3().map_err(|_| {
            anyhow::anyhow!("qkv_norm_rope: qkv must be [B, T, W], got {:?}", qkv.size())
        })?;
        let (t, half) = cos.size2().map_err(|_| {
            anyhow::anyhow!("qkv_norm_rope: cos must be [T, rd/2], got {:?}", cos.size())
        })?;
        ensure!(
            sin.size() == cos.size(),
            "qkv_norm_rope: sin {:?} and cos {:?} differ in shape",
            sin.size(),
            cos.size()
        );
        ensure!(
            t == seq,
            "qkv_norm_rope: tables cover {t} positions, qkv has T = {seq} (narrow the tables)"
        );
        ensure!(
            q_gain.dim() == 1,
            "qkv_norm_rope: q_gain must be [H], got {:?}",
            q_gain.size()
        );
        let (dim, rope) = (head_dim, 2 * half);
        ensure!(
            rope > 0 && rope <= dim,
            "qkv_norm_rope: tables for {rope} rotated dims, heads of {dim} (need 0 < rd ≤ hd)"
        );
        let q = q_gain.size()[0];
        ensure!(
            dim > 0 && width % dim == 0,
            "qkv_norm_rope: W = {width} is not a multiple of hd = {dim}"
        );
        let all = width / dim;
        ensure!(
            all > q && (all - q) % 2 == 0,
            "qkv_norm_rope: W = {width} holds {all} heads of {dim}: not H = {q} q heads plus equal k and v heads"
        );
        Ok(Heads {
            batch,
            seq,
            q,
            kv: (all - q) / 2,
            dim,
            rope,
        })
    }

    fn width(&self) -> i64 {
        (self.q + 2 * self.kv) * self.dim
    }

    fn rows(&self) -> i64 {
        self.batch * self.seq
    }
}

/// Whether the kernels take heads of `head_dim` with the first `rope_dims` rotated: hd 16, 32,
/// 64, 128 or 256 (a head is a power-of-two group of 8-element lanes within a warp), rd a
/// multiple of 16 (each half of the rotated dims whole lanes). `Err` says why not.
pub fn kernels_support(head_dim: i64, rope_dims: i64) -> Result<()> {
    ensure!(
        [16, 32, 64, 128, 256].contains(&head_dim),
        "qkv_norm_rope kernels: head_dim {head_dim} unsupported (16, 32, 64, 128 or 256)"
    );
    ensure!(
        rope_dims > 0 && rope_dims <= head_dim && rope_dims % 16 == 0,
        "qkv_norm_rope kernels: {rope_dims} rotated dims of {head_dim} unsupported (a multiple of 16, at most head_dim)"
    );
    Ok(())
}

/// The launch geometry shared by forward and backward: `(rows_per_block, threads_per_block)`,
/// whole rows per block, and whole warps (the kernels shuffle with full-warp masks).
pub(crate) fn block_shape(heads: &Heads) -> Result<(i64, i64)> {
    kernels_support(heads.dim, heads.rope)?;
    let row_threads = heads.width() / 8;
    // The fewest rows whose threads fill whole warps (row_threads is a multiple of hd/8 ≥ 2).
    let rows_per_warp_multiple = 32 / gcd(row_threads, 32);
    let rows_per_block = ((TARGET_BLOCK_THREADS / row_threads) / rows_per_warp_multiple).max(1)
        * rows_per_warp_multiple;
    let threads = rows_per_block * row_threads;
    ensure!(
        threads <= 1024,
        "qkv_norm_rope kernels: rows of {} elements do not fit a block in whole warps",
        heads.width()
    );
    Ok((rows_per_block, threads))
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A gradient `[B, T, heads, hd]` as the backward kernel reads it: its own strides when the last
/// one is 1, the others multiples of 8 and the pointer 16-byte aligned (e.g. the transposed
/// layouts SDPA's backward may return: no copy); otherwise a contiguous copy. Returns the tensor
/// and its (batch, time, head) strides in elements.
fn strided_grad(g: &Tensor, heads: &Heads, n_heads: i64, what: &str) -> Result<(Tensor, [i64; 3])> {
    let want = [heads.batch, heads.seq, n_heads, heads.dim];
    ensure!(
        g.size() == want,
        "qkv_norm_rope backward: {what} is {:?}, expected {want:?}",
        g.size()
    );
    let usable = |t: &Tensor| {
        let s = t.stride();
        let aligned = (t.data_ptr() as usize).trailing_zeros() >= 4;
        s[3] == 1 && s[..3].iter().all(|x| x % 8 == 0) && aligned
    };
    let g = if g.kind() == Kind::BFloat16 && usable(g) {
        g.shallow_clone()
    } else {
        kernel_input(g, what, Kind::BFloat16)?
    };
    let s = g.stride();
    Ok((g, [s[0], s[1], s[2]]))
}

impl FusedFunction for QkvNormRope {
    fn name(&self) -> &'static str {
        "qkv_norm_rope"
    }

    fn forward(&self, inputs: &[Tensor], scalars: &[f64]) -> Result<Forward> {
        let ([qkv, cos, sin, q_gain], [head_dim, eps]) = (inputs, scalars) else {
            bail!(
                "qkv_norm_rope: expected [qkv, cos, sin, q_gain] and [head_dim, eps], got {} tensors and {} scalars",
                inputs.len(),
                scalars.len()
            );
        };
        let head_dim = *head_dim as i64;
        let heads = Heads::of(qkv, cos, sin, q_gain, head_dim)?;
        match qkv.device() {
            Device::Cpu => {
                let _guard = tch::no_grad_guard();
                let (q, k, v) = reference(qkv, cos, sin, q_gain, head_dim, *eps)?;
                let saved = Vec::from([qkv, cos, sin, q_gain].map(Tensor::shallow_clone));
                Ok(Forward {
                    outputs: vec![q, k, v],
                    saved,
                })
            }
            Device::Cuda(_) => {
                let qkv = kernel_input(qkv, "qkv_norm_rope qkv", Kind::BFloat16)?;
                let cos = kernel_input(cos, "qkv_norm_rope cos", Kind::Float)?;
                let sin = kernel_input(sin, "qkv_norm_rope sin", Kind::Float)?;
                let q_gain = kernel_input(q_gain, "qkv_norm_rope q_gain", Kind::Float)?;
                let outputs = forward_cuda(&qkv, &cos, &sin, &q_gain, &heads, *eps)?;
                Ok(Forward {
                    outputs,
                    saved: vec![qkv, cos, sin, q_gain],
                })
            }
            other => bail!("qkv_norm_rope: unsupported device {other:?}"),
        }
    }

    fn backward(
        &self,
        saved: &[Tensor],
        grad_outputs: &[Tensor],
        scalars: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        let ([qkv, cos, sin, q_gain], [dq, dk, dv], [head_dim, eps]) =
            (saved, grad_outputs, scalars)
        else {
            bail!("qkv_norm_rope backward: expected 4 saved tensors, 3 gradients and 2 scalars");
        };
        let heads = Heads::of(qkv, cos, sin, q_gain, *head_dim as i64)?;
        let (dqkv, dgain) = match qkv.device() {
            Device::Cpu => backward_formula(qkv, cos, sin, q_gain, heads.dim, *eps, [dq, dk, dv])?,
            Device::Cuda(ordinal) => {
                backward_cuda(ordinal, qkv, cos, sin, q_gain, &heads, *eps, [dq, dk, dv])?
            }
            other => bail!("qkv_norm_rope: unsupported device {other:?}"),
        };
        Ok(vec![Some(dqkv), None, None, Some(dgain)])
    }
}

fn forward_cuda(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    q_gain: &Tensor,
    heads: &Heads,
    eps: f64,
) -> Result<Vec<Tensor>> {
    let (rows_per_block, threads) = block_shape(heads)?;
    let Heads {
        batch: b,
        seq: t,
        q: h,
        kv: hkv,
        dim: hd,
        rope: rd,
    } = *heads;
    let opts = (Kind::BFloat16, qkv.device());
    let q = Tensor::empty([b, t, h, hd], opts);
    let k = Tensor::empty([b, t, hkv, hd], opts);
    let v = Tensor::empty([b, t, hkv, hd], opts);
    let rows = heads.rows();
    let blocks = u32::try_from((rows + rows_per_block - 1) / rows_per_block)
        .context("qkv_norm_rope: too many rows for one grid")?;
    launch(
        &FORWARD,
        (blocks, 1, 1),
        (threads as u32, 1, 1),
        0,
        &[
            Arg::from(qkv),
            Arg::from(cos),
            Arg::from(sin),
            Arg::from(q_gain),
            Arg::from(&q),
            Arg::from(&k),
            Arg::from(&v),
            Arg::I64(rows),
            Arg::I32(t as i32),
            Arg::I32(h as i32),
            Arg::I32(hkv as i32),
            Arg::I32(hd as i32),
            Arg::I32(rd as i32),
            Arg::F32(eps as f32),
        ],
    )?;
    Ok(vec![q, k, v])
}

#[allow(clippy::too_many_arguments)]
fn backward_cuda(
    ordinal: usize,
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    q_gain: &Tensor,
    heads: &Heads,
    eps: f64,
    [dq, dk, dv]: [&Tensor; 3],
) -> Result<(Tensor, Tensor)> {
    let heads = *heads;
    let (rows_per_block, threads) = block_shape(&heads)?;
    let (dq, sq) = strided_grad(dq, &heads, heads.q, "qkv_norm_rope dq")?;
    let (dk, sk) = strided_grad(dk, &heads, heads.kv, "qkv_norm_rope dk")?;
    let (dv, sv) = strided_grad(dv, &heads, heads.kv, "qkv_norm_rope dv")?;
    let rows = heads.rows();
    // One wave of blocks, each looping over rows: one row of q-gain partials per block.
    let resident = resident_blocks(&BACKWARD, ordinal, threads as u32)? as i64;
    let blocks = ((rows + rows_per_block - 1) / rows_per_block).clamp(1, resident);
    let dqkv = Tensor::empty(
        [heads.batch, heads.seq, heads.width()],
        (Kind::BFloat16, qkv.device()),
    );
    let partial = Tensor::empty([blocks, heads.q], (Kind::Float, qkv.device()));
    launch(
        &BACKWARD,
        (blocks as u32, 1, 1),
        (threads as u32, 1, 1),
        0,
        &[
            Arg::from(qkv),
            Arg::from(cos),
            Arg::from(sin),
            Arg::from(q_gain),
            Arg::from(&dq),
            Arg::I64(sq[0]),
            Arg::I64(sq[1]),
            Arg::I64(sq[2]),
            Arg::from(&dk),
            Arg::I64(sk[0]),
            Arg::I64(sk[1]),
            Arg::I64(sk[2]),
            Arg::from(&dv),
            Arg::I64(sv[0]),
            Arg::I64(sv[1]),
            Arg::I64(sv[2]),
            Arg::from(&dqkv),
            Arg::from(&partial),
            Arg::I64(rows),
            Arg::I32(heads.seq as i32),
            Arg::I32(heads.q as i32),
            Arg::I32(heads.kv as i32),
            Arg::I32(heads.dim as i32),
            Arg::I32(heads.rope as i32),
            Arg::F32(eps as f32),
        ],
    )?;
    // Per-block partials reduced by one deterministic tch sum (no float atomics).
    Ok((dqkv, partial.sum_dim_intlist(0, false, Kind::Float)))
}

/// The same function in plain tch ops (differentiable by autograd; any device): the math in f32
/// (f64 for f64 inputs), outputs in qkv's dtype, `v` a contiguous copy as the kernel's.
pub fn reference(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    q_gain: &Tensor,
    head_dim: i64,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let Heads {
        batch: b,
        seq: t,
        q: h,
        kv: hkv,
        dim: hd,
        ..
    } = Heads::of(qkv, cos, sin, q_gain, head_dim)?;
    let kind = qkv.kind();
    let mk = math_kind(kind);
    let x = qkv.to_kind(mk).view([b, t, h + 2 * hkv, hd]);
    let qk = x.narrow(2, 0, h + hkv).rms_norm([hd], None::<Tensor>, eps);
    let (c, s) = tables(cos, sin, mk);
    let y = rotate(&qk, &c, &s) * head_gains(q_gain, hkv, mk, qkv.device());
    Ok((
        y.narrow(2, 0, h).to_kind(kind),
        y.narrow(2, h, hkv).to_kind(kind),
        qkv.view([b, t, h + 2 * hkv, hd])
            .narrow(2, h + hkv, hkv)
            .contiguous(),
    ))
}

/// The hand-derived backward the kernel implements, in tch ops (math in f32, or f64 for f64
/// inputs): `(d qkv in qkv's kind, d q_gain in q_gain's kind)`. Per q or k head, with
/// `u = R x̂` the (partially) rotated normalised head before the gain `g` (1 for k heads):
/// `d g = Σ dy·u`, `dx̂ = Rᵀ (g·dy)` (the identity on the dims past rd),
/// `dx = r·(dx̂ − x̂·g·Σ(dy·u)/hd)` (as `mean(dx̂·x̂) = mean(g·dy·R x̂)`, R linear); `d v = dv`.
pub fn backward_formula(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    q_gain: &Tensor,
    head_dim: i64,
    eps: f64,
    [dq, dk, dv]: [&Tensor; 3],
) -> Result<(Tensor, Tensor)> {
    let Heads {
        batch: b,
        seq: t,
        q: h,
        kv: hkv,
        dim: hd,
        rope: rd,
    } = Heads::of(qkv, cos, sin, q_gain, head_dim)?;
    let mk = math_kind(qkv.kind());
    let half = rd / 2;
    let x = qkv
        .to_kind(mk)
        .view([b, t, h + 2 * hkv, hd])
        .narrow(2, 0, h + hkv);
    let r = (x.square().mean_dim(-1, true, mk) + eps).rsqrt();
    let xh = &x * &r;
    let (c, s) = tables(cos, sin, mk);
    let u = rotate(&xh, &c, &s);
    let g = head_gains(q_gain, hkv, mk, qkv.device());
    let dy = Tensor::cat(&[dq.to_kind(mk), dk.to_kind(mk)], 2);
    let dot = (&dy * &u).sum_dim_intlist(-1, true, mk);
    let dgain = dot
        .narrow(2, 0, h)
        .sum_dim_intlist([0, 1, 3].as_slice(), false, mk);
    let du = &dy * &g;
    let (du1, du2) = (du.narrow(-1, 0, half), du.narrow(-1, half, half));
    let rotated = [&du1 * &c - &du2 * &s, &du1 * &s + &du2 * &c];
    let dxh = match rd == hd {
        true => Tensor::cat(&rotated, -1),
        false => Tensor::cat(&[&rotated[0], &rotated[1], &du.narrow(-1, rd, hd - rd)], -1),
    };
    let dx = &r * (dxh - &xh * (&g * &dot / hd as f64));
    let dqkv = Tensor::cat(&[dx, dv.to_kind(mk)], 2).view([b, t, -1]);
    Ok((dqkv.to_kind(qkv.kind()), dgain.to_kind(q_gain.kind())))
}

/// The RoPE tables `[T, rd/2]` in `mk`, viewed `[1, T, 1, rd/2]` to broadcast over the heads of
/// `[B, T, heads, rd/2]` halves.
fn tables(cos: &Tensor, sin: &Tensor, mk: Kind) -> (Tensor, Tensor) {
    let view = |t: &Tensor| {
        let size = t.size();
        t.to_kind(mk).view([1, size[0], 1, size[1]])
    };
    (view(cos), view(sin))
}

/// `R x`, the half-split rotation of the first rd dims of the last dimension (rd/2 = the tables'
/// last dim): `[x1·c + x2·s, x2·c − x1·s, x_rest]`.
fn rotate(x: &Tensor, c: &Tensor, s: &Tensor) -> Tensor {
    let hd = *x.size().last().unwrap();
    let half = *c.size().last().unwrap();
    let (x1, x2) = (x.narrow(-1, 0, half), x.narrow(-1, half, half));
    let rotated = [&x1 * c + &x2 * s, &x2 * c - &x1 * s];
    match 2 * half == hd {
        true => Tensor::cat(&rotated, -1),
        false => Tensor::cat(
            &[
                &rotated[0],
                &rotated[1],
                &x.narrow(-1, 2 * half, hd - 2 * half),
            ],
            -1,
        ),
    }
}

/// The gain of each q and k head, `[1, 1, H + Hkv, 1]` in `mk`: `q_gain`, then 1 for the k heads.
fn head_gains(q_gain: &Tensor, hkv: i64, mk: Kind, device: Device) -> Tensor {
    let g = Tensor::cat(&[q_gain.to_kind(mk), Tensor::ones([hkv], (mk, device))], 0);
    g.view([1, 1, -1, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_all_close, max_abs_diff};

    /// The head dim of [`inputs`].
    const HD: i64 = 8;

    /// Random f64 inputs: B = 2, T = 5, H = 4, Hkv = 2, hd = 8, tables for `rd` rotated dims
    /// (random: the backward must not rely on cos² + sin² = 1).
    fn inputs(rd: i64) -> (Tensor, Tensor, Tensor, Tensor) {
        tch::manual_seed(7);
        let opts = (Kind::Double, Device::Cpu);
        let qkv = Tensor::randn([2, 5, 8 * HD], opts);
        let cos = Tensor::randn([5, rd / 2], opts);
        let sin = Tensor::randn([5, rd / 2], opts);
        let q_gain = Tensor::randn([4], opts) + 1.5;
        (qkv, cos, sin, q_gain)
    }

    /// Whole-head and partial RoPE (4 of 8 dims rotated, and 2 of 8).
    const ROPE_DIMS: [i64; 3] = [8, 4, 2];

    #[test]
    fn hand_derived_backward_equals_autograd_of_the_reference() {
        for rd in ROPE_DIMS {
            let (qkv, cos, sin, q_gain) = inputs(rd);
            let eps = 1e-3; // large enough that a formula ignoring eps would fail
            let qkv = qkv.set_requires_grad(true);
            let q_gain = q_gain.set_requires_grad(true);
            let (q, k, v) = reference(&qkv, &cos, &sin, &q_gain, HD, eps).unwrap();
            let opts = (Kind::Double, Device::Cpu);
            let (dq, dk, dv) = (
                Tensor::randn(q.size(), opts),
                Tensor::randn(k.size(), opts),
                Tensor::randn(v.size(), opts),
            );
            let loss = (&q * &dq).sum(Kind::Double)
                + (&k * &dk).sum(Kind::Double)
                + (&v * &dv).sum(Kind::Double);
            let grads = Tensor::run_backward(&[loss], &[&qkv, &q_gain], false, false);
            let (dqkv, dgain) = backward_formula(
                &qkv.detach(),
                &cos,
                &sin,
                &q_gain.detach(),
                HD,
                eps,
                [&dq, &dk, &dv],
            )
            .unwrap();
            assert_eq!(dqkv.size(), qkv.size());
            assert_eq!(dgain.size(), [4]);
            let e_qkv = max_abs_diff(&dqkv, &grads[0]);
            let e_gain = max_abs_diff(&dgain, &grads[1]);
            assert!(
                e_qkv < 1e-12,
                "rd {rd}: d qkv differs from autograd by {e_qkv:e}"
            );
            assert!(
                e_gain < 1e-12,
                "rd {rd}: d q_gain differs from autograd by {e_gain:e}"
            );
            assert!(
                grads[0].abs().max().double_value(&[]) > 0.1,
                "gradients must be non-trivial"
            );
        }
    }

    /// The reference is upstream's attention prologue (REFERENCE.md §3.2, R0322's partial RoPE):
    /// separate q, k, v projections viewed [B, H, T, hd], rms_norm, RoPE on the first rd dims of
    /// [B, H, T, hd] (the rest passed through), q × gain.
    #[test]
    fn reference_equals_the_literal_upstream_formulation() {
        for rd in ROPE_DIMS {
            let (qkv, cos, sin, q_gain) = inputs(rd);
            let eps = f64::EPSILON;
            let (q, k, v) = reference(&qkv, &cos, &sin, &q_gain, HD, eps).unwrap();
            let (h, hkv, hd, half) = (4, 2, HD, rd / 2);
            let split = qkv.split_with_sizes([h * hd, hkv * hd, hkv * hd], -1);
            let heads = |x: &Tensor, n: i64| x.view([2, 5, n, hd]).transpose(1, 2);
            let rope = |x: &Tensor| {
                let c = cos.view([1, 1, 5, half]);
                let s = sin.view([1, 1, 5, half]);
                let (x1, x2) = (x.narrow(-1, 0, half), x.narrow(-1, half, half));
                let pass = x.narrow(-1, rd, hd - rd);
                Tensor::cat(&[&x1 * &c + &x2 * &s, &x1 * (-&s) + &x2 * &c, pass], -1)
            };
            let norm = |x: &Tensor| x.rms_norm([hd], None::<Tensor>, eps);
            let q_ref = rope(&norm(&heads(&split[0], h))) * q_gain.view([1, h, 1, 1]);
            let k_ref = rope(&norm(&heads(&split[1], hkv)));
            let v_ref = heads(&split[2], hkv);
            assert!(max_abs_diff(&q.transpose(1, 2), &q_ref) < 1e-12, "rd {rd}");
            assert!(max_abs_diff(&k.transpose(1, 2), &k_ref) < 1e-12, "rd {rd}");
            assert!(max_abs_diff(&v.transpose(1, 2), &v_ref) < 1e-12, "rd {rd}");
        }
    }

    #[test]
    fn inconsistent_shapes_are_one_line_errors() {
        let (qkv, cos, sin, q_gain) = inputs(HD);
        let err = Heads::of(
            &qkv,
            &cos.narrow(0, 0, 4),
            &sin.narrow(0, 0, 4),
            &q_gain,
            HD,
        )
        .unwrap_err();
        assert!(err.to_string().contains("T = 5"), "{err}");
        let err = Heads::of(&qkv, &cos, &sin, &q_gain.narrow(0, 0, 3), HD).unwrap_err();
        assert!(err.to_string().contains("H = 3"), "{err}");
        // Tables for more dims than a head has.
        let err = Heads::of(&qkv, &cos, &sin, &q_gain, 4).unwrap_err();
        assert!(err.to_string().contains("rd ≤ hd"), "{err}");
        let heads = Heads::of(&qkv, &cos, &sin, &q_gain, HD).unwrap();
        assert_eq!(
            heads,
            Heads {
                batch: 2,
                seq: 5,
                q: 4,
                kv: 2,
                dim: 8,
                rope: 8
            }
        );
        let (_, cos, sin, _) = inputs(4);
        assert_eq!(Heads::of(&qkv, &cos, &sin, &q_gain, HD).unwrap().rope, 4);
    }

    /// Through the autograd bridge (the op's CPU path: reference forward, hand-derived backward):
    /// outputs and gradients in the right order and the right places.
    #[test]
    fn the_op_through_autograd_equals_the_reference() {
        for rd in ROPE_DIMS {
            let (qkv, cos, sin, q_gain) = inputs(rd);
            let eps = 1e-3;
            let opts = (Kind::Double, Device::Cpu);
            let grads = |fused: bool| {
                let qkv = qkv.copy().set_requires_grad(true);
                let q_gain = q_gain.copy().set_requires_grad(true);
                let (q, k, v) = if fused {
                    qkv_norm_rope(&qkv, &cos, &sin, &q_gain, HD, eps).unwrap()
                } else {
                    reference(&qkv, &cos, &sin, &q_gain, HD, eps).unwrap()
                };
                tch::manual_seed(11);
                let (dq, dk, dv) = (
                    Tensor::randn(q.size(), opts),
                    Tensor::randn(k.size(), opts),
                    Tensor::randn(v.size(), opts),
                );
                let loss = (&q * &dq).sum(Kind::Double)
                    + (&k * &dk).sum(Kind::Double)
                    + (&v * &dv).sum(Kind::Double);
                let g = Tensor::run_backward(&[&loss], &[&qkv, &q_gain], false, false);
                (vec![q.detach(), k.detach(), v.detach()], g)
            };
            let (out_fused, g_fused) = grads(true);
            let (out_ref, g_ref) = grads(false);
            let pairs = out_fused.iter().zip(&out_ref);
            assert_all_close(pairs.chain(g_fused.iter().zip(&g_ref)), 1e-12);
        }
    }

    #[test]
    fn blocks_hold_whole_rows_and_whole_warps() {
        let heads = |q, kv, dim| Heads {
            batch: 1,
            seq: 1,
            q,
            kv,
            dim,
            rope: dim,
        };
        // The baseline: rows of 1024 elements = 128 threads, two rows per block.
        assert_eq!(block_shape(&heads(8, 4, 64)).unwrap(), (2, 256));
        for (q, kv, dim) in [(3, 1, 16), (5, 1, 32), (6, 3, 64), (1, 1, 128), (2, 1, 256)] {
            let (rows, threads) = block_shape(&heads(q, kv, dim)).unwrap();
            assert_eq!(threads % 32, 0, "({q}, {kv}, {dim}): {threads} threads");
            assert_eq!(threads, rows * (q + 2 * kv) * dim / 8);
        }
        assert!(block_shape(&heads(8, 4, 48)).is_err());
        assert!(block_shape(&heads(40, 20, 256)).is_err()); // a row needs 2560 threads
                                                            // Partial RoPE: R0322's 16 of 64 (and 48 of 64: halves of 3 lanes) run; 8 of 64 does not.
        for rope in [16, 48] {
            let partial = Heads {
                rope,
                ..heads(8, 4, 64)
            };
            assert_eq!(block_shape(&partial).unwrap(), (2, 256));
        }
        let err = block_shape(&Heads {
            rope: 8,
            ..heads(8, 4, 64)
        })
        .unwrap_err();
        assert!(err.to_string().contains("multiple of 16"), "{err}");
    }
}
