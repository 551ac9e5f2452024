//! For crates with C++ shims over libtorch's C++ API (what tch does not expose): one place that
//! knows how to compile against the libtorch tch uses (`LIBTORCH`, set by .cargo/config.toml) and
//! the CUDA runtime headers, which the PyPI wheel ships beside torch (`nvidia/cu13/include`) except
//! for `crt/`, found in Triton's copy in the same environment (or set `CUDA_INCLUDE` to a CUDA
//! toolkit's `include/`).

use std::path::PathBuf;

/// A `cc` C++ build set up for libtorch (headers, C++17, libtorch's ABI, CUDA headers), and the
/// link lines for `libs` from libtorch's `lib/`. Add the sources and call `compile`.
pub fn libtorch_cpp_build(libs: &[&str]) -> cc::Build {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CUDA_INCLUDE");
    let libtorch = libtorch_dir();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false);
    for dir in cuda_includes(&libtorch) {
        build.include(dir);
    }
    println!(
        "cargo:rustc-link-search=native={}",
        libtorch.join("lib").display()
    );
    for lib in libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    build
}

/// The libtorch tch builds against.
pub fn libtorch_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("LIBTORCH")
            .expect("LIBTORCH must point at libtorch (see .cargo/config.toml)"),
    )
}

fn cuda_includes(libtorch: &std::path::Path) -> Vec<PathBuf> {
    let dirs = match std::env::var_os("CUDA_INCLUDE") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let site = libtorch.join("..");
            let wheel = site.join("nvidia/cu13/include");
            let crt = [wheel.clone(), site.join("triton/backends/nvidia/include")]
                .into_iter()
                .find(|d| d.join("crt/host_config.h").is_file())
                .expect("no CUDA crt/host_config.h beside torch; set CUDA_INCLUDE");
            vec![wheel, crt]
        }
    };
    if !dirs[0].join("cuda_runtime_api.h").is_file() {
        panic!(
            "{}: no cuda_runtime_api.h; set CUDA_INCLUDE",
            dirs[0].display()
        );
    }
    dirs
}
