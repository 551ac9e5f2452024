//! The train stage on several CPU processes (Gloo), against one process, on a tiny model:
//!
//! - 2 and 3 ranks (`train --nproc N`) train to the weights of 1 rank with the same global batch
//!   and seed, within 1e-5 relative after 20 steps, with Adam (loss curves printed side by side);
//!   the validation loss agrees too; rank 0's manifest records the world size and backend;
//! - with Muon the loss curves agree (not the weights: see that test), and a c10d group of one
//!   (`PGOLF_DIST=c10d`) gives the single-process weights bit for bit;
//! - SIGKILL of one rank mid-run fails the stage within 60 s, naming the rank, with nothing
//!   published in `--out`.

use pgolf_model::read_tensors;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

mod support;

use support::markov_tokens;
const STEPS: u64 = 20;

fn data_dir(root: &Path) -> PathBuf {
    support::data_dir(root, &markov_tokens(600, 1), &markov_tokens(100, 2))
}

/// 20 steps of a tiny model; the global batch is 6 micro-batches of 128 tokens whatever the
/// world size (grad_accum 6 / world: 6, 3, 2), which the loader cuts into the same 6 spans.
fn params(world: u64, iterations: u64) -> Value {
    json!({
        "model": {"vocab_size": 260, "num_layers": 2, "model_dim": 32, "num_heads": 4,
                  "num_kv_heads": 2, "seq_len": 32},
        "iterations": iterations,
        "warmdown_iters": iterations / 2,
        "max_wallclock_seconds": 0.0,
        "train_batch_tokens": 768,
        "grad_accum_steps": 6 / world,
        "val_batch_tokens": 1536,
        "val_loss_every": 0,
        "train_log_every": 1,
        "grad_clip_norm": 1.0,
        "threads": 1
    })
}

struct Run {
    out: PathBuf,
    status: std::process::ExitStatus,
    stderr: String,
}

fn train(
    root: &Path,
    name: &str,
    data: &Path,
    p: &Value,
    nproc: usize,
    env: &[(&str, &str)],
) -> Run {
    let out = root.join(name);
    let params_path = root.join(format!("{name}.params.json"));
    std::fs::write(&params_path, p.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_train"));
    cmd.arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", data.display()))
        .arg("--params")
        .arg(&params_path)
        .env_remove("WORLD_SIZE")
        .env_remove("PGOLF_DIST")
        .env("OMP_NUM_THREADS", "1");
    if nproc > 0 {
        cmd.arg("--nproc").arg(nproc.to_string());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let result = cmd.output().unwrap();
    Run {
        out,
        status: result.status,
        stderr: String::from_utf8_lossy(&result.stderr).to_string(),
    }
}

impl Run {
    fn ok(&self) -> &Run {
        assert!(
            self.status.success(),
            "{}: {}",
            self.out.display(),
            self.stderr
        );
        self
    }
    fn manifest(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.out.join("manifest.json")).unwrap())
            .unwrap()
    }
    fn weights(&self) -> Vec<(String, Tensor)> {
        let mut w = read_tensors(&self.out.join("model.safetensors")).unwrap();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    }
    /// `train_loss` of each logged step, from train.log.
    fn losses(&self) -> Vec<f64> {
        let log = std::fs::read_to_string(self.out.join("train.log")).unwrap();
        log.lines()
            .filter_map(|l| {
                let rest = l.split("train_loss:").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }
}

/// max over tensors of ‖a − b‖ / ‖a‖.
fn max_relative(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            let ta = ta.to_kind(tch::Kind::Double);
            let tb = tb.to_kind(tch::Kind::Double);
            let diff = (&ta - &tb).norm().double_value(&[]);
            diff / ta.norm().double_value(&[]).max(1e-30)
        })
        .fold(0.0, f64::max)
}

/// Runs 1, 2 and 3 ranks of the same training; returns the runs and prints the loss curves.
fn one_two_three(root: &Path, data: &Path, tag: &str, tweak: impl Fn(&mut Value)) -> [Run; 3] {
    let runs = [1u64, 2, 3].map(|world| {
        let mut p = params(world, STEPS);
        tweak(&mut p);
        let nproc = if world == 1 { 0 } else { world as usize };
        let run = train(root, &format!("{tag}-{world}"), data, &p, nproc, &[]);
        run.ok();
        run
    });
    let curves = runs.each_ref().map(Run::losses);
    eprintln!("{tag}: train loss   1 rank   2 ranks   3 ranks");
    for (s, ((a, b), c)) in curves[0].iter().zip(&curves[1]).zip(&curves[2]).enumerate() {
        eprintln!("{tag}: step {:>2}     {a:.4}   {b:.4}    {c:.4}", s + 1);
    }
    for c in &curves {
        assert_eq!(c.len(), STEPS as usize);
    }
    // It learned (so agreement is not that of runs that did nothing).
    assert!(
        curves[0][STEPS as usize - 1] < curves[0][0] - 1.0,
        "{:?}",
        curves[0]
    );
    runs
}

fn val_loss(run: &Run) -> f64 {
    run.manifest()["headline"]["val_loss"].as_f64().unwrap()
}

