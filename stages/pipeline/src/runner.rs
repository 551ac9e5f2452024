//! Runs one stage instance under the contract: into `out/<stage>/.tmp-<key>-<pid>`, under the
//! key's lock, renamed to `out/<stage>/<key>` only after the stage exited 0 and its manifest
//! verified (same key as ours, every file at its recorded size). A killed or failed run therefore
//! never leaves anything that looks complete. A failing stage's one-line error comes back through
//! `PGOLF_ERROR_FILE`, whichever way its stderr went.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pgolf_store::lock::KeyLock;
use pgolf_store::stage::{ERROR_FILE_ENV, HASH_CACHE_ENV};
use pgolf_store::{canonical_json, Manifest};

use crate::display::Reporter;
use crate::freshness::{check, RunState};
use crate::plan::Instance;
use crate::project::{short, Project};

/// How long a driver waits for another driver that is running the same key.
const LOCK_PATIENCE: Duration = Duration::from_secs(7 * 24 * 3600);

pub enum Outcome {
    /// Already there (another driver may have just finished it).
    Reused(Box<Manifest>),
    Ran(Box<Manifest>, f64),
    Failed(String, f64),
}

/// Where a stage's stderr goes.
#[derive(Clone, Copy)]
pub enum StageOutput<'a> {
    /// Straight to ours (a terminal: the stage's own progress bars draw).
    Inherit,
    /// Line by line through the reporter (above the spinners on a terminal, else to our stderr).
    Forward(&'a Reporter),
}

/// `inputs`: (input name, path) pairs in order; a name repeats for a list.
pub fn execute(
    project: &Project,
    inst: &Instance,
    inputs: &[(String, PathBuf)],
    output: StageOutput,
) -> Outcome {
    let clock = Instant::now();
    match run_locked(project, inst, inputs, output) {
        Ok(Some(manifest)) => Outcome::Ran(Box::new(manifest), clock.elapsed().as_secs_f64()),
        Ok(None) => match check(project, &inst.stage, &inst.key) {
            RunState::Fresh(m) => Outcome::Reused(m),
            _ => Outcome::Failed(
                "finished by another pipeline but not valid".into(),
                clock.elapsed().as_secs_f64(),
            ),
        },
        Err(e) => Outcome::Failed(
            format!("{e:#}").replace('\n', " "),
            clock.elapsed().as_secs_f64(),
        ),
    }
}

