//! The network as evaluation must see it: decoded from the artifact that quantize-pack wrote (the
//! round trip), never the pre-quantization weights.

use anyhow::{anyhow, bail, Context, Result};
use pgolf_model::{ModelConfig, Numerics};
use pgolf_quant::{Artifact, ToTch};
use std::path::Path;
use tch::{Device, Kind};

use super::net::Net;

/// The artifact file inside a quantize-pack output.
pub const ARTIFACT_FILE: &str = "artifact.pgq";

/// How the forward pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// bf16 matmuls on CUDA (as upstream's autocast), f32 on the CPU.
    Auto,
    F32,
    Bf16,
    /// Upstream `train_gpt.py`'s eval numerics op for op ([`Numerics::UpstreamBf16`]), on any
    /// device.
    Upstream,
}

/// [`load_artifact`] for scoring a val set: refuses a model whose vocabulary is smaller than the
/// val set's tokenizer (its ids could not all be scored).
pub fn load_artifact_for_vocab(
    dir: &Path,
    device: Device,
    compute: Compute,
    tokenizer_vocab: usize,
) -> Result<(Net, ModelConfig)> {
    let (net, cfg) = load_artifact(dir, device, compute)?;
    if tokenizer_vocab > cfg.vocab_size {
        bail!(
            "the tokenizer's vocab {tokenizer_vocab} exceeds the model's {}",
            cfg.vocab_size
        );
    }
    Ok((net, cfg))
}

/// Reads `dir/artifact.pgq`, decodes every tensor and builds the model its config describes.
pub fn load_artifact(dir: &Path, device: Device, compute: Compute) -> Result<(Net, ModelConfig)> {
    let path = dir.join(ARTIFACT_FILE);
    let artifact = Artifact::read(&path)?;
    let cfg: ModelConfig = serde_json::from_str(&artifact.config_json()).map_err(|e| {
        anyhow!(
            "{}: invalid model config inside the artifact: {e}",
            path.display()
        )
    })?;
    cfg.validate()
        .with_context(|| format!("{}", path.display()))?;
    let named = artifact
        .to_tch(device)
        .with_context(|| format!("{}: cannot decode", path.display()))?;
    let mut net = Net::from_tensors(&cfg, &named, device, &path.display().to_string())?;
    match (compute, device) {
        (Compute::F32, _) | (Compute::Auto, Device::Cpu) => net.gpt.set_compute_kind(Kind::Float),
        (Compute::Bf16, _) | (Compute::Auto, _) => net.gpt.set_compute_kind(Kind::BFloat16),
        (Compute::Upstream, _) => net.gpt.set_numerics(Numerics::UpstreamBf16),
    }
    Ok((net, cfg))
}
