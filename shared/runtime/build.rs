//! Compiles the C++ shims in `csrc/` (libtorch C++ API that tch does not expose) against the same
//! libtorch tch uses (pgolf_buildid's `libtorch_cpp_build`):
//! - `cuda_shim.cpp`: allocator statistics, through c10's device-generic interface;
//! - `device_name.cpp`: CUDA device names (`at::cuda::getDeviceProperties`), for the device record;
//! - `profiler.cpp`: the Kineto profiler (Chrome traces of CPU ops and CUDA kernels);
//! - `cuda_graph.cpp`: CUDA graphs (at::cuda::CUDAGraph);
//! - `flash_varlen.cpp`: causal attention within documents (`at::_flash_attention_forward` with
//!   cumulative sequence lengths).

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    pgolf_buildid::libtorch_cpp_build(&["torch_cuda", "c10_cuda", "c10"])
        .file("csrc/cuda_shim.cpp")
        .file("csrc/device_name.cpp")
        .file("csrc/cuda_graph.cpp")
        .file("csrc/profiler.cpp")
        .file("csrc/flash_varlen.cpp")
        .compile("pgolf_torch_shims");
}
