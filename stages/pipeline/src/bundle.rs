//! The bundle format: a zstd-compressed tar whose first entry, `pgolf-bundle.json`, lists the runs
//! it carries (`stage/key`), followed by each run directory as `stage/key/...`. The index lets an
//! importer tell a truncated bundle (runs missing) from a complete one.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use pgolf_store::Manifest;

use crate::project::{is_key, Project};

pub const INDEX_FILE: &str = "pgolf-bundle.json";
pub const FORMAT: &str = "pgolf-bundle-v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: String,
    /// `stage/key` of every run in the bundle.
    pub runs: Vec<String>,
}

/// A stage name as it may appear in `out/`: no path tricks.
pub fn is_stage_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Splits `stage/key`, checking both parts are well-formed.
pub fn split_run(run: &str) -> Result<(&str, &str)> {
    match run.split_once('/') {
        Some((stage, key)) if is_stage_name(stage) && is_key(key) => Ok((stage, key)),
        _ => bail!("'{run}' is not a run (stage/64-hex-key)"),
    }
}

/// `root` and every run it was computed from (following manifest inputs that name a stage), each
/// as (stage, key), root first. Every run must be present and intact (sizes).
pub fn upstream_runs(project: &Project, root: (String, String)) -> Result<Vec<(String, String)>> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some((stage, key)) = todo.pop() {
        if !seen.insert((stage.clone(), key.clone())) {
            continue;
        }
        let dir = project.run_dir(&stage, &key);
        let manifest = Manifest::read(&dir)
            .with_context(|| format!("run {stage}/{key} is not in {}", project.out.display()))?;
        manifest.verify_sizes(&dir)?;
        for input in manifest.inputs.values() {
            let Some(up) = &input.stage else { continue };
            let keys = if input.runs.is_empty() {
                vec![input.key.clone()]
            } else {
                input.runs.clone()
            };
            todo.extend(keys.into_iter().map(|k| (up.clone(), k)));
        }
        order.push((stage, key));
    }
    Ok(order)
}
