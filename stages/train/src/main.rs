//! The train stage: the baseline GPT (REFERENCE.md §3) trained with Muon and Adam on the upstream
//! sequential loader, validated with exact byte accounting, on the CPU or a CUDA GPU.
//!
//! Inputs: `data` (a tokenize output). Outputs: `model.safetensors` (raw weights),
//! `ema.safetensors` (when the EMA was updated), `swa.safetensors` (when SWA took a snapshot),
//! `config.json`, `metrics.parquet`, `train.log`.

mod data;
mod graphed;
mod log;
mod metrics;
mod optimizers;
mod params;
mod step;
mod swa;
mod validate;

use anyhow::{bail, Result};
use pgolf_model::{save_safetensors, save_tensors, Gpt};
use pgolf_optim::{muon_momentum, Collective, Ema, Single, Warmdown};
use pgolf_runtime::{cuda, describe, device_from_str, profiler};
use pgolf_store::files;
use pgolf_store::{progress, Stage};
use std::time::Instant;
use tch::{Kind, Tensor};

use data::{BatchLoader, ValTokens};
use graphed::GraphedMicroStep;
use log::RunLog;
use metrics::{Metrics, Row};
use optimizers::Optimizers;
use params::Params;
use step::{train_step, StepSettings};
use swa::Swa;
use validate::validate;

fn main() {
    pgolf_store::run_stage::<Params, _>("train", env!("PGOLF_STAGE_IDENTITY"), train);
}

