//! The record stacks' architecture options (REFERENCE.md §5.6–5.7, §5.13; R0322's, R0405's,
//! R0427's and PR #2071's `train_gpt.py` are the ground truth for each formula): BigramHash,
//! SmearGate v1 and v2, the value embedding, XSA, late-QAT's fake quantization, the skip gates,
//! the parallel lanes' mixing and the attention output gates. Each is written once, here, and both
//! formulations call it; a fused kernel for one of them would be its fast form, tested against
//! this one.

use tch::{nn, Kind, Tensor};

use super::Gpt;
use crate::config::{AttnGate, FinalLane, InitScheme, ModelConfig};
use crate::hooks::Hooks;

/// A token table, its optional projection and its scalar scale (R0322's `BigramHashEmbedding` and
/// `ValueEmbedding`: `scale · proj(embed[ids])`).
pub(crate) struct ScaledTable {
    prefix: &'static str,
    pub(crate) embed: Tensor,
    pub(crate) proj: Option<Tensor>,
    pub(crate) scale: Tensor,
}

/// The tensors of the options that live outside the blocks.
#[derive(Default)]
pub(crate) struct Addons {
    /// `smear.gate` `[d]`.
    pub(crate) smear_gate: Option<Tensor>,
    /// `bigram.*`.
    pub(crate) bigram: Option<ScaledTable>,
    /// `ve_shared.*` and `ve_layer_scales.{k}` (`[1]` each).
    pub(crate) value_embed: Option<(ScaledTable, Vec<Tensor>)>,
    /// `skip_gates` `[num_skip_weights, d]`.
    pub(crate) skip_gates: Option<Tensor>,
    /// `parallel_post_lambdas` π `[L, 2, 2]`, `parallel_resid_lambdas` ρ `[L, 2]`.
    pub(crate) parallel: Option<(Tensor, Tensor)>,
    /// SmearGate v2's `smear_gate.weight` `[1, window]` and `smear_lambda` `[1]`.
    pub(crate) smear_v2: Option<(Tensor, Tensor)>,
}

impl Addons {
    /// Builds the options' variables with R0322's initialisation, registering each with `add` (in
    /// the order R0322's optimizer appends its projections to Muon's list: after the blocks).
    pub(crate) fn new(
        path: &nn::Path,
        cfg: &ModelConfig,
        add: &mut impl FnMut(String, Tensor) -> Tensor,
    ) -> Addons {
        let d = cfg.model_dim as i64;
        let smear_gate = cfg
            .smear_gate
            .then(|| add("smear.gate".into(), (path / "smear").zeros("gate", &[d])));
        let bigram = cfg.bigram.as_ref().map(|b| {
            let embed_init = nn::Init::Const(0.0);
            ScaledTable::new(
                path,
                cfg,
                "bigram",
                [b.buckets, b.dim],
                d,
                embed_init,
                0.05,
                add,
            )
        });
        let value_embed = cfg.value_embed.as_ref().map(|v| {
            let embed_init = nn::Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            };
            let kv = cfg.kv_dim() as i64;
            let table = ScaledTable::new(
                path,
                cfg,
                "ve_shared",
                [cfg.vocab_size, v.dim],
                kv,
                embed_init,
                0.1,
                add,
            );
            let scales = (0..v.layers.len())
                .map(|k| {
                    let t = (path / "ve_layer_scales").ones(&k.to_string(), &[1]);
                    add(format!("ve_layer_scales.{k}"), t)
                })
                .collect();
            (table, scales)
        });
        // R0427's order after the blocks: skip gates, the lanes' lambdas, SmearGate v2.
        let skip_gates = cfg.skip_gates.then(|| {
            let shape = [cfg.num_skip_weights() as i64, d];
            add("skip_gates".into(), path.zeros("skip_gates", &shape))
        });
        let parallel = cfg.parallel.as_ref().map(|_| {
            let l = cfg.num_layers as i64;
            let post = path.ones("parallel_post_lambdas", &[l, 2, 2]);
            let resid = path.var("parallel_resid_lambdas", &[l, 2], nn::Init::Const(1.1));
            (
                add("parallel_post_lambdas".into(), post),
                add("parallel_resid_lambdas".into(), resid),
            )
        });
        let smear_v2 = cfg.smear_gate_v2.as_ref().map(|s| {
            let w = (path / "smear_gate").zeros("weight", &[1, s.window as i64]);
            let lambda = path.zeros("smear_lambda", &[1]);
            (
                add("smear_gate.weight".into(), w),
                add("smear_lambda".into(), lambda),
            )
        });
        Addons {
            smear_gate,
            bigram,
            value_embed,
            skip_gates,
            parallel,
            smear_v2,
        }
    }
}

