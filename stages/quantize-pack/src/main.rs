//! The quantize-pack stage: final weights (+ Hessians for GPTQ rules) → the scored artifact.
//!
//! 1. read the weights and the model config (and the Hessians, when a rule needs them);
//! 2. quantize every tensor by its rule (docs/ARTIFACT.md "Schemes");
//! 3. pack and compress the container (in parallel chunks), write `artifact.pgq`, read it back and
//!    check it decodes to exactly what was packed; count code bytes from the embedded source tar;
//! 4. check model + code bytes against the cap;
//! 5. write the per-tensor table `tensors.parquet` and `code_files.json`.

mod code_bytes;
mod params;
mod table;

use anyhow::{bail, Context, Result};
use params::Params;
use pgolf_quant::plan::Decision;
use pgolf_quant::{
    correct_lqer, encode_artifact, quantize_all, read_safetensors, read_safetensors_map, Artifact,
    Compression, Method, QuantInputs, Routing, StoredTensor, TensorReport, Weight,
};
use pgolf_runtime::{describe, device_from_str};
use pgolf_store::{files, progress, Stage};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::time::Instant;

/// The stage's source identity, extended by the hash of the embedded code tar: the sources it
/// counts (model, eval, ...) are not all dependencies of this crate, yet change its output.
const IDENTITY: &str = concat!(
    env!("PGOLF_STAGE_IDENTITY"),
    ".",
    env!("PGOLF_CODE_TAR_HASH")
);

fn main() {
    pgolf_store::run_stage::<Params, _>("quantize-pack", IDENTITY, run);
}

fn run(stage: &mut Stage<Params>) -> Result<()> {
    let routing = stage.params.routing();
    routing.validate()?;
    let compression = stage.params.compression();
    compression.validate()?;
    let device = device_from_str(&stage.device)?;
    stage.set_device(describe(device, 1));

    // 1. Inputs.
    let (weights, config) = read_weights(stage)?;
    let hessians = read_hessians(stage, &routing, &weights)?;

    // 2. Quantize.
    let clock = Instant::now();
    let bar = progress::bar(weights.len() as u64, "quantize");
    let (gptq, lqer, layout) = (
        stage.params.gptq.clone(),
        stage.params.lqer.clone(),
        stage.params.layout.clone(),
    );
    let inputs = QuantInputs {
        routing: &routing,
        gptq: &gptq,
        hessians: &hessians,
        device,
    };
    let mut quantized = quantize_all(&weights, &inputs, &|_| bar.inc(1))?;
    bar.finish_and_clear();
    stage.headline("quantize_seconds", clock.elapsed().as_secs_f64());
    if lqer.enabled {
        let clock = Instant::now();
        correct_lqer(&weights, &mut quantized, &lqer, &inputs)?;
        stage.headline("lqer_seconds", clock.elapsed().as_secs_f64());
        let corrected = quantized.iter().filter(|(t, _)| t.lqer.is_some());
        stage.headline("lqer_tensors", corrected.clone().count());
        let bytes: usize = corrected.map(|(_, r)| r.lqer_bytes).sum();
        stage.headline("lqer_bytes", bytes);
    }
    // The per-group layout decides where each tensor's integers go, so the order of the body.
    let (mut stored, reports): (Vec<StoredTensor>, Vec<TensorReport>) =
        quantized.into_iter().unzip();
    let clock = Instant::now();
    let order = pgolf_quant::layout::apply(&mut stored, &layout)?;
    if layout.per_group {
        stage.headline("layout_seconds", clock.elapsed().as_secs_f64());
    }
    let mut paired: Vec<Option<(StoredTensor, TensorReport)>> =
        stored.into_iter().zip(reports).map(Some).collect();
    let (stored, reports): (Vec<StoredTensor>, Vec<TensorReport>) = order
        .iter()
        .map(|&i| paired[i].take().expect("a permutation"))
        .unzip();

    // 3. Pack, write, read back. The artifact's chunks, each tensor's own compressed size (a report
    // figure; the cap is checked on the file) and the code bytes all compress in rayon's pool.
    let clock = Instant::now();
    let (artifact, (alone, code)) = rayon::join(
        || encode_artifact(&config, &stored, &compression),
        || {
            rayon::join(
                || compressed_alone(&stored, &compression),
                code_bytes::measure,
            )
        },
    );
    let artifact_path = stage.out_path(files::ARTIFACT);
    fs::write(&artifact_path, artifact?)
        .with_context(|| format!("{}: cannot write", artifact_path.display()))?;
    stage.headline("pack_seconds", clock.elapsed().as_secs_f64());
    let back = Artifact::read(&artifact_path)?;
    if back.tensors != stored || back.config != config {
        bail!(
            "{}: does not decode to what was packed",
            artifact_path.display()
        );
    }

    // 4. Sizes and the cap.
    let model_bytes = fs::metadata(&artifact_path)?.len();
    let code = code?;
    fs::write(
        stage.out_path(files::CODE_FILES),
        serde_json::to_vec_pretty(&code.files)?,
    )?;
    let artifact_bytes = model_bytes + code.compressed_bytes;
    let cap = stage.params.cap_bytes;
    stage.headline("artifact_bytes", artifact_bytes);
    stage.headline("model_bytes", model_bytes);
    stage.headline("code_bytes", code.compressed_bytes);
    stage.headline("code_tar_bytes", code.tar_bytes);
    stage.headline("cap_bytes", cap);
    stage.headline("within_cap", artifact_bytes <= cap);
    stage.headline(
        "compressor",
        format!("{:?}-{}", compression.codec, compression.level()).to_lowercase(),
    );
    if layout.per_group {
        stage.headline("layout", "per_group");
    }
    stage.headline("chunks", compression.chunks);

    // 5. The per-tensor table and its summary.
    let rows: Vec<table::Row> = reports
        .iter()
        .zip(alone?)
        .map(|(report, compressed_bytes)| table::Row {
            report,
            compressed_bytes,
        })
        .collect();
    table::write(&stage.out_path(files::TENSOR_TABLE), &rows)?;
    stage.headline("tensors", stored.len());
    stage.headline("pruned", reports.iter().map(|r| r.pruned).sum::<usize>());
    stage.headline("quantized_mse", quantized_mse(&reports));
    stage.headline("mean_rel_output_err", mean_rel_output_err(&reports));

    if artifact_bytes > cap && !stage.params.non_record {
        bail!(
            "{}: artifact_bytes {artifact_bytes} (model {model_bytes} + code {}) exceeds the cap {cap} by {} (set non_record: true for a non-record run)",
            artifact_path.display(),
            code.compressed_bytes,
            artifact_bytes - cap
        );
    }
    Ok(())
}

