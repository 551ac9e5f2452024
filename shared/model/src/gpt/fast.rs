//! The fast formulation: the trunk of `gpt.rs` (same function, same parameters, same taps and
//! adapter sites) written for fewer passes over activation memory — on a GPU the eager step is
//! bound by memory traffic and kernel launches, not by the matmuls:
//!
//! - q, k and v come from one GEMM (their weights concatenated), plus the adapter's deltas;
//! - q/k RMSNorm, RoPE (whole heads, or partial: the first `rope_dims`) and the q gain, with v
//!   passed through → pgolf-kernels' `qkv_norm_rope` (its backward writes the whole d(qkv) at
//!   once, so no narrow/zero-fill/add passes);
//! - a block's entry, `resid_mix` then RMSNorm → `mix_norm` (returns the mixed stream too);
//! - the embedding's, the MLP's and the final RMSNorm → `rms_norm`; LN scale (`1/√(i+1)` on
//!   block i's two norms) is those kernels' output factor, not a pass of its own;
//! - XSA → `xsa` (reads SDPA's output in its own layout, writes the projection's input);
//! - SmearGate → `smear_gate`;
//! - relu² / LeakyReLU² → `relu_square`;
//! - each branch's output projection, its scale (`attn_scale`, `mlp_scale`) and the residual add
//!   are one GEMM: `x + s ⊙ (y Wᵀ) = addmm(x, y, (s ⊙ W)ᵀ)`, the scale folded into W's rows;
//! - the U-Net skips use `addcmul` (gated skips: `lerp`, as the literal);
//! - SmearGate v2, the attention output gates and the parallel lanes' mix are the shared ATen
//!   forms of `gpt/addons.rs`; in the parallel lanes each branch's scale is folded into its output
//!   projection, and lane 0's `resid_mix` and norm are one `mix_norm`.
//!
//! The head (with `1/c` folded into its weight) and the loss (the fused `softcap_cross_entropy`:
//! the `[N, V]` f32 logits and their gradient are never materialised) are `gpt.rs`'s
//! [`Gpt::head`] and [`Gpt::loss`]. On CUDA the ops run NVRTC-compiled kernels; on the CPU their
//! reference formulas in tch ops, so the formulation is testable here: in f32 it agrees with the
//! literal one to rounding (tested). RoPE tables are f32 (the literal formulation rounds them to
//! the compute kind), so on CUDA the two agree to bf16 rounding, not bit for bit.

use pgolf_kernels::ops::{
    mix_norm::mix_norm,
    qkv_norm_rope::qkv_norm_rope,
    relu_square::relu_square,
    rms_norm::{rms_norm, DEFAULT_EPS},
    smear_gate::smear_gate,
    xsa::xsa,
};
use tch::{Kind, Tensor};

use super::{Frame, Gpt, Lanes};
use crate::config::Activation;
use crate::docs::Documents;
use crate::hooks::{Hooks, Site};

/// The kernel ops fail only on misuse (shapes, kinds) or a broken CUDA set-up, both checked when
/// the formulation is chosen ([`Gpt::set_formulation`]); the model's API returns tensors, so a
/// failure here is a bug and panics with the op's message.
pub(super) fn must<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("fused kernels: {e:#}"))
}

impl Gpt {
    /// The fast trunk: the normed embedding (with the options of `gpt/addons.rs`), the U-Net of
    /// fast blocks, the final norm.
    pub(super) fn trunk_fast(
        &self,
        x: &Tensor,
        docs: Option<&Documents>,
        hooks: &mut Hooks,
    ) -> Tensor {
        let t = x.size()[1];
        // f32 [T, rd/2] tables, as the kernel reads them.
        let (cos, sin) = self
            .rope
            .borrow_mut()
            .tables(t, Kind::Float, x.device(), false);
        let (cos, sin) = (cos.view([t, -1]), sin.view([t, -1]));
        let embedded = self.smear_v2(self.embed_input(x, hooks), x);
        let normed = must(rms_norm(&embedded, DEFAULT_EPS, 1.0));
        let mut h = match &self.addons.smear_gate {
            Some(gate) => must(smear_gate(&normed, gate)),
            None => normed,
        };
        let ctx = Frame {
            x0: h.shallow_clone(),
            value_embed: self.value_embedding(x, hooks),
            cos,
            sin,
            docs,
        };
        h = self.unet(
            h,
            |i, lanes| match lanes {
                Lanes::One(h) => Lanes::One(self.block_fast(i, &h, &ctx, hooks)),
                Lanes::Two(l0, l1) => {
                    let [l0, l1] = self.parallel_block_fast(i, [&l0, &l1], &ctx, hooks);
                    Lanes::Two(l0, l1)
                }
            },
            |h, w, skip| h.addcmul(w, skip),
        );
        must(rms_norm(&h, DEFAULT_EPS, 1.0))
    }

