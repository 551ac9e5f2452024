//! Muon (REFERENCE.md §3.7, §5.14): Nesterov momentum, then the update orthogonalised by
//! Newton–Schulz iterations in bf16, scaled by `√max(1, rows/cols)`, applied at `lr`.
//!
//! The SP8192 line's variants are fields: MuonEq-R (R0405, R0427: each row of the Nesterov update
//! divided by its L2 norm, clamped ≥ 1e-7, before the iterations), Polar Express (R0427: five
//! iterations with their own coefficients instead of the baseline's one quintic), and R0427's
//! bf16 momentum buffer (the gradient rounded to bf16 before the momentum).
//!
//! Matrices of one shape are orthogonalised together as a batch (`baddbmm`), so a 9-layer model
//! costs 3 batched NS runs per step instead of 54. With N ranks, parameter `i` is computed by rank
//! `i mod N` and the bf16 updates are shared through one SUM all-reduce, as upstream.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

use crate::collective::Collective;

/// The baseline's quintic coefficients (every iteration).
pub const NS5_COEFFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// Polar Express's per-iteration coefficients (R0427, PR #1344/#1787): iteration `k` uses row `k`.
pub const POLAR_EXPRESS_COEFFS: [(f64, f64, f64); 5] = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
];

/// Which coefficients the Newton–Schulz iterations use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NsCoefficients {
    /// The baseline's quintic [`NS5_COEFFS`], `steps` times.
    #[default]
    Quintic,
    /// [`POLAR_EXPRESS_COEFFS`]: the first `steps` rows, or all five when `steps` is larger (as
    /// R0427's `_PE_COEFFS[:steps] if steps <= 5 else _PE_COEFFS`: never more than five).
    PolarExpress,
}

impl NsCoefficients {
    /// The `(a, b, c)` of each iteration for `steps` backend steps.
    pub fn schedule(self, steps: usize) -> Vec<(f64, f64, f64)> {
        match self {
            NsCoefficients::Quintic => vec![NS5_COEFFS; steps],
            NsCoefficients::PolarExpress => {
                POLAR_EXPRESS_COEFFS[..steps.min(POLAR_EXPRESS_COEFFS.len())].to_vec()
            }
        }
    }
}

/// Orthogonalises a batch of matrices `g: [n, rows, cols]` (any float dtype) in bf16:
/// `X = G/(‖G‖_F + eps)` per matrix, transposed when rows > cols; `steps` times
/// `A = XXᵀ; B = bA + cA²; X = aX + BX`. Returns bf16 `[n, rows, cols]`.
pub fn newton_schulz5(g: &Tensor, steps: usize) -> Tensor {
    newton_schulz5_in(g, steps, Kind::BFloat16)
}

/// The same iteration in another dtype (tests compare bf16 against f64).
pub fn newton_schulz5_in(g: &Tensor, steps: usize, kind: Kind) -> Tensor {
    newton_schulz(g, &NsCoefficients::Quintic.schedule(steps), kind)
}

/// The Newton–Schulz iteration with coefficients `(a, b, c)` per iteration, in `kind`: normalise by
/// the Frobenius norm (+1e-7), transpose tall matrices, iterate, transpose back.
pub fn newton_schulz(g: &Tensor, coeffs: &[(f64, f64, f64)], kind: Kind) -> Tensor {
    let size = g.size();
    let (rows, cols) = (size[1], size[2]);
    let x = g.to_kind(kind);
    let norm = x.norm_scalaropt_dim(2, [1, 2], true);
    let mut x = x / (norm + 1e-7);
    let transposed = rows > cols;
    if transposed {
        x = x.transpose(1, 2);
    }
    for &(a, b, c) in coeffs {
        let gram = x.bmm(&x.transpose(1, 2));
        // B = b·A + c·(A A); X = a·X + B X — each one fused GEMM.
        let poly = gram.baddbmm(&gram, &gram, b, c);
        x = x.baddbmm(&poly, &x, a, 1.0);
    }
    if transposed {
        x = x.transpose(1, 2);
    }
    x
}

/// MuonEq-R's row normalisation of a batch `u: [n, rows, cols]`: each row divided by its L2 norm
/// (computed in f32, clamped ≥ 1e-7, then cast to `u`'s dtype, as the records).
pub fn row_normalize(u: &Tensor) -> Tensor {
    let norms = u
        .to_kind(Kind::Float)
        .norm_scalaropt_dim(2, [-1], true)
        .clamp_min(1e-7);
    u / norms.to_kind(u.kind())
}

