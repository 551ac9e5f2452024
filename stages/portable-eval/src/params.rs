//! The portable-eval params (`--params FILE.json`; unknown fields are an error). The names and
//! defaults are ttt-eval's for the same modes, so one params file scores the same way on both.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Non-overlapping windows of `seq_len`.
    Flat,
    /// Sliding windows, REFERENCE.md §5.1 version B (single pass).
    Sliding,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Flat => "flat",
            Mode::Sliding => "sliding",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub mode: Mode,
    /// Window length; default the model config's `seq_len`.
    pub seq_len: Option<usize>,
    /// Sliding-window stride.
    pub stride: usize,
    /// Windows per forward pass (split further where the device's buffers are smaller).
    pub batch_windows: usize,
    /// Flat mode only: truncate the stream to whole windows and divide by lookup-table bytes, as
    /// upstream `eval_val`.
    pub upstream_compatible: bool,
    /// About how many positions get a full-distribution normalization probe.
    pub probes: usize,
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
        if self.seq_len == Some(0) {
            bail!("params: seq_len must be positive (leave it out for the model's)");
        }
        Ok(())
    }
}
