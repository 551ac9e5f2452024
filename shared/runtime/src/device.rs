//! Device names on the command line (`--device cpu|cuda|cuda:N`) to libtorch devices.

use anyhow::{bail, Result};
use tch::{Cuda, Device};

/// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`; an error if CUDA is asked for and libtorch sees no such
/// GPU (e.g. a binary built without `torch_cuda` linked, or no driver).
pub fn device_from_str(name: &str) -> Result<Device> {
    let index = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => bail!("device {name:?}: expected cpu, cuda or cuda:N"),
        },
    };
    let count = Cuda::device_count();
    if !Cuda::is_available() || count == 0 {
        bail!("device {name}: CUDA is not available to libtorch here (no GPU, no driver, or torch_cuda not linked)");
    }
    if index as i64 >= count {
        bail!("device {name}: only {count} CUDA device(s) visible");
    }
    Ok(Device::Cuda(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_refuses_nonsense() {
        assert_eq!(device_from_str("cpu").unwrap(), Device::Cpu);
        assert!(format!("{:#}", device_from_str("gpu").unwrap_err())
            .contains("expected cpu, cuda or cuda:N"));
        assert!(device_from_str("cuda:x").is_err());
        if !Cuda::is_available() {
            assert!(
                format!("{:#}", device_from_str("cuda:0").unwrap_err()).contains("not available")
            );
        }
    }
}
