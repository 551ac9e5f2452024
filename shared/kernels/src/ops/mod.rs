//! The fused ops, one file each (named for what they fuse), with their kernels in `cuda/`.
//! Each file has the [`crate::FusedFunction`], a public function that applies it, and a
//! `reference` in plain tch ops.

pub mod mix_norm;
#[cfg(test)]
mod norms_emulated;
pub mod qkv_norm_rope;
pub mod relu_square;
pub mod rms_norm;
pub mod smear_gate;
pub mod softcap_cross_entropy;
#[cfg(test)]
mod test_util;
pub mod xsa;

use crate::launch::Kernel;
use tch::Tensor;

/// Every kernel of every op, for [`preload`].
pub const KERNELS: &[&Kernel] = &[
    &relu_square::FORWARD,
    &relu_square::BACKWARD,
    &softcap_cross_entropy::FORWARD,
    &softcap_cross_entropy::BACKWARD,
    &qkv_norm_rope::FORWARD,
    &qkv_norm_rope::BACKWARD,
    &mix_norm::FORWARD[0],
    &mix_norm::FORWARD[1],
    &mix_norm::FORWARD[2],
    &mix_norm::BACKWARD[0],
    &mix_norm::BACKWARD[1],
    &mix_norm::BACKWARD[2],
    &rms_norm::FORWARD[0],
    &rms_norm::FORWARD[1],
    &rms_norm::FORWARD[2],
    &rms_norm::BACKWARD[0],
    &rms_norm::BACKWARD[1],
    &rms_norm::BACKWARD[2],
    &xsa::FORWARD,
    &xsa::BACKWARD,
    &smear_gate::FORWARD,
    &smear_gate::BACKWARD,
];

/// Compiles and loads every op's kernels on `device` now (before a CUDA graph capture, where
/// loading a module is not allowed); a no-op on the CPU.
pub fn preload(device: tch::Device) -> anyhow::Result<()> {
    let tch::Device::Cuda(ordinal) = device else {
        return Ok(());
    };
    for kernel in KERNELS {
        crate::nvrtc::function(kernel, ordinal)?;
    }
    Ok(())
}

/// The kind elementwise math runs in: f64 stays f64 (the CPU tests of the formulas), anything
/// narrower computes in f32.
pub(crate) fn math_kind(kind: tch::Kind) -> tch::Kind {
    if kind == tch::Kind::Double {
        tch::Kind::Double
    } else {
        tch::Kind::Float
    }
}

/// `t` ready for a vectorised kernel: of `kind` (else an error naming `what`), contiguous, and
/// 16-byte aligned (a copy when it is a view that is not: kernels load 8 bf16 at a time).
pub(crate) fn kernel_input(t: &Tensor, what: &str, kind: tch::Kind) -> anyhow::Result<Tensor> {
    if t.kind() != kind {
        anyhow::bail!("{what}: expected {kind:?}, got {:?}", t.kind());
    }
    let t = t.contiguous();
    Ok(if t.data_ptr() as usize & 15 == 0 {
        t
    } else {
        t.copy()
    })
}

/// A `[B, T, heads, hd]` bf16 tensor as a kernel that takes (batch, time, head) strides reads it:
/// itself when its last stride is 1, the others multiples of 8 and the pointer 16-byte aligned
/// (e.g. SDPA's `[B, H, T, hd]` output or gradients seen through a transpose: no copy); otherwise
/// a contiguous copy. Returns the tensor and its (batch, time, head) strides in elements.
pub(crate) fn strided_rows(t: &Tensor, what: &str) -> anyhow::Result<(Tensor, [i64; 3])> {
    anyhow::ensure!(t.dim() == 4, "{what}: expected 4 dims, got {:?}", t.size());
    let s = t.stride();
    let aligned = (t.data_ptr() as usize).trailing_zeros() >= 4;
    let usable = s[3] == 1 && s[..3].iter().all(|x| x % 8 == 0) && aligned;
    let t = if t.kind() == tch::Kind::BFloat16 && usable {
        t.shallow_clone()
    } else {
        kernel_input(t, what, tch::Kind::BFloat16)?
    };
    let s = t.stride();
    Ok((t, [s[0], s[1], s[2]]))
}

pub(crate) fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Blocks for a grid-stride loop over `n` items with `threads` per block.
pub(crate) fn grid_for(n: i64, threads: u32) -> u32 {
    (n.max(1) as u64).div_ceil(threads as u64).min(1 << 20) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel that every `cuda/*.cu` defines (the `.entry` functions of its PTX, so macros
    /// count) is in [`KERNELS`], so [`preload`] loads it before a CUDA graph capture (where
    /// loading a module would fail). Skipped where there is no NVRTC.
    #[test]
    fn every_kernel_of_every_source_is_preloaded() {
        if !crate::nvrtc::nvrtc_available() {
            eprintln!("SKIPPED: {:#}", crate::nvrtc::ensure_nvrtc().unwrap_err());
            return;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
        let mut found = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "cu") {
                continue;
            }
            let file = path.file_name().unwrap().to_str().unwrap();
            let source = std::fs::read_to_string(&path).unwrap();
            let ptx = crate::nvrtc::compile(file, &source, "sm_90").unwrap();
            for piece in ptx.split(".entry ").skip(1) {
                let name = piece[..piece.find('(').unwrap()].trim();
                found += 1;
                assert!(
                    KERNELS.iter().any(|k| k.file == file && k.name == name),
                    "{file}: kernel {name} is not in ops::KERNELS"
                );
            }
        }
        assert!(
            found >= 4,
            "found only {found} kernels in {}",
            dir.display()
        );
    }

    /// Every kernel's source compiles with NVRTC (for the H100's sm_90 and for sm_80) and defines
    /// the function. No GPU needed; skipped where there is no NVRTC.
    #[test]
    fn every_kernel_compiles_with_nvrtc() {
        if !crate::nvrtc::nvrtc_available() {
            eprintln!("SKIPPED: {:#}", crate::nvrtc::ensure_nvrtc().unwrap_err());
            return;
        }
        for arch in ["sm_90", "sm_80"] {
            let mut ptx_of = std::collections::HashMap::new();
            for k in KERNELS {
                let ptx = ptx_of.entry(k.file).or_insert_with(|| {
                    crate::nvrtc::compile(k.file, k.source, arch)
                        .unwrap_or_else(|e| panic!("{e:#}"))
                });
                assert!(
                    ptx.contains(&format!(".entry {}(", k.name)),
                    "{}: no kernel {} for {arch}",
                    k.file,
                    k.name
                );
            }
        }
    }
}
