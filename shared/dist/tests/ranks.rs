//! Real multi-process groups on CPU (Gloo): the ranks are `pgolf-dist-check` processes launched
//! here under torchrun's environment contract, through both rendezvous paths (rank 0 hosts the
//! TCPStore; the launcher hosts it, as torchrun's agent and `spawn_ranks` do).
//!
//! - every collective gives the exact expected values on 2 and 3 ranks, and at world size 1
//!   through c10d (`PGOLF_DIST=c10d`); the check binary compares against hand-computed values
//!   (f64 sums that any rounding would change) and exits non-zero on a mismatch;
//! - a rank SIGKILLed mid-run makes the others fail, naming themselves and the collective, well
//!   within the 60 s collective timeout (the dead peer's sockets close);
//! - a rank that stalls (SIGSTOP) makes the others fail once the collective timeout passes;
//! - `spawn_ranks` runs all ranks or fails fast naming the rank that failed.

use anyhow::{bail, Context, Result};
use pgolf_dist::{spawn_ranks, Store, StoreRole};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CHECK: &str = env!("CARGO_BIN_EXE_pgolf-dist-check");

/// One rank's process with its output collected as it comes.
struct Rank {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    })
}

impl Rank {
    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
    /// Waits for the process and for its output to be read to the end.
    fn finish(&mut self) -> Result<ExitStatus> {
        let status = self.child.wait()?;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ok(status)
    }
}

/// A launch of `n` ranks; `agent`: the store is hosted here (kept alive with the launch).
struct Launch {
    ranks: Vec<Rank>,
    _store: Option<Store>,
}

