//! Besides the stage identity, builds the tar of the counted code — the sources of the evaluator
//! crate `pgolf-evaluator` and of whatever workspace crate it depends on (docs/ARTIFACT.md "Size
//! accounting") — and embeds it: the stage counts code bytes from this tar, so the number depends
//! on the sources only, never on the machine the stage runs on.

use std::fs;
use std::path::PathBuf;

/// The crate that decodes an artifact and computes its BPB; its dependency closure is counted.
const EVALUATOR: &str = "pgolf-evaluator";

fn main() {
    pgolf_buildid::stage_with_torch();
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = crate_dir.ancestors().nth(2).expect("workspace root");
    let (tar, files) = pgolf_buildid::code_tar(root, EVALUATOR);
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
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
