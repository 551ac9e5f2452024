//! The same blocks as `gpt.rs`, formulated for fewer passes over activation memory (on a GPU the
//! eager step is bound by memory traffic and kernel launches, not by the matmuls):
//!
//! - q, k and v come from one GEMM (their weights concatenated); RMSNorm and RoPE run once over
//!   the q and k heads together, and the per-head q gain is folded into the RoPE tables;
//! - RoPE is `x·C + rotate_half(x)·S` with `C = [cos, cos]`, `S = [sin, −sin]` (3 kernels, not 7);
//! - each branch's output projection, its scale (`attn_scale`, `mlp_scale`) and the residual add
//!   are one GEMM: `x + s ⊙ (y Wᵀ) = addmm(x, y, (s ⊙ W)ᵀ)`, the scale folded into W's rows;
//! - `resid_mix` and the U-Net skips use `addcmul`; the soft-cap's `1/c` is folded into the head.
//!
//! In f32 it agrees with the literal version to rounding (tested); taps and adapters behave the same.

use tch::{Kind, Tensor};

use super::{rms, Gpt};
use crate::hooks::{Hooks, Site};

impl Gpt {
    pub(super) fn forward_fused(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        hooks: &mut Hooks,
    ) -> Tensor {
        let ck = self.compute;
        let t = x.size()[1];
        // [1, T, 1, hd] tables for activations laid out [B, T, heads, hd].
        let c = Tensor::cat(&[cos, cos], -1).view([1, t, 1, -1]);
        let s = Tensor::cat(&[sin, &(-sin)], -1).view([1, t, 1, -1]);
        let mut h = rms(&Tensor::embedding(&self.tok_emb, x, -1, false, false).to_kind(ck));
        let x0 = h.shallow_clone();
        h = self.unet(
            h,
            |i, h| self.block_fused(i, h, &x0, &c, &s, hooks),
            |h, w, skip| h.addcmul(w, skip),
        );
        let h = rms(&h);
        let (head_name, head) = match &self.lm_head {
            Some(w) => ("lm_head.weight", w),
            None => ("tok_emb.weight", &self.tok_emb),
        };
        hooks.tap(|| head_name.to_string(), &h);
        let cap = self.cfg.logit_softcap;
        let mut z = h
            .linear(&(head / cap).to_kind(ck), None::<Tensor>)
            .to_kind(Kind::Float);
        if let Some(delta) = hooks.delta(Site::Head, self.cfg.num_layers, &h) {
            z = &z + delta.to_kind(Kind::Float) / cap; // not `+=`: that is in place, and autograd saved z
        }
        z.tanh() * cap
    }

    fn block_fused(
        &self,
        i: usize,
        x: &Tensor,
        x0: &Tensor,
        c: &Tensor,
        s: &Tensor,
        hooks: &mut Hooks,
    ) -> Tensor {
        let ck = self.compute;
        let blk = &self.blocks[i];
        let mix = blk.resid_mix.to_kind(ck);
        let x = (x * mix.get(0)).addcmul(&mix.get(1), x0);
        let y = self.attention_fused(i, &rms(&x), c, s, hooks);
        hooks.tap(|| format!("blocks.{i}.attn.proj.weight"), &y);
        let x =
            self.residual_projection(&x, &y, &blk.attn_proj, &blk.attn_scale, Site::O, i, hooks);
        let u = rms(&x);
        hooks.tap(|| format!("blocks.{i}.mlp.fc.weight"), &u);
        let act = self.activation(&self.project(&u, &blk.fc, Site::MlpIn, i, hooks));
        hooks.tap(|| format!("blocks.{i}.mlp.proj.weight"), &act);
        self.residual_projection(
            &x,
            &act,
            &blk.mlp_proj,
            &blk.mlp_scale,
            Site::MlpOut,
            i,
            hooks,
        )
    }