/// A block's attention gate weight `attn.attn_gate_w` `[H, n]` with its record's init: N(0, std²),
/// or zeros when std is 0 (R0427's sparse gate).
pub(crate) fn attn_gate_weight(attn: &nn::Path, cfg: &ModelConfig) -> Option<Tensor> {
    let gate = cfg.attn_gate.as_ref()?;
    let shape = [cfg.num_heads as i64, gate.width(cfg.model_dim) as i64];
    let std = match gate {
        AttnGate::Sparse { init_std, .. } | AttnGate::Headwise { init_std } => *init_std,
    };
    Some(match std > 0.0 {
        true => attn.randn("attn_gate_w", &shape, 0.0, std),
        false => attn.zeros("attn_gate_w", &shape),
    })
}

impl ScaledTable {
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: &nn::Path,
        cfg: &ModelConfig,
        prefix: &'static str,
        [rows, dim]: [usize; 2],
        width: i64,
        embed_init: nn::Init,
        scale: f64,
        add: &mut impl FnMut(String, Tensor) -> Tensor,
    ) -> ScaledTable {
        let p = path / prefix;
        let dim = dim as i64;
        let embed = (&p / "embed").var("weight", &[rows as i64, dim], embed_init);
        let embed = add(format!("{prefix}.embed.weight"), embed);
        // Zero-initialised in its constructor; R0322's `_init_weights` then makes it orthogonal
        // scaled by 1/√(2L) (it is a `….proj` Linear without `_zero_init`) when both dims ≥ 64.
        let proj = (dim != width).then(|| {
            let orthogonal = cfg.init != InitScheme::PytorchDefault && dim >= 64 && width >= 64;
            let init = match orthogonal {
                true => nn::Init::Orthogonal { gain: 1.0 },
                false => nn::Init::Const(0.0),
            };
            let w = (&p / "proj").var("weight", &[width, dim], init);
            // R0322 then shrinks it as a `….proj`; R0323's init leaves it.
            if orthogonal && cfg.init == InitScheme::Orthogonal {
                let shrink = 1.0 / (2.0 * cfg.num_layers as f64).sqrt();
                tch::no_grad(|| {
                    let _ = w.shallow_clone().g_mul_scalar_(shrink);
                });
            }
            add(format!("{prefix}.proj.weight"), w)
        });
        let scale = add(
            format!("{prefix}.scale"),
            p.var("scale", &[], nn::Init::Const(scale)),
        );
        ScaledTable {
            prefix,
            embed,
            proj,
            scale,
        }
    }

    /// `scale · proj(embed[ids])` in the compute kind; the projection's input is tapped.
    fn forward(&self, gpt: &Gpt, ids: &Tensor, hooks: &mut Hooks) -> Tensor {
        let ck = gpt.compute;
        let mut h = Tensor::embedding(&self.embed, ids, -1, false, false).to_kind(ck);
        if let Some(w) = &self.proj {
            hooks.tap(|| format!("{}.proj.weight", self.prefix), &h);
            h = h.linear(&gpt.matrix(w), None::<Tensor>);
        }
        h * self.scale.to_kind(ck)
    }
}

/// R0322's bigram hash of token ids `[B, T]`: position 0 → `B−1`; position t → `(36313·x_t) XOR
/// (27191·x_{t−1}) mod (B−1)`, in int32 arithmetic as the record computes it.
pub(crate) fn bigram_hash(ids: &Tensor, buckets: usize) -> Tensor {
    let m = buckets as i64 - 1;
    let t = ids.to_kind(Kind::Int);
    let len = t.size()[1];
    let first = t.narrow(1, 0, 1).full_like(m);
    if len == 1 {
        return first.to_kind(Kind::Int64);
    }
    let cur = t.narrow(1, 1, len - 1) * 36313;
    let prev = t.narrow(1, 0, len - 1) * 27191;
    let rest = cur.bitwise_xor_tensor(&prev).remainder(m);
    Tensor::cat(&[first, rest], 1).to_kind(Kind::Int64)
}

impl Gpt {
    /// The token embedding of ids `x` plus BigramHash's rows when on, in the compute kind.
    pub(crate) fn embed_input(&self, x: &Tensor, hooks: &mut Hooks) -> Tensor {
        let e = self.embed(x);
        match (&self.addons.bigram, &self.cfg.bigram) {
            (Some(table), Some(b)) => e + table.forward(self, &bigram_hash(x, b.buckets), hooks),
            _ => e,
        }
    }

