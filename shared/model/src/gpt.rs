//! The baseline GPT (REFERENCE.md §3.2–3.5): tied embedding, weightless RMSNorm, GQA attention
//! with q/k RMSNorm, half-split RoPE and a per-head q gain, relu² MLP, `resid_mix` with the
//! embedding x0, U-Net skips, zero-initialised output projections and a soft-capped fp32 head.
//!
//! Weights are kept in fp32 (the embedding may be bf16, as upstream) and cast to the compute
//! dtype at each matmul, as upstream's `CastedLinear` under bf16 autocast: f32 on the CPU (exact
//! comparisons with the reference), bf16 on CUDA. The logits are always fp32.
//!
//! Two formulations of the same function ([`Formulation`]): the literal one in this file, the
//! readable oracle, and the fast one of `gpt/fast.rs` (fused GEMMs and pgolf-kernels' fused ops).
//! The U-Net, the head and the loss are written once, here, for both.

use anyhow::{Context, Result};
use pgolf_kernels::ops::softcap_cross_entropy::softcap_cross_entropy;
use std::cell::{Cell, RefCell};
use tch::{nn, Kind, Tensor};

use crate::config::{Activation, InitScheme, ModelConfig};
use crate::docs::{self, Documents};
use crate::hooks::{Hooks, Site};
use crate::rope::Rope;

mod addons;
mod fast;
use addons::{attn_gate_weight, xsa, Addons};

/// One transformer block's parameters (names under `blocks.{i}.`).
pub(crate) struct Block {
    pub(crate) c_q: Tensor,
    pub(crate) c_k: Tensor,
    pub(crate) c_v: Tensor,
    pub(crate) attn_proj: Tensor,
    pub(crate) q_gain: Tensor,
    pub(crate) fc: Tensor,
    pub(crate) mlp_proj: Tensor,
    pub(crate) attn_scale: Tensor,
    pub(crate) mlp_scale: Tensor,
    pub(crate) resid_mix: Tensor,
    /// `attn_norm.weight`, `mlp_norm.weight` when the norms are learnable.
    pub(crate) norm_weights: Option<[Tensor; 2]>,
    /// `attn.attn_gate_w` `[H, n]` when the attention output is gated.
    pub(crate) attn_gate: Option<Tensor>,
}

pub struct Gpt {
    cfg: ModelConfig,
    tok_emb: Tensor,
    lm_head: Option<Tensor>,
    skip_weights: Tensor,
    pub(crate) blocks: Vec<Block>,
    /// The architecture options' tensors outside the blocks (`gpt/addons.rs`).
    addons: Addons,
    /// Every parameter, in the order Muon's rank assignment follows: upstream's `state_dict`
    /// order for the baseline, the options' tensors after the blocks (as R0322's optimizer lists
    /// them).
    params: Vec<(String, Tensor)>,
    /// Late QAT's fake quantization of the block matrices ([`Gpt::set_fake_quant`]).
    fake_quant: Cell<bool>,
    /// Whether the configured depth recurrence runs ([`Gpt::set_recurrence`]).
    looping: Cell<bool>,
    pub(crate) compute: Kind,
    rope: RefCell<Rope>,
    /// The chosen formulation ([`Gpt::formulation`] is the one that runs).
    formulation: Formulation,
    numerics: Numerics,
}

/// How the model is written: the same function either way (tested to rounding), different memory
/// traffic. Both share the U-Net trunk, the head weight and its tap, the soft-cap and the loss's
/// shape (this file); they differ in the blocks, the norms and how the head's `1/c` is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Formulation {
    /// The readable oracle (this file): the literal transcription of REFERENCE.md §3.2, one line
    /// of math per line of code, upstream's ATen ops one by one.
    Literal,
    /// Fewer passes over activation memory (`gpt/fast.rs`): fused GEMMs, and pgolf-kernels' fused
    /// ops for the norm, RoPE, activation and loss chains (NVRTC kernels on CUDA, their reference
    /// formulas in tch ops on the CPU).
    #[default]
    Fast,
}

impl Formulation {
    /// The name params use (`literal`, `fast`).
    pub fn name(self) -> &'static str {
        match self {
            Formulation::Literal => "literal",
            Formulation::Fast => "fast",
        }
    }
}

/// A forward-pass precision policy (evaluation picks one; training keeps [`Numerics::Native`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Numerics {
    /// Activations in the compute kind, RoPE tables computed in f32 (then cast, literal), the
    /// logits soft-capped in f32; the formulation as chosen.
    #[default]
    Native,
    /// Upstream `train_gpt.py` as it evaluates (REFERENCE.md §3.5, §4.5: the model built in bf16,
    /// Linear weights and control params restored to fp32, eager forward under CUDA bf16
    /// autocast), op for op in the same dtypes: the literal blocks; `tok_emb` stored bf16, so the
    /// residual stream is bf16; RoPE tables built in bf16 (`.bfloat16()` converts Rotary's
    /// `inv_freq` buffer, so `arange` and the angles are bf16: positions above 256 round); the
    /// head GEMM, `/ cap`, `tanh` and `* cap` in bf16, then upcast to f32 for the loss.
    UpstreamBf16,
}

/// Which optimizer group a parameter belongs to (REFERENCE.md §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// `tok_emb.weight`: Adam at the (tied) embedding LR.
    Embedding,
    /// `lm_head.weight` (untied only): Adam at the head LR.
    Head,
    /// 2-D block matrices: Muon.
    Matrix,
    /// Gains, scales, mixes and skip weights: Adam at the scalar LR.
    Control,
}

/// Upstream's control-tensor name patterns: kept fp32 and given to Adam even when 2-D (one list,
/// in the evaluator, shared with the quantizer's routing).
pub use pgolf_evaluator::CONTROL_PATTERNS;

/// The optimizer group of a parameter, from its name and rank, as upstream splits them.
pub fn param_role(name: &str, ndim: usize) -> ParamRole {
    // R0322 gives the BigramHash and value-embedding tables to the token embedding's Adam group.
    if name == "tok_emb.weight" || name == "bigram.embed.weight" || name == "ve_shared.embed.weight"
    {
        ParamRole::Embedding
    } else if name == "lm_head.weight" {
        ParamRole::Head
    } else if ndim == 2 && !CONTROL_PATTERNS.iter().any(|p| name.contains(p)) {
        ParamRole::Matrix
    } else {
        ParamRole::Control
    }
}

pub(crate) fn rms(x: &Tensor) -> Tensor {
    // eps None = the op's default (f32 machine epsilon, also for bf16 inputs), as upstream.
    x.rms_norm([*x.size().last().unwrap()], None::<Tensor>, None)
}

