//! Adam (PyTorch's, no AMSGrad) over parameter groups with their own base LRs (REFERENCE.md
//! §3.6): `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)`. Moments live in the parameter's dtype (bf16 for
//! upstream's bf16 embedding), the arithmetic runs in f32. Optional decoupled weight decay
//! (`p ← p·(1 − lr·wd)`, AdamW style) per group.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

pub struct AdamGroup {
    pub name: String,
    pub params: Vec<Tensor>,
    pub base_lr: f64,
    pub weight_decay: f64,
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
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        tch::no_grad(|| {
            for group in &mut self.groups {
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
}
