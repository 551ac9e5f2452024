//! `manifest.json`: the last file a stage writes, and the only proof that a run is complete.
//! The schema is documented in docs/CONTRACT.md; bump [`MANIFEST_SCHEMA`] on any incompatible change.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::device::DeviceRecord;
use crate::files::MANIFEST;
use crate::hashing::hash_file;

/// Written by this code. 2: `device` is a [`DeviceRecord`] (1: free text).
pub const MANIFEST_SCHEMA: u32 = 2;
/// Read by this code: schema 1 still reads, its device text as an unknown record.
pub const READ_SCHEMAS: [u32; 2] = [1, 2];

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    pub schema: u32,
    /// Stage name, e.g. `train`.
    pub stage: String,
    /// The stage's source identity (see `pgolf-buildid`), e.g. `train@3f2a…`.
    pub identity: String,
    /// The run key this output is stored under (see [`crate::run_key`]).
    pub key: String,
    /// The params as given to the stage (canonical JSON; what the key was computed from).
    pub params: Value,
    /// Input name -> what it was.
    pub inputs: BTreeMap<String, InputRef>,
    /// Every file of the output, sorted by path, `manifest.json` excluded.
    pub outputs: Vec<OutputFile>,
    /// RFC 3339 times and the wall time in seconds.
    pub started: String,
    pub finished: String,
    pub wall_seconds: f64,
    pub host: String,
    /// What the run computed on, by field; an older manifest's free-form string reads as an
    /// unknown record (see [`DeviceRecord`]).
    #[serde(default)]
    pub device: DeviceRecord,
    /// The stage's headline figures (e.g. `val_bpb`, `artifact_bytes`), for status lines and reports.
    pub headline: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct InputRef {
    /// The input's key: a stage run key, or `file:<blake3>` / `files:<blake3>` for raw files.
    pub key: String,
    /// For stage outputs: the upstream stage name (its output is `out/<stage>/<key>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// For a list of stage outputs (e.g. the seeds of a multi-seed report): their keys, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
    /// For raw files: the paths as given (informational; never part of a key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OutputFile {
    /// Relative to the output directory, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
}

impl Manifest {
    /// Reads and parses `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let bytes = fs::read(&path).with_context(|| {
            format!(
                "{}: no manifest (not a finished stage output)",
                path.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a valid pgolf manifest", path.display()))?;
        if !READ_SCHEMAS.contains(&manifest.schema) {
            bail!(
                "{}: manifest schema {} is not one this build reads ({:?})",
                path.display(),
                manifest.schema,
                READ_SCHEMAS
            );
        }
        manifest
            .check_paths()
            .with_context(|| format!("{}: not a valid pgolf manifest", path.display()))?;
        Ok(manifest)
    }

    /// What a manifest names on disk stays inside `out/`: every output a path below the run
    /// folder, every upstream stage and run key one folder name. Verification joins outputs to the
    /// run folder and `export --with-deps` follows inputs to `out/<stage>/<key>`, so a manifest
    /// that arrived in a bundle must not lead them elsewhere (`../`, absolute paths).
    fn check_paths(&self) -> Result<()> {
        let one_name = |s: &str| {
            let mut parts = Path::new(s).components();
            matches!(
                (parts.next(), parts.next()),
                (Some(Component::Normal(_)), None)
            ) && !s.contains('/')
        };
        for out in &self.outputs {
            let p = Path::new(&out.path);
            if out.path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
                bail!("output {:?} is not a path inside the run folder", out.path);
            }
        }
        for (name, input) in &self.inputs {
            if let Some(stage) = &input.stage {
                let keys = std::iter::once(&input.key).chain(&input.runs);
                if !one_name(stage) || !keys.into_iter().all(|k| one_name(k)) {
                    bail!("input {name}: stage {stage:?} or its run keys are not folder names under out/");
                }
            }
        }
        Ok(())
    }

    /// Cheap check: every listed file exists with its recorded size, and nothing unlisted is there.
    pub fn verify_sizes(&self, dir: &Path) -> Result<()> {
        self.verify(dir, false)
    }

    /// Full check: sizes and BLAKE3 hashes of every file.
    pub fn verify_hashes(&self, dir: &Path) -> Result<()> {
        self.verify(dir, true)
    }

    fn verify(&self, dir: &Path, hashes: bool) -> Result<()> {
        let present = list_files(dir)?;
        let listed: Vec<&str> = self.outputs.iter().map(|o| o.path.as_str()).collect();
        for (rel, _) in &present {
            if !listed.contains(&rel.as_str()) {
                bail!(
                    "{}: file {rel} is not listed in its manifest",
                    dir.display()
                );
            }
        }
        for out in &self.outputs {
            let path = dir.join(&out.path);
            let meta = fs::metadata(&path).with_context(|| {
                format!("{}: listed in the manifest but missing", path.display())
            })?;
            if meta.len() != out.bytes {
                bail!(
                    "{}: size {} differs from the manifest's {}",
                    path.display(),
                    meta.len(),
                    out.bytes
                );
            }
            if hashes && hash_file(&path)? != out.blake3 {
                bail!(
                    "{}: content hash differs from the manifest (corrupted or tampered)",
                    path.display()
                );
            }
        }
        Ok(())
    }

    pub fn headline_f64(&self, name: &str) -> Option<f64> {
        self.headline.get(name).and_then(|v| v.as_f64())
    }
}

