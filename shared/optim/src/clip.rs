//! Global gradient-norm clipping (as `torch.nn.utils.clip_grad_norm_`): scale every gradient by
//! `min(1, max_norm / (‖g‖₂ + 1e-6))`, all on the device (no host sync).

use tch::{Kind, Tensor};

/// Clips in place; returns the total norm before clipping (a 0-dim f32 tensor).
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Tensor {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        let squares: Vec<Tensor> = grads
            .iter()
            .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
            .collect();
        let total = Tensor::stack(&squares, 0).sum(Kind::Float).sqrt();
        let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        for g in &grads {
            let _ = g.shallow_clone().g_mul_(&coef.to_kind(g.kind()));
        }
        total
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_to_the_max_norm_only_when_above_it() {
        let p = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        (&p * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let total = clip_grad_norm(&[p.shallow_clone()], 1.0);
        assert!((total.double_value(&[]) - 5.0).abs() < 1e-6);
        assert!((p.grad().double_value(&[0]) - 0.6).abs() < 1e-5);
        let total = clip_grad_norm(&[p.shallow_clone()], 10.0);
        assert!((total.double_value(&[]) - 1.0).abs() < 1e-5);
        assert!((p.grad().double_value(&[1]) - 0.8).abs() < 1e-5);
    }
}
