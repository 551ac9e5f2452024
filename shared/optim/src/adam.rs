//! Adam (PyTorch's, no AMSGrad) over parameter groups with their own base LRs (REFERENCE.md
//! §3.6): `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)`. Moments live in the parameter's dtype (bf16 for
//! upstream's bf16 embedding), the arithmetic runs in f32. Each group has its own β1, β2 and
//! optional decoupled weight decay (`p ← p·(1 − lr·wd)`, AdamW style); the step count, hence
//! `t` in the bias corrections, is shared (every group steps every time, as the records').

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

pub struct AdamGroup {
    pub name: String,
    pub params: Vec<Tensor>,
    pub base_lr: f64,
    pub weight_decay: f64,
    /// This group's (β1, β2); `None` = the optimizer's.
    pub betas: Option<(f64, f64)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamGroup {
    pub fn new(name: &str, params: Vec<Tensor>, base_lr: f64) -> AdamGroup {
        let m = params.iter().map(|p| p.zeros_like()).collect();
        let v = params.iter().map(|p| p.zeros_like()).collect();
        AdamGroup {
            name: name.to_string(),
            params,
            base_lr,
            weight_decay: 0.0,
            betas: None,
            m,
            v,
        }
    }
}

pub struct Adam {
    pub groups: Vec<AdamGroup>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    steps: u64,
}

impl Adam {
    pub fn new(groups: Vec<AdamGroup>, beta1: f64, beta2: f64, eps: f64) -> Adam {
        Adam {
            groups,
            beta1,
            beta2,
            eps,
            steps: 0,
        }
    }

