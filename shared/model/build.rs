//! Compiles the C++ shims in `csrc/` (libtorch C++ API that tch does not expose) against the same
//! libtorch tch uses (`LIBTORCH`, set by .cargo/config.toml):
//! - `cuda_shim.cpp`: allocator statistics, through c10's device-generic interface;
//! - `cuda_graph.cpp`: CUDA graphs (at::cuda::CUDAGraph); needs the CUDA runtime headers, which
//!   the PyPI wheel ships beside torch (nvidia/cu13/include) except for `crt/`, found in Triton's
//!   copy of the headers in the same environment (or set CUDA_INCLUDE to a CUDA toolkit's include).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CUDA_INCLUDE");
    let libtorch = PathBuf::from(
        std::env::var("LIBTORCH")
            .expect("LIBTORCH must point at libtorch (see .cargo/config.toml)"),
    );
    let site = libtorch.join("..");
    let cuda_includes: Vec<PathBuf> = match std::env::var_os("CUDA_INCLUDE") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let wheel = site.join("nvidia/cu13/include");
            let crt = [wheel.clone(), site.join("triton/backends/nvidia/include")]
                .into_iter()
                .find(|d| d.join("crt/host_config.h").is_file())
                .expect("no CUDA crt/host_config.h beside torch; set CUDA_INCLUDE");
            vec![wheel, crt]
        }
    };
    if !cuda_includes[0].join("cuda_runtime_api.h").is_file() {
        panic!(
            "{}: no cuda_runtime_api.h; set CUDA_INCLUDE",
            cuda_includes[0].display()
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/cuda_shim.cpp")
        .file("csrc/cuda_graph.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false);
    for dir in &cuda_includes {
        build.include(dir);
    }
    build.compile("pgolf_torch_shims");
    link(&libtorch.join("lib"), &["torch_cuda", "c10_cuda", "c10"]);
}

fn link(dir: &Path, libs: &[&str]) {
    println!("cargo:rustc-link-search=native={}", dir.display());
    for lib in libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}
