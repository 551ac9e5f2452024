//! The stage's outputs: the raw weights, the averages that were taken (EMA only if it was ever
//! updated, SWA only if it took a snapshot), the config, the metrics table and the headline.

use anyhow::Result;
use pgolf_model::{save_tensors, to_file_layout};
use pgolf_runtime::cuda;
use pgolf_store::files;
use pgolf_store::Stage;
use tch::{nn::VarStore, Device};

use crate::data::ValTokens;
use crate::log::RunLog;
use crate::params::Params;
use crate::run_loop::Finished;
use crate::swa::Swa;

pub fn write(
    stage: &mut Stage<Params>,
    vs: &VarStore,
    run: &Finished,
    val_set: &ValTokens,
    device: Device,
    log: &mut RunLog,
) -> Result<()> {
    let p = &stage.params.clone();
    // The weights, the EMA and the SWA average in the model's stored layout (per layer, or R0323's
    // banks).
    let save = |named: &[(String, tch::Tensor)], name: &str| {
        save_tensors(&to_file_layout(&p.model, named)?, &stage.out_path(name))
    };
    let raw: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    save(&raw, files::WEIGHTS)?;
    let ema_updates = run.ema.as_ref().map_or(0, |e| e.updates());
    if let Some(ema) = run.ema.as_ref().filter(|e| e.updates() > 0) {
        save(ema.shadow(), files::EMA_WEIGHTS)?;
    }
    let swa_snapshots = run.swa.as_ref().map_or(0, |s| s.count());
    if let Some(average) = run.swa.as_ref().map(Swa::average).transpose()?.flatten() {
        save(&average, files::SWA_WEIGHTS)?;
        log.line(&format!(
            "swa: averaged {swa_snapshots} snapshots from step {}",
            run.swa.as_ref().and_then(Swa::first_step).unwrap_or(0)
        ))?;
    }
    p.model.write(&stage.out_path(files::MODEL_CONFIG))?;
    run.metrics.write(&stage.out_path(files::METRICS))?;
    let peak = cuda::peak_memory(device);
    if let Some((allocated, reserved)) = peak {
        log.line(&format!(
            "peak memory allocated: {} MiB reserved: {} MiB",
            allocated >> 20,
            reserved >> 20
        ))?;
    }

    let (steps, train_ms) = (run.steps, run.train_ms);
    stage.headline("params", p.model.num_params());
    stage.headline("steps", steps);
    stage.headline("train_seconds", train_ms / 1e3);
    stage.headline("ms_per_step", train_ms / steps.max(1) as f64);
    stage.headline(
        "tokens_per_second",
        p.train_batch_tokens as f64 * steps as f64 / (train_ms / 1e3),
    );
    stage.headline(
        "final_train_loss",
        run.metrics.rows.iter().rev().find_map(|r| r.train_loss),
    );
    stage.headline("val_loss", run.val.loss);
    stage.headline("val_bpb", run.val.bpb);
    stage.headline("val_targets", val_set.targets);
    stage.headline("ema_updates", ema_updates);
    stage.headline("ema_decay", p.ema_decay);
    stage.headline("ema_every", p.ema_every);
    stage.headline("swa_snapshots", swa_snapshots);
    stage.headline("late_qat_threshold", p.late_qat_threshold);
    stage.headline("late_qat_step", run.qat_step);
    stage.headline("recurrence_enable_at", p.recurrence_enable_at);
    stage.headline("recurrence_step", run.recurrence_step);
    // With CUDA graphs the graph's activations live in its private pool: they count as reserved,
    // not allocated, so both figures are reported.
    stage.headline("peak_gpu_mib", peak.map(|(allocated, _)| allocated >> 20));
    stage.headline(
        "peak_gpu_reserved_mib",
        peak.map(|(_, reserved)| reserved >> 20),
    );
    Ok(())
}
