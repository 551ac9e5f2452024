//! The model's shape (REFERENCE.md §3.1, §5.13), written as `config.json` beside the weights and
//! inside the artifact. It lives in the evaluator because the evaluator must rebuild the model from
//! the artifact alone; pgolf-model re-exports it.
//! `Default` is the baseline: 9 layers × 512, 8 heads / 4 KV heads, MLP ×2, vocab 1024, tied
//! embeddings, 17,059,912 parameters.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Upstream's control-tensor name patterns: parameters whose name contains one are kept f32 in the
/// artifact and given to Adam even when 2-D (one list for the model and the quantizer).
/// The record stacks' additions (R0322's list: `smear`, `dtg_gate`, `ve_layer_scales`,
/// `ve_shared.scale`) and the SP8192 line's (R0427's list: `skip_gates`, `parallel_post_lambdas`,
/// `parallel_resid_lambdas`, `attn_gate_w`, `smear_gate`, `smear_lambda`, the last two inside
/// `smear`) name no baseline tensor, so the baseline's routing is unchanged.
pub const CONTROL_PATTERNS: [&str; 17] = [
    "attn_scale",
    "attn_scales",
    "mlp_scale",
    "mlp_scales",
    "resid_mix",
    "resid_mixes",
    "q_gain",
    "skip_weight",
    "skip_weights",
    "smear",
    "dtg_gate",
    "ve_layer_scales",
    "ve_shared.scale",
    "skip_gates",
    "parallel_post_lambdas",
    "parallel_resid_lambdas",
    "attn_gate_w",
];

/// The MLP's nonlinearity before the square.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `relu(x)²` (the baseline).
    Relu2,
    /// `leaky_relu(x, slope)²` (R0323 and later use slope 0.5).
    LeakyRelu2(f64),
}

/// BigramHash (R0322's `bigram`): a table of hashed (previous, current) token pairs, projected to
/// the model width and added to the token embedding before its norm (REFERENCE.md §5.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigramHash {
    /// Rows of the table; pairs hash to `0..buckets−1`, the first position to `buckets − 1`.
    pub buckets: usize,
    /// Width of a row; projected to `model_dim` by `bigram.proj` unless equal to it.
    pub dim: usize,
}

/// Value embedding (R0322's `ve_shared`): one token table, projected to the kv width, scaled per
/// layer and added to the attention values of `layers` (REFERENCE.md §5.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueEmbedding {
    /// Width of a row; projected to the kv width by `ve_shared.proj` unless equal to it.
    pub dim: usize,
    /// The physical layers whose values receive it (R0322: 9 and 10).
    pub layers: Vec<usize>,
}

/// Depth recurrence (R0405's `Loop45x2`, R0427; REFERENCE.md §5.13): the physical layers
/// `start..=end` run `loops + 1` times in a row, sharing their weights. The virtual layer list
/// `[0, start) + [start, end]×(loops+1) + (end, L)` is split in half (floor) into encoder and
/// decoder slots, and the U-Net's skips follow those slots. Training runs the plain U-Net until it
/// switches the recurrence on ([`ModelConfig::layer_order`]); evaluation always runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    /// The first physical layer of the loop (R0405: 4, R0427: 3).
    pub start: usize,
    /// The last physical layer of the loop, inclusive (5 in both).
    pub end: usize,
    /// Extra passes over the loop (the records' `NUM_LOOPS`: 2, so the loop runs three times).
    pub loops: usize,
}

/// Which lane the parallel-residual stack hands to the final norm (R0427's
/// `PARALLEL_FINAL_LANE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalLane {
    /// `(lane0 + lane1) / 2` (R0427).
    #[default]
    Mean,
    /// `lane0`.
    Attn,
    /// `lane1`.
    Mlp,
}