/// Runs the stage unless another driver finished the key while we waited (then `None`).
fn run_locked(
    project: &Project,
    inst: &Instance,
    inputs: &[(String, PathBuf)],
    output: StageOutput,
) -> Result<Option<Manifest>> {
    let stage_dir = project.stage_dir(&inst.stage);
    std::fs::create_dir_all(&stage_dir)
        .with_context(|| format!("{}: cannot create", stage_dir.display()))?;
    let lock_path = project.lock_path(&inst.stage, &inst.key);
    let _lock = match KeyLock::acquire(&lock_path, Duration::ZERO) {
        Ok(lock) => lock,
        Err(_) => {
            eprintln!(
                "pipeline: {} {}: another pipeline is running this key; waiting",
                inst.node,
                short(&inst.key)
            );
            KeyLock::acquire(&lock_path, LOCK_PATIENCE)?
        }
    };
    if check(project, &inst.stage, &inst.key).is_fresh() {
        return Ok(None);
    }
    // We hold the key's lock, so any temp dir of this key was left by a driver that died.
    remove_leftovers(&stage_dir, &inst.key);

    let tag = format!(".tmp-{}-{}", inst.key, std::process::id());
    let tmp = stage_dir.join(&tag);
    let side = SideFiles {
        params: stage_dir.join(format!("{tag}.params.json")),
        error: stage_dir.join(format!("{tag}.error")),
    };
    let result = spawn_and_verify(project, inst, inputs, &tmp, &side, output);
    let _ = std::fs::remove_file(&side.params);
    let _ = std::fs::remove_file(&side.error);
    match result {
        Ok(manifest) => {
            pgolf_store::testing::hold(pgolf_store::testing::DRIVER_VERIFIED, &inst.stage);
            let target = project.run_dir(&inst.stage, &inst.key);
            if target.exists() {
                // A damaged run of this key (checked above): ours replaces it.
                std::fs::remove_dir_all(&target).with_context(|| {
                    format!("{}: cannot replace a damaged run", target.display())
                })?;
            }
            std::fs::rename(&tmp, &target)
                .with_context(|| format!("{}: cannot move into place", target.display()))?;
            pgolf_store::testing::hold(pgolf_store::testing::DRIVER_PUBLISHED, &inst.stage);
            Ok(Some(manifest))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// The driver's files beside a temp run dir: the params it hands over, the error line it gets back.
struct SideFiles {
    params: PathBuf,
    error: PathBuf,
}

fn spawn_and_verify(
    project: &Project,
    inst: &Instance,
    inputs: &[(String, PathBuf)],
    tmp: &Path,
    side: &SideFiles,
    output: StageOutput,
) -> Result<Manifest> {
    std::fs::write(&side.params, canonical_json(&inst.params))
        .with_context(|| format!("{}: cannot write", side.params.display()))?;
    let mut cmd = Command::new(&inst.exe);
    cmd.arg("--out").arg(tmp);
    for (name, path) in inputs {
        cmd.arg("--in").arg(format!("{name}={}", path.display()));
    }
    cmd.arg("--params").arg(&side.params);
    if let Some(device) = &inst.device {
        cmd.arg("--device").arg(device);
    }
    if let Some(n) = inst.nproc {
        cmd.arg("--nproc").arg(n.to_string());
    }
    cmd.env(HASH_CACHE_ENV, project.hash_cache())
        .env(ERROR_FILE_ENV, &side.error)
        .stdin(Stdio::null());
    die_with_driver(&mut cmd);
    let status = match output {
        StageOutput::Inherit => {
            // The driver's stdout carries only its own lines; a stage's stdout joins its stderr.
            cmd.stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?));
            cmd.stderr(Stdio::inherit())
                .status()
                .with_context(|| format!("{}: cannot start", inst.exe.display()))?
        }
        StageOutput::Forward(reporter) => forward(&mut cmd, &inst.exe, reporter)?,
    };
    if !status.success() {
        let line = std::fs::read_to_string(&side.error)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string));
        let cause = line.map(|l| l.trim_start_matches("error:").trim().to_string());
        bail!("{}", cause.unwrap_or_else(|| describe_failure(status)));
    }
    let manifest = Manifest::read(tmp)?;
    if manifest.key != inst.key || manifest.stage != inst.stage {
        // The stage keys its inputs from their bytes and its identity from its build; the driver's
        // from memos. A memo that lied (an executable or file changed behind its stamps) is
        // dropped, so the next run plans from the files themselves.
        let _ = std::fs::remove_file(project.identity_cache());
        bail!(
            "{} wrote run {}/{} but the driver computed {}/{}: the stage and pipeline.yaml disagree on its identity, params or inputs (the driver's identity memo is cleared and the stage refreshed the hash memo: if a file or executable changed behind them, run again)",
            inst.exe.display(),
            manifest.stage,
            short(&manifest.key),
            inst.stage,
            short(&inst.key)
        );
    }
    manifest.verify_sizes(tmp)?;
    Ok(manifest)
}

/// The stage is killed when this thread of the driver dies (Linux `PR_SET_PDEATHSIG`; the thread
/// that spawns a stage waits for it, so that is when the driver dies): only the driver publishes a
/// run, so a stage whose driver was killed computes for nothing, and would hold a GPU meanwhile.
fn die_with_driver(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let driver = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The driver died before the prctl took effect: do not start at all.
            if libc::getppid() != driver {
                return Err(std::io::Error::other("the pipeline driver is gone"));
            }
            Ok(())
        });
    }
}

/// Runs the stage with its stdout and stderr passed on line by line through the reporter.
fn forward(cmd: &mut Command, exe: &Path, reporter: &Reporter) -> Result<ExitStatus> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{}: cannot start", exe.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    std::thread::scope(|scope| {
        scope.spawn(|| pass_lines(stdout, reporter));
        pass_lines(stderr, reporter);
    });
    Ok(child.wait()?)
}

fn pass_lines(from: impl std::io::Read, reporter: &Reporter) {
    for line in BufReader::new(from).lines().map_while(|l| l.ok()) {
        reporter.stage_line(&line);
    }
}

fn describe_failure(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "failed".into(),
    }
}

/// Temp dirs and params files of `key` left by drivers that died (the caller holds the key lock).
fn remove_leftovers(stage_dir: &Path, key: &str) {
    let prefix = format!(".tmp-{key}-");
    let Ok(entries) = std::fs::read_dir(stage_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}
