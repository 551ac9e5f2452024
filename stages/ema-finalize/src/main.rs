//! The ema-finalize stage: picks the weights that will be quantized from a train output — the raw
//! final weights, the EMA, the SWA average of snapshots, or a blend — and writes them as
//! `model.safetensors` (each tensor in the model's dtype) with the model's `config.json`.
//!
//! Averaged weights are used only if they were actually updated: an EMA is accepted when the train
//! manifest says `ema_updates > 0` (REFERENCE.md §5.6; DESIGN.md "Correctness guards").

mod sources;

use anyhow::Result;
use pgolf_quant::{read_safetensors, write_safetensors};
use pgolf_store::Stage;
use sources::{Params, Sources};

fn main() {
    pgolf_store::run_stage::<Params, _>("ema-finalize", env!("PGOLF_STAGE_IDENTITY"), run);
}

fn run(stage: &mut Stage<Params>) -> Result<()> {
    let input = stage.input("train")?;
    let dir = input.path().to_path_buf();
    let ema_updates = match input.manifests.as_slice() {
        [m] => m.headline.get("ema_updates").and_then(|v| v.as_u64()),
        _ => None,
    };
    let raw = read_safetensors(&dir.join("model.safetensors"))?;
    let sources = Sources::find(&dir, ema_updates)?;
    let (label, weights) = sources.finalize(&stage.params, &raw)?;

    write_safetensors(&stage.out_path("model.safetensors"), &weights)?;
    let config = dir.join("config.json");
    std::fs::copy(&config, stage.out_path("config.json"))
        .map_err(|e| anyhow::anyhow!("{}: cannot copy ({e})", config.display()))?;

    let delta: f64 = raw
        .iter()
        .zip(&weights)
        .flat_map(|(a, b)| a.data.iter().zip(&b.data))
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let numel: usize = raw.iter().map(|w| w.numel()).sum();
    stage.headline("source", label);
    stage.headline("ema_updates", ema_updates);
    stage.headline("swa_snapshots", sources.snapshots.len());
    stage.headline("tensors", weights.len());
    stage.headline("params", numel);
    stage.headline("rms_change_vs_raw", (delta / numel.max(1) as f64).sqrt());
    Ok(())
}
