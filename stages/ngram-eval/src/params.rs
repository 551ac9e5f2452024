//! The ngram-eval params (`--params FILE.json`; unknown fields are an error).

use anyhow::{bail, Result};
use pgolf_eval::ngram::MixWeight;
use pgolf_eval::torch::check_numerics;
use pgolf_model::Formulation;
use pgolf_store::{Compute, Precision};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The network mixed with an interpolated Kneser–Ney model of the already-scored val tokens.
    Mix,
    /// Score with the network; on the side, measure what the hashed two-table cache of the
    /// ruled-invalid PRs would claim and how far its implied distribution is from summing to 1.
    Diagnose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Windows {
    Flat,
    Sliding,
}

/// Which script's cache `diagnose` reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The ruled-invalid PRs' two-table cache (REFERENCE.md §5.5): XOR hashes, the longest
    /// context with enough count, `min(full/ctx, 1)`.
    #[default]
    Generic,
    /// PROTEUS+STYX's exactly (`pgolf_eval::ngram::styx`): its hashes, its order choice (the
    /// target's count > 0), no clip, its lookup aligned with the input token, per-window updates,
    /// one cache per rank.
    Styx,
}

/// The hashed cache being diagnosed (REFERENCE.md §5.5).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hashed {
    pub variant: Variant,
    pub max_order: usize,
    pub bucket_bits: u32,
    pub min_count: u32,
    /// Fixed mixing weight α of the scripts.
    pub alpha: f64,
    /// `styx`: the ranks its script would run on (each with its own cache over its slice of the
    /// windows; 8 in its 8-GPU run).
    pub ranks: usize,
}

impl Default for Hashed {
    fn default() -> Self {
        Hashed {
            variant: Variant::Generic,
            max_order: 7,
            bucket_bits: 22,
            min_count: 2,
            alpha: 0.4,
            ranks: 1,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub mode: Mode,
    /// How the network scores: `sliding` (stride below) or `flat` windows.
    pub windows: Windows,
    /// Window length; default the model config's `seq_len`.
    pub seq_len: Option<usize>,
    pub stride: usize,
    pub batch_windows: usize,
    pub probes: usize,
    /// `auto` (bf16 on CUDA, f32 on the CPU), `f32` or `bf16`.
    pub precision: Precision,
    /// `native` (ours, at `precision`) or `upstream` (upstream's eval numerics op for op).
    pub compute: Compute,
    /// How the network is written (pgolf-model `Formulation`): `fast` (default) or `literal`;
    /// `compute: upstream` always runs the literal one.
    pub formulation: Formulation,
    /// Kneser–Ney order (1..=8).
    pub order: usize,
    /// The n-gram weight λ: fixed, or from the network's predictive entropy.
    pub weight: MixWeight,
    /// Train tokens to count into the n-gram model before val (off by default: their bits would
    /// have to be paid for inside the artifact, so a run using them is not a valid 16 MB score).
    pub train_tokens: u64,
    pub hashed: Hashed,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            mode: Mode::Mix,
            windows: Windows::Sliding,
            seq_len: None,
            stride: 64,
            batch_windows: 32,
            probes: 64,
            precision: Precision::Auto,
            compute: Compute::Native,
            formulation: Formulation::Fast,
            order: 4,
            weight: MixWeight::Entropy {
                min: 0.02,
                max: 0.3,
                center: 4.0,
                slope: 1.0,
            },
            train_tokens: 0,
            hashed: Hashed::default(),
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<()> {
        self.weight.validate()?;
        if self.batch_windows == 0 {
            bail!("params: batch_windows must be positive");
        }
        if self.mode == Mode::Diagnose && self.train_tokens > 0 {
            bail!("params: train_tokens applies to mix mode only");
        }
        if self.seq_len == Some(0) {
            bail!("params: seq_len must be positive (leave it out for the model's)");
        }
        check_numerics(self.precision, self.compute)
    }
}