/// Parallel residual lanes (R0427; REFERENCE.md §5.13): from the first decoder slot whose
/// physical layer is ≥ `start_layer`, the stream splits into an attention lane and an MLP lane;
/// each such block reads attention from lane 0 and the MLP from lane 1 (both before the block) and
/// writes `lane_k ← ρ[i,k]·lane_k + π[i,0,k]·a + π[i,1,k]·m`. `parallel_resid_lambdas` ρ `[L, 2]`
/// (init 1.1) and `parallel_post_lambdas` π `[L, 2, 2]` (init 1) exist for every layer, as in the
/// record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelLanes {
    /// The first physical layer that runs in parallel (R0427: 8); at least 1 (0 is the record's
    /// "off").
    pub start_layer: usize,
    #[serde(default)]
    pub final_lane: FinalLane,
}

/// SmearGate v2 with the BOS mask (R0427; REFERENCE.md §5.13), on the raw token embedding before
/// its norm: `x_t ← x_t + λ·σ(w·x_t[0:window])·x_{t−1}·[id_t ≠ bos]` for t ≥ 1, so a document's
/// first token never reads the previous document. `smear_gate.weight` `[1, window]` and
/// `smear_lambda` `[1]`, both initialised to 0 (the identity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmearGateV2 {
    /// The record's `GATE_WINDOW` (12).
    pub window: usize,
    /// The id whose positions take no smear (the records hard-code 1, sp8192's BOS).
    #[serde(default = "default_bos")]
    pub bos_id: usize,
}

fn default_bos() -> usize {
    1
}

/// A per-head sigmoid gate on each attention head's output (after XSA, before the output
/// projection), `y_h ← σ(s·w_h·u[0:n])·y_h` with `u` the block's normed attention input; its
/// weight is `blocks.{i}.attn.attn_gate_w` `[H, n]` (REFERENCE.md §5.13).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AttnGate {
    /// R0427's sparse gate: n = `window` (its `GATE_WINDOW`, 12), s = `scale` (its run: 0.5);
    /// the weight initialised N(0, init_std²), or 0 when `init_std` is 0 (the record's default).
    Sparse {
        window: usize,
        scale: f64,
        #[serde(default)]
        init_std: f64,
    },
    /// The headwise gate (PR #2071's `GATED_ATTN_ENABLED`, from Qwen's gated attention): n =
    /// `model_dim`, s = 1, the weight initialised N(0, init_std²) (its default 0.01). The
    /// submission's page says Q is widened by a gate dim; its code (`refs/pull/2071/head`) keeps
    /// Q as it is and adds this separate weight, which is what is built here.
    Headwise { init_std: f64 },
}

impl AttnGate {
    /// The gate's input width `n` for a model of width `d`.
    pub fn width(&self, d: usize) -> usize {
        match self {
            AttnGate::Sparse { window, .. } => *window,
            AttnGate::Headwise { .. } => d,
        }
    }

    /// The factor `s` inside the sigmoid.
    pub fn scale(&self) -> f64 {
        match self {
            AttnGate::Sparse { scale, .. } => *scale,
            AttnGate::Headwise { .. } => 1.0,
        }
    }
}

/// How the block matrices are initialised (training only; the forward pass does not read it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// PyTorch's default Linear init, U(±1/√fan_in) (the baseline).
    #[default]
    PytorchDefault,
    /// R0322's `_init_weights`: every non-zero-initialised Linear with both dims ≥ 64 orthogonal
    /// (gain 1), those named `….proj` (BigramHash's and VE's projections) then scaled by 1/√(2L).
    Orthogonal,
    /// R0323's (parameter banks): every Q, K, V and MLP-up matrix orthogonal whatever its size,
    /// the output and MLP-down projections zero, BigramHash's and VE's projections orthogonal
    /// when both dims are ≥ 64, unscaled.
    OrthogonalBanks,
}

/// R0323's parameter banks, in order: each bank is the stack of these per-layer matrices.
pub fn bank_slices(num_layers: usize) -> Vec<(&'static str, Vec<String>)> {
    let names = |parts: &[&str]| -> Vec<String> {
        parts
            .iter()
            .flat_map(|p| (0..num_layers).map(move |i| format!("blocks.{i}.{p}")))
            .collect()
    };
    vec![
        ("qo_bank", names(&["attn.c_q.weight", "attn.proj.weight"])),
        ("kv_bank", names(&["attn.c_k.weight", "attn.c_v.weight"])),
        ("mlp_up_bank", names(&["mlp.fc.weight"])),
        ("mlp_down_bank", names(&["mlp.proj.weight"])),
    ]
}

