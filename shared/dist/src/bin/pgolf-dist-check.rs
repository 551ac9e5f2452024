//! pgolf-dist-check: every collective of `pgolf_dist` against values computed by hand, on each
//! rank of a launch (`torchrun --nproc_per_node=N pgolf-dist-check --device cuda`, or
//! `pgolf-dist-check --nproc N`, which spawns the ranks itself). Prints one line per check and
//! `pgolf-dist-check: ok` from every rank; exits non-zero naming the first mismatch.
//!
//! The values are small integers or dyadic fractions, so every sum is exact in any order and the
//! expected results are exact too. Other modes serve the tests (tests/ranks.rs): `--loop-steps`
//! (all-reduces at a steady pace, to be killed or stopped) and `--fail-rank` (one rank exits 3).

use anyhow::{bail, Context, Result};
use pgolf_dist::{from_env, spawn_ranks, Dist};
use pgolf_optim::Collective;
use std::ffi::OsString;
use std::io::Write;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

struct Args {
    device: Device,
    nproc: usize,
    loop_steps: usize,
    loop_sleep_ms: u64,
    fail_rank: Option<usize>,
    bench_mib: usize,
}

fn parse_args() -> Result<(Args, Vec<OsString>)> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        device: Device::Cpu,
        nproc: 0,
        loop_steps: 0,
        loop_sleep_ms: 20,
        fail_rank: None,
        bench_mib: 0,
    };
    // What the spawned ranks get: everything but --nproc.
    let mut forwarded = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let flag = raw[i].as_str();
        let value = raw
            .get(i + 1)
            .with_context(|| format!("{flag} needs a value"))?
            .clone();
        match flag {
            "--device" => {
                a.device = match value.as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" => Device::Cuda(0),
                    other => bail!("--device {other}: want cpu or cuda"),
                }
            }
            "--nproc" => a.nproc = value.parse()?,
            "--loop-steps" => a.loop_steps = value.parse()?,
            "--loop-sleep-ms" => a.loop_sleep_ms = value.parse()?,
            "--fail-rank" => a.fail_rank = Some(value.parse()?),
            "--bench-mib" => a.bench_mib = value.parse()?,
            other => bail!("unknown argument {other} (--device cpu|cuda, --nproc N, --loop-steps N, --loop-sleep-ms MS, --fail-rank R, --bench-mib M)"),
        }
        if flag != "--nproc" {
            forwarded.push(flag.into());
            forwarded.push(value.into());
        }
        i += 2;
    }
    Ok((a, forwarded))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("pgolf-dist-check: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let (args, forwarded) = parse_args()?;
    if args.nproc > 0 {
        let exe = std::env::current_exe()?;
        return spawn_ranks(args.nproc, &exe, &forwarded);
    }
    let dist = from_env(args.device)?;
    let comm = &*dist.comm;
    let tag = format!(
        "rank {}/{} {} {:?}",
        comm.rank(),
        comm.world_size(),
        comm.backend(),
        dist.device
    );
    if args.loop_steps > 0 {
        return steady(&dist, &args, &tag);
    }
    if let Some(r) = args.fail_rank {
        let mut t = Tensor::ones([4], (Kind::Float, dist.device));
        comm.all_reduce_sum(&mut t)?;
        if comm.rank() == r {
            eprintln!("{tag}: failing on purpose (--fail-rank {r})");
            std::process::exit(3);
        }
        // The others wait in a collective the failed rank never joins.
        comm.barrier()?;
        return Ok(());
    }
    check_all(comm, dist.device, &tag)?;
    if args.bench_mib > 0 {
        bench(comm, dist.device, args.bench_mib, &tag)?;
    }
    println!("{tag}: pgolf-dist-check: ok");
    Ok(())
}

/// All-reduces at a steady pace, printing `step k` (flushed) so a test can act mid-run.
fn steady(dist: &Dist, args: &Args, tag: &str) -> Result<()> {
    let comm = &*dist.comm;
    let mut out = std::io::stdout();
    for step in 0..args.loop_steps {
        let mut t = Tensor::full([1024], step as f64, (Kind::Double, dist.device));
        comm.all_reduce_sum(&mut t)?;
        let got = t.double_value(&[0]);
        let want = (step * comm.world_size()) as f64;
        if got != want {
            bail!("{tag}: step {step}: sum {got}, want {want}");
        }
        writeln!(out, "{tag}: step {step}")?;
        out.flush()?;
        std::thread::sleep(Duration::from_millis(args.loop_sleep_ms));
    }
    Ok(())
}

