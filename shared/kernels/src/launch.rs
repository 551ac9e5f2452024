//! Launching a kernel on libtorch's current CUDA stream for the tensors' device, and sizing a
//! grid to what the device runs at once ([`resident_blocks`]).
//!
//! Not cudarc's streams: libtorch's current stream is the one a CUDA graph captures, and the one
//! autograd's engine makes current for a node's backward; launching there orders our kernels with
//! libtorch's own work without any synchronisation.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{result, sys};
use tch::{Device, Tensor};

/// One `extern "C" __global__` function of a CUDA source embedded in the binary.
#[derive(Debug)]
pub struct Kernel {
    /// The source's file name, for messages (e.g. `relu_square.cu`).
    pub file: &'static str,
    /// The CUDA C source (header-free: NVRTC gets no include path; [`crate::nvrtc::compile`]
    /// prepends `cuda/common.cuh`).
    pub source: &'static str,
    /// The function's (unmangled) name.
    pub name: &'static str,
}

impl Kernel {
    pub const fn new(file: &'static str, source: &'static str, name: &'static str) -> Kernel {
        Kernel { file, source, name }
    }
}

/// A kernel argument: a tensor passes its data pointer (it must live until the kernel has run,
/// which libtorch's allocator guarantees for tensors alive at launch on the current stream);
/// scalars pass by value with the C type the kernel declares.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    Tensor(&'a Tensor),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl<'a> From<&'a Tensor> for Arg<'a> {
    fn from(t: &'a Tensor) -> Self {
        Arg::Tensor(t)
    }
}
impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::I32(v)
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<f32> for Arg<'_> {
    fn from(v: f32) -> Self {
        Arg::F32(v)
    }
}

/// The value behind each `void*` of cuLaunchKernel's parameter array.
enum Slot {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Slot {
    fn as_param(&mut self) -> *mut c_void {
        match self {
            Slot::Ptr(v) => v as *mut u64 as *mut c_void,
            Slot::I32(v) => v as *mut i32 as *mut c_void,
            Slot::I64(v) => v as *mut i64 as *mut c_void,
            Slot::F32(v) => v as *mut f32 as *mut c_void,
        }
    }
}

/// Above this much dynamic shared memory a kernel must opt in (cuFuncSetAttribute).
const DEFAULT_SHARED_MEM_LIMIT: u32 = 48 * 1024;

/// Launches `kernel` with `grid` × `block` threads on libtorch's current stream of the device of
/// the tensor arguments (all on one CUDA device; at least one tensor). An empty grid launches
/// nothing. Compiles and loads the kernel's module on first use on a device.
pub fn launch(
    kernel: &Kernel,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared_mem_bytes: u32,
    args: &[Arg],
) -> Result<()> {
    let what = || format!("launching {} ({})", kernel.name, kernel.file);
    let mut ordinal = None;
    let mut slots = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        slots.push(match *arg {
            Arg::Tensor(t) => {
                if !t.defined() {
                    bail!("{}: argument {i} is an undefined tensor", what());
                }
                let Device::Cuda(d) = t.device() else {
                    bail!("{}: argument {i} is on {:?}, not CUDA", what(), t.device());
                };
                if *ordinal.get_or_insert(d) != d {
                    bail!(
                        "{}: tensors on two devices (cuda:{} and cuda:{d})",
                        what(),
                        ordinal.unwrap()
                    );
                }
                Slot::Ptr(t.data_ptr() as u64)
            }
            Arg::I32(v) => Slot::I32(v),
            Arg::I64(v) => Slot::I64(v),
            Arg::F32(v) => Slot::F32(v),
        });
    }
    let Some(ordinal) = ordinal else {
        bail!("{}: no tensor argument to take the device from", what());
    };
    if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
        return Ok(());
    }
    let function = crate::nvrtc::function(kernel, ordinal).with_context(what)?;
    if shared_mem_bytes > DEFAULT_SHARED_MEM_LIMIT {
        function
            .set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_mem_bytes as i32,
            )
            .map_err(|e| {
                anyhow::anyhow!("{}: {shared_mem_bytes} B of shared memory: {e}", what())
            })?;
    }
    let stream = current_stream(ordinal).with_context(what)?;
    let mut params: Vec<*mut c_void> = slots.iter_mut().map(Slot::as_param).collect();
    // SAFETY: the function was loaded in the device's primary context (bound to this thread by
    // `nvrtc::function`), `params` point at live values of the kernel's parameter types (the
    // caller's contract, as in any cuLaunchKernel), and the stream is libtorch's for this device.
    unsafe {
        result::launch_kernel(
            function.cu_function(),
            grid,
            block,
            shared_mem_bytes,
            stream,
            &mut params,
        )
    }
    .map_err(|e| {
        anyhow::anyhow!(
            "{}: grid {grid:?}, block {block:?}, {shared_mem_bytes} B shared: {e}",
            what()
        )
    })
}

