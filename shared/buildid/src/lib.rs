//! Called from a stage's `build.rs`. A stage's identity is part of every cache key, and it must be the
//! same wherever the same code is built (a GPU box and a laptop), so it hashes *sources*, not the
//! executable: everything the build of the stage reads (see [`identity`]).
//!
//! Emits `PGOLF_STAGE_IDENTITY` for `env!`, and `rerun-if-changed` for every hashed path.

mod closure;
mod code_tar;
mod libtorch_cpp;

pub use closure::closure_sources;
pub use code_tar::code_tar;
pub use libtorch_cpp::{libtorch_cpp_build, libtorch_dir};

use anyhow::{Context, Result};
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

/// The stage identity of the crate being built (its `build.rs` calls this).
pub fn stage() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let package = std::env::var("CARGO_PKG_NAME").expect("CARGO_PKG_NAME");
    let result = workspace_root(&crate_dir).and_then(|workspace| hashed(&workspace, &package));
    let hashed = result.unwrap_or_else(|e| panic!("error: pgolf-buildid: {package}: {e:#}"));
    for path in &hashed.watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=PGOLF_STAGE_IDENTITY={}", hashed.identity);
}

/// The first ancestor of `crate_dir` holding a `Cargo.lock`: the workspace root.
pub fn workspace_root(crate_dir: &Path) -> Result<PathBuf> {
    crate_dir
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("{}: no Cargo.lock above it", crate_dir.display()))
}

/// The identity of workspace crate `package`, as `"{package}@{32 hex digits}"`: a BLAKE3 hash over
/// every file its build reads:
/// - [`closure_sources`]: every file of every workspace crate in its build closure (normal and
///   build dependencies with the features it asks for; dev-dependencies and a crate's `tests/`,
///   `benches/`, `examples/` are not part of the build), of any kind — Rust, CUDA, C++, data — and
///   every `include_str!`/`include_bytes!`/`include!` target they name, wherever it lies;
/// - the workspace's `Cargo.toml` (versions and features of the external crates) and `Cargo.lock`
///   (the exact external versions; their sources are immutable in the registry).
///
/// Each file enters as its path relative to the workspace and its bytes, so the identity is the
/// same in every checkout of the same code.
pub fn identity(workspace: &Path, package: &str) -> Result<String> {
    Ok(hashed(workspace, package)?.identity)
}

struct Hashed {
    identity: String,
    /// Files and directories whose change may change the identity.
    watched: Vec<PathBuf>,
}

fn hashed(workspace: &Path, package: &str) -> Result<Hashed> {
    let sources = closure::Sources::collect(workspace, package)?;
    let mut files = vec![workspace.join("Cargo.toml"), workspace.join("Cargo.lock")];
    files.extend(sources.files.iter().cloned());
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"pgolf-stage-identity-v2\0");
    for file in &files {
        let rel = file.strip_prefix(workspace).unwrap_or(file);
        let bytes = fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
        // Path separators as `/`, so the identity does not depend on the platform.
        let rel: Vec<_> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect();
        hasher.update(rel.join("/").as_bytes());
        hasher.update(b"\0");
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    let hex = hasher.finalize().to_hex();
    let mut watched = files;
    watched.extend(sources.dirs);
    Ok(Hashed {
        identity: format!("{package}@{}", &hex[..32]),
        watched,
    })
}