fn expect_equal(tag: &str, what: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    let got = got.to_device(Device::Cpu);
    let want = want.to_device(Device::Cpu);
    if got.size() != want.size() || got.kind() != want.kind() || !got.equal(&want) {
        bail!(
            "{tag}: {what}: got {got:?} {:?}, want {want:?} {:?}",
            Vec::<f64>::try_from(got.to_kind(Kind::Double).flatten(0, -1))?,
            Vec::<f64>::try_from(want.to_kind(Kind::Double).flatten(0, -1))?
        );
    }
    let first: Vec<f64> = Vec::try_from(got.to_kind(Kind::Double).flatten(0, -1).narrow(
        0,
        0,
        got.numel().min(4) as i64,
    ))?;
    println!("{tag}: {what}: ok {first:?}");
    Ok(())
}

/// Every collective once, against exact expected values.
fn check_all(comm: &dyn Collective, device: Device, tag: &str) -> Result<()> {
    let world = comm.world_size() as i64;
    let rank = comm.rank() as i64;
    let cpu = Device::Cpu;
    let on = |t: Tensor| t.to_device(device);
    // The sum over ranks of f(r) for f(r) = (r + 1) · base: base · world (world + 1) / 2.
    let tri = (world * (world + 1) / 2) as f64;

    // f32 and f64 sums; the f64 values are dyadic fractions of very different magnitudes, whose
    // sum is exact whatever the order (and would not be with rounding anywhere).
    for kind in [Kind::Float, Kind::Double] {
        let base = Tensor::arange(1000, (kind, cpu));
        let mut t = on(&base * (rank + 1) as f64);
        comm.all_reduce_sum(&mut t)?;
        expect_equal(tag, &format!("all_reduce_sum {kind:?}"), &t, &(&base * tri))?;
    }
    // 2^28 and 2^-20 apart: 48 bits, so every partial sum of up to 16 ranks fits f64's 53 (and
    // none fits f32's 24: a reduction through f32 would show).
    let big = Tensor::from_slice(&[2f64.powi(28), 1.0]);
    let small = Tensor::from_slice(&[2f64.powi(-20), 2f64.powi(-30)]);
    let mut t = on(&big + &small * (rank + 1) as f64);
    comm.all_reduce_sum(&mut t)?;
    expect_equal(
        tag,
        "all_reduce_sum f64 exact (2^28 + k·2^-20)",
        &t,
        &(&big * world as f64 + &small * tri),
    )?;

    // Avg: multiples of the world size divide exactly.
    let base = Tensor::arange(64, (Kind::Float, cpu));
    let mut t = on(&base * (world * (rank + 1)) as f64);
    comm.all_reduce_avg(&mut t)?;
    expect_equal(tag, "all_reduce_avg f32", &t, &(&base * tri))?;
    let mut t = on(Tensor::full([8], (rank * 3) as f64, (Kind::Double, cpu)));
    comm.all_reduce_avg(&mut t)?;
    expect_equal(
        tag,
        "all_reduce_avg f64",
        &t,
        &Tensor::full([8], 1.5 * (world - 1) as f64, (Kind::Double, cpu)),
    )?;

    // bf16 (Muon's shared updates: one rank's value, zeros elsewhere), int64 (counts).
    let vals = Tensor::arange(world, (Kind::Float, cpu)) * 0.375 + 1.0;
    let mut t = on(Tensor::zeros([world], (Kind::BFloat16, cpu)));
    let _ = t.get(rank).fill_(vals.double_value(&[rank]));
    comm.all_reduce_sum(&mut t)?;
    expect_equal(
        tag,
        "all_reduce_sum bf16 shares",
        &t,
        &vals.to_kind(Kind::BFloat16),
    )?;
    let mut t = on(Tensor::full([3], rank + 1, (Kind::Int64, cpu)));
    comm.all_reduce_sum(&mut t)?;
    expect_equal(
        tag,
        "all_reduce_sum i64",
        &t,
        &Tensor::full([3], tri as i64, (Kind::Int64, cpu)),
    )?;

    // A non-contiguous view is reduced through a contiguous copy and written back.
    let base = Tensor::arange(12, (Kind::Double, cpu)).reshape([3, 4]);
    let mut t = on(&base * (rank + 1) as f64).transpose(0, 1);
    comm.all_reduce_sum(&mut t)?;
    expect_equal(
        tag,
        "all_reduce_sum transposed view",
        &t,
        &(&base * tri).transpose(0, 1),
    )?;

    // Max.
    let mut t = on(Tensor::from_slice(&[rank as f32, -(rank as f32)]));
    comm.all_reduce_max(&mut t)?;
    expect_equal(
        tag,
        "all_reduce_max",
        &t,
        &Tensor::from_slice(&[(world - 1) as f32, 0.0]),
    )?;

    // Broadcast from the last rank.
    let root = (world - 1) as usize;
    let mut t = on(Tensor::full([5], rank as f64 + 0.5, (Kind::Double, cpu)));
    comm.broadcast(&mut t, root)?;
    expect_equal(
        tag,
        "broadcast from the last rank",
        &t,
        &Tensor::full([5], root as f64 + 0.5, (Kind::Double, cpu)),
    )?;

    // All-gather: rank r contributes 100 r + [0..6) as [2, 3].
    let mine = |r: i64| Tensor::arange(6, (Kind::Float, cpu)).reshape([2, 3]) + (100 * r) as f64;
    let g = comm.all_gather(&on(mine(rank)))?;
    let want = Tensor::stack(&(0..world).map(mine).collect::<Vec<_>>(), 0);
    expect_equal(tag, "all_gather", &g, &want)?;

    // Reduce-scatter: rank r's input row i is (r + 1) · (i + [0..3)/4); this rank gets rows
    // 2 rank, 2 rank + 1 summed over ranks.
    let rows = |scale: f64| {
        (Tensor::arange(2 * world, (Kind::Double, cpu)).unsqueeze(1)
            + Tensor::arange(3, (Kind::Double, cpu)).unsqueeze(0) / 4.0)
            * scale
    };
    let s = comm.reduce_scatter_sum(&on(rows((rank + 1) as f64)))?;
    expect_equal(
        tag,
        "reduce_scatter_sum",
        &s,
        &rows(tri).narrow(0, 2 * rank, 2),
    )?;

    comm.barrier()?;
    println!("{tag}: barrier: ok");

    muon_sharded(comm, device, tag)?;
    Ok(())
}

