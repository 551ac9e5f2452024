//! Half-split rotary embeddings (REFERENCE.md §3.2): `inv_freq_i = base^(−2i/hd)`, θ = t·inv_freq,
//! `[x1 cos + x2 sin, −x1 sin + x2 cos]`. Tables are computed in f32 as upstream, then cast to the
//! activation dtype, and cached per (length, dtype, device).

use tch::{Device, Kind, Tensor};

pub(crate) struct Rope {
    head_dim: usize,
    base: f64,
    cached: Option<(i64, Kind, Device, bool, Tensor, Tensor)>,
}

impl Rope {
    pub(crate) fn new(head_dim: usize, base: f64) -> Rope {
        Rope {
            head_dim,
            base,
            cached: None,
        }
    }

    /// `(cos, sin)`, each `[1, 1, T, hd/2]` in `kind` on `device`. `bf16_build`: as upstream's
    /// model after `.bfloat16()` (its `inv_freq` buffer converted): `inv_freq`, the positions
    /// (`arange` in bf16 rounds those above 256), their outer product and cos/sin all in bf16.
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
        let exponents =
            Tensor::arange_start_step(0, self.head_dim as i64, 2, opts) / self.head_dim as f64;
        // 1 / base^e in f32, like `1.0 / (base ** (arange / dim))` upstream.
        let inv_freq = Tensor::scalar_tensor(self.base, opts)
            .pow(&exponents)
            .reciprocal();
        let freqs = if bf16_build {
            // Upstream computes inv_freq when the module is built, on the CPU, then moves it.
            let cpu = (Kind::Float, Device::Cpu);
            let e =
                Tensor::arange_start_step(0, self.head_dim as i64, 2, cpu) / self.head_dim as f64;
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

    /// Rotates `x: [B, H, T, hd]` by the tables.
    pub(crate) fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let half = x.size().last().unwrap() / 2;
        let x1 = x.narrow(-1, 0, half);
        let x2 = x.narrow(-1, half, half);
        Tensor::cat(&[&x1 * cos + &x2 * sin, &x2 * cos - &x1 * sin], -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's bf16 build rounds positions (arange in bf16): 257 → 256, 1023 → 1024; the f32
    /// build keeps them distinct.
    #[test]
    fn bf16_built_tables_round_positions_like_upstream() {
        let mut rope = Rope::new(8, 10000.0);
        let row = |cos: &Tensor, t: i64| cos.get(0).get(0).get(t);
        let (cos, sin) = rope.tables(1024, Kind::BFloat16, Device::Cpu, true);
        assert_eq!(cos.kind(), Kind::BFloat16);
        assert!(row(&cos, 257).equal(&row(&cos, 256)) && row(&sin, 257).equal(&row(&sin, 256)));
        assert!(row(&cos, 1022).equal(&row(&cos, 1023)));
        assert!(!row(&cos, 255).equal(&row(&cos, 256)));
        let (cos32, _) = rope.tables(1024, Kind::BFloat16, Device::Cpu, false);
        assert!(!row(&cos32, 257).equal(&row(&cos32, 256)));
    }
}
