//! Causal attention within documents on CUDA (R0427's `flash_attn_varlen_func`): libtorch's
//! FlashAttention-2 kernel over a packed row, each document attending only to itself, given the
//! documents' cumulative lengths (no dense mask). Through the shim in `csrc/flash_varlen.cpp`.
//! The CPU has no such kernel; pgolf-model's per-document reference is the CPU path and the
//! oracle this one is checked against (shared/model/examples/check_model_gpu.rs).

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

extern "C" {
    fn pgolf_flash_varlen_forward(
        q: *const std::ffi::c_void,
        k: *const std::ffi::c_void,
        v: *const std::ffi::c_void,
        cu_seqlens: *const std::ffi::c_void,
        max_seqlen: i64,
        scale: f64,
        out: *mut *mut std::ffi::c_void,
        err: *mut std::ffi::c_char,
        len: usize,
    ) -> i32;
}

/// Whether [`flash_varlen_causal`] runs for tensors of `kind` on `device`: CUDA, bf16 or f16
/// (FlashAttention has no f32 kernel).
pub fn flash_varlen_supported(device: tch::Device, kind: Kind) -> bool {
    device.is_cuda() && matches!(kind, Kind::BFloat16 | Kind::Half)
}

/// `softmax(q kᵀ/√hd + causal) v` within each segment `[cu[s], cu[s+1])` of the row:
/// `q: [total, H, hd]`, `k, v: [total, Hkv, hd]` (H a multiple of Hkv), `cu_seqlens: int32
/// [segments + 1]` ascending from 0 to `total` (trailing repeats of `total` are empty segments,
/// as R0427 pads them), `max_seqlen` at least the longest segment. Returns `[total, H, hd]`,
/// differentiable in q, k and v.
pub fn flash_varlen_causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: &Tensor,
    max_seqlen: i64,
) -> Result<Tensor> {
    ensure!(
        flash_varlen_supported(q.device(), q.kind()),
        "varlen attention: FlashAttention needs bf16 or f16 on CUDA, got {:?} on {:?}",
        q.kind(),
        q.device()
    );
    ensure!(
        cu_seqlens.kind() == Kind::Int && cu_seqlens.device() == q.device(),
        "varlen attention: cu_seqlens must be int32 on {:?}",
        q.device()
    );
    // The kernel reads the last dim contiguously and cu_seqlens as one int32 array.
    let (q, k, v) = (q.contiguous(), k.contiguous(), v.contiguous());
    let cu = cu_seqlens.contiguous();
    let mut out: *mut std::ffi::c_void = std::ptr::null_mut();
    crate::cuda::checked(
        "varlen attention (at::_flash_attention_forward)",
        |err, len| {
            // SAFETY: the pointers are live at::Tensor handles (tch's C_tensor is `at::Tensor*`); the
            // shim catches every C++ exception and writes a new at::Tensor only on success.
            unsafe {
                pgolf_flash_varlen_forward(
                    q.as_ptr() as *const _,
                    k.as_ptr() as *const _,
                    v.as_ptr() as *const _,
                    cu.as_ptr() as *const _,
                    max_seqlen,
                    -1.0,
                    &mut out,
                    err,
                    len,
                )
            }
        },
    )?;
    // SAFETY: on success `out` is a heap at::Tensor the shim allocated for us to own.
    Ok(unsafe { Tensor::from_ptr(out as *mut _) })
}