/// The model's shape and its architecture options. Every option is off by default (the baseline);
/// unknown fields are an error, so a config naming an option this build lacks is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub num_layers: usize,
    pub model_dim: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// MLP hidden width = `mlp_mult · model_dim`.
    pub mlp_mult: usize,
    /// The training sequence length (RoPE tables are cached for it; longer inputs still work).
    pub seq_len: usize,
    pub rope_base: f64,
    pub logit_softcap: f64,
    pub qk_gain_init: f64,
    pub tie_embeddings: bool,
    /// Std of the tied embedding's normal init (an untied embedding keeps PyTorch's N(0, 1)).
    pub tied_embed_init_std: f64,
    pub activation: Activation,
    /// MLP hidden width set directly (PROTEUS EMA: 992); `None` = `mlp_mult · model_dim`.
    pub mlp_hidden: Option<usize>,
    /// Partial RoPE: rotate only the first `rope_dims` of each head (half-split within them), pass
    /// the rest through (R0322: 16 of 64). `None` = the whole head.
    pub rope_dims: Option<usize>,
    /// Upstream's NTK rescale quirk: Rotary is built for this length, and a window longer than it
    /// gets base `rope_base·(T/len)^(rd/(rd−2))`, rd the rotated dims (R0322: 1024, so its seq-2048
    /// training and eval run rescaled). `None` = never rescaled (the baseline).
    pub rope_ntk_len: Option<usize>,
    /// XSA on the last n layers: each head's output loses its component along its own
    /// (normalised) value vector (REFERENCE.md §5.6). 0 = off.
    pub xsa_last_n: usize,
    /// LN scale: both norms' outputs of block i multiplied by 1/√(i+1).
    pub ln_scale: bool,
    /// Learnable norm scales (the "11L MLP3x int6" page's "learnable LN scale, init 1.0"): each
    /// block's two RMSNorms get a weight vector `blocks.{i}.attn_norm.weight`,
    /// `blocks.{i}.mlp_norm.weight` `[d]`, initialised to ones.
    pub norm_weights: bool,
    /// SmearGate v1: after the embedding norm, `(1−σ(g))⊙x_t + σ(g)⊙x_{t−1}` (`smear.gate`).
    pub smear_gate: bool,
    pub bigram: Option<BigramHash>,
    pub value_embed: Option<ValueEmbedding>,
    pub init: InitScheme,
    /// R0323's parameter banks as the stored layout of train and ema-finalize outputs: the block
    /// matrices as `qo_bank` `[2L, d, d]` (Q then output projections), `kv_bank` `[2L, kv, d]`,
    /// `mlp_up_bank` `[L, h, d]`, `mlp_down_bank` `[L, d, h]` ([`bank_slices`]). The model and its
    /// optimizer work on the per-layer matrices (Muon orthogonalises each slice alone, as R0323's
    /// batched Newton–Schulz does); the artifact is stored per layer, as R0323 quantizes.
    pub banks: bool,
    /// Depth recurrence (R0405, R0427): loop physical layers, weights shared.
    pub recurrence: Option<Recurrence>,
    /// Sigmoid skip gates (R0405, R0427): each U-Net skip merges as
    /// `lerp(w_j⊙skip, h, σ(g_j))` with `skip_gates` `[num_skip_weights, d]`, init 0.
    pub skip_gates: bool,
    /// Parallel residual lanes in the decoder (R0427).
    pub parallel: Option<ParallelLanes>,
    /// SmearGate v2 with the BOS mask (R0427); exclusive with `smear_gate` (v1).
    pub smear_gate_v2: Option<SmearGateV2>,
    /// A per-head attention output gate: R0427's sparse one or PR #2071's headwise one.
    pub attn_gate: Option<AttnGate>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 1024,
            num_layers: 9,
            model_dim: 512,
            num_heads: 8,
            num_kv_heads: 4,
            mlp_mult: 2,
            seq_len: 1024,
            rope_base: 10000.0,
            logit_softcap: 30.0,
            qk_gain_init: 1.5,
            tie_embeddings: true,
            tied_embed_init_std: 0.005,
            activation: Activation::Relu2,
            mlp_hidden: None,
            rope_dims: None,
            rope_ntk_len: None,
            xsa_last_n: 0,
            ln_scale: false,
            norm_weights: false,
            smear_gate: false,
            bigram: None,
            value_embed: None,
            init: InitScheme::PytorchDefault,
            banks: false,
            recurrence: None,
            skip_gates: false,
            parallel: None,
            smear_gate_v2: None,
            attn_gate: None,
        }
    }
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.model_dim / self.num_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim()
    }

    pub fn mlp_hidden(&self) -> usize {
        self.mlp_hidden.unwrap_or(self.mlp_mult * self.model_dim)
    }

    /// The dims of each head that RoPE rotates.
    pub fn rope_dims(&self) -> usize {
        self.rope_dims.unwrap_or(self.head_dim())
    }

    /// Whether layer `i` runs XSA (the last `xsa_last_n`).
    pub fn xsa(&self, layer: usize) -> bool {
        layer + self.xsa_last_n >= self.num_layers
    }

    /// The LN-scale factor of layer `i`: 1/√(i+1), or 1 when off.
    pub fn ln_scale_factor(&self, layer: usize) -> f64 {
        match self.ln_scale {
            true => 1.0 / ((layer + 1) as f64).sqrt(),
            false => 1.0,
        }
    }

    /// The index of layer `i` in the value-embedding layer list, if it receives one.
    pub fn value_embed_slot(&self, layer: usize) -> Option<usize> {
        let ve = self.value_embed.as_ref()?;
        ve.layers.iter().position(|&l| l == layer)
    }

    /// Encoder half `floor(L/2)`; the decoder gets the rest (REFERENCE.md §3.2).
    pub fn num_encoder_layers(&self) -> usize {
        self.num_layers / 2
    }

    pub fn num_decoder_layers(&self) -> usize {
        self.num_layers - self.num_encoder_layers()
    }

    /// U-Net skip connections: `min(L_enc, L_dec)`, counted over the recurrence's virtual slots
    /// when it is configured (as the records size `skip_weights`, whether looping runs or not).
    pub fn num_skip_weights(&self) -> usize {
        let (enc, dec) = self.layer_order(true);
        enc.len().min(dec.len())
    }

    /// The physical layer of each encoder and decoder slot: with the recurrence configured and
    /// `looping` on, its virtual list split in half (floor); otherwise the plain U-Net, `0..L/2`
    /// and `L/2..L`.
    pub fn layer_order(&self, looping: bool) -> (Vec<usize>, Vec<usize>) {
        let l = self.num_layers;
        match (&self.recurrence, looping) {
            (Some(r), true) => {
                let mut all: Vec<usize> = (0..r.start).collect();
                for _ in 0..=r.loops {
                    all.extend(r.start..=r.end);
                }
                all.extend(r.end + 1..l);
                let dec = all.split_off(all.len() / 2);
                (all, dec)
            }
            _ => {
                let enc = self.num_encoder_layers();
                ((0..enc).collect(), (enc..l).collect())
            }
        }
    }

    /// Whether decoder layer `i` (physical) runs in the parallel lanes.
    pub fn parallel_layer(&self, layer: usize) -> bool {
        self.parallel
            .as_ref()
            .is_some_and(|p| layer >= p.start_layer)
    }

    /// Every parameter of the model, by upstream `state_dict` name and shape: the one list of the
    /// layout. pgolf-model builds exactly these (tested), the counted evaluator loads them from an
    /// artifact, ema-finalize checks train outputs against them, and [`Self::num_params`] sums
    /// them.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (v, d, kv, hidden) = (
            self.vocab_size,
            self.model_dim,
            self.kv_dim(),
            self.mlp_hidden(),
        );
        let mut out = vec![
            ("tok_emb.weight".to_string(), vec![v, d]),
            ("skip_weights".to_string(), vec![self.num_skip_weights(), d]),
        ];
        for i in 0..self.num_layers {
            let mut block = vec![
                ("attn.c_q.weight", vec![d, d]),
                ("attn.c_k.weight", vec![kv, d]),
                ("attn.c_v.weight", vec![kv, d]),
                ("attn.proj.weight", vec![d, d]),
                ("attn.q_gain", vec![self.num_heads]),
                ("mlp.fc.weight", vec![hidden, d]),
                ("mlp.proj.weight", vec![d, hidden]),
                ("attn_scale", vec![d]),
                ("mlp_scale", vec![d]),
                ("resid_mix", vec![2, d]),
            ];
            if self.norm_weights {
                block.extend([("attn_norm.weight", vec![d]), ("mlp_norm.weight", vec![d])]);
            }
            if let Some(g) = &self.attn_gate {
                block.push(("attn.attn_gate_w", vec![self.num_heads, g.width(d)]));
            }
            out.extend(
                block
                    .into_iter()
                    .map(|(name, shape)| (format!("blocks.{i}.{name}"), shape)),
            );
        }
        if self.banks {
            // The slices give way to their banks (same count of parameters).
            let banks = bank_slices(self.num_layers);
            let shapes: std::collections::HashMap<String, Vec<usize>> =
                out.iter().cloned().collect();
            out.retain(|(name, _)| !banks.iter().any(|(_, slices)| slices.contains(name)));
            for (bank, slices) in banks {
                let mut shape = vec![slices.len()];
                shape.extend(&shapes[&slices[0]]);
                out.push((bank.to_string(), shape));
            }
        }
        if !self.tie_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, d]));
        }
        if self.smear_gate {
            out.push(("smear.gate".to_string(), vec![d]));
        }
        if self.skip_gates {
            out.push(("skip_gates".to_string(), vec![self.num_skip_weights(), d]));
        }
        if self.parallel.is_some() {
            let l = self.num_layers;
            out.push(("parallel_post_lambdas".to_string(), vec![l, 2, 2]));
            out.push(("parallel_resid_lambdas".to_string(), vec![l, 2]));
        }
        if let Some(s) = &self.smear_gate_v2 {
            out.push(("smear_gate.weight".to_string(), vec![1, s.window]));
            out.push(("smear_lambda".to_string(), vec![1]));
        }
        let mut table = |prefix: &str, rows: usize, dim: usize, width: usize| {
            out.push((format!("{prefix}.embed.weight"), vec![rows, dim]));
            if dim != width {
                out.push((format!("{prefix}.proj.weight"), vec![width, dim]));
            }
            out.push((format!("{prefix}.scale"), vec![]));
        };
        if let Some(b) = &self.bigram {
            table("bigram", b.buckets, b.dim, d);
        }
        if let Some(ve) = &self.value_embed {
            table("ve_shared", v, ve.dim, kv);
            out.extend((0..ve.layers.len()).map(|k| (format!("ve_layer_scales.{k}"), vec![1])));
        }
        out
    }

    /// Total trainable parameters, counted from the shapes (the baseline: 17,059,912).
    pub fn num_params(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    /// Checks the shape constraints the model relies on (as upstream's constructor does).
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("num_layers", self.num_layers),
            ("model_dim", self.model_dim),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("mlp_mult", self.mlp_mult),
            ("seq_len", self.seq_len),
        ];
        for (name, v) in positive {
            if v == 0 {
                bail!("model config: {name} must be positive");
            }
        }
        if self.mlp_mult.checked_mul(self.model_dim).is_none() {
            bail!("model config: mlp_mult × model_dim overflows");
        }
        if self.vocab_size > 65536 {
            bail!(
                "model config: vocab_size {} does not fit u16 token shards",
                self.vocab_size
            );
        }
        if !self.model_dim.is_multiple_of(self.num_heads) {
            bail!(
                "model config: model_dim {} is not divisible by num_heads {}",
                self.model_dim,
                self.num_heads
            );
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            bail!(
                "model config: num_heads {} is not divisible by num_kv_heads {}",
                self.num_heads,
                self.num_kv_heads
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "model config: head_dim {} must be even for RoPE",
                self.head_dim()
            );
        }
        if self.logit_softcap <= 0.0 {
            bail!(
                "model config: logit_softcap must be positive, got {}",
                self.logit_softcap
            );
        }
        let rd = self.rope_dims();
        if rd == 0 || !rd.is_multiple_of(2) || rd > self.head_dim() {
            bail!(
                "model config: rope_dims {rd} must be even and in 2..={}",
                self.head_dim()
            );
        }
        if self.rope_ntk_len == Some(0) || (self.rope_ntk_len.is_some() && rd <= 2) {
            bail!("model config: rope_ntk_len must be positive and needs rope_dims > 2");
        }
        if self.mlp_hidden == Some(0) {
            bail!("model config: mlp_hidden must be positive");
        }
        if self.xsa_last_n > self.num_layers {
            bail!(
                "model config: xsa_last_n {} exceeds num_layers {}",
                self.xsa_last_n,
                self.num_layers
            );
        }
        if let Some(b) = &self.bigram {
            if b.buckets < 2 || b.dim == 0 {
                bail!("model config: bigram needs buckets ≥ 2 and dim > 0");
            }
        }
        if let Some(v) = &self.value_embed {
            if v.dim == 0 {
                bail!("model config: value_embed.dim must be positive");
            }
            for (k, &l) in v.layers.iter().enumerate() {
                if l >= self.num_layers || v.layers[..k].contains(&l) {
                    bail!(
                        "model config: value_embed.layers has {l}: layers must be distinct and below num_layers {}",
                        self.num_layers
                    );
                }
            }
        }
        if let Some(r) = &self.recurrence {
            if r.start > r.end || r.end >= self.num_layers {
                bail!(
                    "model config: recurrence needs start ≤ end < num_layers {}, got {}..={}",
                    self.num_layers,
                    r.start,
                    r.end
                );
            }
        }
        if let Some(p) = &self.parallel {
            if p.start_layer == 0 || p.start_layer >= self.num_layers {
                bail!(
                    "model config: parallel.start_layer {} must be in 1..{}",
                    p.start_layer,
                    self.num_layers
                );
            }
            // Once the lanes split they stay split: the parallel layers must end the decoder (as
            // in the records), looping or not.
            for looping in [false, true] {
                let (_, dec) = self.layer_order(looping);
                let first = dec.iter().position(|&i| self.parallel_layer(i));
                if let Some(k) = first {
                    if dec[k..].iter().any(|&i| !self.parallel_layer(i)) {
                        bail!(
                            "model config: parallel.start_layer {}: the decoder {dec:?} returns to a sequential layer after a parallel one",
                            p.start_layer
                        );
                    }
                }
            }
        }
        if let Some(s) = &self.smear_gate_v2 {
            if self.smear_gate {
                bail!("model config: smear_gate (v1) and smear_gate_v2 are exclusive");
            }
            if s.window == 0 || s.window > self.model_dim || s.bos_id >= self.vocab_size {
                bail!(
                    "model config: smear_gate_v2 needs 0 < window ≤ model_dim and bos_id < vocab_size"
                );
            }
        }
        match &self.attn_gate {
            Some(AttnGate::Sparse {
                window,
                scale,
                init_std,
            }) if *window == 0
                || *window > self.model_dim
                || !scale.is_finite()
                || !(init_std.is_finite() && *init_std >= 0.0) =>
            {
                bail!("model config: attn_gate.sparse needs 0 < window ≤ model_dim, a finite scale and init_std ≥ 0")
            }
            Some(AttnGate::Headwise { init_std })
                if !(init_std.is_finite() && *init_std >= 0.0) =>
            {
                bail!("model config: attn_gate.headwise needs init_std ≥ 0")
            }
            _ => {}
        }
        if let Activation::LeakyRelu2(slope) = self.activation {
            if !slope.is_finite() {
                bail!("model config: leaky_relu2 slope must be finite");
            }
        }
        Ok(())
    }

    /// Reads `config.json` (unknown fields are an error; missing ones take the defaults).
    pub fn read(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read model config", path.display()))?;
        let cfg: ModelConfig = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: invalid model config: {e}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write model config", path.display()))
    }
}
