//! Half-split rotary embeddings (REFERENCE.md §3.2): `inv_freq_i = base^(−2i/rd)`, θ = t·inv_freq,
//! `[x1 cos + x2 sin, −x1 sin + x2 cos]` over the first `rd` dims of each head (all of them unless
//! partial RoPE is on; the rest pass through). Tables are computed in f32 as upstream, then cast
//! to the activation dtype, and cached per (length, dtype, device).
//!
//! With `rope_ntk_len` = L (R0322's quirk: Rotary built with `train_seq_len` 1024), a window of
//! T > L positions uses base `base·(T/L)^(rd/(rd−2))`, so the tables depend on the window length.

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;

pub(crate) struct Rope {
    /// The rotated dims of each head.
    dims: usize,
    base: f64,
    ntk_len: Option<usize>,
    cached: Option<(i64, Kind, Device, bool, Tensor, Tensor)>,
}

impl Rope {
    pub(crate) fn new(cfg: &ModelConfig) -> Rope {
        Rope {
            dims: cfg.rope_dims(),
            base: cfg.rope_base,
            ntk_len: cfg.rope_ntk_len,
            cached: None,
        }
    }

    /// The base a window of `t` positions uses (rescaled past `ntk_len`).
    fn base_for(&self, t: i64) -> Option<f64> {
        let len = self.ntk_len? as f64;
        let rd = self.dims as f64;
        (t as f64 > len).then(|| self.base * (t as f64 / len).powf(rd / (rd - 2.0)))
    }

    /// `(cos, sin)`, each `[1, 1, T, rd/2]` in `kind` on `device`. `bf16_build`: as upstream's
    /// model after `.bfloat16()` (its `inv_freq` buffer converted): `inv_freq`, the positions
    /// (`arange` in bf16 rounds those above 256), their outer product and cos/sin all in bf16 —
    /// except for a rescaled window, whose `inv_freq` upstream recomputes in f32.
    pub(crate) fn tables(
        &mut self,
        t: i64,
        kind: Kind,
        device: Device,
        bf16_build: bool,
    ) -> (Tensor, Tensor) {
        if let Some((len, k, d, b, cos, sin)) = &self.cached {
            if (*len, *k, *d, *b) == (t, kind, device, bf16_build) {
                return (cos.shallow_clone(), sin.shallow_clone());
            }
        }
        let opts = (Kind::Float, device);
        let rescaled = self.base_for(t);
        let dims = self.dims as i64;
        let exponents = Tensor::arange_start_step(0, dims, 2, opts) / self.dims as f64;
        // 1 / base^e in f32, like `1.0 / (base ** (arange / dim))` upstream.
        let inv_freq = Tensor::scalar_tensor(rescaled.unwrap_or(self.base), opts)
            .pow(&exponents)
            .reciprocal();
        let freqs = if bf16_build && rescaled.is_none() {
            // Upstream computes inv_freq when the module is built, on the CPU, then moves it.
            let cpu = (Kind::Float, Device::Cpu);
            let e = Tensor::arange_start_step(0, dims, 2, cpu) / self.dims as f64;
            let inv_freq = Tensor::scalar_tensor(self.base, cpu).pow(&e).reciprocal();
            let bf16 = Kind::BFloat16;
            Tensor::arange(t, (bf16, device)).outer(&inv_freq.to_kind(bf16).to_device(device))
        } else {
            Tensor::arange(t, opts).outer(&inv_freq)
        };
        let cos = freqs.cos().to_kind(kind).view([1, 1, t, -1]);
        let sin = freqs.sin().to_kind(kind).view([1, 1, t, -1]);
        self.cached = Some((
            t,
            kind,
            device,
            bf16_build,
            cos.shallow_clone(),
            sin.shallow_clone(),
        ));
        (cos, sin)
    }

    /// Rotates the first `rd` dims of `x: [B, H, T, hd]` by the tables (`rd/2` = their last dim),
    /// passing the rest through.
    pub(crate) fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let hd = *x.size().last().unwrap();
        let half = *cos.size().last().unwrap();
        let x1 = x.narrow(-1, 0, half);
        let x2 = x.narrow(-1, half, half);
        let rotated = Tensor::cat(&[&x1 * cos + &x2 * sin, &x2 * cos - &x1 * sin], -1);
        match 2 * half == hd {
            true => rotated,
            false => Tensor::cat(&[rotated, x.narrow(-1, 2 * half, hd - 2 * half)], -1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's bf16 build rounds positions (arange in bf16): 257 → 256, 1023 → 1024; the f32
    /// build keeps them distinct.
    #[test]
    fn bf16_built_tables_round_positions_like_upstream() {
        let cfg = ModelConfig {
            model_dim: 64,
            num_heads: 8,
            ..Default::default()
        };
        let mut rope = Rope::new(&cfg);
        let row = |cos: &Tensor, t: i64| cos.get(0).get(0).get(t);
        let (cos, sin) = rope.tables(1024, Kind::BFloat16, Device::Cpu, true);
        assert_eq!(cos.kind(), Kind::BFloat16);
        assert!(row(&cos, 257).equal(&row(&cos, 256)) && row(&sin, 257).equal(&row(&sin, 256)));
        assert!(row(&cos, 1022).equal(&row(&cos, 1023)));
        assert!(!row(&cos, 255).equal(&row(&cos, 256)));
        let (cos32, _) = rope.tables(1024, Kind::BFloat16, Device::Cpu, false);
        assert!(!row(&cos32, 257).equal(&row(&cos32, 256)));
    }

    /// R0322's partial RoPE with the NTK rescale: 16 of 64 dims rotated, base rescaled by
    /// (T/1024)^(16/14) for a window longer than 1024, the tail passed through.
    #[test]
    fn partial_tables_rescale_past_the_built_length_and_pass_the_tail() {
        let cfg = ModelConfig {
            rope_dims: Some(16),
            rope_ntk_len: Some(1024),
            ..Default::default()
        };
        let mut rope = Rope::new(&cfg);
        let (cos, sin) = rope.tables(2048, Kind::Double, Device::Cpu, false);
        assert_eq!(cos.size(), [1, 1, 2048, 8]);
        let base = 10000.0 * 2f64.powf(16.0 / 14.0);
        let (t, i) = (1500, 3);
        let want = (t as f64 / base.powf(2.0 * i as f64 / 16.0)).cos();
        let got = cos.double_value(&[0, 0, t, i]);
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
        let (short, _) = rope.tables(1024, Kind::Double, Device::Cpu, false);
        let plain = (t as f64 / 10000f64.powf(2.0 * i as f64 / 16.0)).cos();
        let unscaled = (1000.0 / 10000f64.powf(0.375)).cos();
        assert!((short.double_value(&[0, 0, 1000, i]) - unscaled).abs() < 1e-3);
        assert!(
            (plain - want).abs() > 1e-3,
            "the rescale must change the angle"
        );
        let x = Tensor::randn([1, 2, 2048, 64], (Kind::Double, Device::Cpu));
        let y = Rope::apply(&x, &cos, &sin);
        assert!(y.narrow(-1, 16, 48).equal(&x.narrow(-1, 16, 48)));
        assert!(!y.narrow(-1, 0, 16).equal(&x.narrow(-1, 0, 16)));
    }
}
