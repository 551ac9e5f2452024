//! The C ABI of `csrc/` (c10d_shim.cpp, nccl.cpp) and owning wrappers around its handles.

use anyhow::{anyhow, Result};
use std::ffi::{c_char, c_void, CString};
use std::time::Duration;
use tch::Tensor;
use torch_sys::C_tensor;

const ERR_LEN: usize = 4096;

extern "C" {
    fn pgolf_dist_store_new(
        host: *const c_char,
        port: i32,
        world: i32,
        is_server: i32,
        wait_workers: i32,
        timeout_ms: i64,
        prefix: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn pgolf_dist_store_port(store: *mut c_void) -> i32;
    fn pgolf_dist_store_prefixed(
        store: *mut c_void,
        prefix: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn pgolf_dist_store_free(store: *mut c_void);

    fn pgolf_dist_gloo_new(
        store: *mut c_void,
        rank: i32,
        size: i32,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn pgolf_dist_nccl_new(
        store: *mut c_void,
        rank: i32,
        size: i32,
        device: i32,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn pgolf_dist_set_cuda_device(device: i32, err: *mut c_char, len: usize) -> i32;
    fn pgolf_dist_group_free(group: *mut c_void);
    fn pgolf_dist_group_shutdown(group: *mut c_void, abort: i32);
    fn pgolf_dist_group_name(group: *mut c_void, name: *mut c_char, len: usize);

    fn pgolf_dist_all_reduce(
        group: *mut c_void,
        t: *mut C_tensor,
        op: i32,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn pgolf_dist_broadcast(
        group: *mut c_void,
        t: *mut C_tensor,
        root: i32,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn pgolf_dist_all_gather(
        group: *mut c_void,
        out: *mut C_tensor,
        input: *mut C_tensor,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn pgolf_dist_reduce_scatter_sum(
        group: *mut c_void,
        out: *mut C_tensor,
        input: *mut C_tensor,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn pgolf_dist_barrier(group: *mut c_void, timeout_ms: i64, err: *mut c_char, len: usize)
        -> i32;
}

fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

/// Runs one shim call that reports failure through an error buffer (nonzero return).
fn call(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<()> {
    let mut err = vec![0u8; ERR_LEN];
    if f(err.as_mut_ptr() as *mut c_char, ERR_LEN) == 0 {
        Ok(())
    } else {
        Err(anyhow!("{}", message(&err)))
    }
}

/// Runs one shim constructor that returns null on failure.
fn make(f: impl FnOnce(*mut c_char, usize) -> *mut c_void) -> Result<*mut c_void> {
    let mut err = vec![0u8; ERR_LEN];
    let ptr = f(err.as_mut_ptr() as *mut c_char, ERR_LEN);
    if ptr.is_null() {
        Err(anyhow!("{}", message(&err)))
    } else {
        Ok(ptr)
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A c10d key-value store (a TCPStore, possibly under a key prefix).
pub struct Store {
    ptr: *mut c_void,
}

// c10d stores are used from several threads inside libtorch (they are internally locked).
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

/// How a process takes part in a TCPStore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreRole {
    /// Hosts it, and waits until `wait_for` processes (itself included) joined (0 = does not wait:
    /// a launcher's store).
    Server { wait_for: usize },
    /// Joins it, one of `world` processes, and counts itself in (what a hosting rank waits for),
    /// as torch.distributed's ranks do.
    Client { world: usize },
}

impl Store {
    /// A TCPStore at `host:port` (a server at port 0 picks a free port: [`Store::port`]); every
    /// key is put under `prefix` when it is not empty. Joining fails after `timeout`.
    pub fn tcp(
        host: &str,
        port: u16,
        role: StoreRole,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Store> {
        let chost = CString::new(host)?;
        let cprefix = CString::new(prefix)?;
        // TCPStore counts a process in only when it is made with `waitWorkers` and a worker
        // count; only the server then waits for the others.
        let (is_server, workers, wait) = match role {
            StoreRole::Server { wait_for } => (1, wait_for, wait_for > 0),
            StoreRole::Client { world } => (0, world, true),
        };
        let ptr = make(|err, len| unsafe {
            pgolf_dist_store_new(
                chost.as_ptr(),
                port as i32,
                workers as i32,
                is_server,
                wait as i32,
                millis(timeout),
                cprefix.as_ptr(),
                err,
                len,
            )
        })
        .map_err(|e| anyhow!("TCPStore at {host}:{port}: {e}"))?;
        Ok(Store { ptr })
    }

    /// The port of a TCPStore made without a prefix (the one a server at port 0 picked).
    pub fn port(&self) -> Option<u16> {
        let port = unsafe { pgolf_dist_store_port(self.ptr) };
        u16::try_from(port).ok()
    }

    /// The same store with every key under `prefix` (the original stays usable).
    pub fn prefixed(&self, prefix: &str) -> Result<Store> {
        let cprefix = CString::new(prefix)?;
        let ptr = make(|err, len| unsafe {
            pgolf_dist_store_prefixed(self.ptr, cprefix.as_ptr(), err, len)
        })?;
        Ok(Store { ptr })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        unsafe { pgolf_dist_store_free(self.ptr) }
    }
}

/// A c10d backend (`c10d::Backend`): Gloo or NCCL.
pub struct Group {
    ptr: *mut c_void,
}

// A c10d backend is driven by one thread at a time here (the trainer's); libtorch's own worker
// threads do not touch this handle.
unsafe impl Send for Group {}

/// Reduction of [`Group::all_reduce`] (the codes of c10d_shim.cpp).
#[derive(Clone, Copy, Debug)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
}

impl Group {
    pub fn gloo(store: &Store, rank: usize, size: usize, timeout: Duration) -> Result<Group> {
        let ptr = make(|err, len| unsafe {
            pgolf_dist_gloo_new(
                store.ptr,
                rank as i32,
                size as i32,
                millis(timeout),
                err,
                len,
            )
        })?;
        Ok(Group { ptr })
    }

    pub fn nccl(
        store: &Store,
        rank: usize,
        size: usize,
        device: usize,
        timeout: Duration,
    ) -> Result<Group> {
        let ptr = make(|err, len| unsafe {
            pgolf_dist_nccl_new(
                store.ptr,
                rank as i32,
                size as i32,
                device as i32,
                millis(timeout),
                err,
                len,
            )
        })?;
        Ok(Group { ptr })
    }

    /// The backend's own name ("gloo", "nccl").
    pub fn name(&self) -> String {
        let mut buf = vec![0u8; 64];
        unsafe { pgolf_dist_group_name(self.ptr, buf.as_mut_ptr() as *mut c_char, buf.len()) };
        message(&buf)
    }

    /// Ends the backend's communicators: cleanly (`abort` false) or, after a failure, without
    /// waiting for peers that may be gone.
    pub fn shutdown(&self, abort: bool) {
        unsafe { pgolf_dist_group_shutdown(self.ptr, abort as i32) }
    }

    /// `t` (contiguous) reduced over the ranks in place.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp, timeout: Duration) -> Result<()> {
        call(|err, len| unsafe {
            pgolf_dist_all_reduce(
                self.ptr,
                t.as_ptr() as *mut C_tensor,
                op as i32,
                millis(timeout),
                err,
                len,
            )
        })
    }

    /// `t` (contiguous) replaced by rank `root`'s.
    pub fn broadcast(&self, t: &Tensor, root: usize, timeout: Duration) -> Result<()> {
        call(|err, len| unsafe {
            pgolf_dist_broadcast(
                self.ptr,
                t.as_ptr() as *mut C_tensor,
                root as i32,
                millis(timeout),
                err,
                len,
            )
        })
    }

    /// `out` (world × numel(input), contiguous) ← every rank's `input` in rank order.
    pub fn all_gather(&self, out: &Tensor, input: &Tensor, timeout: Duration) -> Result<()> {
        call(|err, len| unsafe {
            pgolf_dist_all_gather(
                self.ptr,
                out.as_ptr() as *mut C_tensor,
                input.as_ptr() as *mut C_tensor,
                millis(timeout),
                err,
                len,
            )
        })
    }

    /// `out` ← the sum over ranks of this rank's chunk of `input` (world × numel(out)).
    pub fn reduce_scatter_sum(
        &self,
        out: &Tensor,
        input: &Tensor,
        timeout: Duration,
    ) -> Result<()> {
        call(|err, len| unsafe {
            pgolf_dist_reduce_scatter_sum(
                self.ptr,
                out.as_ptr() as *mut C_tensor,
                input.as_ptr() as *mut C_tensor,
                millis(timeout),
                err,
                len,
            )
        })
    }

    pub fn barrier(&self, timeout: Duration) -> Result<()> {
        call(|err, len| unsafe { pgolf_dist_barrier(self.ptr, millis(timeout), err, len) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { pgolf_dist_group_free(self.ptr) }
    }
}

/// Makes CUDA `device` this process's current device.
pub fn set_cuda_device(device: usize) -> Result<()> {
    call(|err, len| unsafe { pgolf_dist_set_cuda_device(device as i32, err, len) })
}
