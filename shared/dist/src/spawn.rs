//! [`spawn_ranks`]: run `n` copies of a program on this host as the ranks of one group, under
//! torchrun's environment contract, all or nothing.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ffi::{Store, StoreRole};

/// How often the launcher looks at its children when it cannot be told.
const POLL: Duration = Duration::from_millis(20);

/// Runs `exe args` as ranks `0..n` and waits for all of them. Like torchrun's agent, this
/// process hosts the rendezvous store (a TCPStore on a free loopback port: no port race between
/// choosing and binding it) and sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
/// `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_USE_AGENT_STORE=True` and
/// `TORCHELASTIC_RESTART_COUNT=0`; the children inherit everything else (stdout, stderr, env).
///
/// Fails fast: as soon as one rank exits unsuccessfully, the others are killed and the error
/// names the first rank that failed and how.
pub fn spawn_ranks(n: usize, exe: &Path, args: &[OsString]) -> Result<()> {
    if n == 0 {
        bail!("spawn_ranks: no ranks to run");
    }
    let store = Store::tcp(
        "127.0.0.1",
        0,
        StoreRole::Server { wait_for: 0 },
        Duration::from_secs(30),
        "",
    )
    .context("spawn_ranks: hosting the rendezvous store")?;
    let port = store
        .port()
        .ok_or_else(|| anyhow!("spawn_ranks: the store has no port"))?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
    for rank in 0..n {
        let spawned = Command::new(exe)
            .args(args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("GROUP_RANK", "0")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("TORCHELASTIC_USE_AGENT_STORE", "True")
            .env("TORCHELASTIC_RESTART_COUNT", "0")
            .spawn();
        match spawned {
            Ok(child) => children.push(Some(child)),
            Err(e) => {
                stop(&mut children);
                return Err(e).with_context(|| format!("spawning rank {rank}: {}", exe.display()));
            }
        }
    }
    let started = Instant::now();
    // One watcher per rank blocks until its rank exits and reports it without reaping it
    // (waitid WNOWAIT), so the reports come in the order the ranks really ended: the rank that
    // failed first is named, not a peer that failed a moment later because of it. Reaping (and
    // killing) stays with this thread, which owns the children: an unreaped pid cannot be reused.
    let (tx, rx) = mpsc::channel::<usize>();
    for (rank, child) in children.iter().enumerate() {
        let pid = child.as_ref().map(|c| c.id()).unwrap_or(0);
        let tx = tx.clone();
        std::thread::spawn(move || {
            if wait_exited(pid) {
                let _ = tx.send(rank);
            }
        });
    }
    drop(tx);
    while children.iter().any(Option::is_some) {
        let rank = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(rank) => Some(rank),
            // Nothing reported for a while (or a watcher could not wait): look for ourselves.
            Err(mpsc::RecvTimeoutError::Timeout) => first_exited(&mut children),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(POLL);
                first_exited(&mut children)
            }
        };
        let Some((rank, mut child)) = rank.and_then(|r| Some((r, children[r].take()?))) else {
            continue;
        };
        let status = match child.wait() {
            Ok(status) => status,
            Err(e) => {
                stop(&mut children);
                return Err(e).with_context(|| format!("waiting for rank {rank}"));
            }
        };
        if !status.success() {
            let others = stop(&mut children);
            bail!(
                "rank {rank} of {n} {} after {:.1}s{}",
                describe(status),
                started.elapsed().as_secs_f64(),
                if others > 0 {
                    format!("; stopped the {others} rank(s) still running")
                } else {
                    String::new()
                }
            );
        }
    }
    drop(store);
    Ok(())
}

/// Blocks until process `pid` (a child) has exited, leaving it unreaped; false if it cannot.
fn wait_exited(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return true;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// A rank that has exited (without reaping it), if any.
fn first_exited(children: &mut [Option<Child>]) -> Option<usize> {
    children.iter_mut().enumerate().find_map(|(rank, c)| {
        let pid = c.as_ref()?.id();
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        (r == 0 && unsafe { info.si_pid() } != 0).then_some(rank)
    })
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended with {status}"),
    }
}

/// Kills and reaps every child still running; returns how many there were.
fn stop(children: &mut [Option<Child>]) -> usize {
    let mut stopped = 0;
    for child in children.iter_mut().filter_map(Option::take) {
        let mut child = child;
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            stopped += 1;
        }
        let _ = child.wait();
    }
    stopped
}