/// `model.safetensors` and `config.json` of the `weights` input (the config goes into the
/// artifact verbatim, so evaluation rebuilds the model from the artifact alone).
fn read_weights(stage: &Stage<Params>) -> Result<(Vec<Weight>, Value)> {
    let dir = stage.input_dir("weights")?;
    let mut weights = read_safetensors(&dir.join(files::WEIGHTS))?;
    let path = dir.join(files::MODEL_CONFIG);
    let text = fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut config: Value =
        serde_json::from_slice(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    // R0323's parameter banks are a training layout: the artifact stores (and quantizes) the
    // per-layer matrices, as R0323 does, and says so in its config.
    if config.get("banks") == Some(&Value::Bool(true)) {
        weights = pgolf_quant::unbank(weights)
            .with_context(|| format!("{}", dir.join(files::WEIGHTS).display()))?;
        config["banks"] = Value::Bool(false);
    }
    Ok((weights, config))
}

/// The `hessians` input's tensors; an error if a `gptq` rule covers a weight and none was given.
fn read_hessians(
    stage: &Stage<Params>,
    routing: &Routing,
    weights: &[Weight],
) -> Result<HashMap<String, Weight>> {
    if stage.optional_input("hessians").is_some() {
        return read_safetensors_map(&stage.input_dir("hessians")?.join(files::HESSIANS));
    }
    let gptq = |w: &&Weight| matches!(routing.decide(&w.name, w.numel(), w.dtype), Decision::Quantize(r) if r.method == Method::Gptq);
    if let Some(w) = weights.iter().find(gptq) {
        bail!("a gptq rule covers {} but no Hessians were given: pass --in hessians=<gptq-calibrate output>", w.name);
    }
    Ok(HashMap::new())
}

/// Each tensor's stored bytes compressed alone with the artifact's compressor.
fn compressed_alone(stored: &[StoredTensor], compression: &Compression) -> Result<Vec<u64>> {
    stored
        .par_iter()
        .map(|t| {
            Ok(compression
                .compress(&pgolf_quant::encoded::payload(t))?
                .len() as u64)
        })
        .collect()
}

/// Weight MSE over the quantized tensors, weighted by their sizes.
fn quantized_mse(reports: &[TensorReport]) -> f64 {
    let quantized = reports.iter().filter(|r| r.bits.is_some());
    let (sum, n) = quantized.fold((0.0, 0usize), |(s, n), r| {
        let numel: usize = r.shape.iter().product();
        (s + r.mse * numel as f64, n + numel)
    });
    sum / n.max(1) as f64
}

/// The mean relative output error over the matrices that have a Hessian (`None` without any).
fn mean_rel_output_err(reports: &[TensorReport]) -> Option<f64> {
    let errs: Vec<f64> = reports.iter().filter_map(|r| r.rel_output_err).collect();
    (!errs.is_empty()).then(|| errs.iter().sum::<f64>() / errs.len() as f64)
}