    fn block_fast(&self, i: usize, x: &Tensor, ctx: &Frame, hooks: &mut Hooks) -> Tensor {
        let blk = &self.blocks[i];
        // LN scale as the norms' output factor (1 when off: the plain norm).
        let ln_scale = self.cfg.ln_scale_factor(i);
        let (x, n) = must(mix_norm(x, &ctx.x0, &blk.resid_mix, DEFAULT_EPS, ln_scale));
        let y = self.attention_fast(i, &self.norm_weight(i, 0, n), ctx, hooks);
        hooks.tap(|| format!("blocks.{i}.attn.proj.weight"), &y);
        let x =
            self.residual_projection(&x, &y, &blk.attn_proj, &blk.attn_scale, Site::O, i, hooks);
        let u = self.norm_weight(i, 1, must(rms_norm(&x, DEFAULT_EPS, ln_scale)));
        let act = self.mlp_act_fast(i, &u, hooks);
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

    /// Layer `i` in the parallel lanes, as the literal `parallel_block`: lane 0's `resid_mix`
    /// and norm in one `mix_norm`, lane 1's norm in one `rms_norm`, each branch's scale folded
    /// into its output projection, then the lanes' mix.
    fn parallel_block_fast(
        &self,
        i: usize,
        [lane0, lane1]: [&Tensor; 2],
        ctx: &Frame,
        hooks: &mut Hooks,
    ) -> [Tensor; 2] {
        let blk = &self.blocks[i];
        let ln_scale = self.cfg.ln_scale_factor(i);
        let (_, n) = must(mix_norm(
            lane0,
            &ctx.x0,
            &blk.resid_mix,
            DEFAULT_EPS,
            ln_scale,
        ));
        let y = self.attention_fast(i, &self.norm_weight(i, 0, n), ctx, hooks);
        hooks.tap(|| format!("blocks.{i}.attn.proj.weight"), &y);
        let a = self.scaled_projection(&y, &blk.attn_proj, &blk.attn_scale, Site::O, i, hooks);
        let u = self.norm_weight(i, 1, must(rms_norm(lane1, DEFAULT_EPS, ln_scale)));
        let act = self.mlp_act_fast(i, &u, hooks);
        let m = self.scaled_projection(&act, &blk.mlp_proj, &blk.mlp_scale, Site::MlpOut, i, hooks);
        self.mix_lanes(i, [lane0, lane1], &a, &m)
    }

    /// The MLP's activations `act(u W1ᵀ)` (the down projection's input, tapped).
    fn mlp_act_fast(&self, i: usize, u: &Tensor, hooks: &mut Hooks) -> Tensor {
        hooks.tap(|| format!("blocks.{i}.mlp.fc.weight"), u);
        let pre = self.project(u, &self.blocks[i].fc, Site::MlpIn, i, hooks);
        let slope = match self.cfg.activation {
            Activation::Relu2 => 0.0,
            Activation::LeakyRelu2(slope) => slope,
        };
        let act = must(relu_square(&pre, slope));
        hooks.tap(|| format!("blocks.{i}.mlp.proj.weight"), &act);
        act
    }

    /// `scale ⊙ (y Wᵀ + δ)` with the scale folded into W's rows.
    fn scaled_projection(
        &self,
        y: &Tensor,
        w: &Tensor,
        scale: &Tensor,
        site: Site,
        layer: usize,
        hooks: &Hooks,
    ) -> Tensor {
        let ck = self.compute;
        let w_scaled = (self.qat(w) * scale.unsqueeze(1)).to_kind(ck);
        let out = y.linear(&w_scaled, None::<Tensor>);
        match hooks.delta(site, layer, y) {
            Some(delta) => out + delta.to_kind(ck) * scale.to_kind(ck),
            None => out,
        }
    }

    /// `x + scale ⊙ (y Wᵀ + δ)` with the scale folded into W's rows and the residual as the GEMM's
    /// addend.
    #[allow(clippy::too_many_arguments)]
    fn residual_projection(
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
        let w_scaled = (self.qat(w) * scale.unsqueeze(1)).to_kind(ck);
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
    fn qkv_projection(&self, i: usize, u: &Tensor, hooks: &mut Hooks) -> Tensor {
        let ck = self.compute;
        let blk = &self.blocks[i];
        let (b, t, d) = u.size3().expect("attention input [B, T, d]");
        let kv = (self.cfg.num_kv_heads * self.cfg.head_dim()) as i64;
        for name in ["c_q", "c_k", "c_v"] {
            hooks.tap(|| format!("blocks.{i}.attn.{name}.weight"), u);
        }
        // Per-row fake quantization commutes with stacking rows.
        let w = self.matrix(&Tensor::cat(&[&blk.c_q, &blk.c_k, &blk.c_v], 0));
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

    /// Causal GQA attention of block `i` up to its output projection: `[B, T, d]`.
    fn attention_fast(&self, i: usize, u: &Tensor, ctx: &Frame, hooks: &mut Hooks) -> Tensor {
        let blk = &self.blocks[i];
        let (b, t, d) = u.size3().expect("attention input [B, T, d]");
        let qkv = self.qkv_projection(i, u, hooks);
        let hd = self.cfg.head_dim() as i64;
        let (q, k, mut v) = must(qkv_norm_rope(
            &qkv,
            &ctx.cos,
            &ctx.sin,
            &blk.q_gain,
            hd,
            DEFAULT_EPS,
        ));
        if let Some(ve) = self.layer_value_embedding(i, ctx.value_embed.as_ref()) {
            let shape = v.size();
            v = &v + ve.view(shape.as_slice()); // not `+=` (in place)
        }
        let y = self.causal_attention(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            ctx.docs,
        );
        // [B, T, H, hd] views of SDPA's [B, H, T, hd] output; XSA writes it contiguous.
        let y = y.transpose(1, 2);
        let y = match self.cfg.xsa(i) {
            true => must(xsa(&y, &v)),
            false => y,
        };
        self.attn_gate(i, u, y).reshape([b, t, d])
    }
}
