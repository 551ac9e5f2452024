//! Raw inputs (`{file: PATH}`, `{files: [PATH or glob, ...]}`): the paths handed to the stage and
//! their key, computed exactly as the stage computes it from its `--in` arguments (content hashes
//! through the shared memo; a path that holds a finished stage output is keyed by its run key).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use pgolf_store::hashing::HashCache;
use pgolf_store::key::{raw_input_key, runs_key};
use pgolf_store::stage::{content_hash, INCOMPLETE_MARKER};
use pgolf_store::{Manifest, MANIFEST_FILE};

use crate::project::Project;

#[derive(Clone)]
pub struct RawInput {
    /// As written in pipeline.yaml (after glob expansion), for messages.
    pub shown: Vec<String>,
    /// Absolute (or yaml-relative, joined) paths handed to the stage.
    pub paths: Vec<PathBuf>,
    pub key: String,
}

/// Expands `patterns` (relative to the yaml's folder; globs sorted) into existing paths.
pub fn expand(project: &Project, patterns: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for pattern in patterns {
        if pattern.contains(['*', '?', '[']) {
            let full = project.resolve(pattern);
            let matches = glob::glob(&full.to_string_lossy())
                .with_context(|| format!("{pattern}: bad glob"))?;
            let mut found: Vec<PathBuf> = matches
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("{pattern}: cannot list"))?;
            if found.is_empty() {
                bail!("{pattern}: no file matches");
            }
            found.sort();
            for path in found {
                let shown = path
                    .strip_prefix(&project.root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| path.display().to_string());
                out.push((shown, path));
            }
        } else {
            let path = project.resolve(pattern);
            if !path.exists() {
                bail!("{pattern}: not found");
            }
            out.push((pattern.clone(), path));
        }
    }
    if out.is_empty() {
        bail!("empty file list");
    }
    Ok(out)
}

pub fn resolve(project: &Project, patterns: &[String], cache: &HashCache) -> Result<RawInput> {
    let expanded = expand(project, patterns)?;
    let (shown, paths): (Vec<String>, Vec<PathBuf>) = expanded.into_iter().unzip();
    let with_manifest = paths
        .iter()
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .count();
    let key = if with_manifest == paths.len() {
        let mut keys = Vec::new();
        for (path, shown) in paths.iter().zip(&shown) {
            let manifest = Manifest::read(path).with_context(|| shown.clone())?;
            manifest.verify_sizes(path).with_context(|| shown.clone())?;
            keys.push(manifest.key);
        }
        runs_key(&keys)
    } else if with_manifest > 0 {
        bail!("mixes stage outputs and raw files");
    } else {
        let mut hashes = Vec::new();
        for (path, shown) in paths.iter().zip(&shown) {
            if path.is_dir() && path.join(INCOMPLETE_MARKER).exists() {
                bail!("{shown}: an unfinished stage output (no manifest)");
            }
            hashes.push(content_hash(path, Some(cache)).with_context(|| shown.clone())?);
        }
        raw_input_key(&hashes)
    };
    Ok(RawInput { shown, paths, key })
}
