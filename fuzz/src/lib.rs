//! Fuzz targets of the parsers that read file content (issue 14 item 6). Each target is a plain
//! function over the file's bytes that calls the real reader of a pgolf crate and panics only on a
//! defect: a panic inside the reader (an `unwrap`, an index, an overflow), or a broken promise that
//! the target checks — an error that does not name its file, a bundle that leaves a torn run or
//! writes outside `out/`, two readers of one format that disagree.
//!
//! The same functions run three ways: the libFuzzer binaries in `fuzz_targets/` (coverage-guided,
//! `bench/fuzz.sh`), and `cargo test` (tests/targets.rs), which replays `corpus/<target>/` and
//! `regressions/<target>/` and runs a short seeded mutation of each seed.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

pub mod seeds;
pub mod targets;

pub use targets::{
    artifact, artifact_body, bundle, manifest, pipeline_yaml, shard, sidecar, tokenizer_model,
};

/// A fuzz target: one file's bytes in, a panic only on a defect.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus folders and the `fuzz-NAME` binaries are named after them,
/// `_` written `-` in the binaries).
pub const TARGETS: &[(&str, Target)] = &[
    ("shard", shard),
    ("sidecar", sidecar),
    ("artifact", artifact),
    ("artifact_body", artifact_body),
    ("manifest", manifest),
    ("bundle", bundle),
    ("pipeline_yaml", pipeline_yaml),
    ("tokenizer_model", tokenizer_model),
];

thread_local! {
    static SCRATCH: RefCell<Option<(PathBuf, Option<tempfile::TempDir>)>> = const { RefCell::new(None) };
}

/// A folder of this thread's own, made once and reused by every call (the readers under test take
/// paths). `PGOLF_FUZZ_SCRATCH` names it (bench/fuzz.sh: the libFuzzer binaries exit without
/// running thread-local destructors, so the script removes it); else a temporary folder, under
/// /dev/shm where there is one: a file write per input then costs no disk I/O.
pub fn scratch(sub: &str) -> PathBuf {
    let root = SCRATCH.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                if let Some(dir) = std::env::var_os("PGOLF_FUZZ_SCRATCH") {
                    let dir = PathBuf::from(dir).join(format!("{:?}", std::thread::current().id()));
                    return (dir, None);
                }
                let shm = Path::new("/dev/shm");
                let made = if shm.is_dir() {
                    tempfile::Builder::new()
                        .prefix("pgolf-fuzz-")
                        .tempdir_in(shm)
                } else {
                    tempfile::Builder::new().prefix("pgolf-fuzz-").tempdir()
                };
                let made = made.expect("a scratch folder for the fuzz targets");
                (made.path().to_path_buf(), Some(made))
            })
            .0
            .clone()
    });
    let dir = root.join(sub);
    std::fs::create_dir_all(&dir).expect("a scratch subfolder");
    dir
}

/// `err` (with its causes) must name `path`: the one-line error promise of docs/CONTRACT.md.
pub fn assert_names(err: &anyhow::Error, path: &Path) {
    let text = format!("{err:#}");
    let shown = path.display().to_string();
    assert!(
        text.contains(&shown),
        "the error does not name the file {shown}: {text}"
    );
}
