//! A pipeline stage on several processes: `STAGE --nproc N ...` spawns N ranks of the stage's own
//! program under torchrun's environment contract and waits for all of them; `torchrun ... STAGE
//! ...` starts them instead. Rank 0 is the stage run (it writes `--out` and the manifest, and its
//! key names the world size); the other ranks are workers (`pgolf_store::RunAs::Worker`: same
//! params and inputs, a private scratch folder, no manifest). Any rank failing fails the run:
//! `--nproc` stops the other ranks, names the rank that failed first and removes the unfinished
//! output folder.

use anyhow::{bail, Context, Result};
use pgolf_store::files::MANIFEST as MANIFEST_FILE;
use pgolf_store::stage::{one_line, ERROR_FILE_ENV};
use pgolf_store::RunAs;
use std::ffi::OsString;
use std::path::PathBuf;

use crate::Launch;

/// With `--nproc N` on the command line: runs the N ranks and exits with the run's status.
/// Otherwise: this process's role, from the launch in the environment (rank 0 or alone: the
/// stage run; any other rank: a worker).
pub fn launch_or_role(stage: &str) -> RunAs {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match split_nproc(&args) {
        Ok(Some((n, rest))) => std::process::exit(match spawn(stage, n, &rest) {
            Ok(()) => 0,
            Err(e) => {
                let line = format!("error: {stage}: {}", one_line(&e));
                eprintln!("{line}");
                if let Some(path) = std::env::var_os(ERROR_FILE_ENV) {
                    let _ = std::fs::write(path, format!("{line}\n"));
                }
                1
            }
        }),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {stage}: {e:#}");
            std::process::exit(1);
        }
    }
    match Launch::from_env() {
        Ok(Some(l)) if l.rank > 0 => RunAs::Worker { rank: l.rank },
        Ok(launch) => RunAs::Stage {
            world_size: launch.map_or(1, |l| l.world_size),
        },
        Err(e) => {
            eprintln!("error: {stage}: {e:#}");
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

fn spawn(stage: &str, n: usize, args: &[OsString]) -> Result<()> {
    if std::env::var_os("WORLD_SIZE").is_some() {
        bail!("--nproc inside a launch that already set WORLD_SIZE (torchrun starts the ranks itself)");
    }
    let exe = std::env::current_exe().context("this program's path")?;
    let out = out_dir(args);
    // A finished run there is refused by rank 0 and must stay as it is.
    let had_finished = out.as_ref().is_some_and(|o| o.join(MANIFEST_FILE).exists());
    let result = crate::spawn_ranks(n, &exe, args);
    if result.is_err() && !had_finished {
        // All or nothing: whatever rank 0 wrote goes (a rank killed mid-write leaves it
        // unfinished; one failing after rank 0 finished makes the run a failure all the same).
        if let Some(out) = out.filter(|o| o.exists()) {
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    pgolf_store::stage::sweep_worker_scratch(stage);
    result
}

pub use pgolf_store::stage::share;

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

    #[test]
    fn shares_are_contiguous_balanced_and_cover_every_window() {
        for n in [1, 2, 7, 8, 9, 100] {
            for world in 1..=4.min(n) {
                let shares: Vec<_> = (0..world).map(|r| share(n, r, world)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[world - 1].end, n);
                for pair in shares.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let (min, max) = shares
                    .iter()
                    .map(|s| s.len())
                    .fold((n, 0), |(a, b), l| (a.min(l), b.max(l)));
                assert!(max - min <= 1 && min > 0, "n {n} world {world}: {shares:?}");
            }
        }
    }
}
