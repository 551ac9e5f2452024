//! Called from a stage's `build.rs`. A stage's identity is part of every cache key, and it must be the
//! same wherever the same code is built (a GPU box and a laptop), so it hashes *sources*, not the
//! executable: the stage crate and every workspace crate it depends on (transitively, read from
//! Cargo.lock), plus Cargo.lock itself (versions of external crates).
//!
//! Emits `PGOLF_STAGE_IDENTITY` for `env!`, and `rerun-if-changed` for every hashed path.

mod code_tar;
mod libtorch_cpp;

pub use code_tar::code_tar;
pub use libtorch_cpp::{libtorch_cpp_build, libtorch_dir};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// For a stage that uses libtorch: also keep `torch_cuda` linked (the linker would drop it, and CUDA
/// would silently be unavailable), and `torch_cuda_linalg` where the libtorch has it. libtorch
/// loads the latter lazily on the first CUDA Cholesky/LU/solve, and that lazy loader fails with
/// "lazy wrapper should be called at most once" when two threads reach it together (our GPTQ
/// factors tensors in parallel); linked, its kernels are registered at process start instead.
pub fn stage_with_torch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let libtorch = std::env::var("LIBTORCH").ok();
    if let Some(libtorch) = &libtorch {
        println!("cargo:rustc-link-search=native={libtorch}/lib");
    }
    let has_cuda_linalg = libtorch
        .as_ref()
        .is_some_and(|dir| Path::new(dir).join("lib/libtorch_cuda_linalg.so").is_file());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch_cuda");
    if has_cuda_linalg {
        println!("cargo:rustc-link-arg=-ltorch_cuda_linalg");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    stage();
}

pub fn stage() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file() && d.join("shared").is_dir())
        .expect("workspace root with Cargo.lock")
        .to_path_buf();
    let package = std::env::var("CARGO_PKG_NAME").expect("CARGO_PKG_NAME");
    let lock_path = workspace.join("Cargo.lock");
    let lock_text = fs::read_to_string(&lock_path).expect("read Cargo.lock");
    let local = local_packages(&workspace);
    let closure = local_closure(&lock_text, &package, &local);

    let mut hasher = blake3::Hasher::new();
    hasher.update(b"pgolf-stage-identity-v1\0");
    hasher.update(lock_text.as_bytes());
    println!("cargo:rerun-if-changed={}", lock_path.display());
    for name in &closure {
        let dir = &local[name];
        let mut files = Vec::new();
        collect_sources(dir, &mut files);
        files.sort();
        for file in files {
            let rel = file.strip_prefix(&workspace).unwrap_or(&file);
            hasher.update(rel.to_string_lossy().as_bytes());
            hasher.update(b"\0");
            hasher.update(&fs::read(&file).expect("read source"));
            hasher.update(b"\0");
        }
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
    }
    let identity = hasher.finalize().to_hex();
    println!(
        "cargo:rustc-env=PGOLF_STAGE_IDENTITY={package}@{}",
        &identity[..32]
    );
}

/// Workspace crates by package name -> directory.
fn local_packages(workspace: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for group in ["stages", "shared"] {
        let Ok(entries) = fs::read_dir(workspace.join(group)) else {
            continue;
        };
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = fs::read_to_string(&manifest) else {
                continue;
            };
            let Ok(value) = text.parse::<toml::Table>() else {
                continue;
            };
            if let Some(name) = value
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
            {
                out.insert(name.to_string(), entry.path());
            }
        }
    }
    out
}

/// `package` and every workspace package it depends on, following Cargo.lock.
fn local_closure(
    lock_text: &str,
    package: &str,
    local: &BTreeMap<String, PathBuf>,
) -> BTreeSet<String> {
    let lock: toml::Table = lock_text.parse().expect("parse Cargo.lock");
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pkg in lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let Some(name) = pkg.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        if pkg.get("source").is_some() {
            continue; // from a registry: covered by hashing Cargo.lock
        }
        let list = pkg
            .get("dependencies")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            .map(|d| d.split(' ').next().unwrap_or(d).to_string())
            .collect();
        deps.insert(name.to_string(), list);
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![package.to_string()];
    while let Some(name) = todo.pop() {
        if !local.contains_key(&name) || !seen.insert(name.clone()) {
            continue;
        }
        todo.extend(deps.get(&name).cloned().unwrap_or_default());
    }
    seen
}

fn collect_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        out.push(manifest);
    }
    for sub in ["src", "build.rs"] {
        walk(&dir.join(sub), out);
    }
}

fn walk(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            walk(&entry.path(), out);
        }
    }
}