fn train(stage: &mut Stage<Params>) -> Result<()> {
    let p = stage.params.clone();
    p.check()?;
    let device = device_from_str(&stage.device)?;
    if p.threads > 0 {
        tch::set_num_threads(p.threads as i32);
    }
    let comm = Single;
    stage.set_device(describe(device, comm.world_size()));
    let plan = p.batch_plan(comm.world_size())?;
    let data_dir = stage.input("data")?.path().to_path_buf();
    let mut log = RunLog::create(&stage.out_path(files::TRAIN_LOG))?;

    // 1. Data: the sequential train stream and the val split, checked against the model's vocab.
    let mut loader = BatchLoader::open(&data_dir, plan, comm.rank(), p.model.vocab_size, device)?;
    let val_set = ValTokens::load(
        &data_dir,
        p.model.seq_len,
        p.model.vocab_size,
        p.val_max_tokens,
        device,
    )?;
    let val_batch_seqs = p.val_batch_seqs(&plan)?;

    // 2. The model, seeded, at upstream's precision: fp32 weights; on CUDA a bf16 embedding and
    //    bf16 activations and matmuls; fp32 logits.
    tch::manual_seed(p.seed as i64);
    let (vs, mut gpt) = pgolf_model::build(&p.model, device)?;
    let bf16 = p.precision.is_bf16(device.is_cuda());
    if bf16 {
        gpt.set_compute_kind(Kind::BFloat16);
        gpt.set_embedding_kind(Kind::BFloat16);
    }
    gpt.set_formulation(p.formulation, device)?;
    log.line(&format!(
        "model_params:{} config:{}",
        p.model.num_params(),
        serde_json::to_string(&p.model)?
    ))?;
    log.line(&format!(
        "device:{} precision:{} formulation:{:?} cuda_graphs:{} world_size:{} grad_accum_steps:{} local_tokens:{} val_tokens:{} val_bytes:{}",
        describe(device, comm.world_size()).summary(),
        if bf16 { "bf16" } else { "f32" },
        p.formulation,
        p.cuda_graphs && device.is_cuda(),
        plan.world_size,
        plan.grad_accum,
        plan.local_tokens,
        val_set.targets,
        val_set.bytes
    ))?;

    // 3. On CUDA the micro-batch captured as a graph; an optional warm-up (timed separately,
    //    then undone); the optimizers and the EMA.
    let mut opt = Optimizers::new(&gpt, &p, &comm)?;
    let mut graphed = if p.cuda_graphs && device.is_cuda() {
        let started = Instant::now();
        let rows = (plan.local_tokens / plan.seq_len) as i64;
        let g = GraphedMicroStep::capture(
            &gpt,
            &mut opt,
            rows,
            plan.seq_len as i64,
            1.0 / plan.grad_accum as f64,
            device,
        )?;
        log.line(&format!(
            "cuda_graph: captured one micro-batch in {:.0}ms",
            started.elapsed().as_secs_f64() * 1e3
        ))?;
        Some(g)
    } else {
        None
    };
    if p.warmup_steps > 0 {
        let started = Instant::now();
        warm_up(&gpt, &mut loader, graphed.as_mut(), &p, &comm)?;
        log.line(&format!(
            "warmup_steps:{} warmup_time:{:.0}ms (undone)",
            p.warmup_steps,
            started.elapsed().as_secs_f64() * 1e3
        ))?;
    }
    let mut ema = (p.ema_decay > 0.0).then(|| Ema::new(gpt.named_parameters(), p.ema_decay));
    let mut swa = Swa::new(p.swa_every, p.swa_lr_threshold);
    cuda::reset_peak_memory(device);

    // 4. The loop: validate at step 0, every `val_loss_every` and at the end; stop at
    //    `iterations` or just past the wall-clock cap. The clock excludes validation.
    let schedule = Warmdown {
        iterations: p.iterations,
        warmdown_iters: p.warmdown_iters,
        max_wallclock_ms: (p.max_wallclock_seconds > 0.0).then_some(p.max_wallclock_seconds * 1e3),
    };
    let bar = progress::bar(p.iterations, "train");
    let mut metrics = Metrics::default();
    let mut train_ms = 0.0;
    let mut step: u64 = 0;
    let mut stop_after: Option<u64> = None;
    let mut last_val = None;
    let mut profile = ProfileWindow::from_env()?;
    loop {
        let last = step == p.iterations || stop_after.is_some_and(|s| step >= s);
        if last || (p.val_loss_every > 0 && step.is_multiple_of(p.val_loss_every)) {
            let r = validate(&gpt, &val_set, val_batch_seqs, &comm)?;
            metrics.record_val(step, r.loss, r.bpb, schedule.lr_mul(step, train_ms));
            log.line(&format!(
                "step:{step}/{} val_loss:{:.4} val_bpb:{:.4} train_time:{train_ms:.0}ms step_avg:{:.2}ms",
                p.iterations,
                r.loss,
                r.bpb,
                train_ms / step.max(1) as f64
            ))?;
            last_val = Some(r);
        }
        if last {
            if stop_after.is_some() && step < p.iterations {
                log.line(&format!(
                    "stopping_early: wallclock_cap train_time:{train_ms:.0}ms step:{step}/{}",
                    p.iterations
                ))?;
            }
            break;
        }

        let lr_mul = schedule.lr_mul(step, train_ms);
        let momentum = muon_momentum(
            step,
            p.muon_momentum_warmup_start,
            p.muon_momentum,
            p.muon_momentum_warmup_steps,
        );
        profile.at_step(step)?;
        let started = Instant::now();
        let settings = StepSettings {
            lr_mul,
            muon_momentum: momentum,
            phase_timing: p.phase_timing,
        };
        let out = train_step(
            &gpt,
            &mut loader,
            &mut opt,
            graphed.as_mut(),
            settings,
            &comm,
        )?;
        if !out.loss.is_finite() {
            bail!(
                "step {}: the train loss is {} (diverged); stopping",
                step + 1,
                out.loss
            );
        }
        if let Some(ema) = ema.as_mut() {
            ema.update(gpt.named_parameters());
        }
        if let Some(swa) = swa.as_mut() {
            if swa.after_step(step + 1, lr_mul, gpt.named_parameters()) && swa.count() == 1 {
                log.line(&format!("swa:start step:{}", step + 1))?;
            }
        }
        let step_ms = started.elapsed().as_secs_f64() * 1e3;
        train_ms += step_ms;
        step += 1;

        metrics.rows.push(Row {
            step,
            train_loss: Some(out.loss),
            lr_mul,
            tokens_seen: loader.tokens_taken,
            step_ms,
            elapsed_ms: train_ms,
            val_loss: None,
            val_bpb: None,
        });
        let tokens_per_s = p.train_batch_tokens as f64 * step as f64 / (train_ms / 1e3);
        bar.set_position(step);
        bar.set_message(format!(
            "loss {:.4} · {:.0}k tok/s",
            out.loss,
            tokens_per_s / 1e3
        ));
        if p.train_log_every > 0 && (step <= 10 || step.is_multiple_of(p.train_log_every)) {
            let phases = out.phases_ms.map_or(String::new(), |[d, m, o]| {
                format!(" data_ms:{d:.1} micro_ms:{m:.1} optim_ms:{o:.1}")
            });
            log.line(&format!(
                "step:{step}/{} train_loss:{:.4} train_time:{train_ms:.0}ms step_avg:{:.2}ms host_ms:{:.1} lr_mul:{lr_mul:.4}{phases}",
                p.iterations,
                out.loss,
                train_ms / step as f64,
                out.host_ms
            ))?;
        }
        if stop_after.is_none() && schedule.max_wallclock_ms.is_some_and(|cap| train_ms >= cap) {
            stop_after = Some(step);
        }
    }
    bar.finish_and_clear();

    // 5. Outputs: raw weights, the EMA (only if it was ever updated), config, metrics, headline.
    save_safetensors(&vs, &stage.out_path(files::WEIGHTS))?;
    let ema_updates = ema.as_ref().map_or(0, |e| e.updates());
    if let Some(ema) = ema.as_ref().filter(|e| e.updates() > 0) {
        save_tensors(ema.shadow(), &stage.out_path(files::EMA_WEIGHTS))?;
    }
    let swa_snapshots = swa.as_ref().map_or(0, |s| s.count());
    if let Some(average) = swa.as_ref().map(Swa::average).transpose()?.flatten() {
        save_tensors(&average, &stage.out_path(files::SWA_WEIGHTS))?;
        log.line(&format!(
            "swa: averaged {swa_snapshots} snapshots from step {}",
            swa.as_ref().and_then(Swa::first_step).unwrap_or(0)
        ))?;
    }
    p.model.write(&stage.out_path(files::MODEL_CONFIG))?;
    metrics.write(&stage.out_path(files::METRICS))?;
    let peak = cuda::peak_memory(device);
    if let Some((allocated, reserved)) = peak {
        log.line(&format!(
            "peak memory allocated: {} MiB reserved: {} MiB",
            allocated >> 20,
            reserved >> 20
        ))?;
    }

    let final_loss = metrics.rows.iter().rev().find_map(|r| r.train_loss);
    let val = last_val.expect("the loop validates before it ends");
    stage.headline("params", p.model.num_params());
    stage.headline("steps", step);
    stage.headline("train_seconds", train_ms / 1e3);
    stage.headline("ms_per_step", train_ms / step.max(1) as f64);
    stage.headline(
        "tokens_per_second",
        p.train_batch_tokens as f64 * step as f64 / (train_ms / 1e3),
    );
    stage.headline("final_train_loss", final_loss);
    stage.headline("val_loss", val.loss);
    stage.headline("val_bpb", val.bpb);
    stage.headline("val_targets", val_set.targets);
    stage.headline("ema_updates", ema_updates);
    stage.headline("ema_decay", p.ema_decay);
    stage.headline("swa_snapshots", swa_snapshots);
    // With CUDA graphs the graph's activations live in its private pool: they count as reserved,
    // not allocated, so both figures are reported.
    stage.headline("peak_gpu_mib", peak.map(|(allocated, _)| allocated >> 20));
    stage.headline(
        "peak_gpu_reserved_mib",
        peak.map(|(_, reserved)| reserved >> 20),
    );
    Ok(())
}

