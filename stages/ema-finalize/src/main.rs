//! The ema-finalize stage: picks the weights that will be quantized from a train output — the raw
//! final weights, the EMA, the train stage's SWA average, or a blend — and writes them as
//! `model.safetensors` (each tensor in the model's dtype) with the model's `config.json`.
//!
//! Averaged weights are used only if they were actually formed: an EMA when the train manifest says
//! `ema_updates > 0`, an SWA average when it says `swa_snapshots > 0` (REFERENCE.md §5.6; DESIGN.md
//! "Correctness guards"). `auto` takes the EMA only once it has forgotten the initial weights
//! (sources.rs). The choice, its reason and any warning go to the headline, stderr and
//! `finalize.log`.

mod sources;

use anyhow::{bail, Result};
use pgolf_evaluator::ModelConfig;
use pgolf_quant::weights::Weight;
use pgolf_quant::{read_safetensors, write_safetensors};
use pgolf_store::files;
use pgolf_store::Stage;
use sources::{Params, Sources, TrainFacts};
use std::collections::BTreeMap;
use std::path::Path;

/// The raw weights must be exactly the parameters the config's model has: what is written here is
/// what every later stage loads as that model.
fn check_against_config(path: &Path, weights: &[Weight], cfg: &ModelConfig) -> Result<()> {
    let mut want: BTreeMap<String, Vec<usize>> = cfg.parameter_shapes().into_iter().collect();
    for w in weights {
        match want.remove(&w.name) {
            None => bail!(
                "{}: unexpected tensor {} (not a parameter of the model in config.json)",
                path.display(),
                w.name
            ),
            Some(shape) if shape != w.shape => bail!(
                "{}: tensor {} has shape {:?}, the model in config.json has {:?}",
                path.display(),
                w.name,
                w.shape,
                shape
            ),
            Some(_) => {}
        }
    }
    if let Some(name) = want.keys().next() {
        bail!(
            "{}: tensor {name} is missing (a parameter of the model in config.json; {} missing in all)",
            path.display(),
            want.len()
        );
    }
    Ok(())
}

fn main() {
    pgolf_store::run_stage::<Params, _>("ema-finalize", env!("PGOLF_STAGE_IDENTITY"), run);
}

fn run(stage: &mut Stage<Params>) -> Result<()> {
    let input = stage.input("train")?;
    let dir = input.path().to_path_buf();
    let facts = TrainFacts::read(match input.manifests.as_slice() {
        [m] => Some(m),
        _ => None,
    });
    let raw = read_safetensors(&dir.join(files::WEIGHTS))?;
    let cfg = ModelConfig::read(&dir.join(files::MODEL_CONFIG))?;
    check_against_config(&dir.join(files::WEIGHTS), &raw, &cfg)?;
    let sources = Sources::new(&dir, facts);
    let chosen = sources.finalize(&stage.params, &raw)?;

    let mut log = vec![format!("source: {} ({})", chosen.label, chosen.reason)];
    log.extend(chosen.warnings.iter().map(|w| format!("WARNING: {w}")));
    for line in &log {
        eprintln!("ema-finalize: {line}");
    }
    std::fs::write(stage.out_path(files::FINALIZE_LOG), log.join("\n") + "\n")?;

    write_safetensors(&stage.out_path(files::WEIGHTS), &chosen.weights)?;
    let config = dir.join(files::MODEL_CONFIG);
    std::fs::copy(&config, stage.out_path(files::MODEL_CONFIG))
        .map_err(|e| anyhow::anyhow!("{}: cannot copy ({e})", config.display()))?;

    let delta: f64 = raw
        .iter()
        .zip(&chosen.weights)
        .flat_map(|(a, b)| a.data.iter().zip(&b.data))
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let numel: usize = raw.iter().map(|w| w.numel()).sum();
    stage.headline("source", &chosen.label);
    stage.headline("source_reason", &chosen.reason);
    stage.headline("warnings", &chosen.warnings);
    stage.headline("ema_updates", facts.ema_updates);
    stage.headline("ema_decay", facts.ema_decay);
    stage.headline("ema_initial_share", facts.ema_initial_share());
    stage.headline("swa_snapshots", facts.swa_snapshots);
    stage.headline("tensors", chosen.weights.len());
    stage.headline("params", numel);
    stage.headline("rms_change_vs_raw", (delta / numel.max(1) as f64).sqrt());
    Ok(())
}
