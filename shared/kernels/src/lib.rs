//! Fused CUDA kernels with their own backward, for the memory-bound elementwise, norm and cast
//! work between the GEMMs of a training step (issue #3: what inductor fuses for upstream).
//!
//! - Kernels are plain CUDA C in `cuda/*.cu` (header-free: bf16 as `unsigned short`, the shared
//!   helpers of `cuda/common.cuh` prepended), compiled at run time for the current GPU with NVRTC
//!   through cudarc ([`nvrtc`]), loaded once per device, and launched on libtorch's current CUDA
//!   stream ([`launch`]), so they join CUDA graph captures and autograd's streams, and allocate
//!   nothing outside torch's caching allocator.
//! - Each op is a [`FusedFunction`] (forward and a hand-written backward, in Rust, around the
//!   kernels), run as one libtorch autograd node by [`apply`] through a small C++ bridge.
//! - [`ops`]: the ops, each with a `reference` in plain tch ops (same math, differentiable by
//!   autograd) that tests and `examples/check_kernels.rs` compare against.
//!
//! Using an op (e.g. in shared/model's fast formulation):
//! - call its function (`ops::relu_square::relu_square(&a, slope)?`, ...) where the tch ops were;
//!   the result takes part in autograd like any tensor; under `no_grad` no node is recorded;
//! - the kernels take bf16 on CUDA; other kinds and the CPU run the same formulas in tch ops (with
//!   the op's own backward), so a model can call the op unconditionally;
//! - first use on a device compiles and loads the op's module (tens of ms, and not allowed inside
//!   a CUDA graph capture): the warm-up before capturing does it, or call [`ops::preload`];
//! - [`grad`] is `torch.autograd.grad` (a backward seeded with given output gradients), which tch
//!   lacks; tests and `examples/check_kernels.rs` use it.
//! - [`check`]: the comparison and timing harness of the GPU checks (`examples/check_kernels.rs`
//!   for the ops, pgolf-model's `examples/check_model_gpu.rs` for CUDA graphs and the model).
//!
//! libnvrtc is found beside torch (the pip `nvidia/cu13/lib`, see [`nvrtc`]); libcuda comes with
//! the driver. Without them an op on CUDA fails with an error saying so.

pub mod autograd;
pub mod check;
pub mod launch;
pub mod nvrtc;
pub mod ops;

pub use autograd::{apply, grad, Forward, FusedFunction};
pub use launch::{launch, Arg, Kernel};
