//! Compiling kernel sources with NVRTC for the current GPU, and loading them once per device.
//!
//! cudarc opens libnvrtc and libcuda by name (`dlopen("libnvrtc.so.13")`), which finds them only
//! on the loader's path. The PyPI torch wheel keeps libnvrtc in the Python environment
//! (`site-packages/nvidia/cu13/lib`, i.e. `../../nvidia/cu13/lib` from torch's `lib/`), off that
//! path; so we open it there by full path first: the loader then answers cudarc's `dlopen` by
//! soname with the library already loaded. libcuda comes with the NVIDIA driver (and torch has
//! loaded it by the time a CUDA tensor exists).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileError, CompileOptions};

use crate::launch::Kernel;

/// The soname cudarc asks for (feature cuda-13000).
const NVRTC_SONAME: &str = "libnvrtc.so.13";

/// The soname libnvrtc asks for its builtins by.
const NVRTC_BUILTINS_SONAME: &str = "libnvrtc-builtins.so.13.0";

/// Directories, relative to torch's `lib/`, where the pip packages of NVIDIA's libraries put
/// libnvrtc (CUDA 13 wheels; CUDA 12 wheels used `nvidia/cuda_nvrtc/lib`).
const NVRTC_DIRS_FROM_TORCH_LIB: &[&str] =
    &["../../nvidia/cu13/lib", "../../nvidia/cuda_nvrtc/lib"];

/// Makes libnvrtc loadable for cudarc (once per process); the error says where we looked.
pub fn ensure_nvrtc() -> Result<()> {
    static FOUND: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| find_nvrtc().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Whether NVRTC can be used here (for tests that skip without it).
pub fn nvrtc_available() -> bool {
    ensure_nvrtc().is_ok()
}

fn find_nvrtc() -> Result<()> {
    // SAFETY (all `Library::new` below): loading NVIDIA's libnvrtc runs only its initialisers.
    if let Ok(lib) = unsafe { libloading::Library::new(NVRTC_SONAME) } {
        std::mem::forget(lib); // on the loader's path already (LD_LIBRARY_PATH, ldconfig)
        return Ok(());
    }
    let mut tried = Vec::new();
    for torch_lib in torch_lib_dirs() {
        for rel in NVRTC_DIRS_FROM_TORCH_LIB {
            let dir = torch_lib.join(rel);
            let path = dir.join(NVRTC_SONAME);
            if path.is_file() {
                // libnvrtc dlopens its builtins by bare name at the first compile, which would
                // not search its own directory either: load them first, from there.
                for lib in [dir.join(NVRTC_BUILTINS_SONAME), path] {
                    let handle = unsafe { libloading::Library::new(&lib) }
                        .with_context(|| format!("loading {}", lib.display()))?;
                    // Kept loaded for the process: dlopen by soname now finds it.
                    std::mem::forget(handle);
                }
                return Ok(());
            }
            tried.push(path.display().to_string());
        }
    }
    bail!(
        "NVRTC not found: no {NVRTC_SONAME} on the library path nor at {} \
         (install the nvidia-cuda-nvrtc wheel beside torch, or add its lib/ to LD_LIBRARY_PATH)",
        tried.join(", ")
    )
}

/// torch's `lib/` directories: the one this process loaded libtorch from (read from
/// /proc/self/maps), then the one it was built against.
fn torch_lib_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        for line in maps.lines() {
            let Some(path) = line.split_whitespace().nth(5) else {
                continue;
            };
            let path = Path::new(path);
            if path
                .file_name()
                .is_some_and(|n| n == "libc10.so" || n == "libtorch_cpu.so")
            {
                if let Some(dir) = path.parent() {
                    if !dirs.iter().any(|d: &PathBuf| d == dir) {
                        dirs.push(dir.to_path_buf());
                    }
                }
            }
        }
    }
    dirs.push(Path::new(env!("PGOLF_BUILD_LIBTORCH")).join("lib"));
    dirs
}

/// The helpers every kernel source uses (bf16 conversions, 8-wide loads and stores). NVRTC gets
/// no include path (the sources are embedded in the binary), so [`compile`] prepends it.
pub const COMMON_HEADER: &str = include_str!("../cuda/common.cuh");

