//! The gptq-calibrate stage: runs the final model over calibration sequences and writes, for every
//! linear layer (and the tied head), the Hessian proxy `H = (1/batches)·Σ_b X_bᵀX_b` of its
//! inputs (REFERENCE.md §5.10), fp32, named by the weight it serves.
//!
//! Calibration sequences are either the start of the training stream (`source: train`, the
//! records' choice, which the rules accept only inside the training budget) or sequences the model
//! samples from itself (`source: self_generated`, record 2026-03-25: no data access at all).
//!
//! On several ranks (`gptq-calibrate --nproc N`, or torchrun; `pgolf_dist::stage`) every rank
//! holds rank 0's sequences, runs its contiguous share of the batches, and the sums XᵀX, their
//! row counts and the batch count are summed over ranks before rank 0 writes `H`.

mod calibration;
mod generate;
mod hessians;

use anyhow::{Context, Result};
use calibration::{Params, Source};
use pgolf_model::{build, load_safetensors, ModelConfig};
use pgolf_optim::Collective;
use pgolf_runtime::{describe, device_from_str, precision_kind};
use pgolf_store::files;
use pgolf_store::Stage;
use std::time::Instant;
use tch::{Kind, Tensor};

fn main() {
    let role = pgolf_dist::stage::launch_or_role("gptq-calibrate");
    pgolf_store::run_stage_as::<Params, _>(
        "gptq-calibrate",
        env!("PGOLF_STAGE_IDENTITY"),
        role,
        run,
    );
}

fn run(stage: &mut Stage<Params>) -> Result<()> {
    let p = &stage.params;
    p.validate()?;
    // One rank of several or alone; CUDA ranks use GPU LOCAL_RANK.
    let comm = pgolf_dist::from_env(device_from_str(&stage.device)?)?;
    let device = comm.device;
    let weights = stage.input_dir("weights")?.to_path_buf();
    let cfg = ModelConfig::read(&weights.join(files::MODEL_CONFIG))?;
    let (mut vs, mut gpt) = build(&cfg, device)?;
    load_safetensors(&mut vs, &weights.join(files::WEIGHTS))?;
    let compute = precision_kind(p.precision, device);
    gpt.set_compute_kind(compute);
    gpt.set_formulation(p.formulation, device)?;
    let seq_len = p.seq_len.unwrap_or(cfg.seq_len);

    let clock = Instant::now();
    let (sequences, origin) = match p.source {
        Source::Train => calibration::train_sequences(
            stage.input_dir("data")?,
            p.sequences,
            seq_len,
            p.offset,
            cfg.vocab_size,
        )?,
        Source::SelfGenerated => (
            generate::sample(&gpt, p, seq_len, device)?,
            calibration::Origin::generated(p),
        ),
    };
    let generate_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let sums = if comm.world_size() == 1 {
        hessians::collect(&gpt, &sequences, p.batch_sequences, device)?
    } else {
        hessians::collect_over_ranks(&gpt, &sequences, p.batch_sequences, &comm, device)?
    };
    let collect_seconds = clock.elapsed().as_secs_f64();

    let tokens = sequences.numel();
    let layers = sums.write(&stage.out_path(files::HESSIANS))?;
    let record = calibration::Record::new(
        p,
        &origin,
        seq_len,
        tokens,
        &sums,
        compute,
        gpt.formulation(),
    );
    std::fs::write(
        stage.out_path(files::CALIBRATION),
        serde_json::to_vec_pretty(&record)?,
    )
    .context("writing calibration.json")?;

    stage.set_device(describe(device, comm.world_size()));
    stage.headline("calibration_tokens", tokens);
    stage.headline("layers", layers);
    stage.headline("source", origin.source.clone());
    stage.headline("batches", sums.batches);
    stage.headline("generate_seconds", generate_seconds);
    stage.headline("collect_seconds", collect_seconds);
    Ok(())
}

/// `[sequences, seq_len]` token ids (i64) on `device`.
pub fn to_ids(tokens: &[u16], seq_len: usize, device: tch::Device) -> Result<Tensor> {
    let ids: Vec<i64> = tokens.iter().map(|t| *t as i64).collect();
    Ok(Tensor::f_from_slice(&ids)?
        .f_view([-1, seq_len as i64])?
        .f_to_kind(Kind::Int64)?
        .f_to_device(device)?)
}
