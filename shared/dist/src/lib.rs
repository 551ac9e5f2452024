//! Multi-process runs on PyTorch's distributed engine, c10d, as libtorch ships it: rendezvous
//! through a `TCPStore`, `ProcessGroupGloo` for CPU tensors, `ProcessGroupNCCL` for CUDA tensors.
//! The collectives are c10d's own; this crate only makes the objects (a C++ shim, `csrc/`) and
//! presents them as [`pgolf_optim::Collective`].
//!
//! - [`from_env`]: the collective of a process launched by `torchrun` or [`spawn_ranks`]
//!   (torchrun's environment contract, [`Launch`]); [`pgolf_optim::Single`] when not launched so.
//! - [`ProcessGroup`]: one rank of a group ([`Backend::Gloo`] or [`Backend::Nccl`]); every
//!   collective is bounded by the group's timeout and fails naming the rank and the operation.
//! - [`spawn_ranks`]: runs N ranks of a program on this host, all or nothing.
//! - [`stage`]: a pipeline stage's `--nproc N` and its ranks' roles (rank 0 is the stage run).
//!
//! The build (docs/BUILD.md): the shim compiles against the wheel's c10d headers; the Gloo and
//! CCCL headers they include are not in the wheel, and `host_only/` declares what is needed.

mod ffi;
mod group;
mod launch;
mod spawn;
pub mod stage;

pub use ffi::{Store, StoreRole};
pub use group::{Backend, ProcessGroup};
pub use launch::{
    from_env, timeout_from_env, Dist, Launch, DEFAULT_RENDEZVOUS_TIMEOUT_S, DEFAULT_TIMEOUT_S,
};
pub use spawn::spawn_ranks;