/// Muon computes parameter i on rank i mod world and shares the bf16 updates: with the same
/// gradients on every rank, two steps must give exactly the weights of one process computing all.
fn muon_sharded(comm: &dyn Collective, device: Device, tag: &str) -> Result<()> {
    let shapes = [
        [8i64, 16],
        [16, 8],
        [8, 16],
        [8, 8],
        [8, 16],
        [16, 8],
        [4, 4],
    ];
    let make = |seed: i64| -> Vec<Tensor> {
        tch::manual_seed(seed);
        shapes
            .iter()
            .map(|s| Tensor::randn(s.as_slice(), (Kind::Float, device)).set_requires_grad(true))
            .collect()
    };
    let run = |params: Vec<Tensor>,
               rank: usize,
               world: usize,
               c: &dyn Collective|
     -> Result<Vec<Tensor>> {
        let mut muon = pgolf_optim::Muon::new(
            params.iter().map(|p| p.shallow_clone()).collect(),
            0.05,
            0.9,
            5,
            rank,
            world,
        )?;
        for step in 0..2 {
            tch::manual_seed(100 + step);
            for p in &params {
                let mut g = p.grad();
                if !g.defined() {
                    (p * 0.0).sum(Kind::Float).backward();
                    g = p.grad();
                }
                g.copy_(&Tensor::randn(p.size().as_slice(), (Kind::Float, device)));
            }
            muon.step(c)?;
        }
        Ok(params.iter().map(|p| p.detach().copy()).collect())
    };
    let sharded = run(make(7), comm.rank(), comm.world_size(), comm)?;
    let alone = run(make(7), 0, 1, &pgolf_optim::Single)?;
    for (i, (a, b)) in sharded.iter().zip(&alone).enumerate() {
        if !a.equal(b) {
            bail!(
                "{tag}: Muon sharded over {} ranks differs from one process at parameter {i}",
                comm.world_size()
            );
        }
    }
    println!("{tag}: muon sharded = one process: ok");
    Ok(())
}

/// All-reduce bandwidth of an f32 buffer of `mib` MiB (bus bandwidth as nccl-tests counts it).
fn bench(comm: &dyn Collective, device: Device, mib: usize, tag: &str) -> Result<()> {
    let n = (mib << 20) / 4;
    let mut t = Tensor::ones([n as i64], (Kind::Float, device));
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    comm.all_reduce_sum(&mut t)?;
    sync();
    let iters = 10;
    let started = Instant::now();
    for _ in 0..iters {
        comm.all_reduce_sum(&mut t)?;
    }
    sync();
    let secs = started.elapsed().as_secs_f64() / iters as f64;
    let world = comm.world_size() as f64;
    let bus = (mib << 20) as f64 * 2.0 * (world - 1.0) / world / secs / 1e9;
    println!(
        "{tag}: all_reduce {mib} MiB f32: {:.3} ms, bus bandwidth {bus:.1} GB/s",
        secs * 1e3
    );
    Ok(())
}
