//! The device a run computed on, as a structured record in every manifest (`device`), so that the
//! report checks it by field (backend, how many devices, their names, the world size) instead of
//! searching free text. `pgolf-runtime`'s `describe` fills it from libtorch and the CUDA probe;
//! stages that compute on no device (tokenize, ema-finalize, report) record [`DeviceRecord::cpu`].
//!
//! Manifests written before the record carry a free-form string there; they still read, as an
//! [`Backend::Unknown`] record keeping the old text in `description` (never an error: a report
//! over old runs must not fail on how they described their GPU).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
    /// A wgpu adapter (Vulkan, Metal or DX12; portable-eval), GPU or software.
    Wgpu,
    /// Not recorded as a record (an older manifest), or a backend this build does not know.
    #[serde(other)]
    Unknown,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub backend: Backend,
    /// Devices the run computed on: one per rank on CUDA, 1 for the CPU, 0 when unknown.
    pub device_count: usize,
    /// One name per device, in rank order (e.g. `NVIDIA H100 80GB HBM3`; `cpu` for the CPU).
    pub device_names: Vec<String>,
    /// Ranks (processes) of the run; 0 when unknown.
    pub world_size: usize,
    /// Free text of a manifest written before the record (absent in new manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The substring of a device name that the rule's hardware (8×H100 SXM) is recognised by.
pub const RULE_GPU: &str = "H100";
/// The world size the rule's time caps are defined on.
pub const RULE_WORLD_SIZE: usize = 8;

impl DeviceRecord {
    /// One process on the CPU.
    pub fn cpu() -> DeviceRecord {
        DeviceRecord {
            backend: Backend::Cpu,
            device_count: 1,
            device_names: vec!["cpu".into()],
            world_size: 1,
            description: None,
        }
    }

    /// `world_size` ranks, one CUDA device each, named in rank order.
    pub fn cuda(device_names: Vec<String>, world_size: usize) -> DeviceRecord {
        DeviceRecord {
            backend: Backend::Cuda,
            device_count: device_names.len(),
            device_names,
            world_size,
            description: None,
        }
    }

    /// One process on one wgpu adapter, named as the driver names it (e.g.
    /// `NVIDIA H100 80GB HBM3 (Vulkan, discrete GPU; NVIDIA 580.65)`).
    pub fn wgpu(adapter: String) -> DeviceRecord {
        DeviceRecord {
            backend: Backend::Wgpu,
            device_count: 1,
            device_names: vec![adapter],
            world_size: 1,
            description: None,
        }
    }

    /// What an old manifest said, kept as text; nothing about it is known by field.
    pub fn unknown(description: impl Into<String>) -> DeviceRecord {
        DeviceRecord {
            backend: Backend::Unknown,
            device_count: 0,
            device_names: vec![],
            world_size: 0,
            description: Some(description.into()),
        }
    }

    /// Whether the run used the hardware the rule's time caps are defined on: 8 ranks on 8 CUDA
    /// devices, every one named as an H100. A 1-GPU run, even on an H100, does not.
    pub fn is_rule_hardware(&self) -> bool {
        self.backend == Backend::Cuda
            && self.world_size == RULE_WORLD_SIZE
            && self.device_count == RULE_WORLD_SIZE
            && self.device_names.len() == RULE_WORLD_SIZE
            && self.device_names.iter().all(|n| n.contains(RULE_GPU))
    }

    /// One line for people: `cuda, world size 8: 8 × NVIDIA H100 80GB HBM3`, `cpu, world size 1`,
    /// `unknown (old manifest: "cuda:0 NVIDIA H100")`.
    pub fn summary(&self) -> String {
        match self.backend {
            Backend::Unknown => match &self.description {
                Some(text) => format!("unknown (old manifest: {text:?})"),
                None => "unknown".into(),
            },
            Backend::Cpu => format!("cpu, world size {}", self.world_size),
            Backend::Wgpu => format!("wgpu: {}", self.device_names.join(", ")),
            Backend::Cuda => {
                let mut names: Vec<(usize, &str)> = Vec::new();
                for name in &self.device_names {
                    match names.last_mut() {
                        Some((n, last)) if *last == name => *n += 1,
                        _ => names.push((1, name)),
                    }
                }
                let names: Vec<String> = names
                    .iter()
                    .map(|(n, name)| format!("{n} × {name}"))
                    .collect();
                format!(
                    "cuda, world size {}: {}",
                    self.world_size,
                    if names.is_empty() {
                        "no device named".into()
                    } else {
                        names.join(", ")
                    }
                )
            }
        }
    }
}