impl Gpt {
    /// Builds the model's variables under `path` (normally a VarStore's root) with upstream's
    /// initialisation (REFERENCE.md §3.4), drawing from the global torch RNG (`tch::manual_seed`).
    /// Variable names are the upstream `state_dict` names.
    pub fn new(path: &nn::Path, cfg: &ModelConfig) -> Result<Gpt> {
        cfg.validate()?;
        let d = cfg.model_dim as i64;
        let kv = cfg.kv_dim() as i64;
        let hidden = cfg.mlp_hidden() as i64;
        let mut params = Vec::new();
        let mut add = |name: String, t: Tensor| {
            params.push((name, t.shallow_clone()));
            t
        };
        let emb_std = if cfg.tie_embeddings {
            cfg.tied_embed_init_std
        } else {
            1.0
        };
        let tok_emb = add(
            "tok_emb.weight".into(),
            (path / "tok_emb").randn("weight", &[cfg.vocab_size as i64, d], 0.0, emb_std),
        );
        let skip_weights = add(
            "skip_weights".into(),
            path.ones("skip_weights", &[cfg.num_skip_weights() as i64, d]),
        );
        // PyTorch's default Linear init, U(±1/√fan_in); R0322's orthogonal one replaces it for
        // matrices with both dims ≥ 64.
        let linear = |p: nn::Path, out: i64, inp: i64| match cfg.init {
            InitScheme::Orthogonal if out >= 64 && inp >= 64 => {
                p.var("weight", &[out, inp], nn::Init::Orthogonal { gain: 1.0 })
            }
            InitScheme::OrthogonalBanks => {
                p.var("weight", &[out, inp], nn::Init::Orthogonal { gain: 1.0 })
            }
            _ => {
                let bound = 1.0 / (inp as f64).sqrt();
                p.uniform("weight", &[out, inp], -bound, bound)
            }
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = path / "blocks" / i;
            let attn = &b / "attn";
            let mlp = &b / "mlp";
            let pre = format!("blocks.{i}");
            let c_q = add(
                format!("{pre}.attn.c_q.weight"),
                linear(&attn / "c_q", d, d),
            );
            let c_k = add(
                format!("{pre}.attn.c_k.weight"),
                linear(&attn / "c_k", kv, d),
            );
            let c_v = add(
                format!("{pre}.attn.c_v.weight"),
                linear(&attn / "c_v", kv, d),
            );
            let attn_proj = add(
                format!("{pre}.attn.proj.weight"),
                (&attn / "proj").zeros("weight", &[d, d]),
            );
            let q_gain = add(
                format!("{pre}.attn.q_gain"),
                attn.var(
                    "q_gain",
                    &[cfg.num_heads as i64],
                    nn::Init::Const(cfg.qk_gain_init),
                ),
            );
            let fc = add(
                format!("{pre}.mlp.fc.weight"),
                linear(&mlp / "fc", hidden, d),
            );
            let mlp_proj = add(
                format!("{pre}.mlp.proj.weight"),
                (&mlp / "proj").zeros("weight", &[d, hidden]),
            );
            let attn_scale = add(format!("{pre}.attn_scale"), b.ones("attn_scale", &[d]));
            let mlp_scale = add(format!("{pre}.mlp_scale"), b.ones("mlp_scale", &[d]));
            let mix = Tensor::stack(
                &[
                    Tensor::ones([d], (Kind::Float, path.device())),
                    Tensor::zeros([d], (Kind::Float, path.device())),
                ],
                0,
            );
            let resid_mix = add(format!("{pre}.resid_mix"), b.var_copy("resid_mix", &mix));
            let norm_weights = cfg.norm_weights.then(|| {
                ["attn_norm", "mlp_norm"]
                    .map(|n| add(format!("{pre}.{n}.weight"), (&b / n).ones("weight", &[d])))
            });
            let attn_gate =
                attn_gate_weight(&attn, cfg).map(|w| add(format!("{pre}.attn.attn_gate_w"), w));
            blocks.push(Block {
                c_q,
                c_k,
                c_v,
                attn_proj,
                q_gain,
                fc,
                mlp_proj,
                attn_scale,
                mlp_scale,
                resid_mix,
                norm_weights,
                attn_gate,
            });
        }
        let lm_head = (!cfg.tie_embeddings).then(|| {
            add(
                "lm_head.weight".into(),
                (path / "lm_head").zeros("weight", &[cfg.vocab_size as i64, d]),
            )
        });
        let addons = Addons::new(path, cfg, &mut add);
        let rope = Rope::new(cfg);
        Ok(Gpt {
            cfg: cfg.clone(),
            tok_emb,
            lm_head,
            skip_weights,
            blocks,
            addons,
            params,
            fake_quant: Cell::new(false),
            looping: Cell::new(true),
            compute: Kind::Float,
            rope: RefCell::new(rope),
            // Nothing compiled or loaded unasked: `Fast` preloads its kernels when chosen.
            formulation: Formulation::Literal,
            numerics: Numerics::Native,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Every parameter with its upstream name, in upstream `state_dict` order.
    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The dtype activations and matmuls run in: `Kind::Float` (default) or `Kind::BFloat16`.
    pub fn compute_kind(&self) -> Kind {
        self.compute
    }

    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.compute = kind;
    }

    /// Chooses the formulation (a new model is [`Formulation::Literal`]). `Fast` compiles and
    /// loads its kernels for `device` now, so a missing NVRTC or driver is an error here, not
    /// later (and not inside a CUDA graph capture); on the CPU it loads nothing.
    pub fn set_formulation(&mut self, formulation: Formulation, device: tch::Device) -> Result<()> {
        if formulation == Formulation::Fast {
            if device.is_cuda() {
                let (hd, rd) = (self.cfg.head_dim() as i64, self.cfg.rope_dims() as i64);
                pgolf_kernels::ops::qkv_norm_rope::kernels_support(hd, rd)
                    .context("the fast formulation on CUDA")?;
            }
            pgolf_kernels::ops::preload(device).context("fused kernels")?;
        }
        self.formulation = formulation;
        Ok(())
    }

    /// The formulation the forward pass runs: the chosen one, except that
    /// [`Numerics::UpstreamBf16`] always runs the literal one (upstream's ops in its dtypes).
    pub fn formulation(&self) -> Formulation {
        match self.numerics {
            Numerics::Native => self.formulation,
            Numerics::UpstreamBf16 => Formulation::Literal,
        }
    }

    /// Sets the precision policy. [`Numerics::UpstreamBf16`] also sets the compute kind and the
    /// embedding to bf16 and forces the literal formulation; `Native` leaves those as they are.
    pub fn set_numerics(&mut self, numerics: Numerics) {
        if numerics == Numerics::UpstreamBf16 {
            self.set_compute_kind(Kind::BFloat16);
            self.set_embedding_kind(Kind::BFloat16);
        }
        self.numerics = numerics;
    }

    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    /// Turns late QAT's fake quantization of the matrices on or off (off in a new model). Only
    /// training turns it on; evaluation never does (R0322 applies it in `training` mode only).
    pub fn set_fake_quant(&self, on: bool) {
        self.fake_quant.set(on);
    }

    pub fn fake_quant(&self) -> bool {
        self.fake_quant.get()
    }

    /// Turns the configured depth recurrence on or off (on in a new model: evaluation and TTT
    /// always loop). Training turns it off and back on at a fraction of its budget, as the
    /// records do; off, the plain U-Net runs over the same weights. Without a recurrence in the
    /// config the switch changes nothing.
    pub fn set_recurrence(&self, on: bool) {
        self.looping.set(on);
    }

    /// Whether the depth recurrence runs (see [`Gpt::set_recurrence`]); false when the config has
    /// none.
    pub fn recurrence(&self) -> bool {
        self.cfg.recurrence.is_some() && self.looping.get()
    }

    /// Stores the embedding tables in `kind` (upstream keeps them bf16 for training, R0322 its
    /// BigramHash and value-embedding tables too; their Adam state follows). The variables keep
    /// their identity, so a VarStore holding them sees the change.
    pub fn set_embedding_kind(&mut self, kind: Kind) {
        let ve = self.addons.value_embed.as_ref().map(|(t, _)| &t.embed);
        let bigram = self.addons.bigram.as_ref().map(|t| &t.embed);
        for table in std::iter::once(&self.tok_emb).chain(ve).chain(bigram) {
            let converted = table.detach().to_kind(kind);
            tch::no_grad(|| table.shallow_clone().set_data(&converted));
        }
    }

    /// Soft-capped logits `[B, T, V]` in f32 for token ids `x: [B, T]` (i64).
    pub fn forward(&self, x: &Tensor, hooks: &mut Hooks) -> Tensor {
        let z = self.head(x, None, hooks);
        self.soft_cap(&z)
    }

    /// [`Gpt::forward`] over one packed row `x: [1, T]` whose attention stays inside each segment
    /// of `docs` (R0427's varlen attention; [`Documents`]).
    pub fn packed_forward(&self, x: &Tensor, docs: &Documents, hooks: &mut Hooks) -> Tensor {
        let z = self.head(x, Some(docs), hooks);
        self.soft_cap(&z)
    }

    /// The trunk of the running formulation, then the head (both formulations): the head
    /// weight's tap and adapter delta, and `z = logits / c`, the soft-cap's input (the logits
    /// are `c·tanh(z)`, [`Gpt::soft_cap`]).
    ///
    /// Literal, step by step as upstream: the GEMM in the compute kind, upcast to the kind the
    /// cap runs in, the delta added, then `/ c`. Fast: `1/c` folded into the weight (`h (W/c)ᵀ`,
    /// no pass over the `[N, V]` logits), `z` left in the compute kind, which the fused loss
    /// reads. The two round differently, hence two lines.
    fn head(&self, x: &Tensor, docs: Option<&Documents>, hooks: &mut Hooks) -> Tensor {
        let formulation = self.formulation();
        if let Some(d) = docs {
            let size = x.size();
            assert!(
                size.len() == 2 && size[0] == 1 && size[1] == d.total(),
                "packed forward: x {size:?} is not one row of the documents' {} tokens",
                d.total()
            );
        }
        let h = match formulation {
            Formulation::Literal => self.trunk(x, docs, hooks),
            Formulation::Fast => self.trunk_fast(x, docs, hooks),
        };
        let (head_name, head) = match &self.lm_head {
            Some(w) => ("lm_head.weight", w),
            None => ("tok_emb.weight", &self.tok_emb),
        };
        hooks.tap(|| head_name.to_string(), &h);
        let (ck, cap) = (self.compute, self.cfg.logit_softcap);
        match formulation {
            Formulation::Literal => {
                let cap_kind = self.cap_kind();
                let mut logits = h
                    .linear(&self.head_weight(head), None::<Tensor>)
                    .to_kind(cap_kind);
                if let Some(delta) = hooks.delta(Site::Head, self.cfg.num_layers, &h) {
                    logits = &logits + delta.to_kind(cap_kind); // not `+=` (in place)
                }
                logits / cap
            }
            Formulation::Fast => {
                let z = h.linear(&(self.head_qat(head) / cap).to_kind(ck), None::<Tensor>);
                match hooks.delta(Site::Head, self.cfg.num_layers, &h) {
                    Some(delta) => z + (delta / cap).to_kind(ck),
                    None => z,
                }
            }
        }
    }

    /// The head's weight in the compute kind: an untied head is a Linear (fake-quantized under late
    /// QAT, as R0322's `CastedLinear`); the tied embedding never is.
    fn head_weight(&self, head: &Tensor) -> Tensor {
        self.head_qat(head).to_kind(self.compute)
    }

    fn head_qat(&self, head: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(_) => self.qat(head),
            None => head.shallow_clone(),
        }
    }

    /// The kind the soft-cap runs in: f32 (Native); the GEMM's bf16 under UpstreamBf16, upcast
    /// after (as upstream).
    fn cap_kind(&self) -> Kind {
        match self.numerics {
            Numerics::Native => Kind::Float,
            Numerics::UpstreamBf16 => self.compute,
        }
    }

    /// The soft-capped f32 logits `c·tanh(z)` of the head's `z` ([`Gpt::head`]).
    fn soft_cap(&self, z: &Tensor) -> Tensor {
        let cap = self.cfg.logit_softcap;
        (z.to_kind(self.cap_kind()).tanh() * cap).to_kind(Kind::Float)
    }

    /// The embedding rows of token ids `x`, in the compute kind (before the embedding norm).
    pub(crate) fn embed(&self, x: &Tensor) -> Tensor {
        Tensor::embedding(&self.tok_emb, x, -1, false, false).to_kind(self.compute)
    }

    /// The literal trunk: the normed embedding (BigramHash and SmearGate v2 before the norm,
    /// SmearGate v1 after it), the U-Net of [`Gpt::block`]s, the final norm.
    fn trunk(&self, x: &Tensor, docs: Option<&Documents>, hooks: &mut Hooks) -> Tensor {
        let ck = self.compute;
        let (_, t) = x.size2().expect("forward expects token ids [B, T]");
        let upstream = self.numerics == Numerics::UpstreamBf16;
        let (cos, sin) = self.rope.borrow_mut().tables(t, ck, x.device(), upstream);
        let embedded = self.smear_v2(self.embed_input(x, hooks), x);
        let mut h = self.smear(rms(&embedded));
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
                Lanes::One(h) => Lanes::One(self.block(i, &h, &ctx, hooks)),
                Lanes::Two(l0, l1) => {
                    let [l0, l1] = self.parallel_block(i, [&l0, &l1], &ctx, hooks);
                    Lanes::Two(l0, l1)
                }
            },
            |h, w, skip| &h + w * skip, // not `+=` (in place)
        );
        rms(&h)
    }

    /// The U-Net trunk (REFERENCE.md §3.2, §5.13) over the layer slots of
    /// [`ModelConfig::layer_order`] (the recurrence's virtual list while it runs): the encoder
    /// slots push their outputs as skips; before decoder slot `j` the last pushed is popped and
    /// merged ([`Gpt::merge_skip`]: `add_skip(h, skip_weights[j], skip)` or the gated lerp). At
    /// the first decoder slot whose layer runs in parallel the stream splits into two lanes (the
    /// skips then merge into lane 0), joined again after the last. `block(i, lanes)` runs layer
    /// `i` of the caller's formulation on one stream or on the two lanes.
    pub(crate) fn unet(
        &self,
        mut h: Tensor,
        mut block: impl FnMut(usize, Lanes) -> Lanes,
        add_skip: impl Fn(Tensor, &Tensor, &Tensor) -> Tensor,
    ) -> Tensor {
        let (enc, dec) = self.cfg.layer_order(self.looping.get());
        let num_skips = self.cfg.num_skip_weights();
        let mut skips = Vec::with_capacity(enc.len());
        for &i in &enc {
            let Lanes::One(out) = block(i, Lanes::One(h)) else {
                unreachable!("encoder layers run on one stream")
            };
            h = out;
            skips.push(h.shallow_clone());
        }
        let mut lanes = Lanes::One(h);
        for (j, &i) in dec.iter().enumerate() {
            if let (Lanes::One(h), true) = (&lanes, self.cfg.parallel_layer(i)) {
                lanes = Lanes::Two(h.shallow_clone(), h.shallow_clone());
            }
            if let Some(skip) = (j < num_skips).then(|| skips.pop()).flatten() {
                lanes = match lanes {
                    Lanes::One(h) => Lanes::One(self.merge_skip(j, h, &skip, &add_skip)),
                    Lanes::Two(l0, l1) => Lanes::Two(self.merge_skip(j, l0, &skip, &add_skip), l1),
                };
            }
            lanes = block(i, lanes);
        }
        match lanes {
            Lanes::One(h) => h,
            Lanes::Two(l0, l1) => self.final_lane(l0, l1),
        }
    }

    /// Soft-capped logits without hooks.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        self.forward(x, &mut Hooks::default())
    }

    /// Mean cross-entropy over all positions (what training minimises), f32 scalar. Fast: through
    /// the fused soft-cap + cross-entropy op, so the `[N, V]` f32 logits and their gradient are
    /// never materialised.
    pub fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.loss_in(x, y, None)
    }

    /// [`Gpt::loss`] over one packed row `[1, T]` with attention inside each document of `docs`.
    pub fn packed_loss(&self, x: &Tensor, y: &Tensor, docs: &Documents) -> Tensor {
        self.loss_in(x, y, Some(docs))
    }

    /// [`Gpt::loss`] or [`Gpt::packed_loss`].
    pub fn loss_in(&self, x: &Tensor, y: &Tensor, docs: Option<&Documents>) -> Tensor {
        let v = self.cfg.vocab_size as i64;
        let z = self.head(x, docs, &mut Hooks::default());
        match self.formulation() {
            Formulation::Literal => self.soft_cap(&z).view([-1, v]).cross_entropy_loss(
                &y.view([-1]),
                None::<Tensor>,
                tch::Reduction::Mean,
                -100,
                0.0,
            ),
            Formulation::Fast => fast::must(softcap_cross_entropy(
                &z.view([-1, v]),
                &y.view([-1]),
                self.cfg.logit_softcap,
            ))
            .mean(Kind::Float),
        }
    }

    /// Per-token NLL `[B, T]` (f32, natural log) of targets `y` given inputs `x`.
    pub fn token_nll(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.token_nll_with(x, y, &mut Hooks::default())
    }

    /// Per-token NLL with hooks (e.g. a LoRA adapter during test-time training).
    pub fn token_nll_with(&self, x: &Tensor, y: &Tensor, hooks: &mut Hooks) -> Tensor {
        self.token_nll_in(x, y, None, hooks)
    }

    /// Per-token NLL `[B, T]`, over one packed row when `docs` is given.
    pub fn token_nll_in(
        &self,
        x: &Tensor,
        y: &Tensor,
        docs: Option<&Documents>,
        hooks: &mut Hooks,
    ) -> Tensor {
        let v = self.cfg.vocab_size as i64;
        let z = self.head(x, docs, hooks);
        let logits = self.soft_cap(&z);
        logits
            .view([-1, v])
            .cross_entropy_loss(
                &y.view([-1]),
                None::<Tensor>,
                tch::Reduction::None,
                -100,
                0.0,
            )
            .view_as(y)
    }

    fn block(&self, i: usize, x: &Tensor, ctx: &Frame, hooks: &mut Hooks) -> Tensor {
        let ck = self.compute;
        let blk = &self.blocks[i];
        let mix = blk.resid_mix.to_kind(ck);
        let x = mix.get(0) * x + mix.get(1) * &ctx.x0;
        let attn = self.attention(
            i,
            &self.ln_scaled(i, self.norm_weight(i, 0, rms(&x))),
            ctx,
            hooks,
        );
        let x = x + blk.attn_scale.to_kind(ck) * attn;
        let mlp = self.mlp(
            i,
            &self.ln_scaled(i, self.norm_weight(i, 1, rms(&x))),
            hooks,
        );
        x + blk.mlp_scale.to_kind(ck) * mlp
    }

    /// Layer `i` in the parallel lanes (R0427's `_parallel_block`): both branches read the lanes
    /// before the block, attention lane 0 (mixed with x0), the MLP lane 1, and
    /// [`Gpt::mix_lanes`] writes the new lanes.
    fn parallel_block(
        &self,
        i: usize,
        [lane0, lane1]: [&Tensor; 2],
        ctx: &Frame,
        hooks: &mut Hooks,
    ) -> [Tensor; 2] {
        let ck = self.compute;
        let blk = &self.blocks[i];
        let mix = blk.resid_mix.to_kind(ck);
        let read = mix.get(0) * lane0 + mix.get(1) * &ctx.x0;
        let attn = self.attention(
            i,
            &self.ln_scaled(i, self.norm_weight(i, 0, rms(&read))),
            ctx,
            hooks,
        );
        let a = blk.attn_scale.to_kind(ck) * attn;
        let mlp = self.mlp(
            i,
            &self.ln_scaled(i, self.norm_weight(i, 1, rms(lane1))),
            hooks,
        );
        let m = blk.mlp_scale.to_kind(ck) * mlp;
        self.mix_lanes(i, [lane0, lane1], &a, &m)
    }

    /// Block `i`'s norm `which` (0 before attention, 1 before the MLP) times its learnable weight,
    /// when the norms have one.
    pub(crate) fn norm_weight(&self, i: usize, which: usize, normed: Tensor) -> Tensor {
        match &self.blocks[i].norm_weights {
            Some(w) => normed * w[which].to_kind(self.compute),
            None => normed,
        }
    }

    /// A norm's output times layer `i`'s LN-scale factor (untouched when LN scale is off).
    pub(crate) fn ln_scaled(&self, i: usize, normed: Tensor) -> Tensor {
        match self.cfg.ln_scale {
            true => normed * self.cfg.ln_scale_factor(i),
            false => normed,
        }
    }

    /// `relu(x)²` or `leaky_relu(x, slope)²`.
    pub(crate) fn activation(&self, pre: &Tensor) -> Tensor {
        match self.cfg.activation {
            Activation::Relu2 => pre.relu().square(),
            Activation::LeakyRelu2(slope) => pre.where_self(&pre.gt(0.0), &(pre * slope)).square(),
        }
    }

    /// A projection `u Wᵀ` in the compute dtype plus the adapter's delta, if any.
    pub(crate) fn project(
        &self,
        u: &Tensor,
        w: &Tensor,
        site: Site,
        layer: usize,
        hooks: &Hooks,
    ) -> Tensor {
        let out = u.linear(&self.matrix(w), None::<Tensor>);
        match hooks.delta(site, layer, u) {
            Some(delta) => out + delta.to_kind(self.compute),
            None => out,
        }
    }

    /// Causal SDPA over `[B, heads, T, hd]` q and `[B, kv heads, T, hd]` k, v (GQA when fewer kv
    /// heads); libtorch picks the flash/cuDNN kernel on CUDA. With packed documents, attention
    /// within each ([`docs::attention`]: the FlashAttention varlen kernel on CUDA, the
    /// per-document reference elsewhere).
    pub(crate) fn causal_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        docs: Option<&Documents>,
    ) -> Tensor {
        if let Some(d) = docs {
            return docs::attention(q, k, v, d);
        }
        let gqa = self.cfg.num_kv_heads != self.cfg.num_heads;
        Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, true, None, gqa)
    }

    fn attention(&self, i: usize, u: &Tensor, ctx: &Frame, hooks: &mut Hooks) -> Tensor {
        let blk = &self.blocks[i];
        let (b, t, d) = u.size3().expect("attention input [B, T, d]");
        let (h, hkv, hd) = (
            self.cfg.num_heads as i64,
            self.cfg.num_kv_heads as i64,
            self.cfg.head_dim() as i64,
        );
        for name in ["c_q", "c_k", "c_v"] {
            hooks.tap(|| format!("blocks.{i}.attn.{name}.weight"), u);
        }
        let q = self
            .project(u, &blk.c_q, Site::Q, i, hooks)
            .view([b, t, h, hd])
            .transpose(1, 2);
        let k = self
            .project(u, &blk.c_k, Site::K, i, hooks)
            .view([b, t, hkv, hd])
            .transpose(1, 2);
        let mut v = self.project(u, &blk.c_v, Site::V, i, hooks);
        if let Some(ve) = self.layer_value_embedding(i, ctx.value_embed.as_ref()) {
            v = &v + ve; // not `+=` (in place)
        }
        let v = v.view([b, t, hkv, hd]);
        let (cos, sin) = (&ctx.cos, &ctx.sin);
        let q =
            Rope::apply(&rms(&q), cos, sin) * blk.q_gain.to_kind(self.compute).view([1, h, 1, 1]);
        let k = Rope::apply(&rms(&k), cos, sin);
        let y = self.causal_attention(&q, &k, &v.transpose(1, 2), ctx.docs);
        let y = self.xsa_if(i, y.transpose(1, 2), &v);
        let y = self.attn_gate(i, u, y).contiguous().view([b, t, d]);
        hooks.tap(|| format!("blocks.{i}.attn.proj.weight"), &y);
        self.project(&y, &blk.attn_proj, Site::O, i, hooks)
    }

    /// XSA of attention output `y` `[B, T, H, hd]` with values `v` `[B, T, Hkv, hd]` in layers that
    /// run it; `y` unchanged elsewhere.
    pub(crate) fn xsa_if(&self, i: usize, y: Tensor, v: &Tensor) -> Tensor {
        match self.cfg.xsa(i) {
            true => xsa(&y, v),
            false => y,
        }
    }

    fn mlp(&self, i: usize, u: &Tensor, hooks: &mut Hooks) -> Tensor {
        let blk = &self.blocks[i];
        hooks.tap(|| format!("blocks.{i}.mlp.fc.weight"), u);
        let act = self.activation(&self.project(u, &blk.fc, Site::MlpIn, i, hooks));
        hooks.tap(|| format!("blocks.{i}.mlp.proj.weight"), &act);
        self.project(&act, &blk.mlp_proj, Site::MlpOut, i, hooks)
    }
}