pub struct Muon {
    params: Vec<Tensor>,
    /// Momentum buffers, one `[n, rows, cols]` stack per shape group.
    groups: Vec<ShapeGroup>,
    pub lr: f64,
    pub momentum: f64,
    pub backend_steps: usize,
    pub nesterov: bool,
    /// Decoupled weight decay: `W ← W·(1 − lr·wd)` before the update (0 = off, the baseline).
    pub weight_decay: f64,
    /// MuonEq-R: normalise the rows of the Nesterov update before the iterations.
    pub row_normalize: bool,
    /// The iterations' coefficients (`backend_steps` of them, or Polar Express's).
    pub coefficients: NsCoefficients,
}

struct ShapeGroup {
    /// Indices into `params` computed by this rank.
    members: Vec<usize>,
    buffer: Tensor,
    scale: f64,
}

impl Muon {
    /// `params`: the 2-D matrices in upstream order (the order fixes which rank computes which).
    pub fn new(
        params: Vec<Tensor>,
        lr: f64,
        momentum: f64,
        backend_steps: usize,
        rank: usize,
        world: usize,
    ) -> Result<Muon> {
        let mut by_shape: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
        for (i, p) in params.iter().enumerate() {
            let size = p.size();
            if size.len() != 2 {
                bail!("Muon takes 2-D matrices, got a tensor of shape {size:?}");
            }
            if i % world == rank {
                by_shape.entry((size[0], size[1])).or_default().push(i);
            }
        }
        let groups = by_shape
            .into_iter()
            .map(|((r, c), members)| {
                let first = &params[members[0]];
                let buffer =
                    Tensor::zeros([members.len() as i64, r, c], (first.kind(), first.device()));
                ShapeGroup {
                    members,
                    buffer,
                    scale: (r as f64 / c as f64).max(1.0).sqrt(),
                }
            })
            .collect();
        Ok(Muon {
            params,
            groups,
            lr,
            momentum,
            backend_steps,
            nesterov: true,
            weight_decay: 0.0,
            row_normalize: false,
            coefficients: NsCoefficients::Quintic,
        })
    }

    /// Keeps the momentum buffers in `kind` (R0427: bf16, with each gradient rounded to bf16
    /// before it enters the buffer; the baseline and R0405 keep the parameters' f32). Call before
    /// the first step (the buffers restart at zero).
    pub fn set_momentum_kind(&mut self, kind: Kind) {
        for group in &mut self.groups {
            group.buffer = group.buffer.zeros_like().to_kind(kind);
        }
    }