    /// SmearGate v1 on the normed embedding (identity when off):
    /// `(1 − σ(g))⊙x_t + σ(g)⊙x_{t−1}`, with `x_{−1} = 0`.
    pub(crate) fn smear(&self, x: Tensor) -> Tensor {
        let Some(gate) = &self.addons.smear_gate else {
            return x;
        };
        let g = gate.to_kind(self.compute).sigmoid();
        let t = x.size()[1];
        let prev = Tensor::cat(&[x.narrow(1, 0, 1).zeros_like(), x.narrow(1, 0, t - 1)], 1);
        (1.0 - &g) * &x + g * prev
    }

    /// SmearGate v2 with the BOS mask on the raw embedding `x` of ids `ids` (identity when off):
    /// `x_t ← x_t + λ·σ(w·x_t[0:n])·x_{t−1}·[id_t ≠ bos]` for t ≥ 1 (R0427's `_forward_hidden`).
    pub(crate) fn smear_v2(&self, x: Tensor, ids: &Tensor) -> Tensor {
        let (Some((w, lambda)), Some(s)) = (&self.addons.smear_v2, &self.cfg.smear_gate_v2) else {
            return x;
        };
        let ck = self.compute;
        let t = x.size()[1];
        if t < 2 {
            return x;
        }
        let cur = x.narrow(1, 1, t - 1);
        let gate_in = cur.narrow(2, 0, s.window as i64);
        let g = lambda.to_kind(ck) * gate_in.linear(&w.to_kind(ck), None::<Tensor>).sigmoid();
        let not_bos = ids
            .narrow(1, 1, t - 1)
            .ne(s.bos_id as i64)
            .to_kind(ck)
            .unsqueeze(-1);
        let smeared = &cur + g * x.narrow(1, 0, t - 1) * not_bos;
        Tensor::cat(&[x.narrow(1, 0, 1), smeared], 1)
    }

    /// Decoder slot `j`'s skip merge into `h`: `h + w_j⊙skip` (by the formulation's `add`), or
    /// with skip gates `lerp(w_j⊙skip, h, σ(g_j))`.
    pub(crate) fn merge_skip(
        &self,
        j: usize,
        h: Tensor,
        skip: &Tensor,
        add: &impl Fn(Tensor, &Tensor, &Tensor) -> Tensor,
    ) -> Tensor {
        let w = self.skip_weights.get(j as i64).to_kind(self.compute);
        match &self.addons.skip_gates {
            Some(gates) => {
                let g = gates.get(j as i64).to_kind(self.compute).sigmoid();
                (&w * skip).lerp_tensor(&h, &g)
            }
            None => add(h, &w, skip),
        }
    }

    /// The parallel lanes' update of layer `i` from its two branch outputs `a` (attention) and
    /// `m` (MLP), both already scaled: `lane_k ← ρ[i,k]·lane_k + π[i,0,k]·a + π[i,1,k]·m`.
    pub(crate) fn mix_lanes(
        &self,
        i: usize,
        [lane0, lane1]: [&Tensor; 2],
        a: &Tensor,
        m: &Tensor,
    ) -> [Tensor; 2] {
        let (post, resid) = self
            .addons
            .parallel
            .as_ref()
            .expect("parallel lanes configured");
        let ck = self.compute;
        let (post, resid) = (
            post.get(i as i64).to_kind(ck),
            resid.get(i as i64).to_kind(ck),
        );
        let lane =
            |k: i64, x: &Tensor| resid.get(k) * x + post.get(0).get(k) * a + post.get(1).get(k) * m;
        [lane(0, lane0), lane(1, lane1)]
    }

    /// The hidden state the parallel lanes hand to the final norm (R0427's
    /// `_final_parallel_hidden`).
    pub(crate) fn final_lane(&self, lane0: Tensor, lane1: Tensor) -> Tensor {
        match self.cfg.parallel.as_ref().map(|p| p.final_lane) {
            Some(FinalLane::Attn) => lane0,
            Some(FinalLane::Mlp) => lane1,
            _ => (lane0 + lane1) * 0.5,
        }
    }

    /// Block `i`'s attention output gate on the heads' outputs `y` `[B, T, H, hd]` (after XSA),
    /// from its attention input `u` `[B, T, d]`: `y_h · σ(s·u[0:n]·w_hᵀ)`; `y` unchanged when off.
    pub(crate) fn attn_gate(&self, i: usize, u: &Tensor, y: Tensor) -> Tensor {
        let (Some(w), Some(gate)) = (&self.blocks[i].attn_gate, &self.cfg.attn_gate) else {
            return y;
        };
        let n = gate.width(self.cfg.model_dim) as i64;
        let z = u
            .narrow(2, 0, n)
            .linear(&w.to_kind(self.compute), None::<Tensor>);
        let g = match gate.scale() {
            1.0 => z,
            s => z * s,
        };
        y * g.sigmoid().unsqueeze(-1)
    }