/// Every regular file below `dir` except the manifest, as (relative `/` path, absolute path), sorted.
pub fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                if rel != MANIFEST {
                    out.push((rel, path));
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Hashes every file below `dir` into manifest output entries.
pub fn describe_outputs(dir: &Path) -> Result<Vec<OutputFile>> {
    list_files(dir)?
        .into_iter()
        .map(|(rel, path)| {
            let bytes = fs::metadata(&path)?.len();
            Ok(OutputFile {
                path: rel,
                bytes,
                blake3: hash_file(&path)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Backend;

    fn write(dir: &Path, schema: u32, device: Value) {
        let m = serde_json::json!({
            "schema": schema, "stage": "train", "identity": "train@1", "key": "k",
            "params": {}, "inputs": {}, "outputs": [], "started": "", "finished": "",
            "wall_seconds": 1.0, "host": "h", "device": device, "headline": {}
        });
        fs::write(dir.join(MANIFEST), m.to_string()).unwrap();
    }

    #[test]
    fn a_manifest_naming_paths_outside_its_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("w.bin"), "w").unwrap();
        let outside = dir.path().parent().unwrap().join("secret.bin");
        let good = serde_json::json!({
            "schema": 2, "stage": "train", "identity": "train@1", "key": "k", "params": {},
            "inputs": {"data": {"key": "a".repeat(64), "stage": "tokenize"},
                       "raw": {"key": "file:00", "paths": ["../docs/x.parquet"]}},
            "outputs": [{"path": "w.bin", "bytes": 1, "blake3": crate::hashing::hash_file(&dir.path().join("w.bin")).unwrap()}],
            "started": "", "finished": "", "wall_seconds": 1.0, "host": "h", "headline": {}
        });
        let read = |m: &Value| {
            fs::write(dir.path().join(MANIFEST), m.to_string()).unwrap();
            Manifest::read(dir.path()).map_err(|e| format!("{e:#}"))
        };
        read(&good).unwrap().verify_hashes(dir.path()).unwrap();
        // Verification joined these to the run folder and hashed whatever was there.
        for path in [
            "../secret.bin",
            outside.to_str().unwrap(),
            "",
            "a/../../b",
            "./w.bin",
        ] {
            let mut m = good.clone();
            m["outputs"][0]["path"] = path.into();
            let err = read(&m).unwrap_err();
            assert!(
                err.contains("not a valid pgolf manifest")
                    && err.contains("is not a path inside the run folder"),
                "{path}: {err}"
            );
        }
        // `export --with-deps` followed these to out/<stage>/<key>.
        for (stage, key) in [
            ("../../home", "a"),
            ("tokenize", "../x"),
            ("a/b", "k"),
            ("..", "k"),
        ] {
            let mut m = good.clone();
            m["inputs"]["data"] = serde_json::json!({"key": key, "stage": stage});
            let err = read(&m).unwrap_err();
            assert!(err.contains("input data: stage"), "{stage}/{key}: {err}");
        }
        let mut m = good.clone();
        m["inputs"]["data"]["runs"] = serde_json::json!(["b".repeat(64), "../c"]);
        assert!(read(&m).unwrap_err().contains("input data: stage"));
    }

    #[test]
    fn schema_1_manifests_with_free_form_devices_still_read() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            1,
            serde_json::json!("cuda:0 NVIDIA H100 80GB HBM3"),
        );
        let m = Manifest::read(dir.path()).unwrap();
        assert_eq!(m.device.backend, Backend::Unknown);
        assert_eq!(
            m.device.description.as_deref(),
            Some("cuda:0 NVIDIA H100 80GB HBM3")
        );

        let record = serde_json::to_value(DeviceRecord::cpu()).unwrap();
        write(dir.path(), MANIFEST_SCHEMA, record);
        assert_eq!(
            Manifest::read(dir.path()).unwrap().device,
            DeviceRecord::cpu()
        );

        write(dir.path(), 9, serde_json::json!("cpu"));
        let err = format!("{:#}", Manifest::read(dir.path()).unwrap_err());
        assert!(
            err.contains("manifest schema 9 is not one this build reads"),
            "{err}"
        );
    }
}