/// The residual stream between layers: one, or the parallel lanes (attention's, the MLP's).
pub(crate) enum Lanes {
    One(Tensor),
    Two(Tensor, Tensor),
}

/// One forward pass's frame: what every block reads besides its input: the stream's `x0`, the shared
/// value embedding (when on), the RoPE tables of the formulation, and the packed documents (when
/// attention stays inside them).
pub(crate) struct Frame<'a> {
    pub(crate) x0: Tensor,
    pub(crate) value_embed: Option<Tensor>,
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    pub(crate) docs: Option<&'a Documents>,
}

/// Builds a model in a fresh VarStore: initialised on the CPU (so a seed gives the same initial
/// weights whatever the device), then moved to `device`.
pub fn build(cfg: &ModelConfig, device: tch::Device) -> Result<(nn::VarStore, Gpt)> {
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let gpt = Gpt::new(&vs.root(), cfg).context("building the GPT")?;
    if device != tch::Device::Cpu {
        vs.set_device(device);
    }
    Ok((vs, gpt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Adapter;
    use std::collections::BTreeMap;
    use tch::Device;

    fn tiny() -> ModelConfig {
        ModelConfig {
            vocab_size: 64,
            num_layers: 3,
            model_dim: 32,
            num_heads: 4,
            num_kv_heads: 2,
            seq_len: 16,
            ..Default::default()
        }
    }

    const BOTH: [Formulation; 2] = [Formulation::Literal, Formulation::Fast];

    /// Every R0322 option on, at a size where every path runs: partial RoPE rescaled (16 > 8),
    /// XSA on two layers, projected BigramHash and value-embedding tables.
    fn tiny_r0322() -> ModelConfig {
        ModelConfig {
            rope_dims: Some(4),
            rope_ntk_len: Some(8),
            xsa_last_n: 2,
            ln_scale: true,
            smear_gate: true,
            bigram: Some(crate::config::BigramHash {
                buckets: 16,
                dim: 8,
            }),
            value_embed: Some(crate::config::ValueEmbedding {
                dim: 4,
                layers: vec![1, 2],
            }),
            init: InitScheme::Orthogonal,
            mlp_hidden: Some(48),
            norm_weights: true,
            ..tiny()
        }
    }

    /// The SP8192 line's options at a size where every path runs (R0427's combination): layers 1–2
    /// looped once more (slots enc [0, 1, 2] dec [1, 2, 3, 4]), skip gates, parallel lanes from
    /// layer 3, SmearGate v2 and the sparse attention gate, with R0405/R0427's XSA everywhere,
    /// partial RoPE, LN scale and MLP 4× LeakyReLU(0.5)².
    fn tiny_sp8192() -> ModelConfig {
        ModelConfig {
            num_layers: 5,
            mlp_mult: 4,
            qk_gain_init: 5.0,
            activation: crate::Activation::LeakyRelu2(0.5),
            rope_dims: Some(4),
            xsa_last_n: 5,
            ln_scale: true,
            init: InitScheme::OrthogonalBanks,
            recurrence: Some(crate::config::Recurrence {
                start: 1,
                end: 2,
                loops: 1,
            }),
            skip_gates: true,
            parallel: Some(crate::config::ParallelLanes {
                start_layer: 3,
                final_lane: crate::config::FinalLane::Mean,
            }),
            smear_gate_v2: Some(crate::config::SmearGateV2 {
                window: 8,
                bos_id: 1,
            }),
            attn_gate: Some(crate::config::AttnGate::Sparse {
                window: 8,
                scale: 0.5,
                init_std: 0.0,
            }),
            ..tiny()
        }
    }

    /// The headwise-gate submission's combination: R0427's without SmearGate and the sparse gate,
    /// with the headwise gate (and the MLP lane handed to the final norm, for that branch).
    fn tiny_headwise() -> ModelConfig {
        ModelConfig {
            smear_gate_v2: None,
            attn_gate: Some(crate::config::AttnGate::Headwise { init_std: 0.01 }),
            parallel: Some(crate::config::ParallelLanes {
                start_layer: 3,
                final_lane: crate::config::FinalLane::Mlp,
            }),
            ..tiny_sp8192()
        }
    }

    /// The SP8192 options composed with every R0322 one (BigramHash, SmearGate v1, VE on a looped
    /// and a parallel layer, norm weights, NTK-rescaled partial RoPE).
    fn tiny_composed() -> ModelConfig {
        let sp = tiny_sp8192();
        ModelConfig {
            num_layers: 5,
            value_embed: Some(crate::config::ValueEmbedding {
                dim: 4,
                layers: vec![2, 4],
            }),
            recurrence: sp.recurrence,
            skip_gates: true,
            parallel: Some(crate::config::ParallelLanes {
                start_layer: 3,
                final_lane: crate::config::FinalLane::Attn,
            }),
            attn_gate: sp.attn_gate,
            ..tiny_r0322()
        }
    }

    /// Perturbs every weight so zero-initialised projections take part.
    fn perturbed(cfg: &ModelConfig) -> (nn::VarStore, Gpt) {
        tch::manual_seed(3);
        let (vs, gpt) = build(cfg, Device::Cpu).unwrap();
        tch::no_grad(|| {
            for (_, t) in gpt.named_parameters() {
                let _ = t.shallow_clone().g_add_(&(t.randn_like() * 0.05));
            }
        });
        (vs, gpt)
    }

    #[test]
    fn the_built_baseline_has_17_059_912_parameters_with_upstream_names() {
        let (vs, gpt) = build(&ModelConfig::default(), Device::Cpu).unwrap();
        let total: i64 = gpt
            .named_parameters()
            .iter()
            .map(|(_, t)| t.numel() as i64)
            .sum();
        assert_eq!(total, 17_059_912);
        assert_eq!(vs.variables().len(), gpt.named_parameters().len());
        let shapes: BTreeMap<String, Vec<i64>> = gpt
            .named_parameters()
            .iter()
            .map(|(n, t)| (n.clone(), t.size()))
            .collect();
        assert_eq!(shapes["tok_emb.weight"], [1024, 512]);
        assert_eq!(shapes["skip_weights"], [4, 512]);
        assert_eq!(shapes["blocks.8.attn.c_k.weight"], [256, 512]);
        assert_eq!(shapes["blocks.0.attn.q_gain"], [8]);
        assert_eq!(shapes["blocks.3.resid_mix"], [2, 512]);
        assert_eq!(shapes["blocks.3.mlp.proj.weight"], [512, 1024]);
        assert!(vs.variables().contains_key("blocks.8.mlp.fc.weight"));
        // Upstream's init: zero output projections, unit scales, q gain 1.5, resid_mix (1, 0).
        let get = |n: &str| {
            gpt.named_parameters()
                .iter()
                .find(|(m, _)| m == n)
                .unwrap()
                .1
                .shallow_clone()
        };
        assert_eq!(
            get("blocks.2.attn.proj.weight")
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert_eq!(
            get("blocks.2.attn.q_gain")
                .mean(Kind::Float)
                .double_value(&[]),
            1.5
        );
        assert_eq!(
            get("blocks.2.resid_mix")
                .sum_dim_intlist(1, false, Kind::Float)
                .double_value(&[0]),
            512.0
        );
        let std = get("tok_emb.weight").std(true).double_value(&[]);
        assert!((std - 0.005).abs() < 2e-4, "embedding std {std}");
        let bound = get("blocks.0.attn.c_q.weight")
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            bound <= 1.0 / 512f64.sqrt() && bound > 0.04,
            "c_q bound {bound}"
        );
        assert_eq!(param_role("blocks.0.attn.c_q.weight", 2), ParamRole::Matrix);
        assert_eq!(param_role("blocks.0.resid_mix", 2), ParamRole::Control);
        assert_eq!(param_role("skip_weights", 2), ParamRole::Control);
        assert_eq!(param_role("tok_emb.weight", 2), ParamRole::Embedding);
    }

    /// R0322's own count (its log: `model_params:26993756`), with its names and shapes.
    #[test]
    fn the_r0322_stack_has_26_993_756_parameters_with_the_records_names() {
        let cfg = ModelConfig {
            num_layers: 11,
            mlp_mult: 3,
            seq_len: 2048,
            rope_dims: Some(16),
            rope_ntk_len: Some(1024),
            xsa_last_n: 4,
            ln_scale: true,
            smear_gate: true,
            bigram: Some(crate::config::BigramHash {
                buckets: 2048,
                dim: 128,
            }),
            value_embed: Some(crate::config::ValueEmbedding {
                dim: 128,
                layers: vec![9, 10],
            }),
            init: InitScheme::Orthogonal,
            ..Default::default()
        };
        let (vs, gpt) = build(&cfg, Device::Cpu).unwrap();
        let total: usize = gpt.named_parameters().iter().map(|(_, t)| t.numel()).sum();
        assert_eq!(total, 26_993_756);
        assert_eq!(cfg.num_params(), 26_993_756);
        assert_eq!(vs.variables().len(), gpt.named_parameters().len());
        let shapes: BTreeMap<String, Vec<i64>> = gpt
            .named_parameters()
            .iter()
            .map(|(n, t)| (n.clone(), t.size()))
            .collect();
        let want: [(&str, &[i64]); 9] = [
            ("smear.gate", &[512]),
            ("bigram.embed.weight", &[2048, 128]),
            ("bigram.proj.weight", &[512, 128]),
            ("bigram.scale", &[]),
            ("ve_shared.embed.weight", &[1024, 128]),
            ("ve_shared.proj.weight", &[256, 128]),
            ("ve_shared.scale", &[]),
            ("ve_layer_scales.0", &[1]),
            ("ve_layer_scales.1", &[1]),
        ];
        for (name, shape) in want {
            assert_eq!(shapes[name], shape, "{name}");
        }
        // R0322's routing: the tables with the token embedding, projections in Muon, the rest
        // scalars.
        assert_eq!(param_role("bigram.embed.weight", 2), ParamRole::Embedding);
        assert_eq!(
            param_role("ve_shared.embed.weight", 2),
            ParamRole::Embedding
        );
        assert_eq!(param_role("bigram.proj.weight", 2), ParamRole::Matrix);
        assert_eq!(param_role("ve_shared.proj.weight", 2), ParamRole::Matrix);
        for name in [
            "smear.gate",
            "bigram.scale",
            "ve_shared.scale",
            "ve_layer_scales.1",
        ] {
            assert_eq!(
                param_role(name, shapes[name].len()),
                ParamRole::Control,
                "{name}"
            );
        }
        // Orthogonal init: c_q has orthonormal rows; the projections are scaled by 1/√22;
        // the output projections stay zero; the bigram table starts at zero.
        let get = |n: &str| {
            gpt.named_parameters()
                .iter()
                .find(|(m, _)| m == n)
                .unwrap()
                .1
                .shallow_clone()
        };
        let w = get("blocks.4.attn.c_q.weight");
        let gram = w.matmul(&w.tr()) - Tensor::eye(512, (Kind::Float, Device::Cpu));
        assert!(gram.abs().max().double_value(&[]) < 1e-4);
        let p = get("bigram.proj.weight"); // [512, 128]: orthonormal columns, then × 1/√22
        let gram = p.tr().matmul(&p) * 22.0 - Tensor::eye(128, (Kind::Float, Device::Cpu));
        assert!(gram.abs().max().double_value(&[]) < 1e-4);
        assert_eq!(
            get("blocks.4.mlp.proj.weight")
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert_eq!(
            get("bigram.embed.weight")
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert_eq!(get("bigram.scale").double_value(&[]), 0.05f32 as f64);
        let ve_std = get("ve_shared.embed.weight").std(true).double_value(&[]);
        assert!((ve_std - 0.01).abs() < 5e-4, "{ve_std}");
    }

    /// The model builds exactly the config's parameter list (the one layout the evaluator and
    /// ema-finalize read), option by option.
    #[test]
    fn the_built_model_has_exactly_the_configs_parameter_list() {
        let untied = ModelConfig {
            tie_embeddings: false,
            bigram: Some(crate::config::BigramHash {
                buckets: 9,
                dim: 32,
            }),
            ..tiny_r0322()
        };
        for cfg in [
            ModelConfig::default(),
            tiny(),
            tiny_r0322(),
            untied,
            tiny_sp8192(),
            tiny_headwise(),
            tiny_composed(),
        ] {
            let (_vs, gpt) = build(&cfg, Device::Cpu).unwrap();
            let built: BTreeMap<String, Vec<usize>> = gpt
                .named_parameters()
                .iter()
                .map(|(n, t)| (n.clone(), t.size().iter().map(|&s| s as usize).collect()))
                .collect();
            let per_layer = ModelConfig {
                banks: false,
                ..cfg.clone()
            };
            let listed: BTreeMap<String, Vec<usize>> =
                per_layer.parameter_shapes().into_iter().collect();
            assert_eq!(built, listed);
            assert_eq!(
                built.len(),
                gpt.named_parameters().len(),
                "no duplicate names"
            );
        }
    }

    /// The options' formulas on a hand-checkable case: SmearGate with g = 0 (σ = ½) averages each
    /// position with the previous one, and LN scale divides block 3's norm outputs by 2.
    #[test]
    fn smear_gate_and_ln_scale_follow_their_formulas() {
        let cfg = ModelConfig {
            smear_gate: true,
            ln_scale: true,
            ..tiny()
        };
        let (_vs, gpt) = build(&cfg, Device::Cpu).unwrap();
        let x = Tensor::from_slice(&[2.0f32, 4.0, 6.0])
            .view([1, 3, 1])
            .expand([1, 3, 32], false);
        let got: Vec<f32> = Vec::try_from(gpt.smear(x).select(2, 7).view([-1])).unwrap();
        assert_eq!(got, vec![1.0, 3.0, 5.0]);
        let n = Tensor::from_slice(&[2.0f32]);
        assert_eq!(gpt.ln_scaled(3, n).double_value(&[0]), 1.0);
        assert_eq!(cfg.ln_scale_factor(0), 1.0);
    }

    /// R0405, R0427 (its README's command) and the headwise-gate run at full size: the records'
    /// logged `model_params` (35,943,512; 35,945,671; 35,989,658), built.
    #[test]
    fn the_sp8192_stacks_have_the_records_parameter_counts() {
        let r0405 = ModelConfig {
            vocab_size: 8192,
            num_layers: 11,
            mlp_mult: 4,
            seq_len: 2048,
            qk_gain_init: 4.0,
            activation: crate::Activation::LeakyRelu2(0.5),
            rope_dims: Some(16),
            rope_ntk_len: Some(2048),
            xsa_last_n: 11,
            ln_scale: true,
            init: InitScheme::Orthogonal,
            recurrence: Some(crate::config::Recurrence {
                start: 4,
                end: 5,
                loops: 2,
            }),
            skip_gates: true,
            ..Default::default()
        };
        let r0427 = ModelConfig {
            qk_gain_init: 5.0,
            rope_ntk_len: None,
            init: InitScheme::OrthogonalBanks,
            recurrence: Some(crate::config::Recurrence {
                start: 3,
                end: 5,
                loops: 2,
            }),
            parallel: Some(crate::config::ParallelLanes {
                start_layer: 8,
                final_lane: crate::config::FinalLane::Mean,
            }),
            smear_gate_v2: Some(crate::config::SmearGateV2 {
                window: 12,
                bos_id: 1,
            }),
            attn_gate: Some(crate::config::AttnGate::Sparse {
                window: 12,
                scale: 0.5,
                init_std: 0.0,
            }),
            ..r0405.clone()
        };
        let headwise = ModelConfig {
            smear_gate_v2: None,
            attn_gate: Some(crate::config::AttnGate::Headwise { init_std: 0.01 }),
            ..r0427.clone()
        };
        for (cfg, want) in [
            (r0405, 35_943_512),
            (r0427, 35_945_671),
            (headwise, 35_989_658),
        ] {
            let (_vs, gpt) = build(&cfg, Device::Cpu).unwrap();
            let total: usize = gpt.named_parameters().iter().map(|(_, t)| t.numel()).sum();
            assert_eq!((total, cfg.num_params()), (want, want));
            if let Some(crate::config::AttnGate::Headwise { .. }) = cfg.attn_gate {
                let w = &gpt.blocks[3].attn_gate.as_ref().unwrap();
                let std = w.std(true).double_value(&[]);
                assert!((std - 0.01).abs() < 1e-3, "attn_gate_w std {std}");
            }
            for name in [
                "skip_gates",
                "parallel_resid_lambdas",
                "attn_gate_w",
                "smear_lambda",
            ] {
                assert_eq!(param_role(name, 2), ParamRole::Control, "{name}");
            }
            assert_eq!(param_role("smear_gate.weight", 2), ParamRole::Control);
        }
    }

    /// The SP8192 add-ons on hand-checkable cases, from their init (gates 0, λ set to 1).
    #[test]
    fn the_sp8192_add_ons_follow_their_formulas() {
        let (_vs, gpt) = build(&tiny_sp8192(), Device::Cpu).unwrap();
        let column = |v: &[f32]| {
            Tensor::from_slice(v)
                .view([1, v.len() as i64, 1])
                .expand([1, v.len() as i64, 32], false)
        };
        let got = |t: Tensor| -> Vec<f32> { Vec::try_from(t.select(2, 7).view([-1])).unwrap() };
        // SmearGate v2, w = 0 (σ = ½), λ = 1: x_t + ½·x_{t−1}, except at the BOS (id 1).
        let (_, lambda) = gpt.addons.smear_v2.as_ref().unwrap();
        tch::no_grad(|| {
            let _ = lambda.shallow_clone().fill_(1.0);
        });
        let ids = Tensor::from_slice(&[5i64, 1, 7, 9]).view([1, 4]);
        let smeared = gpt.smear_v2(column(&[2.0, 4.0, 6.0, 8.0]), &ids);
        assert_eq!(got(smeared), vec![2.0, 4.0, 8.0, 11.0]);
        // A skip gate at 0 (σ = ½), w = 1: lerp(skip, h, ½) = (skip + h)/2.
        let add = |h: Tensor, w: &Tensor, s: &Tensor| h + w * s;
        let merged = gpt.merge_skip(1, column(&[2.0]), &column(&[4.0]), &add);
        assert_eq!(got(merged), vec![3.0]);
        // The lanes at init (ρ = 1.1, π = 1): 1.1·1 + 3 + 5 and 1.1·2 + 3 + 5.
        let [l0, l1] = gpt.mix_lanes(
            3,
            [&column(&[1.0]), &column(&[2.0])],
            &column(&[3.0]),
            &column(&[5.0]),
        );
        let (l0, l1) = (got(l0)[0], got(l1)[0]);
        assert!(
            (l0 - 9.1).abs() < 1e-6 && (l1 - 10.2).abs() < 1e-6,
            "{l0} {l1}"
        );
        assert_eq!(
            gpt.final_lane(column(&[1.0]), column(&[2.0]))
                .double_value(&[0, 0, 0]),
            1.5
        );
        // The sparse gate at init (w = 0) halves every head; then w_h = 2·h·e_0 on u_0 = 1 gives
        // head h the factor σ(0.5·2h) = σ(h).
        let y = Tensor::ones([1, 2, 4, 8], (Kind::Float, Device::Cpu));
        let u = Tensor::ones([1, 2, 32], (Kind::Float, Device::Cpu));
        assert!(gpt.attn_gate(0, &u, y.copy()).equal(&(&y * 0.5)));
        let w = gpt.blocks[0].attn_gate.as_ref().unwrap();
        tch::no_grad(|| {
            let _ = w.shallow_clone().zero_();
            for h in 0..4 {
                let _ = w.get(h).get(0).fill_(2.0 * h as f64);
            }
        });
        let u = u.narrow(2, 0, 1).pad([0, 31], "constant", Some(0.0));
        let g: Vec<f32> =
            Vec::try_from(gpt.attn_gate(0, &u, y).get(0).get(1).select(1, 0)).unwrap();
        let want: Vec<f32> = (0..4).map(|h| 1.0 / (1.0 + (-(h as f32)).exp())).collect();
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{g:?} {want:?}");
        }
    }

    /// The BOS mask: a token's smeared embedding never depends on the previous document. Two
    /// inputs that differ only before a BOS give the same embeddings from the BOS on.
    #[test]
    fn smear_gate_v2_never_reads_across_a_bos() {
        let (_vs, gpt) = perturbed(&tiny_sp8192());
        let a = Tensor::from_slice(&[7i64, 9, 11, 1, 5, 6, 1, 8]).view([1, 8]);
        let b = Tensor::from_slice(&[3i64, 4, 12, 1, 5, 6, 1, 8]).view([1, 8]);
        let (ea, eb) = (
            gpt.smear_v2(gpt.embed(&a), &a),
            gpt.smear_v2(gpt.embed(&b), &b),
        );
        assert!(ea.narrow(1, 3, 5).equal(&eb.narrow(1, 3, 5)));
        assert!(!ea.narrow(1, 1, 2).equal(&eb.narrow(1, 1, 2)));
        // And the smear itself is on: position 4 differs from its plain embedding.
        assert!(!ea.narrow(1, 4, 1).equal(&gpt.embed(&a).narrow(1, 4, 1)));
    }

    /// Packed documents (R0427's varlen attention): one row of three documents gives, in both
    /// formulations, the logits and loss of each document run alone (RoPE is relative: the row's
    /// positions give the same attention to rounding), with the recurrence on and off, the
    /// SmearGate v2 BOS mask, the lanes and the gates taking part; its gradients are the sum of
    /// the documents' (each weighted by its share of the row's tokens).
    #[test]
    fn packed_documents_equal_each_document_alone() {
        for cfg in [tiny_sp8192(), tiny_headwise()] {
            let (_vs, mut gpt) = perturbed(&cfg);
            let lens = [7i64, 12, 5];
            let total: i64 = lens.iter().sum();
            let x = Tensor::randint_low(2, 64, [1, total], (Kind::Int64, Device::Cpu));
            let y = Tensor::randint(64, [1, total], (Kind::Int64, Device::Cpu));
            let mut start = 0;
            for l in lens {
                let _ = x.narrow(1, start, 1).fill_(1);
                start += l;
            }
            let row: Vec<i64> = Vec::try_from(x.view([-1])).unwrap();
            let docs = Documents::from_tokens(&row, 1, 64);
            assert_eq!(docs.bounds(), &[0, 7, 19, 24]);
            for looping in [true, false] {
                gpt.set_recurrence(looping);
                for formulation in BOTH {
                    gpt.set_formulation(formulation, Device::Cpu).unwrap();
                    let packed =
                        tch::no_grad(|| gpt.packed_forward(&x, &docs, &mut Hooks::default()));
                    let mut start = 0;
                    for l in lens {
                        let alone = tch::no_grad(|| gpt.logits(&x.narrow(1, start, l)));
                        let diff = (packed.narrow(1, start, l) - alone)
                            .abs()
                            .max()
                            .double_value(&[]);
                        assert!(
                            diff < 1e-4,
                            "{formulation:?} loop {looping}: doc at {start}: {diff}"
                        );
                        start += l;
                    }
                    // The loss's gradient: the row's mean over the documents' token-weighted means.
                    let grads = |f: &dyn Fn() -> Tensor| {
                        for (_, p) in gpt.named_parameters() {
                            p.shallow_clone().zero_grad();
                        }
                        f().backward();
                        gpt.named_parameters()
                            .iter()
                            .map(|(_, p)| p.grad().copy())
                            .collect::<Vec<_>>()
                    };
                    let g_packed = grads(&|| gpt.packed_loss(&x, &y, &docs));
                    let g_alone = grads(&|| {
                        let mut start = 0;
                        let mut sum = Tensor::zeros([], (Kind::Float, Device::Cpu));
                        for l in lens {
                            let part = |t: &Tensor| t.narrow(1, start, l);
                            sum += gpt.loss(&part(&x), &part(&y)) * (l as f64 / total as f64);
                            start += l;
                        }
                        sum
                    });
                    for ((name, _), (a, b)) in gpt
                        .named_parameters()
                        .iter()
                        .zip(g_packed.iter().zip(&g_alone))
                    {
                        let scale = b.abs().max().double_value(&[]).max(1e-6);
                        let d = (a - b).abs().max().double_value(&[]);
                        assert!(
                            d / scale < 1e-3,
                            "{formulation:?}: {name} gradient differs by {d} (scale {scale})"
                        );
                    }
                }
            }
        }
    }

    /// No token attends across a BOS: changing every token of the first document (and its
    /// position in the row's length: the same) leaves every later document's logits bit for bit,
    /// in both formulations; without the documents (plain causal attention) they change.
    #[test]
    fn no_token_attends_across_a_bos() {
        let (_vs, mut gpt) = perturbed(&tiny_sp8192());
        let a = Tensor::from_slice(&[1i64, 9, 11, 13, 1, 5, 6, 7, 8, 1, 8, 9, 10]).view([1, 13]);
        let b = Tensor::from_slice(&[1i64, 3, 4, 12, 1, 5, 6, 7, 8, 1, 8, 9, 10]).view([1, 13]);
        let row: Vec<i64> = Vec::try_from(a.view([-1])).unwrap();
        let docs = Documents::from_tokens(&row, 1, 64);
        for formulation in BOTH {
            gpt.set_formulation(formulation, Device::Cpu).unwrap();
            let (la, lb) = tch::no_grad(|| {
                let mut h = Hooks::default();
                (
                    gpt.packed_forward(&a, &docs, &mut h),
                    gpt.packed_forward(&b, &docs, &mut h),
                )
            });
            assert!(
                la.narrow(1, 4, 9).equal(&lb.narrow(1, 4, 9)),
                "{formulation:?}"
            );
            assert!(!la.narrow(1, 1, 3).equal(&lb.narrow(1, 1, 3)));
            let (pa, pb) = tch::no_grad(|| (gpt.logits(&a), gpt.logits(&b)));
            assert!(
                !pa.narrow(1, 4, 9).equal(&pb.narrow(1, 4, 9)),
                "plain attention reads across"
            );
        }
    }

    /// Depth recurrence is the unrolled network: looping layer 1 once more equals a 4-layer model
    /// whose layers are copies of layers 0, 1, 1, 2; with the recurrence off it is the plain
    /// 3-layer U-Net. `set_recurrence` switches between the two and back, exactly.
    #[test]
    fn recurrence_runs_the_unrolled_layers_and_switches_exactly() {
        let looped_cfg = ModelConfig {
            recurrence: Some(crate::config::Recurrence {
                start: 1,
                end: 1,
                loops: 1,
            }),
            skip_gates: true,
            ..tiny()
        };
        let (_vs, looped) = perturbed(&looped_cfg);
        let copy = |cfg: &ModelConfig, layer_of: &[usize]| {
            let (vs, gpt) = build(cfg, Device::Cpu).unwrap();
            let src: BTreeMap<String, Tensor> = looped
                .named_parameters()
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect();
            tch::no_grad(|| {
                for (name, t) in gpt.named_parameters() {
                    let from = match name.strip_prefix("blocks.") {
                        Some(rest) => {
                            let (i, tail) = rest.split_once('.').unwrap();
                            format!("blocks.{}.{tail}", layer_of[i.parse::<usize>().unwrap()])
                        }
                        None => name.clone(),
                    };
                    let s = &src[&from];
                    let s = s.narrow(0, 0, t.size()[0]); // skip rows: the first ones
                    t.shallow_clone().copy_(&s);
                }
            });
            (vs, gpt)
        };
        let (_v4, unrolled) = copy(
            &ModelConfig {
                num_layers: 4,
                skip_gates: true,
                ..tiny()
            },
            &[0, 1, 1, 2],
        );
        let (_v3, plain) = copy(
            &ModelConfig {
                skip_gates: true,
                ..tiny()
            },
            &[0, 1, 2],
        );
        let x = Tensor::randint(64, [2, 16], (Kind::Int64, Device::Cpu));
        let on = looped.logits(&x);
        assert!(looped.recurrence());
        let diff = (&on - unrolled.logits(&x)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "looped vs unrolled: {diff}");
        looped.set_recurrence(false);
        assert!(!looped.recurrence());
        let off = looped.logits(&x);
        let diff = (&off - plain.logits(&x)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "off vs plain: {diff}");
        assert!((&on - &off).abs().max().double_value(&[]) > 1e-3);
        looped.set_recurrence(true);
        assert!(looped.logits(&x).equal(&on), "on again: the same function");
        // Without a recurrence in the config the switch changes nothing.
        plain.set_recurrence(false);
        assert!(!plain.recurrence());
        let again = plain.logits(&x);
        plain.set_recurrence(true);
        assert!(plain.logits(&x).equal(&again));
    }

    /// Late QAT: the forward pass sees per-row int6 weights (so the loss changes when it turns
    /// on, in both formulations, alike), gradients pass straight through, and off restores the
    /// exact function.
    #[test]
    fn fake_quant_changes_the_loss_and_passes_gradients_straight_through() {
        let (_vs, mut gpt) = perturbed(&tiny_r0322());
        let x = Tensor::randint(64, [2, 16], (Kind::Int64, Device::Cpu));
        let y = Tensor::randint(64, [2, 16], (Kind::Int64, Device::Cpu));
        let mut losses = vec![];
        for formulation in BOTH {
            gpt.set_formulation(formulation, Device::Cpu).unwrap();
            let off = tch::no_grad(|| gpt.loss(&x, &y)).double_value(&[]);
            gpt.set_fake_quant(true);
            let on = gpt.loss(&x, &y);
            on.backward();
            let on = on.double_value(&[]);
            gpt.set_fake_quant(false);
            assert!(
                (on - off).abs() > 1e-6,
                "{formulation:?}: QAT must change the loss"
            );
            let again = tch::no_grad(|| gpt.loss(&x, &y)).double_value(&[]);
            assert_eq!(again, off, "{formulation:?}: off must restore the function");
            losses.push(on);
        }
        assert!((losses[0] - losses[1]).abs() < 1e-5, "{losses:?}");
        // The quantized weight itself: per-row int6 on R0322's grid, the step max|w|/31 floored
        // at 1/31 (the second row's).
        let rows = [[3.1f32, -6.2, 0.0, 0.1], [0.31, -0.62, 0.0, 0.01]];
        let w = Tensor::from_slice(rows.as_flattened()).view([2, 4]);
        gpt.set_fake_quant(true);
        let q: Vec<f32> = Vec::try_from(gpt.qat(&w).view([-1])).unwrap();
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                let s = (6.2f32.min(r[1].abs()) / 31.0).max(1.0 / 31.0);
                r.map(|v| (v / s).round().clamp(-32.0, 31.0) * s)
            })
            .collect();
        assert_eq!(q, want);
        assert_eq!(want[1], -6.2f32 / 31.0 * 31.0);
    }

    #[test]
    fn logits_are_soft_capped_and_nll_agrees_with_the_loss() {
        let cfg = ModelConfig {
            logit_softcap: 2.0,
            ..tiny()
        };
        let (_vs, gpt) = perturbed(&cfg);
        let x = Tensor::randint(64, [3, 16], (Kind::Int64, Device::Cpu));
        let y = Tensor::randint(64, [3, 16], (Kind::Int64, Device::Cpu));
        let logits = gpt.logits(&x);
        assert_eq!(
            (logits.size(), logits.kind()),
            (vec![3, 16, 64], Kind::Float)
        );
        assert!(logits.abs().max().double_value(&[]) <= 2.0);
        let nll = gpt.token_nll(&x, &y);
        assert_eq!(nll.size(), vec![3, 16]);
        let diff = (nll.mean(Kind::Float) - gpt.loss(&x, &y))
            .abs()
            .double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }

    /// Causality: changing a later token leaves earlier logits unchanged (both formulations).
    #[test]
    fn attention_is_causal() {
        let (_vs, mut gpt) = perturbed(&tiny());
        let x = Tensor::randint(64, [1, 16], (Kind::Int64, Device::Cpu));
        let x2 = x.copy();
        let _ = x2.get(0).get(10).fill_((x.int64_value(&[0, 10]) + 1) % 64);
        for formulation in BOTH {
            gpt.set_formulation(formulation, Device::Cpu).unwrap();
            let (a, b) = (gpt.logits(&x), gpt.logits(&x2));
            assert!(
                a.narrow(1, 0, 10).equal(&b.narrow(1, 0, 10)),
                "{formulation:?}"
            );
            assert!(
                !a.narrow(1, 10, 6).equal(&b.narrow(1, 10, 6)),
                "{formulation:?}"
            );
        }
    }

    /// Both formulations tap the same names, in the same order, with the same shapes.
    #[test]
    fn taps_see_every_linear_input() {
        let (_vs, mut gpt) = perturbed(&tiny());
        let x = Tensor::randint(64, [2, 8], (Kind::Int64, Device::Cpu));
        for formulation in BOTH {
            gpt.set_formulation(formulation, Device::Cpu).unwrap();
            let mut seen: Vec<(String, Vec<i64>)> = vec![];
            let mut tap = |name: &str, input: &Tensor| seen.push((name.to_string(), input.size()));
            let with = gpt.forward(&x, &mut Hooks::with_taps(&mut tap));
            assert!(
                with.equal(&gpt.logits(&x)),
                "{formulation:?}: taps must not change the output"
            );
            assert_eq!(seen.len(), 3 * 6 + 1);
            assert_eq!(
                seen[0],
                ("blocks.0.attn.c_q.weight".to_string(), vec![16, 32])
            );
            assert_eq!(seen[2].0, "blocks.0.attn.c_v.weight");
            assert_eq!(
                seen[3],
                ("blocks.0.attn.proj.weight".to_string(), vec![16, 32])
            );
            assert_eq!(seen[4].0, "blocks.0.mlp.fc.weight");
            assert_eq!(
                seen[5],
                ("blocks.0.mlp.proj.weight".to_string(), vec![16, 64])
            );
            assert_eq!(seen[18], ("tok_emb.weight".to_string(), vec![16, 32]));
        }
    }

    /// `UpstreamBf16`: bf16 embedding and compute, the literal formulation whatever was chosen,
    /// and logits soft-capped in bf16 (so every logit is a bf16 value upcast), unlike `Native`
    /// bf16.
    #[test]
    fn upstream_numerics_follow_upstreams_dtypes() {
        let (_vs, mut gpt) = perturbed(&tiny());
        let x = Tensor::randint(64, [2, 16], (Kind::Int64, Device::Cpu));
        let is_bf16_valued = |t: &Tensor| t.to_kind(Kind::BFloat16).to_kind(Kind::Float).equal(t);
        gpt.set_compute_kind(Kind::BFloat16);
        let native = gpt.logits(&x);
        assert_eq!(native.kind(), Kind::Float);
        assert!(!is_bf16_valued(&native));
        gpt.set_formulation(Formulation::Fast, Device::Cpu).unwrap();
        assert_eq!(gpt.formulation(), Formulation::Fast);
        let fast = gpt.logits(&x);
        gpt.set_numerics(Numerics::UpstreamBf16);
        assert_eq!(gpt.formulation(), Formulation::Literal);
        assert_eq!(gpt.compute_kind(), Kind::BFloat16);
        assert_eq!(gpt.named_parameters()[0].1.kind(), Kind::BFloat16); // tok_emb
        let upstream = gpt.logits(&x);
        assert_eq!(upstream.kind(), Kind::Float);
        assert!(is_bf16_valued(&upstream));
        assert!(
            !upstream.equal(&fast),
            "fast must not run under upstream numerics"
        );
        gpt.set_formulation(Formulation::Literal, Device::Cpu)
            .unwrap();
        assert!(
            gpt.logits(&x).equal(&upstream),
            "the choice must not matter"
        );
        let diff = (&upstream - &native).abs().max().double_value(&[]);
        assert!(diff > 0.0 && diff < 0.1, "{diff}");
    }

    struct HeadBias;
    impl Adapter for HeadBias {
        fn delta(&self, site: Site, layer: usize, input: &Tensor) -> Option<Tensor> {
            assert!(site != Site::Head || layer == 3);
            (site == Site::Head).then(|| {
                let (b, t, _) = input.size3().unwrap();
                let d = Tensor::zeros([b, t, 64], (Kind::Float, Device::Cpu));
                let _ = d.narrow(2, 5, 1).fill_(1000.0);
                d
            })
        }
    }

    #[test]
    fn an_adapter_delta_reaches_the_logits_before_the_cap() {
        let (_vs, mut gpt) = perturbed(&tiny());
        let x = Tensor::randint(64, [1, 4], (Kind::Int64, Device::Cpu));
        for formulation in BOTH {
            gpt.set_formulation(formulation, Device::Cpu).unwrap();
            let logits = gpt.forward(&x, &mut Hooks::with_adapter(&HeadBias));
            // +1000 before the cap saturates id 5 at the cap (30); the others are unchanged.
            assert!(
                (logits.double_value(&[0, 0, 5]) - 30.0).abs() < 1e-4,
                "{formulation:?}"
            );
            assert!(
                logits
                    .narrow(2, 0, 5)
                    .equal(&gpt.logits(&x).narrow(2, 0, 5)),
                "{formulation:?}"
            );
        }
    }

    struct QvShift {
        kv: i64,
    }
    impl Adapter for QvShift {
        fn delta(&self, site: Site, layer: usize, input: &Tensor) -> Option<Tensor> {
            let width = match site {
                Site::Q => 32,
                Site::V | Site::K => self.kv,
                Site::O | Site::MlpOut => 32,
                _ => return None,
            };
            let (b, t, _) = input.size3().unwrap();
            Some(Tensor::full(
                [b, t, width],
                0.01 * (layer as f64 + 1.0),
                (Kind::Float, Device::Cpu),
            ))
        }
    }

    /// The fast formulation (pgolf-kernels' fused ops: their reference formulas on the CPU)
    /// computes the same function, loss and gradients as the literal one (f32), with and without
    /// adapters, for GQA and plain multi-head attention, tied and untied heads.
    #[test]
    fn literal_and_fast_formulations_agree() {
        let sp8192 = [
            (tiny_sp8192(), true),
            (tiny_sp8192(), false),
            (tiny_headwise(), true),
            (tiny_composed(), true),
            (tiny_composed(), false),
        ];
        let cases = [
            tiny(),
            ModelConfig {
                num_kv_heads: 4,
                tie_embeddings: false,
                activation: crate::Activation::LeakyRelu2(0.5),
                ..tiny()
            },
            tiny_r0322(),
            // R0322's own combination (no norm weights: LN scale is the norm kernels' output
            // factor alone), partial RoPE on heads of 16 (8 dims rotated), XSA on every layer
            // with two q heads per kv head.
            ModelConfig {
                norm_weights: false,
                num_heads: 2,
                num_kv_heads: 1,
                rope_dims: Some(8),
                xsa_last_n: 3,
                ..tiny_r0322()
            },
            // The options with unprojected tables (dims equal to the widths), whole-head RoPE
            // rescaled and MHA.
            ModelConfig {
                num_kv_heads: 4,
                rope_dims: None,
                bigram: Some(crate::config::BigramHash {
                    buckets: 9,
                    dim: 32,
                }),
                value_embed: Some(crate::config::ValueEmbedding {
                    dim: 32,
                    layers: vec![0],
                }),
                ..tiny_r0322()
            },
        ];
        for (cfg, looping) in cases.into_iter().map(|c| (c, true)).chain(sp8192) {
            let (_vs, mut gpt) = perturbed(&cfg);
            gpt.set_recurrence(looping);
            let x = Tensor::randint(64, [2, 16], (Kind::Int64, Device::Cpu));
            if let Some(s) = &cfg.smear_gate_v2 {
                // Documents start mid-window, so the BOS mask takes part.
                let _ = x.narrow(1, 5, 1).fill_(s.bos_id as i64);
            }
            let y = Tensor::randint(64, [2, 16], (Kind::Int64, Device::Cpu));
            let mut outputs = vec![];
            for formulation in BOTH {
                gpt.set_formulation(formulation, Device::Cpu).unwrap();
                assert_eq!(gpt.formulation(), formulation);
                for (_, p) in gpt.named_parameters() {
                    p.shallow_clone().zero_grad();
                }
                let loss = gpt.loss(&x, &y);
                loss.backward();
                let grads: Vec<Tensor> = gpt
                    .named_parameters()
                    .iter()
                    .map(|(_, p)| p.grad().copy())
                    .collect();
                let adapted = tch::no_grad(|| {
                    gpt.forward(
                        &x,
                        &mut Hooks::with_adapter(&QvShift {
                            kv: cfg.kv_dim() as i64,
                        }),
                    )
                });
                let logits = tch::no_grad(|| gpt.logits(&x));
                outputs.push((logits, grads, adapted, loss.detach()));
            }
            let [literal, fast] = &outputs[..] else {
                unreachable!("one output per formulation")
            };
            let max = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
            assert!(
                max(&literal.0, &fast.0) < 1e-5,
                "logits differ by {}",
                max(&literal.0, &fast.0)
            );
            assert!(
                max(&literal.3, &fast.3) < 1e-5,
                "losses differ by {}",
                max(&literal.3, &fast.3)
            );
            assert!(
                max(&literal.2, &fast.2) < 1e-5,
                "adapted logits differ by {}",
                max(&literal.2, &fast.2)
            );
            assert!(
                max(&literal.2, &literal.0) > 1e-3,
                "the adapter must change the logits"
            );
            for ((name, _), (g1, g2)) in gpt
                .named_parameters()
                .iter()
                .zip(literal.1.iter().zip(&fast.1))
            {
                let scale = g1.abs().max().double_value(&[]).max(1e-8);
                assert!(
                    max(g1, g2) / scale < 1e-4,
                    "{name}: gradients differ by {} (scale {scale})",
                    max(g1, g2)
                );
            }
        }
    }
}
