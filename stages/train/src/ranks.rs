//! The train stage on several processes (pgolf-dist: PyTorch's c10d, Gloo on CPU, NCCL on CUDA).
//!
//! - `train --nproc N ...` or `torchrun ... train ...` (the launch and the roles of the ranks:
//!   `pgolf_dist::stage`).
//! - Each rank takes its slice of every micro-batch and `grad_accum = 8 / world` (the loader and
//!   the batch plan, REFERENCE.md §1.5, §3.9), its share of the validation windows (f64 sums
//!   all-reduced), and its share of Muon's matrices; gradients are averaged before the optimizers
//!   ([`average_gradients`]); the logged loss and the step time are agreed over ranks each step
//!   ([`agree_mean`]), so the wall-clock schedule and stop are the same on every rank.
//! - Any rank failing fails the run: its peers' collectives fail within the collective timeout,
//!   `--nproc` stops the other ranks, names the rank that failed first, and removes the unfinished
//!   output folder.

use anyhow::{Context, Result};
use pgolf_dist::Dist;
use pgolf_optim::Collective;
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// This process's collective and device (a world of one when not launched as ranks).
pub fn join(device: Device) -> Result<Dist> {
    pgolf_dist::from_env(device)
}

/// A run of one process without a process group. A c10d group of one (`PGOLF_DIST=c10d`) does
/// run the collectives below, so that path can be checked against this one bit for bit.
fn alone(comm: &dyn Collective) -> bool {
    comm.world_size() == 1 && comm.backend() == "single"
}

/// Every rank starts from rank 0's weights (they are equal when initialisation is deterministic,
/// as it is here; this makes it so whatever the device's kernels do).
pub fn sync_weights(params: &[(String, Tensor)], comm: &dyn Collective) -> Result<()> {
    if alone(comm) {
        return Ok(());
    }
    tch::no_grad(|| {
        for (name, t) in params {
            let mut t = t.shallow_clone();
            comm.broadcast(&mut t, 0)
                .with_context(|| format!("broadcasting {name}"))?;
        }
        Ok(())
    })
}

/// Replaces every defined gradient by its mean over ranks: one all-reduce per dtype (the
/// gradients flattened into one buffer), not one per parameter.
pub fn average_gradients(params: &[Tensor], comm: &dyn Collective) -> Result<()> {
    if alone(comm) {
        return Ok(());
    }
    tch::no_grad(|| {
        let mut by_kind: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
        for p in params {
            let g = p.grad();
            if g.defined() {
                by_kind
                    .entry(format!("{:?}", g.kind()))
                    .or_default()
                    .push(g);
            }
        }
        for grads in by_kind.values() {
            let flat: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
            let mut flat = Tensor::cat(&flat, 0);
            comm.all_reduce_avg(&mut flat)?;
            let mut offset = 0;
            for g in grads {
                let n = g.numel() as i64;
                let mut g = g.shallow_clone();
                g.copy_(&flat.narrow(0, offset, n).view_as(&g));
                offset += n;
            }
        }
        Ok(())
    })
}

/// The mean over ranks of per-rank figures (the step's train loss, its time), the same on every
/// rank. Alone, the figures themselves. `device`: the run's (NCCL reduces CUDA tensors only).
pub fn agree_mean<const N: usize>(
    comm: &dyn Collective,
    device: Device,
    values: [f64; N],
) -> Result<[f64; N]> {
    if alone(comm) {
        return Ok(values);
    }
    let mut t = Tensor::from_slice(&values).to_device(device);
    comm.all_reduce_avg(&mut t)?;
    let mut out = [0.0; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = t.double_value(&[i as i64]);
    }
    Ok(out)
}
