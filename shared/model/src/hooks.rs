//! What a caller can attach to a forward pass: taps that see every linear layer's input (GPTQ
//! calibration collects `XᵀX` from them) and an adapter whose deltas are added to projection
//! outputs (LoRA test-time training). Both default to none, and then cost nothing.

use tch::Tensor;

/// A projection an adapter can add a delta to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// `attn.c_q` output, before the head reshape.
    Q,
    /// `attn.c_k` output.
    K,
    /// `attn.c_v` output.
    V,
    /// `attn.proj` output (before `attn_scale`).
    O,
    /// `mlp.fc` output (before the activation).
    MlpIn,
    /// `mlp.proj` output (before `mlp_scale`).
    MlpOut,
    /// The output head: added to the logits before the soft-cap. Its `layer` is `num_layers`.
    Head,
}

/// Low-rank (or any) corrections to projections, e.g. per-document LoRA.
pub trait Adapter {
    /// The delta for `site` of block `layer` given that projection's input `[B, T, in]` (the
    /// compute dtype); `None` leaves the projection alone. The delta must broadcast to the
    /// projection's output `[B, T, out]`; it is added in the compute dtype (f32 for `Head`).
    fn delta(&self, site: Site, layer: usize, input: &Tensor) -> Option<Tensor>;
}

/// A tap: called with a linear layer's weight name and its input `[N, in]`.
pub type Tap<'a> = dyn FnMut(&str, &Tensor) + 'a;

/// Optional observers and adapters for one forward pass.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called with (weight name, that linear's input `[N, in]` in the compute dtype) for every
    /// linear layer: `blocks.{i}.attn.c_q.weight`, `c_k`, `c_v` (the same input, one call per
    /// name), `attn.proj`, `mlp.fc`, `mlp.proj`, and the head (`tok_emb.weight` when tied, else
    /// `lm_head.weight`) with the final-norm output.
    pub taps: Option<&'a mut Tap<'a>>,
    pub adapter: Option<&'a dyn Adapter>,
}

impl<'a> Hooks<'a> {
    pub fn none() -> Hooks<'static> {
        Hooks {
            taps: None,
            adapter: None,
        }
    }

    pub fn with_taps(taps: &'a mut Tap<'a>) -> Hooks<'a> {
        Hooks {
            taps: Some(taps),
            adapter: None,
        }
    }

    pub fn with_adapter(adapter: &'a dyn Adapter) -> Hooks<'a> {
        Hooks {
            taps: None,
            adapter: Some(adapter),
        }
    }

    /// Shows `input` (any leading shape) to the taps as `[N, in]`.
    pub(crate) fn tap(&mut self, name: impl FnOnce() -> String, input: &Tensor) {
        if let Some(taps) = self.taps.as_mut() {
            let width = *input.size().last().expect("tapped input has a last dim");
            taps(&name(), &input.reshape([-1, width]));
        }
    }

    pub(crate) fn delta(&self, site: Site, layer: usize, input: &Tensor) -> Option<Tensor> {
        self.adapter.and_then(|a| a.delta(site, layer, input))
    }
}
