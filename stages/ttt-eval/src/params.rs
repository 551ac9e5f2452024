//! The ttt-eval params (`--params FILE.json`; unknown fields are an error).

use anyhow::{bail, Result};
use pgolf_eval::torch::{check_numerics, FullTttConfig, LoraConfig, PhasedConfig};
use pgolf_model::Formulation;
use pgolf_store::{Compute, Precision};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Non-overlapping windows of `seq_len` (the baseline's number).
    Flat,
    /// Sliding windows, REFERENCE.md §5.1 version B (single pass).
    Sliding,
    /// Legal score-first full-parameter TTT over sliding windows (§5.3).
    Ttt,
    /// Per-document LoRA TTT on doc-isolated chunks (§5.2).
    Lora,
    /// Phased TTT (§5.4): LoRA TTT with phases of global SGD on already-scored documents.
    Phased,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Flat => "flat",
            Mode::Sliding => "sliding",
            Mode::Ttt => "ttt",
            Mode::Lora => "lora",
            Mode::Phased => "phased",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub mode: Mode,
    /// Window length; default the model config's `seq_len`.
    pub seq_len: Option<usize>,
    /// Sliding-window stride (sliding and ttt modes).
    pub stride: usize,
    /// Windows per forward pass.
    pub batch_windows: usize,
    /// Flat mode only: score like upstream `eval_val` — truncate the stream to a whole number of
    /// windows and divide by lookup-table bytes — for a like-for-like comparison with the reference.
    pub upstream_compatible: bool,
    /// About how many positions get a full-distribution normalization probe.
    pub probes: usize,
    /// `auto` (bf16 on CUDA, f32 on the CPU), `f32` or `bf16`.
    pub precision: Precision,
    /// `native` (ours, at `precision`) or `upstream` (upstream's eval numerics op for op).
    pub compute: Compute,
    /// Seed of the torch RNG (LoRA adapter initialization).
    pub seed: i64,
    pub ttt: FullTttConfig,
    /// The adapters of `lora` and `phased` modes.
    pub lora: LoraConfig,
    /// The phases of `phased` mode (its adapters are `lora`'s).
    pub phased: PhasedConfig,
    /// Also write the decoded weights (`decoded.safetensors` + `config.json`, upstream names), so
    /// the Python reference can score the very same weights.
    pub export_decoded: bool,
    /// Numerics diagnostic: also write `activations.safetensors` (every linear layer's input,
    /// logits and NLL) for the first this many flat windows; 0 = off.
    pub dump_activations: usize,
    /// How the model is written (pgolf-model `Formulation`): `fast` (default) or `literal`;
    /// `compute: upstream` always runs the literal one.
    pub formulation: Formulation,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            mode: Mode::Flat,
            seq_len: None,
            stride: 64,
            batch_windows: 32,
            upstream_compatible: false,
            probes: 64,
            precision: Precision::Auto,
            compute: Compute::Native,
            seed: 0,
            ttt: FullTttConfig::default(),
            lora: LoraConfig::default(),
            phased: PhasedConfig::default(),
            export_decoded: false,
            dump_activations: 0,
            formulation: Formulation::Fast,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<()> {
        if self.upstream_compatible && self.mode != Mode::Flat {
            bail!(
                "params: upstream_compatible applies to flat mode only (mode is {})",
                self.mode.name()
            );
        }
        if self.batch_windows == 0 {
            bail!("params: batch_windows must be positive");
        }
        if self.seq_len == Some(0)
            || self.ttt.seq_len == Some(0)
            || self.phased.sgd.seq_len == Some(0)
        {
            bail!("params: seq_len must be positive (leave it out for the model's)");
        }
        check_numerics(self.precision, self.compute)
    }
}
