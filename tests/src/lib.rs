//! Helpers for end-to-end tests: they run the release binaries that `scripts/setup.sh` builds
//! (`cargo build --release --workspace`), never a stub or an in-process shortcut.

pub mod project;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The folder of handed-over material beside the checkout (`../shared`).
pub fn shared_material() -> PathBuf {
    workspace_root().parent().unwrap().join("shared")
}

/// Path of a release binary; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = workspace_root().join("target/release").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release --workspace` (scripts/setup.sh does)",
        path.display()
    );
    path
}

/// Runs a binary with arguments, returning its output (never panics on a non-zero exit).
pub fn run(name: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(bin(name))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("spawn binary")
}

/// stderr as a string.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// stdout as a string.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}
