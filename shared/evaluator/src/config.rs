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
pub const CONTROL_PATTERNS: [&str; 9] = [
    "attn_scale",
    "attn_scales",
    "mlp_scale",
    "mlp_scales",
    "resid_mix",
    "resid_mixes",
    "q_gain",
    "skip_weight",
    "skip_weights",
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
        self.mlp_mult * self.model_dim
    }

    /// Encoder half `floor(L/2)`; the decoder gets the rest (REFERENCE.md §3.2).
    pub fn num_encoder_layers(&self) -> usize {
        self.num_layers / 2
    }

    pub fn num_decoder_layers(&self) -> usize {
        self.num_layers - self.num_encoder_layers()
    }

    /// U-Net skip connections: `min(L_enc, L_dec)`.
    pub fn num_skip_weights(&self) -> usize {
        self.num_encoder_layers().min(self.num_decoder_layers())
    }

    /// Parameters per block: the six matrices plus q_gain, attn/mlp scales and resid_mix.
    pub fn block_params(&self) -> usize {
        let d = self.model_dim;
        let matrices = 2 * d * d + 2 * self.kv_dim() * d + 2 * self.mlp_hidden() * d;
        matrices + self.num_heads + 2 * d + 2 * d
    }

    /// Total trainable parameters, counted from the shapes (the baseline: 17,059,912).
    pub fn num_params(&self) -> usize {
        let embed = self.vocab_size * self.model_dim;
        let head = if self.tie_embeddings { 0 } else { embed };
        embed
            + head
            + self.num_skip_weights() * self.model_dim
            + self.num_layers * self.block_params()
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
