//! The ttt-eval stage: scores the val split with the network decoded from the artifact (the round
//! trip, never the pre-quantization weights) in one of four modes — flat, sliding, score-first
//! full-parameter TTT, per-document LoRA TTT — and reports exact bits per byte with its guards.
//!
//! Inputs: `artifact` (quantize-pack), `data` (tokenize). Outputs: `results.parquet` (per document:
//! targets, NLL, bytes), `chunks.parquet` (ttt mode), `summary.json`; headline as docs/STAGES.md.

mod evaluate;
mod params;

use anyhow::Result;
use pgolf_eval::report::{summarize, write_chunk_results, write_doc_results, write_summary};
use pgolf_eval::torch::{dump_activations, load_artifact_for_vocab};
use pgolf_eval::ValSet;
use pgolf_model::save_tensors;
use pgolf_optim::Collective;
use pgolf_runtime::{describe, device_from_str};
use pgolf_store::progress::bar;
use pgolf_store::{files, Stage};
use serde_json::{json, Map, Value};
use std::time::Instant;

use crate::evaluate::{evaluate, window_count};
use crate::params::Params;

fn main() {
    let role = pgolf_dist::stage::launch_or_role("ttt-eval");
    pgolf_store::run_stage_as::<Params, _>("ttt-eval", env!("PGOLF_STAGE_IDENTITY"), role, run);
}

fn run(stage: &mut Stage<Params>) -> Result<()> {
    let p = stage.params.clone();
    p.validate()?;
    // One rank of several (pgolf_eval::peers) or alone; CUDA ranks use GPU LOCAL_RANK.
    let comm = pgolf_dist::from_env(device_from_str(&stage.device)?)?;
    let device = comm.device;
    stage.set_device(describe(device, comm.world_size()));
    tch::manual_seed(p.seed);

    // 1. The val stream, its documents and byte tables, cross-checked.
    let val = ValSet::load(stage.input_dir("data")?)?;
    // 2. The model exactly as the artifact decodes.
    let (net, cfg) = load_artifact_for_vocab(
        stage.input_dir("artifact")?,
        device,
        p.precision,
        p.compute,
        val.lut.vocab_size(),
    )?;
    let mut net = net;
    net.gpt.set_formulation(p.formulation, device)?;
    // How it computes (not the device: that is the manifest's device record).
    let numerics = format!(
        "{:?} compute, {:?} numerics, {} formulation",
        net.gpt.compute_kind(),
        net.gpt.numerics(),
        net.gpt.formulation().name()
    );
    if p.export_decoded {
        save_tensors(
            net.gpt.named_parameters(),
            &stage.out_path(files::DECODED_WEIGHTS),
        )?;
        cfg.write(&stage.out_path(files::MODEL_CONFIG))?;
    }
    let seq_len = p.seq_len.unwrap_or(cfg.seq_len);
    if p.dump_activations > 0 {
        dump_activations(
            &net,
            &val.tokens,
            p.dump_activations,
            seq_len,
            &stage.out_path(files::ACTIVATIONS),
        )?;
    }

    // 3. Score every target once, in the chosen mode.
    let progress = bar(
        window_count(&p, &val, seq_len, &comm)? as u64,
        p.mode.name(),
    );
    let clock = Instant::now();
    let outcome = evaluate(&p, &val, net, seq_len, &comm, device, |k| {
        progress.inc(k as u64)
    })?;
    let seconds = clock.elapsed().as_secs_f64();
    progress.finish_and_clear();

    // 4. Judge (coverage already checked by the ledger; entropy fails, bytes flag) and write.
    let summary = summarize(
        &val,
        &outcome.report,
        p.mode.name(),
        outcome.denominator,
        &outcome.norm,
        outcome.updates,
        seconds,
    )?;
    write_doc_results(&stage.out_path(files::RESULTS), &val, &outcome.report)?;
    if !outcome.chunks.is_empty() {
        write_chunk_results(&stage.out_path(files::CHUNKS), &outcome.chunks)?;
    }
    let mut extra = Map::new();
    extra.insert("seq_len".into(), json!(seq_len));
    extra.insert("numerics".into(), json!(numerics));
    if matches!(p.mode, params::Mode::Sliding | params::Mode::Ttt) {
        extra.insert("stride".into(), json!(p.stride));
    }
    if let Some(n) = outcome.updates {
        extra.insert("adaptive_updates".into(), json!(n));
    }
    let summary = summary.to_json(extra)?;
    write_summary(&stage.out_path(files::SUMMARY), &summary)?;
    for (k, v) in summary {
        if !matches!(v, Value::Object(_)) {
            stage.headline(&k, v);
        }
    }
    Ok(())
}