impl Default for DeviceRecord {
    /// A manifest without a `device` field.
    fn default() -> DeviceRecord {
        DeviceRecord {
            backend: Backend::Unknown,
            device_count: 0,
            device_names: vec![],
            world_size: 0,
            description: None,
        }
    }
}

/// The record as written; missing fields of a partial record default to "unknown".
#[derive(Deserialize)]
struct Fields {
    #[serde(default = "unknown_backend")]
    backend: Backend,
    #[serde(default)]
    device_count: usize,
    #[serde(default)]
    device_names: Vec<String>,
    #[serde(default)]
    world_size: usize,
    #[serde(default)]
    description: Option<String>,
}

fn unknown_backend() -> Backend {
    Backend::Unknown
}

impl<'de> Deserialize<'de> for DeviceRecord {
    /// A record, or (older manifests) any other JSON value, kept as text in an unknown record.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DeviceRecord, D::Error> {
        let value = Value::deserialize(deserializer)?;
        if value.is_object() {
            if let Ok(f) = serde_json::from_value::<Fields>(value.clone()) {
                return Ok(DeviceRecord {
                    backend: f.backend,
                    device_count: f.device_count,
                    device_names: f.device_names,
                    world_size: f.world_size,
                    description: f.description,
                });
            }
        }
        Ok(match value {
            Value::String(text) => DeviceRecord::unknown(text),
            Value::Null => DeviceRecord::default(),
            other => DeviceRecord::unknown(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn h100s(n: usize) -> Vec<String> {
        vec!["NVIDIA H100 80GB HBM3".to_string(); n]
    }

    #[test]
    fn records_round_trip_by_field() {
        for record in [
            DeviceRecord::cpu(),
            DeviceRecord::cuda(h100s(8), 8),
            DeviceRecord::wgpu("llvmpipe (Vulkan, CPU)".into()),
            DeviceRecord::unknown("cuda:0"),
        ] {
            let text = serde_json::to_string(&record).unwrap();
            assert_eq!(serde_json::from_str::<DeviceRecord>(&text).unwrap(), record);
        }
        assert_eq!(
            serde_json::to_value(DeviceRecord::cuda(h100s(1), 1)).unwrap(),
            json!({"backend": "cuda", "device_count": 1,
                   "device_names": ["NVIDIA H100 80GB HBM3"], "world_size": 1})
        );
    }

    #[test]
    fn old_free_form_strings_read_as_unknown_records() {
        let old: DeviceRecord =
            serde_json::from_value(json!("cuda:0 NVIDIA H100 80GB HBM3")).unwrap();
        assert_eq!(old.backend, Backend::Unknown);
        assert_eq!(
            old.description.as_deref(),
            Some("cuda:0 NVIDIA H100 80GB HBM3")
        );
        assert!(
            !old.is_rule_hardware(),
            "an old string never passes the check"
        );
        assert!(old.summary().contains("cuda:0 NVIDIA H100"));
        // Neither does any other shape, nor a backend this build does not know.
        for v in [
            json!(null),
            json!(3),
            json!({"backend": "tpu", "world_size": 8}),
            json!({"x": 1}),
        ] {
            let r: DeviceRecord = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(r.backend, Backend::Unknown, "{v}");
        }
    }

    #[test]
    fn rule_hardware_is_eight_ranks_on_eight_h100s() {
        assert!(DeviceRecord::cuda(h100s(8), 8).is_rule_hardware());
        assert!(!DeviceRecord::cuda(h100s(1), 1).is_rule_hardware());
        assert!(!DeviceRecord::cuda(h100s(8), 1).is_rule_hardware());
        let mut mixed = h100s(8);
        mixed[3] = "NVIDIA H200".into();
        assert!(!DeviceRecord::cuda(mixed, 8).is_rule_hardware());
        assert!(!DeviceRecord::cpu().is_rule_hardware());
        assert_eq!(
            DeviceRecord::cuda(h100s(8), 8).summary(),
            "cuda, world size 8: 8 × NVIDIA H100 80GB HBM3"
        );
    }
}
