//! The key of one named input (docs/CONTRACT.md "Run key"), computed here only: a stage computes
//! it from its `--in NAME=PATH` arguments and the `pipeline` driver from `pipeline.yaml` before it
//! runs the stage, and the driver refuses a run whose manifest key differs from its own.
//!
//! - every path a finished stage output (holds `manifest.json`): the run key, or for a list the
//!   hash of their run keys in order ([`runs_key`]); each manifest is read and its files' sizes
//!   checked;
//! - every path a raw file or directory: its content hash, or for a list the hash of theirs in
//!   order ([`raw_input_key`]), through the shared hash memo when given;
//! - a mix of the two, or a directory left unfinished by a killed run, is an error.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use crate::files::MANIFEST;
use crate::hashing::HashCache;
use crate::key::{raw_input_key, runs_key};
use crate::manifest::Manifest;
use crate::stage::{content_hash, INCOMPLETE_MARKER};

/// What an input's paths are, with their key.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub key: String,
    /// The manifests of stage outputs, in the order of the paths (empty for raw inputs).
    pub manifests: Vec<Manifest>,
}

/// The key of one input given as `paths` (in order; at least one). Errors name the path.
pub fn input_key(paths: &[PathBuf], cache: Option<&HashCache>) -> Result<Keyed> {
    if paths.is_empty() {
        bail!("no path given");
    }
    for p in paths {
        if !p.exists() {
            bail!("{}: not found", p.display());
        }
    }
    let with_manifest = paths.iter().filter(|p| p.join(MANIFEST).is_file()).count();
    if with_manifest == paths.len() {
        let mut manifests = Vec::new();
        for p in paths {
            let manifest = Manifest::read(p)?;
            manifest.verify_sizes(p)?;
            manifests.push(manifest);
        }
        let key = runs_key(&manifests.iter().map(|m| m.key.clone()).collect::<Vec<_>>());
        return Ok(Keyed { key, manifests });
    }
    if with_manifest > 0 {
        bail!("mixes stage outputs and raw files");
    }
    let mut hashes = Vec::new();
    for p in paths {
        if p.is_dir() && p.join(INCOMPLETE_MARKER).exists() {
            bail!(
                "{} is an unfinished stage output (no manifest)",
                p.display()
            );
        }
        hashes.push(content_hash(p, cache).with_context(|| p.display().to_string())?);
    }
    Ok(Keyed {
        key: raw_input_key(&hashes),
        manifests: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::run_key;
    use std::fs;

    fn finished_run(dir: &std::path::Path, key: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("w.txt"), "w").unwrap();
        let manifest = serde_json::json!({
            "schema": crate::MANIFEST_SCHEMA, "stage": "s", "identity": "s@1", "key": key,
            "params": {}, "inputs": {},
            "outputs": crate::manifest::describe_outputs(dir).unwrap(),
            "started": "", "finished": "", "wall_seconds": 0.0, "host": "h",
            "device": "cpu", "headline": {}
        });
        fs::write(dir.join(MANIFEST), manifest.to_string()).unwrap();
    }

    #[test]
    fn raw_files_runs_and_mixtures() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.txt"), tmp.path().join("b.txt"));
        fs::write(&a, "one").unwrap();
        fs::write(&b, "two").unwrap();
        let one = input_key(std::slice::from_ref(&a), None).unwrap();
        assert_eq!(one.key, format!("file:{}", blake3::hash(b"one").to_hex()));
        let two = input_key(&[a.clone(), b.clone()], None).unwrap();
        assert!(two.key.starts_with("files:") && two.manifests.is_empty());
        assert_ne!(
            two.key,
            input_key(&[b.clone(), a.clone()], None).unwrap().key
        );

        let (r1, r2) = (tmp.path().join("r1"), tmp.path().join("r2"));
        let k1 = run_key("s", "s@1", &serde_json::json!({}), &Default::default(), 1);
        finished_run(&r1, &k1);
        finished_run(&r2, &"2".repeat(64));
        let run = input_key(std::slice::from_ref(&r1), None).unwrap();
        assert_eq!((run.key.as_str(), run.manifests.len()), (k1.as_str(), 1));
        let runs = input_key(&[r1.clone(), r2.clone()], None).unwrap();
        assert!(runs.key.starts_with("runs:") && runs.manifests.len() == 2);

        let mixed = input_key(&[r1, a], None).unwrap_err();
        assert!(format!("{mixed:#}").contains("mixes stage outputs and raw files"));
        let unfinished = tmp.path().join("u");
        fs::create_dir_all(&unfinished).unwrap();
        fs::write(unfinished.join(INCOMPLETE_MARKER), "").unwrap();
        let err = input_key(&[unfinished], None).unwrap_err();
        assert!(format!("{err:#}").contains("unfinished stage output"));
        assert!(input_key(&[tmp.path().join("nope")], None).is_err());
    }
}
