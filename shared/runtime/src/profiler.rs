//! libtorch's Kineto profiler (the engine behind Python's `torch.profiler`), through
//! `csrc/profiler.cpp`: records CPU ops and CUDA kernels and writes a Chrome trace, which
//! `bench/trace_summary.py` splits by kernel class. A diagnostic: it changes no result.

use std::ffi::{c_char, CString};
use std::path::Path;

use anyhow::Result;

use crate::cuda::checked;

extern "C" {
    fn pgolf_profiler_start(err: *mut c_char, len: usize) -> i32;
    fn pgolf_profiler_stop(path: *const c_char, err: *mut c_char, len: usize) -> i32;
}

/// Records from now until [`Recording::save`].
pub struct Recording(());

pub fn start() -> Result<Recording> {
    // SAFETY: the shim catches C++ exceptions and reports them in the buffer.
    checked("profiler start", |e, n| unsafe {
        pgolf_profiler_start(e, n)
    })?;
    Ok(Recording(()))
}

impl Recording {
    /// Stops recording and writes the trace (Chrome JSON) to `path`.
    pub fn save(self, path: &Path) -> Result<()> {
        let c_path = CString::new(path.to_string_lossy().as_bytes())?;
        // SAFETY: as above; `c_path` outlives the call.
        checked(
            &format!("profiler trace {}", path.display()),
            |e, n| unsafe { pgolf_profiler_stop(c_path.as_ptr(), e, n) },
        )
    }
}
