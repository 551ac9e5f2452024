//! Compiles the C++ shim in `csrc/` against the libtorch tch uses (pgolf_buildid's
//! `libtorch_cpp_build`):
//! - `c10d_shim.cpp`: TCPStore, the Gloo group, the collectives of any c10d backend;
//! - `nccl.cpp`: the NCCL group (needs the CUDA and NCCL headers the wheel ships beside torch).
//!
//! Gloo's headers and CCCL's `<nv/target>` are not in the wheel; `host_only/` declares what the
//! c10d headers need from them (host_only/README.md, docs/BUILD.md). It comes after the real
//! include folders, so a CUDA toolkit named by `CUDA_INCLUDE` provides its own `<nv/target>`.
//! A library crate: no stage identity here (binaries that link it call pgolf_buildid themselves).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=host_only");
    println!("cargo:rerun-if-env-changed=NCCL_INCLUDE");
    let nccl = match std::env::var_os("NCCL_INCLUDE") {
        Some(dir) => PathBuf::from(dir),
        None => pgolf_buildid::libtorch_dir().join("../nvidia/nccl/include"),
    };
    if !nccl.join("nccl.h").is_file() {
        panic!("{}: no nccl.h; set NCCL_INCLUDE", nccl.display());
    }
    pgolf_buildid::libtorch_cpp_build(&["torch_cuda", "torch_cpu", "c10_cuda", "c10"])
        .include(nccl)
        .include("host_only")
        .file("csrc/c10d_shim.cpp")
        .file("csrc/nccl.cpp")
        .compile("pgolf_dist_c10d");
    // The GPU check binary must keep torch_cuda linked even where nothing else asks for it
    // (libtorch then silently reports no CUDA; see pgolf_buildid).
    println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg-bins=-ltorch_cuda");
    println!("cargo:rustc-link-arg-bins=-Wl,--as-needed");
}
