//! The fused formulation of `fused.rs` with its memory-bound op chains replaced by the fused ops
//! of `pgolf-kernels` (one pass over the activations each way, hand-written backward):
//!
//! - a block's entry, `resid_mix` then RMSNorm → `mix_norm` (returns the mixed stream too);
//! - q/k RMSNorm, RoPE and the q gain, with v passed through → `qkv_norm_rope` (its backward
//!   writes the whole d(qkv) at once, so no narrow/zero-fill/add passes);
//! - the embedding's, the MLP's and the final RMSNorm → `rms_norm`;
//! - relu² / LeakyReLU² → `relu_square`;
//! - soft-cap and cross-entropy → `softcap_cross_entropy` ([`Gpt::loss`] only: the `[N, V]` f32
//!   logits and their gradient are never materialised).
//!
//! The GEMMs, SDPA and the residual projections (scale and residual folded into one GEMM) are
//! fused.rs's. On CUDA the ops run NVRTC-compiled kernels; on the CPU their reference formulas in
//! tch ops, so the formulation is testable here. RoPE tables are f32 (fused.rs rounds them to the
//! compute kind), so on CUDA the two formulations agree to bf16 rounding, not bit for bit.

use pgolf_kernels::ops::{
    mix_norm::mix_norm,
    qkv_norm_rope::qkv_norm_rope,
    relu_square::relu_square,
    rms_norm::{rms_norm, DEFAULT_EPS},
    softcap_cross_entropy::softcap_cross_entropy,
};
use tch::{Kind, Tensor};

use super::Gpt;
use crate::config::Activation;
use crate::hooks::{Hooks, Site};

/// The kernel ops fail only on misuse (shapes, kinds) or a broken CUDA set-up, both checked when
/// the formulation is chosen ([`Gpt::set_kernels`]); the model's API returns tensors, so a failure
/// here is a bug and panics with the op's message.
fn must<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("fused kernels: {e:#}"))
}

impl Gpt {
    /// Soft-capped f32 logits `[B, T, V]`.
    pub(super) fn forward_kernels(&self, x: &Tensor, hooks: &mut Hooks) -> Tensor {
        let cap = self.cfg.logit_softcap;
        self.head_kernels(x, hooks).to_kind(Kind::Float).tanh() * cap
    }

    /// Mean cross-entropy of the soft-capped logits, through the fused loss.
    pub(super) fn loss_kernels(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let v = self.cfg.vocab_size as i64;
        let z = self.head_kernels(x, &mut Hooks::default());
        let nll = must(softcap_cross_entropy(
            &z.view([-1, v]),
            &y.view([-1]),
            self.cfg.logit_softcap,
        ));
        nll.mean(Kind::Float)
    }

    /// The head GEMM's output before the soft-cap, `z = h (W/c)ᵀ` in the compute kind: the
    /// soft-capped logits are `c·tanh(z)`.
    fn head_kernels(&self, x: &Tensor, hooks: &mut Hooks) -> Tensor {
        let ck = self.compute;
        let t = x.size()[1];
        // f32 [T, hd/2] tables, as the kernel reads them.
        let (cos, sin) = self
            .rope
            .borrow_mut()
            .tables(t, Kind::Float, x.device(), false);
        let (cos, sin) = (cos.view([t, -1]), sin.view([t, -1]));
        let emb = Tensor::embedding(&self.tok_emb, x, -1, false, false).to_kind(ck);
        let mut h = must(rms_norm(&emb, DEFAULT_EPS));
        let x0 = h.shallow_clone();
        h = self.unet(
            h,
            |i, h| self.block_kernels(i, h, &x0, &cos, &sin, hooks),
            |h, w, skip| h.addcmul(w, skip),
        );
        let h = must(rms_norm(&h, DEFAULT_EPS));
        let (head_name, head) = match &self.lm_head {
            Some(w) => ("lm_head.weight", w),
            None => ("tok_emb.weight", &self.tok_emb),
        };
        hooks.tap(|| head_name.to_string(), &h);
        let cap = self.cfg.logit_softcap;
        let z = h.linear(&(head / cap).to_kind(ck), None::<Tensor>);
        match hooks.delta(Site::Head, self.cfg.num_layers, &h) {
            Some(delta) => z + (delta / cap).to_kind(ck),
            None => z,
        }
    }

    fn block_kernels(
        &self,
        i: usize,
        x: &Tensor,
        x0: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        hooks: &mut Hooks,
    ) -> Tensor {
        let blk = &self.blocks[i];
        let (x, n) = must(mix_norm(x, x0, &blk.resid_mix, DEFAULT_EPS));
        let y = self.attention_kernels(i, &n, cos, sin, hooks);
        hooks.tap(|| format!("blocks.{i}.attn.proj.weight"), &y);
        let x =
            self.residual_projection(&x, &y, &blk.attn_proj, &blk.attn_scale, Site::O, i, hooks);
        let u = must(rms_norm(&x, DEFAULT_EPS));
        hooks.tap(|| format!("blocks.{i}.mlp.fc.weight"), &u);
        let pre = self.project(&u, &blk.fc, Site::MlpIn, i, hooks);
        let slope = match self.cfg.activation {
            Activation::Relu2 => 0.0,
            Activation::LeakyRelu2(slope) => slope,
        };
        let act = must(relu_square(&pre, slope));
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

    /// Causal GQA attention of block `i` up to its output projection: `[B, T, d]`.
    fn attention_kernels(
        &self,
        i: usize,
        u: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        hooks: &mut Hooks,
    ) -> Tensor {
        let blk = &self.blocks[i];
        let (b, t, d) = u.size3().expect("attention input [B, T, d]");
        let qkv = self.qkv_projection(i, u, hooks);
        let (q, k, v) = must(qkv_norm_rope(&qkv, cos, sin, &blk.q_gain, DEFAULT_EPS));
        let y = self.causal_attention(&q.transpose(1, 2), &k.transpose(1, 2), &v.transpose(1, 2));
        y.transpose(1, 2).reshape([b, t, d])
    }
}