impl Drop for Launch {
    fn drop(&mut self) {
        for r in &mut self.ranks {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn launch(n: usize, args: &[&str], env: &[(&str, &str)], agent: bool) -> Result<Launch> {
    let store = if agent {
        Some(Store::tcp(
            "127.0.0.1",
            0,
            StoreRole::Server { wait_for: 0 },
            Duration::from_secs(30),
            "",
        )?)
    } else {
        None
    };
    let port = match &store {
        Some(s) => s.port().context("store port")?,
        None => free_port()?,
    };
    let mut ranks = Vec::new();
    for rank in 0..n {
        let mut cmd = Command::new(CHECK);
        cmd.args(args)
            .env_remove("PGOLF_DIST")
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if agent {
            cmd.env("TORCHELASTIC_USE_AGENT_STORE", "True")
                .env("TORCHELASTIC_RESTART_COUNT", "0");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        ranks.push(Rank {
            child,
            stdout,
            stderr,
            readers,
        });
    }
    Ok(Launch {
        ranks,
        _store: store,
    })
}

/// The number of checks `pgolf-dist-check` makes (lines ending in `: ok ...`), barrier and Muon
/// included.
const CHECKS: usize = 15;

fn assert_checks_pass(launch: &mut Launch) -> Result<()> {
    let n = launch.ranks.len();
    for (rank, r) in launch.ranks.iter_mut().enumerate() {
        let status = r.finish()?;
        let out = r.stdout();
        if !status.success() {
            bail!("rank {rank} {status}:\n{out}\n{}", r.stderr());
        }
        let tag = format!("rank {rank}/{n} gloo Cpu: ");
        let oks = out
            .lines()
            .filter(|l| l.starts_with(&tag) && l.contains(": ok"))
            .count();
        assert_eq!(oks, CHECKS, "rank {rank}:\n{out}");
        assert!(out.contains(&format!("{tag}pgolf-dist-check: ok")), "{out}");
    }
    Ok(())
}

#[test]
fn two_ranks_rank0_store_exact() -> Result<()> {
    let mut l = launch(2, &[], &[], false)?;
    assert_checks_pass(&mut l)
}

#[test]
fn three_ranks_agent_store_exact() -> Result<()> {
    let mut l = launch(3, &[], &[], true)?;
    assert_checks_pass(&mut l)
}

#[test]
fn world_one_through_c10d() -> Result<()> {
    let out = Command::new(CHECK)
        .env("PGOLF_DIST", "c10d")
        .env_remove("WORLD_SIZE")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rank 0/1 gloo Cpu: pgolf-dist-check: ok"),
        "{stdout}"
    );
    Ok(())
}

/// Waits until every rank printed `step {step}` (the group is up and running collectives).
fn wait_for_step(l: &Launch, step: usize, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let needle = format!(": step {step}\n");
    loop {
        if l.ranks.iter().all(|r| r.stdout().contains(&needle)) {
            return Ok(());
        }
        if started.elapsed() > limit {
            let outs: Vec<String> = l.ranks.iter().map(|r| r.stdout() + &r.stderr()).collect();
            bail!("the ranks did not reach step {step} in {limit:?}: {outs:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for each survivor to exit; returns the slowest one's time since `since`.
fn survivors_fail(l: &mut Launch, survivors: &[usize], since: Instant) -> Result<Duration> {
    let n = l.ranks.len();
    let mut slowest = Duration::ZERO;
    for &rank in survivors {
        let r = &mut l.ranks[rank];
        let status = r.finish()?;
        slowest = slowest.max(since.elapsed());
        let err = r.stderr();
        assert!(!status.success(), "rank {rank} survived a dead peer: {err}");
        let named = format!("rank {rank} of {n} (gloo): all_reduce_sum failed");
        assert!(
            err.contains(&named),
            "rank {rank}'s error does not say {named:?}: {err}"
        );
    }
    Ok(slowest)
}

#[test]
fn killed_rank_fails_the_others_quickly() -> Result<()> {
    // The default collective timeout (60 s): the others must notice the death itself.
    let mut l = launch(
        3,
        &["--loop-steps", "100000", "--loop-sleep-ms", "5"],
        &[],
        true,
    )?;
    wait_for_step(&l, 10, Duration::from_secs(60))?;
    l.ranks[1].child.kill()?; // SIGKILL
    let killed = Instant::now();
    let status = l.ranks[1].finish()?;
    assert!(!status.success());
    let slowest = survivors_fail(&mut l, &[0, 2], killed)?;
    eprintln!("SIGKILL of rank 1: ranks 0 and 2 failed within {slowest:?}");
    assert!(slowest < Duration::from_secs(60), "{slowest:?}");
    Ok(())
}

#[test]
fn stalled_rank_times_out() -> Result<()> {
    let timeout = 3.0;
    let mut l = launch(
        2,
        &["--loop-steps", "100000", "--loop-sleep-ms", "5"],
        &[("PGOLF_DIST_TIMEOUT_S", "3")],
        true,
    )?;
    wait_for_step(&l, 10, Duration::from_secs(60))?;
    let pid = l.ranks[1].child.id().to_string();
    let stopped = Instant::now();
    let ok = Command::new("kill").args(["-STOP", &pid]).status()?;
    assert!(ok.success());
    let slowest = survivors_fail(&mut l, &[0], stopped)?;
    eprintln!("SIGSTOP of rank 1: rank 0 failed after {slowest:?} (timeout {timeout} s)");
    // Not before the timeout (it really waited), and not much after it.
    assert!(
        slowest >= Duration::from_secs_f64(timeout * 0.9),
        "{slowest:?}"
    );
    assert!(
        slowest < Duration::from_secs_f64(timeout + 20.0),
        "{slowest:?}"
    );
    let err = l.ranks[0].stderr();
    assert!(
        err.to_lowercase().contains("timed out") || err.to_lowercase().contains("timeout"),
        "{err}"
    );
    let _ = l.ranks[1].child.kill();
    Ok(())
}

#[test]
fn spawn_ranks_runs_all_or_names_the_failed_rank() -> Result<()> {
    let exe = std::path::Path::new(CHECK);
    spawn_ranks(2, exe, &[]).context("2 ranks of the check")?;
    let started = Instant::now();
    let err = spawn_ranks(3, exe, &["--fail-rank".into(), "1".into()])
        .expect_err("a rank exited 3; spawn_ranks must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("rank 1 of 3 exited with status 3"), "{msg}");
    assert!(msg.contains("stopped the 2 rank(s) still running"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}
