//! Compiles the C++ bridge in `csrc/` against the libtorch tch uses (pgolf_buildid's
//! `libtorch_cpp_build`):
//! - `autograd_bridge.cpp`: a libtorch autograd function whose forward and backward call back
//!   into Rust ([`crate::autograd`]);
//! - `current_stream.cpp`: libtorch's current CUDA stream, on which our kernels launch.
//!
//! A library crate: no stage identity here (binaries that link it call pgolf_buildid themselves).

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=cuda");
    pgolf_buildid::libtorch_cpp_build(&["torch_cuda", "c10_cuda", "torch_cpu", "c10"])
        .file("csrc/autograd_bridge.cpp")
        .file("csrc/current_stream.cpp")
        .compile("pgolf_kernels_bridge");
    // The GPU check (examples/check_kernels.rs) must keep torch_cuda linked: the linker drops it
    // as unneeded, and libtorch then silently reports no CUDA (see pgolf_buildid).
    println!("cargo:rustc-link-arg-examples=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg-examples=-ltorch_cuda");
    println!("cargo:rustc-link-arg-examples=-Wl,--as-needed");
    // Where libtorch was at build time: one more place to look for libnvrtc at run time.
    println!(
        "cargo:rustc-env=PGOLF_BUILD_LIBTORCH={}",
        pgolf_buildid::libtorch_dir().display()
    );
}
