//! The train stage on several processes (pgolf-dist: PyTorch's c10d, Gloo on CPU, NCCL on CUDA).
//!
//! - `train --nproc N ...` spawns N ranks of this program under torchrun's environment contract
//!   and waits for all of them ([`launch_or_role`]); `torchrun ... train ...` starts them instead.
//! - Rank 0 is the stage run (writes `--out` and the manifest); the other ranks are workers
//!   (`pgolf_store::RunAs::Worker`): same params and inputs, a private scratch folder, no
//!   manifest.
//! - Each rank takes its slice of every micro-batch and `grad_accum = 8 / world` (the loader and
//!   the batch plan, REFERENCE.md §1.5, §3.9), its share of the validation windows (f64 sums
//!   all-reduced), and its share of Muon's matrices; gradients are averaged before the optimizers
//!   ([`average_gradients`]); the logged loss and the step time are agreed over ranks each step
//!   ([`agree_mean`]), so the wall-clock schedule and stop are the same on every rank.
//! - Any rank failing fails the run: its peers' collectives fail within the collective timeout,
//!   `--nproc` stops the other ranks, names the rank that failed first, and removes the unfinished
//!   output folder.

use anyhow::{bail, Context, Result};
use pgolf_dist::{Dist, Launch};
use pgolf_optim::Collective;
use pgolf_store::files::MANIFEST as MANIFEST_FILE;
use pgolf_store::stage::{one_line, ERROR_FILE_ENV};
use pgolf_store::RunAs;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use tch::{Device, Tensor};

/// With `--nproc N` on the command line: runs the N ranks and exits with the run's status.
/// Otherwise: this process's role, from the launch in the environment (rank 0 or alone: the
/// stage run; any other rank: a worker).
pub fn launch_or_role() -> RunAs {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match split_nproc(&args) {
        Ok(Some((n, rest))) => std::process::exit(match spawn(n, &rest) {
            Ok(()) => 0,
            Err(e) => {
                let line = format!("error: train: {}", one_line(&e));
                eprintln!("{line}");
                if let Some(path) = std::env::var_os(ERROR_FILE_ENV) {
                    let _ = std::fs::write(path, format!("{line}\n"));
                }
                1
            }
        }),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: train: {e:#}");
            std::process::exit(1);
        }
    }
    match Launch::from_env() {
        Ok(Some(l)) if l.rank > 0 => RunAs::Worker { rank: l.rank },
        Ok(launch) => RunAs::Stage {
            world_size: launch.map_or(1, |l| l.world_size),
        },
        Err(e) => {
            eprintln!("error: train: {e:#}");
            std::process::exit(1);
        }
    }
}

/// `--nproc N` (or `--nproc=N`) taken out of `args`: `(N, the other args)`.
fn split_nproc(args: &[OsString]) -> Result<Option<(usize, Vec<OsString>)>> {
    let mut n = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        let value = if s == "--nproc" {
            Some(
                it.next()
                    .context("--nproc needs a number of ranks")?
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            s.strip_prefix("--nproc=").map(str::to_string)
        };
        match value {
            Some(v) => {
                let count: usize = v
                    .parse()
                    .ok()
                    .filter(|&c| c > 0)
                    .with_context(|| format!("--nproc {v}: want a positive number of ranks"))?;
                n = Some(count);
            }
            None => rest.push(a.clone()),
        }
    }
    Ok(n.map(|n| (n, rest)))
}

/// The `--out` folder of a stage command line.
fn out_dir(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--out" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--out=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

fn spawn(n: usize, args: &[OsString]) -> Result<()> {
    if std::env::var_os("WORLD_SIZE").is_some() {
        bail!("--nproc inside a launch that already set WORLD_SIZE (torchrun starts the ranks itself)");
    }
    let exe = std::env::current_exe().context("this program's path")?;
    let out = out_dir(args);
    // A finished run there is refused by rank 0 and must stay as it is.
    let had_finished = out.as_ref().is_some_and(|o| o.join(MANIFEST_FILE).exists());
    let result = pgolf_dist::spawn_ranks(n, &exe, args);
    if result.is_err() && !had_finished {
        // All or nothing: whatever rank 0 wrote goes (a rank killed mid-write leaves it
        // unfinished; one failing after rank 0 finished makes the run a failure all the same).
        if let Some(out) = out.filter(|o| o.exists()) {
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    pgolf_store::stage::sweep_worker_scratch("train");
    result
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn nproc_is_taken_out_of_the_command_line() -> Result<()> {
        let (n, rest) = split_nproc(&os(&["--out", "o", "--nproc", "3", "--device", "cpu"]))?
            .expect("--nproc given");
        assert_eq!(n, 3);
        assert_eq!(rest, os(&["--out", "o", "--device", "cpu"]));
        let (n, rest) = split_nproc(&os(&["--nproc=2", "--out=o"]))?.unwrap();
        assert_eq!((n, rest), (2, os(&["--out=o"])));
        assert_eq!(out_dir(&os(&["--out=o"])), Some(PathBuf::from("o")));
        assert_eq!(
            out_dir(&os(&["--in", "a=b", "--out", "x"])),
            Some(PathBuf::from("x"))
        );
        assert!(split_nproc(&os(&["--out", "o"]))?.is_none());
        for bad in [&["--nproc"][..], &["--nproc", "0"], &["--nproc", "x"]] {
            assert!(split_nproc(&os(bad)).is_err(), "{bad:?}");
        }
        Ok(())
    }
}