    /// The shared value embedding of ids `x` (before its per-layer scale), when on.
    pub(crate) fn value_embedding(&self, x: &Tensor, hooks: &mut Hooks) -> Option<Tensor> {
        let (table, _) = self.addons.value_embed.as_ref()?;
        Some(table.forward(self, x, hooks))
    }

    /// Layer `i`'s share of the value embedding `ve` (`ve · ve_layer_scales[k]`), if it gets one.
    pub(crate) fn layer_value_embedding(&self, i: usize, ve: Option<&Tensor>) -> Option<Tensor> {
        let slot = self.cfg.value_embed_slot(i)?;
        let (_, scales) = self.addons.value_embed.as_ref()?;
        Some(ve? * scales[slot].to_kind(self.compute))
    }

    /// A Linear's weight as the forward pass uses it: itself, or while late QAT is on its per-row
    /// int6 fake quantization with a straight-through gradient (R0322's `CastedLinear`:
    /// `s = max(max|w_row|/31, 1/31)`, `q = clamp(round(w/s), −32, 31)·s`, `w + (q − w).detach()`;
    /// here in f32, before the cast to the compute kind, so that "off" is the unchanged weight).
    pub(crate) fn qat(&self, w: &Tensor) -> Tensor {
        if !self.fake_quant.get() {
            return w.shallow_clone();
        }
        let q = tch::no_grad(|| {
            let w32 = w.to_kind(Kind::Float);
            let scale = (w32.abs().amax([1], false) / 31.0)
                .clamp_min(1.0 / 31.0)
                .unsqueeze(1);
            ((&w32 / &scale).round().clamp(-32.0, 31.0) * scale).to_kind(w.kind())
        });
        w + (q - w).detach()
    }

    /// [`Gpt::qat`] in the compute kind.
    pub(crate) fn matrix(&self, w: &Tensor) -> Tensor {
        self.qat(w).to_kind(self.compute)
    }
}

/// XSA (R0322's `_xsa_efficient`): removes from each head's attention output `y` `[B, T, H, hd]`
/// its component along its kv head's normalised value `v` `[B, T, Hkv, hd]`.
pub(crate) fn xsa(y: &Tensor, v: &Tensor) -> Tensor {
    let (b, t, h, hd) = y.size4().expect("xsa: y is [B, T, H, hd]");
    let hkv = v.size()[2];
    let y = y.view([b, t, hkv, h / hkv, hd]);
    // F.normalize: v / max(‖v‖, 1e-12).
    let norm = v.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12);
    let vn = (v / norm).unsqueeze(-2);
    let along = (&y * &vn).sum_dim_intlist(&[-1i64][..], true, None::<Kind>) * vn;
    (y - along).view([b, t, h, hd])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_bigram_hash_is_r0322s() {
        let ids = Tensor::from_slice(&[5i64, 7, 1023, 0]).view([1, 4]);
        let got: Vec<i64> = Vec::try_from(bigram_hash(&ids, 2048).view([-1])).unwrap();
        let h = |cur: i64, prev: i64| ((36313 * cur) ^ (27191 * prev)) % 2047;
        assert_eq!(got, vec![2047, h(7, 5), h(1023, 7), h(0, 1023)]);
    }

    #[test]
    fn xsa_leaves_outputs_orthogonal_to_their_value() {
        let y = Tensor::randn([2, 3, 4, 8], (Kind::Double, Device::Cpu));
        let v = Tensor::randn([2, 3, 2, 8], (Kind::Double, Device::Cpu));
        let out = xsa(&y, &v).view([2, 3, 2, 2, 8]);
        let dots = (out * v.unsqueeze(3)).sum_dim_intlist(&[-1i64][..], false, None::<Kind>);
        assert!(dots.abs().max().double_value(&[]) < 1e-12);
        // A hand case: y = (1, 1), v = (2, 0) → y − (y·v̂)v̂ = (0, 1).
        let y = Tensor::from_slice(&[1.0f64, 1.0]).view([1, 1, 1, 2]);
        let v = Tensor::from_slice(&[2.0f64, 0.0]).view([1, 1, 1, 2]);
        let got: Vec<f64> = Vec::try_from(xsa(&y, &v).view([-1])).unwrap();
        assert_eq!(got, vec![0.0, 1.0]);
    }
}