/// Compiles `source` (after [`COMMON_HEADER`]) to PTX for `arch` (e.g. `sm_90`); the error
/// carries NVRTC's log, with line numbers of `file`.
pub fn compile(file: &str, source: &str, arch: &str) -> Result<String> {
    ensure_nvrtc()?;
    let source = format!("{COMMON_HEADER}\n#line 1 \"{file}\"\n{source}");
    let opts = CompileOptions {
        name: Some(file.to_string()),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(source, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, .. }) => {
            bail!("NVRTC: {file} for {arch}:\n{}", log.to_string_lossy())
        }
        Err(e) => bail!("NVRTC: {file} for {arch}: {e:?}"),
    }
}

/// The device's primary context (libtorch's), retained once per device and kept for the process.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<usize, Arc<CudaContext>>>> = OnceLock::new();
    let mut contexts = CONTEXTS.get_or_init(Default::default).lock().unwrap();
    if let Some(ctx) = contexts.get(&ordinal) {
        return Ok(ctx.clone());
    }
    // SAFETY: only asks the loader whether libcuda exists (cudarc panics when it is absent).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!("the CUDA driver library (libcuda.so.1) is not loadable: no NVIDIA driver here");
    }
    let ctx = CudaContext::new(ordinal)
        .map_err(|e| anyhow!("CUDA driver: primary context of cuda:{ordinal}: {e}"))?;
    contexts.insert(ordinal, ctx.clone());
    Ok(ctx)
}

/// `kernel` loaded on device `ordinal`, its context bound to the calling thread (autograd's
/// backward runs on its own threads, which have no current context). The module is compiled and
/// loaded on first use per (source, device) and cached for the process.
pub fn function(kernel: &Kernel, ordinal: usize) -> Result<CudaFunction> {
    // Sources are keyed by file name (unique in cuda/), not address: a `const` str may be
    // duplicated per codegen unit.
    type Cache<K, V> = OnceLock<Mutex<HashMap<K, V>>>;
    static FUNCTIONS: Cache<(&str, usize, &str), CudaFunction> = OnceLock::new(); // (file, device, name)
    static MODULES: Cache<(&str, usize), Arc<CudaModule>> = OnceLock::new(); // (file, device)
    let ctx = context(ordinal)?;
    ctx.bind_to_thread()
        .map_err(|e| anyhow!("CUDA driver: binding cuda:{ordinal}'s context: {e}"))?;
    let source = kernel.file;
    let key = (source, ordinal, kernel.name);
    if let Some(f) = FUNCTIONS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .get(&key)
    {
        return Ok(f.clone());
    }
    let module = {
        let mut modules = MODULES.get_or_init(Default::default).lock().unwrap();
        match modules.get(&(source, ordinal)) {
            Some(m) => m.clone(),
            None => {
                let (major, minor) = ctx.compute_capability().map_err(|e| {
                    anyhow!("CUDA driver: compute capability of cuda:{ordinal}: {e}")
                })?;
                let ptx = compile(kernel.file, kernel.source, &format!("sm_{major}{minor}"))?;
                let m = ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(|e| {
                        anyhow!(
                            "CUDA driver: loading {} on cuda:{ordinal}: {e}",
                            kernel.file
                        )
                    })?;
                modules.insert((source, ordinal), m.clone());
                m
            }
        }
    };
    let f = module.load_function(kernel.name).map_err(|e| {
        anyhow!(
            "CUDA driver: no function {} in {}: {e}",
            kernel.name,
            kernel.file
        )
    })?;
    FUNCTIONS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert(key, f.clone());
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_errors_carry_nvrtc_log() {
        if !nvrtc_available() {
            eprintln!("SKIPPED: {:#}", ensure_nvrtc().unwrap_err());
            return;
        }
        let ptx = compile(
            "ok.cu",
            "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; }",
            "sm_90",
        )
        .unwrap();
        assert!(ptx.contains(".entry k"), "{ptx}");
        let err = compile(
            "broken.cu",
            "extern \"C\" __global__ void k() { undeclared(); }",
            "sm_90",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("broken.cu") && err.contains("undeclared"),
            "{err}"
        );
    }

    #[test]
    fn no_driver_is_a_clear_error_not_a_panic() {
        // SAFETY: only asks the loader.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            eprintln!("SKIPPED: this machine has a CUDA driver");
            return;
        }
        let err = context(0).unwrap_err().to_string();
        assert!(err.contains("libcuda"), "{err}");
    }
}