    /// `x + scale ⊙ (y Wᵀ + δ)` with the scale folded into W's rows and the residual as the GEMM's
    /// addend.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn residual_projection(
        &self,
        x: &Tensor,
        y: &Tensor,
        w: &Tensor,
        scale: &Tensor,
        site: Site,
        layer: usize,
        hooks: &Hooks,
    ) -> Tensor {
        let ck = self.compute;
        let size = x.size();
        let d = size[2];
        let inner = *y.size().last().expect("projection input has a last dim");
        let w_scaled = (w * scale.unsqueeze(1)).to_kind(ck);
        let out = x
            .view([-1, d])
            .addmm(&y.reshape([-1, inner]), &w_scaled.tr())
            .view(size.as_slice());
        match hooks.delta(site, layer, y) {
            Some(delta) => out + delta.to_kind(ck) * scale.to_kind(ck),
            None => out,
        }
    }

    /// q, k and v of block `i` from one GEMM on the concatenated weights, plus the adapter's
    /// deltas: `[B, T, d + 2·kv]` (q heads, k heads, v heads). Taps see `u` for each name.
    pub(super) fn qkv_projection(&self, i: usize, u: &Tensor, hooks: &mut Hooks) -> Tensor {
        let ck = self.compute;
        let blk = &self.blocks[i];
        let (b, t, d) = u.size3().expect("attention input [B, T, d]");
        let kv = (self.cfg.num_kv_heads * self.cfg.head_dim()) as i64;
        for name in ["c_q", "c_k", "c_v"] {
            hooks.tap(|| format!("blocks.{i}.attn.{name}.weight"), u);
        }
        let w = Tensor::cat(&[&blk.c_q, &blk.c_k, &blk.c_v], 0).to_kind(ck);
        let qkv = u.linear(&w, None::<Tensor>);
        if hooks.adapter.is_none() {
            return qkv;
        }
        let deltas = [(Site::Q, d), (Site::K, kv), (Site::V, kv)].map(|(site, width)| {
            hooks
                .delta(site, i, u)
                .map(|t| t.to_kind(ck))
                .unwrap_or_else(|| Tensor::zeros([b, t, width], (ck, u.device())))
        });
        qkv + Tensor::cat(&deltas, 2) // not `+=` (in place)
    }

    /// Causal GQA attention of block `i` up to (not including) its output projection: `[B, T, d]`.
    fn attention_fused(
        &self,
        i: usize,
        u: &Tensor,
        c: &Tensor,
        s: &Tensor,
        hooks: &mut Hooks,
    ) -> Tensor {
        let ck = self.compute;
        let blk = &self.blocks[i];
        let (b, t, d) = u.size3().expect("attention input [B, T, d]");
        let (h, hkv, hd) = (
            self.cfg.num_heads as i64,
            self.cfg.num_kv_heads as i64,
            self.cfg.head_dim() as i64,
        );
        let kv = hkv * hd;
        let qkv = self.qkv_projection(i, u, hooks);
        let qk = qkv.narrow(2, 0, d + kv).view([b, t, h + hkv, hd]);
        let v = qkv
            .narrow(2, d + kv, kv)
            .view([b, t, hkv, hd])
            .transpose(1, 2);
        // Per-head gains: q_gain for the q heads, 1 for the k heads, folded into the tables.
        let gain = Tensor::cat(
            &[
                blk.q_gain.shallow_clone(),
                Tensor::ones([hkv], (Kind::Float, u.device())),
            ],
            0,
        )
        .to_kind(ck)
        .view([1, 1, h + hkv, 1]);
        let qk = rms(&qk);
        let half = hd / 2;
        let rotated = Tensor::cat(&[qk.narrow(-1, half, half), qk.narrow(-1, 0, half)], -1);
        let qk = (&qk * (c * &gain)).addcmul(&rotated, &(s * &gain));
        let q = qk.narrow(2, 0, h).transpose(1, 2);
        let k = qk.narrow(2, h, hkv).transpose(1, 2);
        let y = self.causal_attention(&q, &k, &v);
        y.transpose(1, 2).reshape([b, t, d])
    }
}
