//! Muon (REFERENCE.md §3.7): Nesterov momentum, then the update orthogonalised by five
//! Newton–Schulz iterations in bf16, scaled by `√max(1, rows/cols)`, applied at `lr`.
//!
//! Matrices of one shape are orthogonalised together as a batch (`baddbmm`), so a 9-layer model
//! costs 3 batched NS runs per step instead of 54. With N ranks, parameter `i` is computed by rank
//! `i mod N` and the bf16 updates are shared through one SUM all-reduce, as upstream.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

use crate::collective::Collective;

/// The baseline's quintic coefficients.
pub const NS5_COEFFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// Orthogonalises a batch of matrices `g: [n, rows, cols]` (any float dtype) in bf16:
/// `X = G/(‖G‖_F + eps)` per matrix, transposed when rows > cols; `steps` times
/// `A = XXᵀ; B = bA + cA²; X = aX + BX`. Returns bf16 `[n, rows, cols]`.
pub fn newton_schulz5(g: &Tensor, steps: usize) -> Tensor {
    newton_schulz5_in(g, steps, Kind::BFloat16)
}

/// The same iteration in another dtype (tests compare bf16 against f64).
pub fn newton_schulz5_in(g: &Tensor, steps: usize, kind: Kind) -> Tensor {
    let (a, b, c) = NS5_COEFFS;
    let size = g.size();
    let (rows, cols) = (size[1], size[2]);
    let x = g.to_kind(kind);
    let norm = x.norm_scalaropt_dim(2, [1, 2], true);
    let mut x = x / (norm + 1e-7);
    let transposed = rows > cols;
    if transposed {
        x = x.transpose(1, 2);
    }
    for _ in 0..steps {
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
        })
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
                let g = Tensor::stack(&grads, 0);
                let _ = group.buffer.g_mul_scalar_(self.momentum).g_add_(&g);
                let g = if self.nesterov {
                    g + &group.buffer * self.momentum
                } else {
                    group.buffer.shallow_clone()
                };
                let u = newton_schulz5(&g, self.backend_steps) * group.scale;
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
}