/// Without Muon (its learning rate 0: Adam trains the embedding and the controls), ranks change
/// only the order of the gradient sums, and the weights agree to 1e-5 after 20 steps.
#[test]
fn two_and_three_ranks_train_to_the_weights_of_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let [one, two, three] = one_two_three(tmp.path(), &data, "adam", |p| {
        p["matrix_lr"] = json!(0.0);
    });
    let w1 = one.weights();
    for (name, run) in [("2 ranks", &two), ("3 ranks", &three)] {
        let rel = max_relative(&w1, &run.weights());
        eprintln!(
            "{name}: max relative weight difference to 1 rank after {STEPS} steps: {rel:.3e}"
        );
        assert!(rel < 1e-5, "{name}: {rel:e}");
        let (v1, vn) = (val_loss(&one), val_loss(run));
        assert!(
            ((v1 - vn) / v1).abs() < 1e-6,
            "{name}: val_loss {v1} vs {vn}"
        );
    }
    let h = &two.manifest()["headline"];
    assert_eq!(h["world_size"], json!(2));
    assert_eq!(h["dist_backend"], json!("gloo"));
    assert_eq!(three.manifest()["headline"]["world_size"], json!(3));
    assert_eq!(one.manifest()["headline"]["dist_backend"], json!("single"));
}

/// With Muon (the baseline's optimizers), the fp32 differences of the gradient sums are
/// amplified by Newton–Schulz in the nearly rank-deficient matrices of the first steps (the
/// zero-initialised projections). Measured in `attn.proj`, 2 ranks against 1: with the NS in
/// bf16, 7e-8 relative after 3 steps and 1e-2 after 5; with it in f32, 1e-3 from step 3. So the
/// weights cannot agree to 1e-5 over 20 steps whatever the distribution does (without Muon they
/// do: the test above).
/// The loss curves and the validation loss still agree closely, and a c10d group of one
/// (`PGOLF_DIST=c10d`, every collective run) gives the single-process weights bit for bit.
#[test]
fn with_muon_the_curves_agree_and_a_group_of_one_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let [one, two, three] = one_two_three(tmp.path(), &data, "muon", |_| {});
    let curves = [one.losses(), two.losses(), three.losses()];
    for (name, c) in [("2 ranks", &curves[1]), ("3 ranks", &curves[2])] {
        for (s, (a, b)) in curves[0].iter().zip(c).enumerate() {
            assert!(
                ((a - b) / a).abs() < 5e-3,
                "{name}: step {}: loss {a} vs {b}",
                s + 1
            );
        }
        let (v1, vn) = (
            val_loss(&one),
            val_loss(if name == "2 ranks" { &two } else { &three }),
        );
        assert!(
            ((v1 - vn) / v1).abs() < 5e-3,
            "{name}: val_loss {v1} vs {vn}"
        );
    }
    let c10d_one = train(
        tmp.path(),
        "c10d-1",
        &data,
        &params(1, STEPS),
        0,
        &[("PGOLF_DIST", "c10d")],
    );
    c10d_one.ok();
    for ((n, a), (_, b)) in one.weights().iter().zip(&c10d_one.weights()) {
        assert!(
            a.equal(b),
            "{n}: PGOLF_DIST=c10d at world size 1 is not bit-identical"
        );
    }
    assert_eq!(
        c10d_one.manifest()["headline"]["dist_backend"],
        json!("gloo")
    );
    assert_eq!(c10d_one.manifest()["headline"]["world_size"], json!(1));
}

/// The pids of `parent`'s children (Linux /proc).
fn children(parent: u32) -> Vec<u32> {
    let path = format!("/proc/{parent}/task/{parent}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_killed_rank_fails_the_stage_quickly_with_nothing_published() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let out = tmp.path().join("killed");
    let params_path = tmp.path().join("killed.params.json");
    std::fs::write(&params_path, params(2, 100_000).to_string()).unwrap();
    let mut parent = Command::new(env!("CARGO_BIN_EXE_train"))
        .arg("--out")
        .arg(&out)
        .arg("--in")
        .arg(format!("data={}", data.display()))
        .arg("--params")
        .arg(&params_path)
        .arg("--nproc")
        .arg("2")
        .env_remove("WORLD_SIZE")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until rank 0 is logging training steps, then SIGKILL rank 1.
    let started = Instant::now();
    let log = out.join("train.log");
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("step:5/")) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no training steps"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks = children(parent.id());
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    let victim = *ranks
        .iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|kv| kv == b"RANK=1")
        })
        .expect("a child with RANK=1");
    assert!(Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let killed = Instant::now();
    let status = parent.wait().unwrap();
    let took = killed.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(parent.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    eprintln!("SIGKILL of rank 1: the stage failed after {took:?}");
    assert!(!status.success());
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(
        stderr.contains("error: train: rank 1 of 2 was killed by signal 9"),
        "{stderr}"
    );
    assert!(!out.join("manifest.json").exists());
    assert!(
        !out.exists(),
        "the unfinished output folder was left behind"
    );
    // The killed worker could not remove its scratch folder; the launcher did.
    let stale: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("pgolf-train-rank") && n.ends_with(&format!("-{victim}")))
        .collect();
    assert!(stale.is_empty(), "{stale:?}");
}
