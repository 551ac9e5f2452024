//! Half-split rotary embeddings (REFERENCE.md §3.2): `inv_freq_i = base^(−2i/hd)`, θ = t·inv_freq,
//! `[x1 cos + x2 sin, −x1 sin + x2 cos]`. Tables are computed in f32 as upstream, then cast to the
//! activation dtype, and cached per (length, dtype, device).

use tch::{Device, Kind, Tensor};

pub(crate) struct Rope {
    head_dim: usize,
    base: f64,
    cached: Option<(i64, Kind, Device, Tensor, Tensor)>,
}

impl Rope {
    pub(crate) fn new(head_dim: usize, base: f64) -> Rope {
        Rope {
            head_dim,
            base,
            cached: None,
        }
    }

    /// `(cos, sin)`, each `[1, 1, T, hd/2]` in `kind` on `device`.
    pub(crate) fn tables(&mut self, t: i64, kind: Kind, device: Device) -> (Tensor, Tensor) {
        if let Some((len, k, d, cos, sin)) = &self.cached {
            if (*len, *k, *d) == (t, kind, device) {
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
        let freqs = Tensor::arange(t, opts).outer(&inv_freq);
        let cos = freqs.cos().to_kind(kind).view([1, 1, t, -1]);
        let sin = freqs.sin().to_kind(kind).view([1, 1, t, -1]);
        self.cached = Some((t, kind, device, cos.shallow_clone(), sin.shallow_clone()));
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
