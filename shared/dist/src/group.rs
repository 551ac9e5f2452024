//! [`ProcessGroup`]: a c10d backend (Gloo on CPU tensors, NCCL on CUDA tensors) as a
//! [`Collective`].

use anyhow::{bail, Context, Result};
use pgolf_optim::Collective;
use std::cell::Cell;
use std::time::Duration;
use tch::{Device, Tensor};

use crate::ffi::{self, Group, ReduceOp, Store};

/// Which c10d backend a group runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors (tests, CPU runs).
    Gloo,
    /// CUDA tensors of the rank's device.
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// The backend for tensors on `device`.
    pub fn for_device(device: Device) -> Backend {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    pub fn parse(s: &str) -> Result<Backend> {
        match s {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            other => bail!("unknown c10d backend {other:?} (gloo or nccl)"),
        }
    }
}

/// One rank of a c10d process group.
pub struct ProcessGroup {
    group: Group,
    // Kept for the group's lifetime: c10d holds its own reference too, but the store's server
    // (on the rank that hosts it) must outlive every peer's use of it.
    _store: Store,
    rank: usize,
    world: usize,
    backend: Backend,
    name: String,
    timeout: Duration,
    /// Set when a collective failed: the group is then aborted rather than shut down.
    failed: Cell<bool>,
}

impl ProcessGroup {
    /// Joins the group of `world` ranks that rendezvous through `store`. For NCCL, `cuda_device`
    /// is this rank's GPU (made current, and the group bound to it). `timeout` bounds every
    /// collective: when a peer dies or stalls, the collective fails instead of waiting forever.
    pub fn new(
        store: Store,
        rank: usize,
        world: usize,
        backend: Backend,
        cuda_device: usize,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        if rank >= world {
            bail!("rank {rank} is not below the world size {world}");
        }
        // Each group gets its own key namespace in the store.
        let scoped = store.prefixed(&format!("pgolf/{}/", backend.name()))?;
        let group = match backend {
            Backend::Gloo => Group::gloo(&scoped, rank, world, timeout),
            Backend::Nccl => {
                multicast_off();
                ffi::set_cuda_device(cuda_device)
                    .with_context(|| format!("rank {rank}: CUDA device {cuda_device}"))?;
                Group::nccl(&scoped, rank, world, cuda_device, timeout)
            }
        }
        .with_context(|| {
            format!(
                "rank {rank} of {world}: creating the {} process group",
                backend.name()
            )
        })?;
        let name = group.name();
        Ok(ProcessGroup {
            group,
            _store: store,
            rank,
            world,
            backend,
            name,
            timeout,
            failed: Cell::new(false),
        })
    }

    pub fn kind(&self) -> Backend {
        self.backend
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Gloo wait bound (NCCL's is its watchdog; its wait only orders the CUDA stream).
    fn wait_bound(&self) -> Duration {
        match self.backend {
            Backend::Gloo => self.timeout,
            Backend::Nccl => Duration::ZERO,
        }
    }

    /// Every failure names this rank, the backend and the operation.
    fn checked(&self, what: &str, r: Result<()>) -> Result<()> {
        r.map_err(|e| {
            self.failed.set(true);
            e.context(format!(
                "rank {} of {} ({}): {what} failed (a peer rank died, stalled past the {}s timeout, or disagreed on the call)",
                self.rank,
                self.world,
                self.name,
                self.timeout.as_secs()
            ))
        })
    }

    fn reduce(&self, what: &str, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        in_place(t, |c| {
            self.checked(what, self.group.all_reduce(c, op, self.wait_bound()))
        })
    }
}

/// NVLink multicast (NVLS) stays off unless the environment says otherwise: on shared hosts a
/// program that uses it can put every GPU of the host out of service (docs/GPU.md). NCCL and
/// PyTorch read these when the communicator is created, which is after this.
fn multicast_off() {
    for (name, value) in [
        ("NCCL_NVLS_ENABLE", "0"),
        ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
        ("NVSHMEM_DISABLE_NVLS", "1"),
    ] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}

/// Runs `f` on a contiguous tensor holding `t`'s values and leaves the result in `t` (c10d works
/// on dense contiguous tensors; a contiguous `t` is used as it is).
fn in_place(t: &mut Tensor, f: impl FnOnce(&Tensor) -> Result<()>) -> Result<()> {
    if t.is_contiguous() {
        f(t)
    } else {
        let c = t.contiguous();
        f(&c)?;
        t.copy_(&c);
        Ok(())
    }
}

impl Collective for ProcessGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn backend(&self) -> &str {
        &self.name
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        self.reduce("all_reduce_sum", t, ReduceOp::Sum)
    }
    fn all_reduce_max(&self, t: &mut Tensor) -> Result<()> {
        self.reduce("all_reduce_max", t, ReduceOp::Max)
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        if root >= self.world {
            bail!("broadcast from rank {root} in a world of {}", self.world);
        }
        in_place(t, |c| {
            self.checked(
                "broadcast",
                self.group.broadcast(c, root, self.wait_bound()),
            )
        })
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        // Flat buffers: c10d checks the output as `world` chunks of the input's shape along
        // dimension 0 (Gloo) or by element count (NCCL); both agree on flat ones.
        let input = t.contiguous().reshape([-1]);
        let out = Tensor::empty(
            [self.world as i64 * input.numel() as i64],
            (t.kind(), t.device()),
        );
        self.checked(
            "all_gather",
            self.group.all_gather(&out, &input, self.wait_bound()),
        )?;
        let mut shape = vec![self.world as i64];
        shape.extend(t.size());
        Ok(out.reshape(shape.as_slice()))
    }
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        let size = t.size();
        let world = self.world as i64;
        if size.is_empty() || size[0] % world != 0 {
            bail!(
                "reduce_scatter_sum: the first dimension of {size:?} is not a multiple of the world size {world}"
            );
        }
        let mut shape = size.clone();
        shape[0] /= world;
        // Chunks along dimension 0 of a contiguous tensor are its flat chunks.
        let input = t.contiguous().reshape([-1]);
        let out = Tensor::empty([input.numel() as i64 / world], (t.kind(), t.device()));
        self.checked(
            "reduce_scatter_sum",
            self.group
                .reduce_scatter_sum(&out, &input, self.wait_bound()),
        )?;
        Ok(out.reshape(shape.as_slice()))
    }
    fn barrier(&self) -> Result<()> {
        self.checked("barrier", self.group.barrier(self.wait_bound()))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.group.shutdown(self.failed.get());
    }
}