    /// One update from the parameters' gradients (already averaged over ranks).
    pub fn step(&mut self, comm: &dyn Collective) -> Result<()> {
        let world = comm.world_size();
        let mut updates: Vec<Option<Tensor>> = (0..self.params.len()).map(|_| None).collect();
        tch::no_grad(|| -> Result<()> {
            for group in &mut self.groups {
                let grads: Vec<Tensor> = group
                    .members
                    .iter()
                    .map(|&i| self.params[i].grad())
                    .collect();
                if let Some(i) = group
                    .members
                    .iter()
                    .zip(&grads)
                    .find(|(_, g)| !g.defined())
                    .map(|(i, _)| *i)
                {
                    bail!("Muon: parameter {i} has no gradient");
                }
                let g = Tensor::stack(&grads, 0).to_kind(group.buffer.kind());
                let _ = group.buffer.g_mul_scalar_(self.momentum).g_add_(&g);
                let g = if self.nesterov {
                    // `g.add(buf, alpha=μ)` as torch computes it: in f32, rounded once to the
                    // buffer's kind (bf16 ops would round μ·buf, the sum and μ itself).
                    let kind = group.buffer.kind();
                    (g.to_kind(Kind::Float) + group.buffer.to_kind(Kind::Float) * self.momentum)
                        .to_kind(kind)
                } else {
                    group.buffer.shallow_clone()
                };
                let g = if self.row_normalize {
                    row_normalize(&g)
                } else {
                    g
                };
                let coeffs = self.coefficients.schedule(self.backend_steps);
                let u = newton_schulz(&g, &coeffs, Kind::BFloat16) * group.scale;
                for (k, &i) in group.members.iter().enumerate() {
                    updates[i] = Some(u.get(k as i64));
                }
            }
            Ok(())
        })?;
        if world > 1 {
            self.share(&mut updates, comm)?;
        }
        tch::no_grad(|| {
            for (p, u) in self.params.iter().zip(&updates) {
                let mut p = p.shallow_clone();
                if self.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - self.lr * self.weight_decay);
                }
                if let Some(u) = u {
                    let _ = p.g_sub_(&(u.to_kind(p.kind()) * self.lr));
                }
            }
        });
        Ok(())
    }

    /// Every rank's updates to every rank: a flat bf16 buffer, zeros where another rank computes.
    fn share(&self, updates: &mut [Option<Tensor>], comm: &dyn Collective) -> Result<()> {
        let total: i64 = self.params.iter().map(|p| p.numel() as i64).sum();
        let device = self.params[0].device();
        let mut flat = Tensor::zeros([total], (Kind::BFloat16, device));
        let mut offset = 0;
        for (p, u) in self.params.iter().zip(updates.iter()) {
            let n = p.numel() as i64;
            if let Some(u) = u {
                flat.narrow(0, offset, n).copy_(&u.reshape([-1]));
            }
            offset += n;
        }
        comm.all_reduce_sum(&mut flat)?;
        let mut offset = 0;
        for (p, u) in self.params.iter().zip(updates.iter_mut()) {
            let n = p.numel() as i64;
            *u = Some(flat.narrow(0, offset, n).view_as(p));
            offset += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Single;
    use tch::Device;

    /// A matrix with singular values spread over [0.05, 1] and random singular vectors.
    fn conditioned(rows: i64, cols: i64) -> Tensor {
        let k = rows.min(cols);
        let opts = (Kind::Double, Device::Cpu);
        let (u, _) = Tensor::linalg_qr(&Tensor::randn([rows, k], opts), "reduced");
        let (v, _) = Tensor::linalg_qr(&Tensor::randn([cols, k], opts), "reduced");
        let s = Tensor::linspace(0.05, 1.0, k, opts);
        (u * s.unsqueeze(0)).mm(&v.transpose(0, 1))
    }

    /// NS5 (as tuned) drives every singular value into a band around 1 (about [0.7, 1.2], not
    /// exactly 1), and bf16 arithmetic stays within bf16 rounding of the same iteration in f64.
    #[test]
    fn ns5_output_is_orthogonal_to_bf16_tolerance() {
        tch::manual_seed(0);
        for (rows, cols) in [(64i64, 64i64), (32, 96), (96, 32)] {
            let g = Tensor::stack(
                &[
                    conditioned(rows, cols),
                    conditioned(rows, cols),
                    Tensor::randn([rows, cols], (Kind::Double, Device::Cpu)),
                ],
                0,
            );
            let x = newton_schulz5(&g, 5);
            assert_eq!((x.kind(), x.size()), (Kind::BFloat16, vec![3, rows, cols]));
            let x = x.to_kind(Kind::Double);
            let exact = newton_schulz5_in(&g, 5, Kind::Double);
            // The input's scale does not matter (Frobenius normalisation first).
            let scaled = newton_schulz5(&(&g * 1000.0), 5).to_kind(Kind::Double);
            for k in 0..2 {
                let xm = x.get(k);
                let short_gram = if rows <= cols {
                    xm.mm(&xm.transpose(0, 1))
                } else {
                    xm.transpose(0, 1).mm(&xm)
                };
                let eig = short_gram.linalg_eigvalsh("L");
                let (lo, hi) = (
                    eig.min().double_value(&[]).sqrt(),
                    eig.max().double_value(&[]).sqrt(),
                );
                assert!(
                    lo > 0.6 && hi < 1.25,
                    "{rows}x{cols}: singular values in [{lo}, {hi}]"
                );
                let rel = |a: &Tensor| {
                    (a - exact.get(k)).norm().double_value(&[])
                        / exact.get(k).norm().double_value(&[])
                };
                assert!(
                    rel(&xm) < 2e-2,
                    "{rows}x{cols}: bf16 vs f64 relative error {}",
                    rel(&xm)
                );
                assert!(
                    rel(&scaled.get(k)) < 2e-2,
                    "{rows}x{cols}: scaled input, relative error {}",
                    rel(&scaled.get(k))
                );
            }
        }
    }

    /// One step by hand: buffer = g, Nesterov u = g + μg, W ← W − lr·NS5(u)·√max(1, r/c).
    #[test]
    fn a_step_matches_the_formula() {
        tch::manual_seed(1);
        let w = Tensor::randn([48, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let before = w.detach().copy();
        let grad = Tensor::randn([48, 16], (Kind::Float, Device::Cpu));
        (&w * &grad).sum(Kind::Float).backward();
        let mut muon = Muon::new(vec![w.shallow_clone()], 0.04, 0.9, 5, 0, 1).unwrap();
        muon.step(&Single).unwrap();
        let u = newton_schulz5(&(&grad + &grad * 0.9).unsqueeze(0), 5).get(0) * 3f64.sqrt();
        let expected = &before - u.to_kind(Kind::Float) * 0.04;
        let diff = (w.detach() - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "diff {diff}");
    }

    /// Plain f64 matrices (row-major `Vec<Vec<f64>>`), for computations that share no code with
    /// the tensor implementation.
    type M = Vec<Vec<f64>>;

    fn to_m(t: &Tensor) -> M {
        let (r, c) = t.size2().unwrap();
        let flat: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap();
        (0..r as usize)
            .map(|i| flat[i * c as usize..(i + 1) * c as usize].to_vec())
            .collect()
    }

    fn mm(a: &M, b: &M) -> M {
        let (n, k, m) = (a.len(), b.len(), b[0].len());
        (0..n)
            .map(|i| {
                (0..m)
                    .map(|j| (0..k).map(|l| a[i][l] * b[l][j]).sum())
                    .collect()
            })
            .collect()
    }

    fn tr(a: &M) -> M {
        (0..a[0].len())
            .map(|j| a.iter().map(|row| row[j]).collect())
            .collect()
    }

    /// `X ← G/(‖G‖+1e-7)` (transposed if tall), then `X ← aX + (bA + cA²)X` per coefficient row.
    fn ns_f64(g: &M, coeffs: &[(f64, f64, f64)]) -> M {
        let norm = g.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
        let mut x: M = g
            .iter()
            .map(|r| r.iter().map(|v| v / (norm + 1e-7)).collect())
            .collect();
        let tall = g.len() > g[0].len();
        if tall {
            x = tr(&x);
        }
        for &(a, b, c) in coeffs {
            let gram = mm(&x, &tr(&x));
            let gram2 = mm(&gram, &gram);
            let poly: M = gram
                .iter()
                .zip(&gram2)
                .map(|(r1, r2)| r1.iter().zip(r2).map(|(u, v)| b * u + c * v).collect())
                .collect();
            let px = mm(&poly, &x);
            x = x
                .iter()
                .zip(&px)
                .map(|(r1, r2)| r1.iter().zip(r2).map(|(u, v)| a * u + v).collect())
                .collect();
        }
        if tall {
            tr(&x)
        } else {
            x
        }
    }

    fn max_rel(a: &M, b: &M) -> f64 {
        let num = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        num / b.iter().flatten().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// Polar Express: the tensor iteration in f64 equals the direct f64 computation, and the bf16
    /// one stays within bf16 rounding of it; more than five steps run the five rows.
    #[test]
    fn polar_express_matches_a_direct_f64_computation() {
        tch::manual_seed(2);
        assert_eq!(NsCoefficients::PolarExpress.schedule(3).len(), 3);
        assert_eq!(
            NsCoefficients::PolarExpress.schedule(9),
            POLAR_EXPRESS_COEFFS.to_vec()
        );
        assert_eq!(NsCoefficients::Quintic.schedule(4), vec![NS5_COEFFS; 4]);
        let coeffs = NsCoefficients::PolarExpress.schedule(5);
        for (rows, cols) in [(8i64, 12i64), (12, 8), (10, 10)] {
            let g = Tensor::randn([1, rows, cols], (Kind::Double, Device::Cpu));
            let want = ns_f64(&to_m(&g.get(0)), &coeffs);
            let exact = to_m(&newton_schulz(&g, &coeffs, Kind::Double).get(0));
            assert!(max_rel(&exact, &want) < 1e-12, "{rows}x{cols} f64");
            let bf16 = to_m(&newton_schulz(&g, &coeffs, Kind::BFloat16).get(0));
            // Polar Express's first coefficients (8.2, −22.5, 15.9) amplify bf16's rounding: a few
            // percent of the result, where the quintic's stay near 1%.
            let rel = max_rel(&bf16, &want);
            assert!(rel < 0.1, "{rows}x{cols}: bf16 vs f64 relative error {rel}");
        }
    }

    /// One MuonEq-R step with Polar Express against the direct f64 computation: Nesterov
    /// `u = g + μ·g`, each row of u divided by its norm, the five iterations, then
    /// `W ← W·(1 − lr·wd) − lr·√max(1, r/c)·X`; without the row normalisation the result differs.
    #[test]
    fn a_muon_eq_r_step_matches_a_direct_f64_computation() {
        tch::manual_seed(3);
        let (rows, cols, lr, mu, wd) = (24i64, 8i64, 0.05, 0.97, 0.095);
        // Rows of very different scale: what the normalisation equalises.
        let scales = Tensor::logspace(-2.0, 1.0, rows, 10.0, (Kind::Float, Device::Cpu));
        let grad = Tensor::randn([rows, cols], (Kind::Float, Device::Cpu)) * scales.unsqueeze(1);
        let w0 = Tensor::randn([rows, cols], (Kind::Float, Device::Cpu));
        let step = |row_normalize: bool| {
            let w = w0.copy().set_requires_grad(true);
            (&w * &grad).sum(Kind::Float).backward();
            let mut muon = Muon::new(vec![w.shallow_clone()], lr, mu, 5, 0, 1).unwrap();
            muon.row_normalize = row_normalize;
            muon.coefficients = NsCoefficients::PolarExpress;
            muon.weight_decay = wd;
            muon.step(&Single).unwrap();
            to_m(&w.detach())
        };
        let g = to_m(&grad);
        let u: M = g
            .iter()
            .map(|r| {
                let n = r
                    .iter()
                    .map(|v| (v * (1.0 + mu)).powi(2))
                    .sum::<f64>()
                    .sqrt();
                r.iter().map(|v| v * (1.0 + mu) / n.max(1e-7)).collect()
            })
            .collect();
        let x = ns_f64(&u, &POLAR_EXPRESS_COEFFS);
        let scale = (rows as f64 / cols as f64).sqrt();
        let want: M = to_m(&w0)
            .iter()
            .zip(&x)
            .map(|(wr, xr)| {
                wr.iter()
                    .zip(xr)
                    .map(|(w, x)| w * (1.0 - lr * wd) - lr * scale * x)
                    .collect()
            })
            .collect();
        let got = step(true);
        let worst = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // The update's entries are O(lr·scale/√cols) ≈ 0.03, computed in bf16 (a few percent).
        assert!(worst < 3e-3, "MuonEq-R step: max abs difference {worst}");
        let plain = step(false);
        let moved = plain
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 5.0 * worst,
            "row normalisation changes the step ({moved} vs {worst})"
        );
    }

    /// R0427's bf16 momentum: the gradients are rounded to bf16 and the buffer accumulates in
    /// bf16, so two steps equal the formula on bf16-rounded gradients.
    #[test]
    fn a_bf16_momentum_buffer_accumulates_rounded_gradients() {
        tch::manual_seed(4);
        let w = Tensor::randn([16, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let before = w.detach().copy();
        let mut muon = Muon::new(vec![w.shallow_clone()], 0.02, 0.9, 5, 0, 1).unwrap();
        muon.set_momentum_kind(Kind::BFloat16);
        let grads = [
            Tensor::randn([16, 16], (Kind::Float, Device::Cpu)),
            Tensor::randn([16, 16], (Kind::Float, Device::Cpu)),
        ];
        let mut want = before.copy();
        let mut buf = Tensor::zeros([16, 16], (Kind::BFloat16, Device::Cpu));
        for g in &grads {
            w.shallow_clone().zero_grad();
            (&w * g).sum(Kind::Float).backward();
            muon.step(&Single).unwrap();
            let gb = g.to_kind(Kind::BFloat16);
            // torch's `buf.mul_(μ).add_(g)` (each rounded to bf16), then `g.add(buf, alpha=μ)`
            // (in f32, rounded once).
            let _ = buf.g_mul_scalar_(0.9).g_add_(&gb);
            let u =
                (gb.to_kind(Kind::Float) + buf.to_kind(Kind::Float) * 0.9).to_kind(Kind::BFloat16);
            want -= newton_schulz5(&u.unsqueeze(0), 5)
                .get(0)
                .to_kind(Kind::Float)
                * 0.02;
        }
        let diff = (w.detach() - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "diff {diff}");
        let held = muon.groups[0].buffer.get(0);
        assert!(held.equal(&buf), "the buffer holds the bf16 recurrence");
        assert_eq!(muon.groups[0].buffer.kind(), Kind::BFloat16);
    }
}
