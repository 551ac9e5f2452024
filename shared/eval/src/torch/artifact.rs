//! The network as evaluation must see it: decoded from the artifact that quantize-pack wrote (the
//! round trip), never the pre-quantization weights.

use anyhow::{anyhow, bail, Context, Result};
use pgolf_model::{ModelConfig, Numerics};
use pgolf_quant::{Artifact, ToTch};
use pgolf_store::{files, Compute, Precision};
use std::path::Path;
use tch::Device;

use super::net::Net;

/// The `precision` and `compute` params of an evaluation stage, checked together: upstream's
/// numerics are bf16 by definition, so `compute: upstream` with `precision: f32` is refused.
pub fn check_numerics(precision: Precision, compute: Compute) -> Result<()> {
    if compute == Compute::Upstream && precision == Precision::F32 {
        bail!("params: compute: upstream runs upstream's bf16 numerics; precision f32 contradicts it (use auto or bf16)");
    }
    Ok(())
}

/// [`load_artifact`] for scoring a val set: refuses a model whose vocabulary is smaller than the
/// val set's tokenizer (its ids could not all be scored).
pub fn load_artifact_for_vocab(
    dir: &Path,
    device: Device,
    precision: Precision,
    compute: Compute,
    tokenizer_vocab: usize,
) -> Result<(Net, ModelConfig)> {
    let (net, cfg) = load_artifact(dir, device, precision, compute)?;
    if tokenizer_vocab > cfg.vocab_size {
        bail!(
            "the tokenizer's vocab {tokenizer_vocab} exceeds the model's {}",
            cfg.vocab_size
        );
    }
    Ok((net, cfg))
}

/// Reads `dir/artifact.pgq`, decodes every tensor and builds the model its config describes, at
/// `precision` (native numerics) or, with `compute: upstream`, in upstream's eval numerics op for op
/// ([`Numerics::UpstreamBf16`]) on any device.
pub fn load_artifact(
    dir: &Path,
    device: Device,
    precision: Precision,
    compute: Compute,
) -> Result<(Net, ModelConfig)> {
    check_numerics(precision, compute)?;
    let path = dir.join(files::ARTIFACT);
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
    match compute {
        Compute::Native => net
            .gpt
            .set_compute_kind(pgolf_runtime::precision_kind(precision, device)),
        Compute::Upstream => net.gpt.set_numerics(Numerics::UpstreamBf16),
    }
    Ok((net, cfg))
}
