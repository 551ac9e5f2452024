//! The parameter words every stage spells the same way (docs/CONTRACT.md "Parameter vocabulary"):
//! `precision` and `compute` are these enums wherever a stage has the choice, so a misspelt value
//! is refused by serde with the accepted ones listed; `seq_len` is a `usize` (or `Option<usize>`
//! where "the model's" is the default) in every stage.
//!
//! Turning a [`Precision`] into a libtorch kind is `pgolf_runtime::precision_kind` (this crate
//! links no libtorch).

use serde::{Deserialize, Serialize};

/// The arithmetic of the matmuls and activations.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on CUDA (as upstream's autocast), f32 on the CPU.
    #[default]
    Auto,
    F32,
    Bf16,
}

impl Precision {
    /// Whether a run at this precision computes in bf16 on a device (`cuda` true for CUDA).
    pub fn is_bf16(self, cuda: bool) -> bool {
        match self {
            Precision::Auto => cuda,
            Precision::F32 => false,
            Precision::Bf16 => true,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Whose numerics the evaluation follows, op for op.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// Ours, at `precision`.
    #[default]
    Native,
    /// Upstream `train_gpt.py`'s eval numerics (bf16 autocast, the literal blocks), on any device:
    /// the agreement check against the Python reference. Implies bf16.
    Upstream,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_lowercase_words_and_misspellings_are_refused() {
        assert_eq!(
            serde_json::from_str::<Precision>(r#""bf16""#).unwrap(),
            Precision::Bf16
        );
        assert_eq!(
            serde_json::from_str::<Compute>(r#""upstream""#).unwrap(),
            Compute::Upstream
        );
        let err = serde_json::from_str::<Precision>(r#""bfloat16""#).unwrap_err();
        assert!(
            err.to_string()
                .contains("`bfloat16`, expected one of `auto`, `f32`, `bf16`"),
            "{err}"
        );
        assert!(serde_json::from_str::<Compute>(r#""f32""#).is_err());
        assert!(Precision::Auto.is_bf16(true) && !Precision::Auto.is_bf16(false));
    }
}
