//! Besides the stage identity, builds the tar of the sources that decode and evaluate an artifact
//! (docs/ARTIFACT.md "Size accounting") and embeds it: the stage counts code bytes from this tar,
//! so the number depends on the sources only, never on the machine the stage runs on.

use std::fs;
use std::path::{Path, PathBuf};

/// Crates whose sources an evaluator needs: the artifact decoder, the model, the data formats, the
/// evaluation library and the evaluation stage.
const CRATES: [&str; 5] = [
    "shared/quant",
    "shared/model",
    "shared/data",
    "shared/eval",
    "stages/ttt-eval",
];
/// Workspace files that pin how they build.
const ROOT_FILES: [&str; 2] = ["Cargo.toml", "Cargo.lock"];

fn main() {
    pgolf_buildid::stage_with_torch();
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = crate_dir
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf();
    let mut files: Vec<String> = ROOT_FILES.iter().map(|s| s.to_string()).collect();
    for dir in CRATES {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
        for sub in ["Cargo.toml", "build.rs", "src"] {
            collect(&root, &root.join(dir).join(sub), &mut files);
        }
    }
    for f in ROOT_FILES {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    files.sort();
    let mut builder = tar::Builder::new(Vec::new());
    for rel in &files {
        let data = fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut header = tar::Header::new_ustar();
        header
            .set_path(rel)
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder
            .append(&header, data.as_slice())
            .expect("append to tar");
    }
    let tar = builder.into_inner().expect("finish tar");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("code.tar");
    // Rewrite only on change, so an unrelated edit under shared/ does not force a rebuild.
    if fs::read(&out).ok().as_deref() != Some(tar.as_slice()) {
        fs::write(&out, &tar).expect("write code.tar");
    }
    println!("cargo:rustc-env=PGOLF_CODE_TAR={}", out.display());
    println!(
        "cargo:rustc-env=PGOLF_CODE_TAR_HASH={}",
        &blake3::hash(&tar).to_hex()[..16]
    );
}

/// Regular, non-hidden files under `path` (or `path` itself), as `/`-separated paths from `root`.
fn collect(root: &Path, path: &Path, out: &mut Vec<String>) {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    if hidden {
        return;
    }
    if path.is_file() {
        let rel = path.strip_prefix(root).expect("under the root");
        out.push(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
        );
    } else if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            collect(root, &entry.path(), out);
        }
    }
}
