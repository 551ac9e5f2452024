//! The train stage: the baseline GPT (REFERENCE.md §3) and the record stacks' options trained with
//! Muon and Adam on upstream's sequential loader or a record's (shuffled windows, packed
//! documents), validated with exact byte accounting, on the CPU or a CUDA GPU.
//!
//! Inputs: `data` (a tokenize output). Outputs: `model.safetensors` (raw weights),
//! `ema.safetensors` (when the EMA was updated), `swa.safetensors` (when SWA took a snapshot),
//! `config.json`, `metrics.parquet`, `train.log`.

mod data;
mod graphed;
mod log;
mod metrics;
mod optimizers;
mod outputs;
mod params;
mod profile;
mod ranks;
mod run_loop;
mod step;
mod swa;
mod validate;
mod warmup;

use anyhow::Result;
use pgolf_optim::Collective;
use pgolf_runtime::{cuda, describe, device_from_str};
use pgolf_store::{files, Stage};
use std::time::Instant;
use tch::Kind;

use data::{BatchLoader, ValTokens};
use graphed::{GraphedMicroStep, Input};
use log::RunLog;
use optimizers::Optimizers;
use params::{Loader, Params};
use pgolf_model::docs::CU_BUCKET;
use run_loop::Training;
use warmup::warm_up;

fn main() {
    let role = pgolf_dist::stage::launch_or_role("train");
    pgolf_store::run_stage_as::<Params, _>("train", env!("PGOLF_STAGE_IDENTITY"), role, train);
}

fn train(stage: &mut Stage<Params>) -> Result<()> {
    let p = stage.params.clone();
    p.check()?;
    // One rank of a multi-process run (ranks.rs), or alone; CUDA ranks use GPU LOCAL_RANK.
    let comm = ranks::join(device_from_str(&stage.device)?)?;
    let device = comm.device;
    if p.threads > 0 {
        tch::set_num_threads(p.threads as i32);
    }
    stage.set_device(describe(device, comm.world_size()));
    stage.headline("world_size", comm.world_size());
    stage.headline("dist_backend", comm.backend());
    let plan = p.batch_plan(comm.world_size())?;
    let data_dir = stage.input("data")?.path().to_path_buf();
    let mut log = RunLog::create(&stage.out_path(files::TRAIN_LOG))?;

    // 1. Data: the sequential train stream and the val split, checked against the model's vocab.
    let mut loader = BatchLoader::open(
        &data_dir,
        p.loader,
        plan,
        comm.rank(),
        p.model.vocab_size,
        device,
    )?;
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
    ranks::sync_weights(gpt.named_parameters(), &comm)?;
    let bf16 = p.precision.is_bf16(device.is_cuda());
    if bf16 {
        gpt.set_compute_kind(Kind::BFloat16);
        gpt.set_embedding_kind(Kind::BFloat16);
    }
    gpt.set_formulation(p.formulation, device)?;
    // The plain U-Net first when the recurrence switches on later (the loop turns it on).
    gpt.set_recurrence(p.recurrence_enable_at <= 0.0);
    log.line(&format!(
        "model_params:{} config:{}",
        p.model.num_params(),
        serde_json::to_string(&p.model)?
    ))?;
    log.line(&format!(
        "device:{} precision:{} formulation:{} cuda_graphs:{} world_size:{} grad_accum_steps:{} local_tokens:{} val_tokens:{} val_bytes:{}",
        describe(device, comm.world_size()).summary(),
        if bf16 { "bf16" } else { "f32" },
        gpt.formulation().name(),
        p.cuda_graphs && device.is_cuda(),
        plan.world_size,
        plan.grad_accum,
        plan.local_tokens,
        val_set.targets,
        val_set.bytes
    ))?;

    // 3. The optimizers; on CUDA the micro-batch captured as a graph; an optional warm-up
    //    (timed separately, then undone).
    let mut opt = Optimizers::new(&gpt, &p, &comm)?;
    // Packed documents replay in a graph only through the varlen kernel, which reads nothing but
    // the copied-in `cu_seqlens` (in f32 they take the per-document reference path instead).
    let packed = p.loader == Loader::Packed;
    let graphable = !packed || pgolf_model::docs::kernel_path(device, gpt.compute_kind());
    if p.cuda_graphs && device.is_cuda() && !graphable {
        log.line("cuda_graph: off (packed documents in f32 run the per-document reference attention, which a graph cannot replay)")?;
    }
    let mut graphed = if p.cuda_graphs && device.is_cuda() && graphable {
        let started = Instant::now();
        let input = if packed {
            Input::Packed {
                tokens: plan.local_tokens as i64,
                max_len: plan.seq_len as i64,
                entries: (plan.local_tokens / plan.seq_len + 1).div_ceil(CU_BUCKET) * CU_BUCKET,
            }
        } else {
            Input::Rows {
                rows: (plan.local_tokens / plan.seq_len) as i64,
                seq_len: plan.seq_len as i64,
            }
        };
        let g =
            GraphedMicroStep::capture(&gpt, &mut opt, input, 1.0 / plan.grad_accum as f64, device)?;
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
    cuda::reset_peak_memory(device);

    // 4. The loop, then 5. the outputs.
    let started = Instant::now();
    let run = run_loop::run(Training {
        p: &p,
        gpt: &gpt,
        loader: &mut loader,
        opt: &mut opt,
        graphed: graphed.as_mut(),
        val_set: &val_set,
        val_batch_seqs,
        comm: &comm,
        log: &mut log,
    })?;
    if let Some(g) = graphed.as_ref().filter(|g| g.recaptures_for_documents > 0) {
        log.line(&format!(
            "cuda_graph: captured again {} time(s) for batches with more documents ({:.0}s of the run)",
            g.recaptures_for_documents,
            started.elapsed().as_secs_f64()
        ))?;
    }
    // Every rank got here (none failed) before rank 0 publishes; the others' outputs would be
    // copies of rank 0's.
    comm.barrier()?;
    if comm.rank() > 0 {
        return Ok(());
    }
    outputs::write(stage, &vs, &run, &val_set, device, &mut log)
}