/// SMs × resident blocks per SM of `threads`-thread blocks of `kernel` (no dynamic shared
/// memory) on device `ordinal`, at least 1: the grid of a grid-stride loop that covers the device
/// in one wave. Cached per (kernel, device, block size).
///
/// The norm backwards use it: each block writes one row of parameter-gradient partial sums, so a
/// grid of a few hundred blocks, each looping over many rows, keeps the partials small; and a grid
/// of exactly one wave avoids a half-empty last wave (with 1024 blocks and 396 resident, the third
/// wave would run at 60% occupancy). The grid depends on the device (SM count, registers), so the
/// partial sums' order does too: results are deterministic run to run on one GPU model, not
/// bitwise across models.
pub(crate) fn resident_blocks(kernel: &Kernel, ordinal: usize, threads: u32) -> Result<u32> {
    type Key = (usize, usize, u32);
    static CACHE: OnceLock<Mutex<HashMap<Key, u32>>> = OnceLock::new();
    let key = (kernel.name.as_ptr() as usize, ordinal, threads);
    if let Some(&n) = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .get(&key)
    {
        return Ok(n);
    }
    let function = crate::nvrtc::function(kernel, ordinal)?;
    let per_sm = function
        .occupancy_max_active_blocks_per_multiprocessor(threads, 0, None)
        .map_err(|e| {
            anyhow!(
                "CUDA driver: occupancy of {} ({threads} threads): {e}",
                kernel.name
            )
        })?;
    let sms = crate::nvrtc::context(ordinal)?
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| anyhow!("CUDA driver: SM count of cuda:{ordinal}: {e}"))?;
    let n = per_sm.max(1) * (sms.max(1) as u32);
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert(key, n);
    Ok(n)
}

extern "C" {
    fn pgolf_kernels_current_stream(
        device: i32,
        stream: *mut *mut c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
}

/// libtorch's current CUDA stream on device `ordinal` (the null stream is a valid answer).
pub fn current_stream(ordinal: usize) -> Result<sys::CUstream> {
    let mut stream = std::ptr::null_mut();
    let mut buf = vec![0 as std::ffi::c_char; 1024];
    // SAFETY: the shim writes the stream or a NUL-terminated message, and catches C++ exceptions.
    let rc = unsafe {
        pgolf_kernels_current_stream(ordinal as i32, &mut stream, buf.as_mut_ptr(), buf.len())
    };
    if rc != 0 {
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        bail!("libtorch's current CUDA stream on cuda:{ordinal}: {msg}");
    }
    Ok(stream as sys::CUstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    static K: Kernel = Kernel::new("none.cu", "", "none");

    #[test]
    fn launch_rejects_cpu_tensors_and_missing_tensors() {
        let t = Tensor::zeros([4], (tch::Kind::Float, Device::Cpu));
        let err = launch(&K, (1, 1, 1), (1, 1, 1), 0, &[(&t).into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not CUDA") && err.contains("none"), "{err}");
        let err = launch(&K, (1, 1, 1), (1, 1, 1), 0, &[1i32.into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no tensor argument"), "{err}");
    }
}