    /// One step of every group at `base_lr · lr_mul`.
    pub fn step(&mut self, lr_mul: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let eps = self.eps;
        let default_betas = (self.beta1, self.beta2);
        tch::no_grad(|| {
            for group in &mut self.groups {
                let (b1, b2) = group.betas.unwrap_or(default_betas);
                let bias1 = 1.0 - b1.powi(t);
                let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
                let lr = group.base_lr * lr_mul;
                for (i, p) in group.params.iter().enumerate() {
                    let g = p.grad();
                    if !g.defined() {
                        bail!("Adam group {}: parameter {i} has no gradient", group.name);
                    }
                    let mut p = p.shallow_clone();
                    if group.weight_decay > 0.0 {
                        let _ = p.g_mul_scalar_(1.0 - lr * group.weight_decay);
                    }
                    if p.kind() == Kind::Float {
                        let (m, v) = (&mut group.m[i], &mut group.v[i]);
                        let _ = m.lerp_(&g, 1.0 - b1);
                        let _ = v.g_mul_scalar_(b2).addcmul_(&(&g * (1.0 - b2)), &g);
                        let denom = v.sqrt() / bias2_sqrt + eps;
                        let _ = p.g_sub_(&(&*m / denom * (lr / bias1)));
                    } else {
                        // Low-precision storage: do the arithmetic in f32 and round once.
                        let g = g.to_kind(Kind::Float);
                        let m = group.m[i].to_kind(Kind::Float).lerp(&g, 1.0 - b1);
                        let v = group.v[i].to_kind(Kind::Float) * b2 + &g * &g * (1.0 - b2);
                        let denom = v.sqrt() / bias2_sqrt + eps;
                        let new_p = p.to_kind(Kind::Float) - &m / denom * (lr / bias1);
                        group.m[i].copy_(&m);
                        group.v[i].copy_(&v);
                        p.copy_(&new_p);
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Two steps against the closed form, in f32 and with bf16 storage.
    #[test]
    fn two_steps_match_the_closed_form() {
        for kind in [Kind::Float, Kind::BFloat16] {
            let p0 = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).to_kind(kind);
            let p = p0.copy().set_requires_grad(true);
            let mut adam = Adam::new(
                vec![AdamGroup::new("x", vec![p.shallow_clone()], 0.1)],
                0.9,
                0.95,
                1e-8,
            );
            let grads = [
                Tensor::from_slice(&[0.3f32, -1.0, 2.0]),
                Tensor::from_slice(&[-0.1f32, 0.5, 1.0]),
            ];
            let (mut m, mut v, mut expect) =
                (vec![0f64; 3], vec![0f64; 3], vec![1.0f64, -2.0, 0.5]);
            for (step, g) in grads.iter().enumerate() {
                let mut pg = p.grad();
                if pg.defined() {
                    let _ = pg.zero_();
                }
                (&p * g.to_kind(kind)).sum(Kind::Float).backward();
                adam.step(0.5).unwrap();
                let t = step as i32 + 1;
                for j in 0..3 {
                    let gj = g.double_value(&[j as i64]);
                    m[j] = 0.9 * m[j] + 0.1 * gj;
                    v[j] = 0.95 * v[j] + 0.05 * gj * gj;
                    let denom = (v[j] / (1.0 - 0.95f64.powi(t))).sqrt() + 1e-8;
                    expect[j] -= 0.05 / (1.0 - 0.9f64.powi(t)) * m[j] / denom;
                }
            }
            let tol = if kind == Kind::Float { 1e-6 } else { 2e-2 };
            for (j, want) in expect.iter().enumerate() {
                let got = p.double_value(&[j as i64]);
                assert!((got - want).abs() < tol, "{kind:?} [{j}]: {got} vs {want}");
            }
            assert_eq!(p.kind(), kind);
            let _ = Device::Cpu;
        }
    }

    #[test]
    fn a_parameter_without_gradient_is_an_error() {
        let p = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let mut adam = Adam::new(
            vec![AdamGroup::new("scalars", vec![p], 0.1)],
            0.9,
            0.95,
            1e-8,
        );
        assert!(format!("{:#}", adam.step(1.0).unwrap_err())
            .contains("scalars: parameter 0 has no gradient"));
    }

    /// Two groups with their own β and decay, three steps, against the AdamW recurrence in f64
    /// (torch.optim.AdamW: decay first, then the bias-corrected step), one group per β pair.
    #[test]
    fn each_group_steps_with_its_own_betas_and_decay() {
        let init = [[0.5f64, -1.5], [2.0, 0.25]];
        let ps: Vec<Tensor> = init
            .iter()
            .map(|v| {
                Tensor::from_slice(v)
                    .to_kind(Kind::Float)
                    .set_requires_grad(true)
            })
            .collect();
        let mut a = AdamGroup::new("tok_emb", vec![ps[0].shallow_clone()], 0.03);
        a.weight_decay = 0.085;
        let mut b = AdamGroup::new("scalars", vec![ps[1].shallow_clone()], 0.02);
        b.weight_decay = 0.02;
        b.betas = Some((0.8, 0.99));
        let mut adam = Adam::new(vec![a, b], 0.9, 0.95, 1e-8);
        let grads = [[0.3f64, -2.0], [1.0, 0.1], [-0.5, 0.7]];
        let settings = [(0.9, 0.95, 0.085, 0.03), (0.8, 0.99, 0.02, 0.02)];
        let mut want: Vec<Vec<f64>> = init.iter().map(|v| v.to_vec()).collect();
        let mut m = vec![vec![0f64; 2]; 2];
        let mut v = vec![vec![0f64; 2]; 2];
        for (step, g) in grads.iter().enumerate() {
            for p in &ps {
                p.shallow_clone().zero_grad();
                (p * Tensor::from_slice(g).to_kind(Kind::Float))
                    .sum(Kind::Float)
                    .backward();
            }
            adam.step(0.5).unwrap();
            let t = step as i32 + 1;
            for (k, &(b1, b2, wd, base)) in settings.iter().enumerate() {
                let lr = base * 0.5;
                for j in 0..2 {
                    want[k][j] *= 1.0 - lr * wd;
                    m[k][j] = b1 * m[k][j] + (1.0 - b1) * g[j];
                    v[k][j] = b2 * v[k][j] + (1.0 - b2) * g[j] * g[j];
                    let denom = (v[k][j] / (1.0 - b2.powi(t))).sqrt() + 1e-8;
                    want[k][j] -= lr / (1.0 - b1.powi(t)) * m[k][j] / denom;
                }
            }
        }
        for (k, p) in ps.iter().enumerate() {
            for (j, want) in want[k].iter().enumerate() {
                let got = p.double_value(&[j as i64]);
                assert!((got - want).abs() < 1e-6, "group {k}[{j}]: {got} vs {want}");
            }
        }
    }
}
