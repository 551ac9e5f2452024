//! Raw inputs (`{file: PATH}`, `{files: [PATH or glob, ...]}`): the paths handed to the stage and
//! their key, by the very function the stage keys its `--in` arguments with
//! ([`pgolf_store::input_key`]: content hashes through the shared memo; a path that holds a
//! finished stage output is keyed by its run key).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use pgolf_store::hashing::HashCache;
use pgolf_store::input_key;

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
    let key = input_key(&paths, Some(cache))?.key;
    Ok(RawInput { shown, paths, key })
}
