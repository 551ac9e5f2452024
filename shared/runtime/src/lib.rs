//! The libtorch and device glue every libtorch stage shares, apart from the model: what `--device`
//! means, what libtorch offers beyond tch (the C++ shims in `csrc/`), and the record of the device
//! a run computed on. A stage depends on this crate, not on the model, for these, so a stage that
//! only needs a device (quantize-pack's GPTQ) is not re-keyed by an edit of the model or kernels.
//!
//! - [`device_from_str`]`("cpu"|"cuda"|"cuda:N") -> Result<Device>`.
//! - [`describe`]`(device, world_size) -> DeviceRecord`: backend, device count, device names (from
//!   the CUDA runtime, [`cuda::gpu_name`]) and world size, for the manifest
//!   ([`pgolf_store::Stage::set_device`]).
//! - [`precision_kind`]: the libtorch kind of a `precision` param on a device.
//! - [`cuda`]: peak allocator memory, `empty_cache`, device names and [`cuda::CudaGraph`] (capture
//!   / replay); [`profiler`]: Kineto traces (`profiler::start()?.save(path)`).
//! - [`attention::flash_varlen_causal`]: causal attention within documents on CUDA (libtorch's
//!   FlashAttention-2 varlen kernel, cumulative sequence lengths, differentiable).

pub mod attention;
pub mod cuda;
pub mod device;
pub mod profiler;

pub use device::device_from_str;
pub use pgolf_store::{DeviceRecord, Precision};

use tch::{Device, Kind};

/// What a run on `device` with `world_size` ranks (one device each, ranks on consecutive devices
/// from `device`'s index) computed on. A device the CUDA runtime cannot name is recorded as
/// `unknown CUDA device`, so the record still counts it (and the report does not take it for an
/// H100).
pub fn describe(device: Device, world_size: usize) -> DeviceRecord {
    match device {
        Device::Cuda(first) => {
            let names = (first..first + world_size.max(1))
                .map(|i| cuda::gpu_name(Device::Cuda(i)).unwrap_or_else(|| UNNAMED.into()))
                .collect();
            DeviceRecord::cuda(names, world_size)
        }
        _ => DeviceRecord {
            world_size,
            ..DeviceRecord::cpu()
        },
    }
}

/// The name recorded for a CUDA device the probe could not name.
pub const UNNAMED: &str = "unknown CUDA device";

/// The kind matmuls and activations run in at `precision` on `device`: `auto` is bf16 on CUDA (as
/// upstream's autocast) and f32 on the CPU.
pub fn precision_kind(precision: Precision, device: Device) -> Kind {
    if precision.is_bf16(device.is_cuda()) {
        Kind::BFloat16
    } else {
        Kind::Float
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgolf_store::Backend;

    #[test]
    fn the_cpu_is_described_as_one_cpu() {
        let r = describe(Device::Cpu, 1);
        assert_eq!(r, DeviceRecord::cpu());
        assert_eq!(r.backend, Backend::Cpu);
        assert_eq!(precision_kind(Precision::Auto, Device::Cpu), Kind::Float);
        assert_eq!(precision_kind(Precision::Bf16, Device::Cpu), Kind::BFloat16);
        assert_eq!(
            precision_kind(Precision::Auto, Device::Cuda(0)),
            Kind::BFloat16
        );
        assert_eq!(precision_kind(Precision::F32, Device::Cuda(0)), Kind::Float);
    }

    /// On a CUDA machine: every used device is named by the runtime (not the placeholder).
    #[test]
    fn cuda_devices_are_named_by_the_runtime() {
        if !tch::Cuda::is_available() {
            return;
        }
        let r = describe(Device::Cuda(0), 1);
        assert_eq!(
            (r.backend, r.device_count, r.world_size),
            (Backend::Cuda, 1, 1)
        );
        assert_ne!(r.device_names[0], UNNAMED, "{r:?}");
        assert!(!r.device_names[0].is_empty());
    }
}
