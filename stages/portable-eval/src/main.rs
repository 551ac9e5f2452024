//! The portable-eval stage: flat and sliding BPB of the network decoded from the artifact, its
//! forward pass in WGSL compute shaders on whatever adapter wgpu finds (Vulkan, Metal, DX12; Mesa's
//! software Vulkan on a CPU). No libtorch, no CUDA: anyone with a laptop can check a submission's
//! number. Same schedules, ledger, guards and outputs as ttt-eval's flat and sliding modes
//! (pgolf-eval's libtorch-free core).
//!
//! Inputs: `artifact` (quantize-pack), `data` (tokenize). Outputs: `results.parquet`,
//! `summary.json`. `--device` picks the adapter (gpu.rs `choose`); `portable-eval --device list`
//! lists them.

mod gpu;
mod kernels;
mod model;
mod params;
mod scorer;

use anyhow::{bail, Context, Result};
use pgolf_eval::fixed::fixed_schedule;
use pgolf_eval::guards::Normalization;
use pgolf_eval::pass::{score_windows, PassOptions};
use pgolf_eval::report::{summarize, write_doc_results, write_summary};
use pgolf_eval::{Ledger, ValSet};
use pgolf_evaluator::Artifact;
use pgolf_store::progress::bar;
use pgolf_store::{files, DeviceRecord, Stage};
use serde_json::{json, Map, Value};
use std::time::Instant;

use crate::gpu::Gpu;
use crate::model::GpuModel;
use crate::params::{Mode, Params};
use crate::scorer::WgpuScorer;

const NAME: &str = "portable-eval";

fn main() {
    // `--device list` needs no run: it prints the adapters and exits.
    let args: Vec<String> = std::env::args().collect();
    let listing = args
        .windows(2)
        .any(|w| w[0] == "--device" && w[1] == "list")
        || args.iter().any(|a| a == "--device=list");
    if listing {
        match gpu::list() {
            Ok(text) => {
                print!("{text}");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("error: {NAME}: {e:#}");
                std::process::exit(1);
            }
        }
    }
    pgolf_store::run_stage::<Params, _>(NAME, env!("PGOLF_STAGE_IDENTITY"), run);
}

fn run(stage: &mut Stage<Params>) -> Result<()> {
    let p = stage.params.clone();
    p.validate()?;
    let adapter = gpu::choose(&stage.device)?;
    let gpu = Gpu::open(&adapter)?;
    let adapter_name = gpu::describe(&gpu.info);
    stage.set_device(DeviceRecord::wgpu(adapter_name.clone()));

    // 1. The val stream, its documents and byte tables, cross-checked.
    let val = ValSet::load(stage.input_dir("data")?)?;
    // 2. The model exactly as the artifact decodes, on the device.
    let path = stage.input_dir("artifact")?.join(files::ARTIFACT);
    let model = GpuModel::load(&Artifact::read(&path)?, gpu)
        .with_context(|| format!("{}", path.display()))?;
    if val.lut.vocab_size() > model.cfg.vocab_size {
        bail!(
            "the tokenizer's vocab {} exceeds the model's {}",
            val.lut.vocab_size(),
            model.cfg.vocab_size
        );
    }
    let seq_len = p.seq_len.unwrap_or(model.cfg.seq_len);

    // 3. Score every target once.
    let stride = (p.mode == Mode::Sliding).then_some(p.stride);
    let schedule = fixed_schedule(val.n_targets(), seq_len, stride, p.upstream_compatible)?;
    let progress = bar(schedule.windows.len() as u64, p.mode.name());
    let opts = PassOptions {
        batch_windows: p.batch_windows,
        probes: p.probes,
        entropy: false,
    };
    let mut norm = Normalization::default();
    let mut ledger = Ledger::new(&val, 1..schedule.targets + 1)?;
    let mut scorer = WgpuScorer { model: &model };
    let clock = Instant::now();
    score_windows(
        &mut ledger,
        &schedule.windows,
        &mut scorer,
        &opts,
        &mut norm,
        |k| progress.inc(k as u64),
    )?;
    let seconds = clock.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let report = ledger.finish()?;

    // 4. Judge and write, as ttt-eval does.
    let summary = summarize(
        &val,
        &report,
        p.mode.name(),
        schedule.denominator,
        &norm,
        None,
        seconds,
    )?;
    write_doc_results(&stage.out_path(files::RESULTS), &val, &report)?;
    let mut extra = Map::new();
    extra.insert("seq_len".into(), json!(seq_len));
    extra.insert("numerics".into(), json!("f32 WGSL compute (wgpu)"));
    extra.insert("adapter".into(), json!(adapter_name));
    if let Some(s) = stride {
        extra.insert("stride".into(), json!(s));
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