/// Runs `warmup_steps` real steps with a throwaway optimizer, then restores the initial weights
/// and rewinds the loader: CUDA's one-time costs are paid, the result is unchanged.
fn warm_up(
    gpt: &Gpt,
    loader: &mut BatchLoader,
    mut graphed: Option<&mut GraphedMicroStep>,
    p: &Params,
    comm: &dyn Collective,
) -> Result<()> {
    let initial: Vec<Tensor> = gpt
        .named_parameters()
        .iter()
        .map(|(_, t)| t.detach().copy())
        .collect();
    let mut opt = Optimizers::new(gpt, p, comm)?;
    for _ in 0..p.warmup_steps {
        let settings = StepSettings {
            lr_mul: 1.0,
            muon_momentum: p.muon_momentum,
            phase_timing: false,
        };
        train_step(
            gpt,
            loader,
            &mut opt,
            graphed.as_deref_mut(),
            settings,
            comm,
        )?;
    }
    tch::no_grad(|| {
        for ((_, t), init) in gpt.named_parameters().iter().zip(&initial) {
            let mut t = t.shallow_clone();
            t.copy_(init);
            t.zero_grad();
        }
    });
    loader.restart()
}

/// A diagnostic, off unless `PGOLF_PROFILE_TRACE` names a file: records steps
/// `[PGOLF_PROFILE_FROM, PGOLF_PROFILE_FROM + PGOLF_PROFILE_STEPS)` (default 3 and 2) with
/// libtorch's profiler and writes their Chrome trace there (`bench/trace_summary.py` reads it).
/// Results are unchanged, timings of the recorded steps are not (so it is no param).
struct ProfileWindow {
    path: Option<std::path::PathBuf>,
    from: u64,
    to: u64,
    recording: Option<profiler::Recording>,
}

impl ProfileWindow {
    fn from_env() -> Result<ProfileWindow> {
        let number = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v}: not a step count")),
                Err(_) => Ok(default),
            }
        };
        let from = number("PGOLF_PROFILE_FROM", 3)?;
        Ok(ProfileWindow {
            path: std::env::var_os("PGOLF_PROFILE_TRACE").map(Into::into),
            from,
            to: from + number("PGOLF_PROFILE_STEPS", 2)?,
            recording: None,
        })
    }

    /// Called before each step: starts recording at `from`, saves at `to`.
    fn at_step(&mut self, step: u64) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if step == self.from {
            self.recording = Some(profiler::start()?);
        } else if step == self.to {
            if let Some(recording) = self.recording.take() {
                recording.save(path)?;
            }
        }
        Ok(())
    }
}
