//! CUDA features libtorch has and tch does not expose (through the shims in `csrc/`): the caching
//! allocator's peak memory (upstream's `torch.cuda.max_memory_allocated/reserved`), device names
//! and CUDA graphs.

use tch::Device;

extern "C" {
    fn pgolf_cuda_peak_allocated(device: i32) -> i64;
    fn pgolf_cuda_peak_reserved(device: i32) -> i64;
    fn pgolf_cuda_reset_peak(device: i32) -> i32;
    fn pgolf_cuda_empty_cache(device: i32) -> i32;
    fn pgolf_cuda_device_name(device: i32, out: *mut std::ffi::c_char, len: usize) -> i32;
}

/// Peak (allocated, reserved) bytes on a CUDA device since start or [`reset_peak_memory`];
/// `None` on the CPU or when libtorch cannot say.
pub fn peak_memory(device: Device) -> Option<(u64, u64)> {
    let Device::Cuda(i) = device else { return None };
    // SAFETY: plain C calls into libtorch that catch every C++ exception.
    let (allocated, reserved) = unsafe {
        (
            pgolf_cuda_peak_allocated(i as i32),
            pgolf_cuda_peak_reserved(i as i32),
        )
    };
    (allocated >= 0 && reserved >= 0).then_some((allocated as u64, reserved as u64))
}

pub fn reset_peak_memory(device: Device) {
    if let Device::Cuda(i) = device {
        // SAFETY: as above.
        unsafe { pgolf_cuda_reset_peak(i as i32) };
    }
}

/// Returns the caching allocator's unused blocks to the driver (`torch.cuda.empty_cache()`), e.g.
/// after a warm-up whose memory a CUDA graph's private pool now replaces.
pub fn empty_cache(device: Device) {
    if let Device::Cuda(i) = device {
        // SAFETY: as above.
        unsafe { pgolf_cuda_empty_cache(i as i32) };
    }
}

/// `t` (on the CPU) on `device`. To a GPU it is an asynchronous copy from pinned memory, so the
/// host goes on issuing work while the device still runs earlier work (a copy from pageable
/// memory waits for the device to drain); should pinning fail, the plain copy is as correct, only
/// slower. The kind is kept.
pub fn to_device_async(t: &tch::Tensor, device: Device) -> tch::Tensor {
    match device {
        Device::Cuda(_) if t.device() == Device::Cpu => t
            .f_pin_memory(device)
            .and_then(|pinned| pinned.f_to_device_(device, t.kind(), true, false))
            .unwrap_or_else(|_| t.to_device(device)),
        _ => t.to_device(device),
    }
}

/// The GPU's name as the CUDA runtime reports it (e.g. "NVIDIA H100 80GB HBM3"), for libtorch's
/// device index (after `CUDA_VISIBLE_DEVICES`); `None` on the CPU or when CUDA cannot say.
pub fn gpu_name(device: Device) -> Option<String> {
    let Device::Cuda(i) = device else { return None };
    let mut buf = vec![0 as std::ffi::c_char; 256];
    // SAFETY: the shim writes at most `len` bytes, NUL-terminated, and catches C++ exceptions.
    let rc = unsafe { pgolf_cuda_device_name(i as i32, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .trim()
        .to_string();
    (!name.is_empty()).then_some(name)
}

extern "C" {
    fn pgolf_graph_new(
        device: i32,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> *mut std::ffi::c_void;
    fn pgolf_graph_free(graph: *mut std::ffi::c_void);
    fn pgolf_graph_enter(
        graph: *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn pgolf_graph_leave(
        graph: *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn pgolf_graph_capture_begin(
        graph: *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn pgolf_graph_capture_end(
        graph: *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
    fn pgolf_graph_replay(
        graph: *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
}

/// Calls a shim function that reports C++ exceptions through an error buffer.
pub(crate) fn checked(
    what: &str,
    f: impl FnOnce(*mut std::ffi::c_char, usize) -> i32,
) -> anyhow::Result<()> {
    let mut buf = vec![0 as std::ffi::c_char; 1024];
    if f(buf.as_mut_ptr(), buf.len()) == 0 {
        return Ok(());
    }
    // SAFETY: the shim writes a NUL-terminated message into the buffer.
    let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    anyhow::bail!("{what}: {}", msg.lines().next().unwrap_or(""))
}

/// A CUDA graph (libtorch's `at::cuda::CUDAGraph`): work issued inside [`CudaGraph::capture`] is
/// recorded, not run, and [`CudaGraph::replay`] runs it again with one launch, on the same memory.
/// So everything it reads or writes must stay at fixed addresses: copy new inputs into the
/// tensors it captured, never reallocate parameters or their gradients. Warm up first with
/// [`CudaGraph::on_side_stream`] (libraries set themselves up on first use, which capture forbids).
pub struct CudaGraph {
    ptr: *mut std::ffi::c_void,
}

impl CudaGraph {
    pub fn new(device: Device) -> anyhow::Result<CudaGraph> {
        let Device::Cuda(i) = device else {
            anyhow::bail!("CUDA graphs need a CUDA device, not {device:?}")
        };
        let mut buf = vec![0 as std::ffi::c_char; 1024];
        // SAFETY: the shim returns null and fills the buffer on failure.
        let ptr = unsafe { pgolf_graph_new(i as i32, buf.as_mut_ptr(), buf.len()) };
        if ptr.is_null() {
            let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .to_string();
            anyhow::bail!("CUDA graph: cannot create: {msg}");
        }
        Ok(CudaGraph { ptr })
    }

    /// Runs `f` eagerly on the graph's side stream (ordered after earlier work, and before later).
    pub fn on_side_stream<T>(&mut self, f: impl FnOnce() -> T) -> anyhow::Result<T> {
        // SAFETY: `ptr` is a live graph; the shim catches C++ exceptions.
        checked("CUDA graph warm-up", |e, n| unsafe {
            pgolf_graph_enter(self.ptr, e, n)
        })?;
        let out = f();
        checked("CUDA graph warm-up", |e, n| unsafe {
            pgolf_graph_leave(self.ptr, e, n)
        })?;
        Ok(out)
    }

    /// Records the CUDA work `f` issues (nothing runs until [`CudaGraph::replay`]).
    pub fn capture<T>(&mut self, f: impl FnOnce() -> T) -> anyhow::Result<T> {
        // SAFETY: as above.
        checked("CUDA graph capture", |e, n| unsafe {
            pgolf_graph_capture_begin(self.ptr, e, n)
        })?;
        let out = f();
        checked("CUDA graph capture", |e, n| unsafe {
            pgolf_graph_capture_end(self.ptr, e, n)
        })?;
        Ok(out)
    }

    /// Runs the captured work on the current stream.
    pub fn replay(&self) -> anyhow::Result<()> {
        // SAFETY: as above.
        checked("CUDA graph replay", |e, n| unsafe {
            pgolf_graph_replay(self.ptr, e, n)
        })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: created by pgolf_graph_new, freed once.
        unsafe { pgolf_graph_free(self.ptr) }
    }
}
