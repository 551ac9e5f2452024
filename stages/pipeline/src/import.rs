//! `pipeline import FILE.tar.zst`: unpack into a temp dir under `out/`, verify every run fully
//! (index complete, key well-formed and equal to the hash of the manifest's own stage, identity,
//! params and inputs, every file's BLAKE3, nothing unlisted), then rename the runs into place.
//! Anything wrong refuses the whole bundle and leaves nothing behind.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use pgolf_store::lock::KeyLock;
use pgolf_store::{run_key, Manifest};

use crate::bundle::{split_run, Index, FORMAT, INDEX_FILE};
use crate::freshness::check;
use crate::project::{short, Project};

pub fn import(project: &Project, bundle: &Path) -> Result<()> {
    std::fs::create_dir_all(&project.out)
        .with_context(|| format!("{}: cannot create", project.out.display()))?;
    let pid = std::process::id();
    // gc removes an import's staging dir only when this lock is free (the importer died).
    let lock_path = project.out.join(".locks").join(format!("import-{pid}"));
    let lock = KeyLock::acquire(&lock_path, Duration::ZERO)?;
    let staging = Staging(project.out.join(format!(".import-{pid}")));
    let result = unpack(bundle, &staging.0)
        .with_context(|| format!("{}: not a complete pgolf bundle", bundle.display()))
        .and_then(|_| verify(&staging.0).with_context(|| format!("{}: refused", bundle.display())))
        .and_then(|runs| place(project, &staging.0, &runs));
    drop(staging);
    drop(lock);
    let _ = std::fs::remove_file(&lock_path);
    result
}

/// Removed when dropped, whatever happened.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unpack(bundle: &Path, staging: &Path) -> Result<()> {
    let file = File::open(bundle).context("cannot open")?;
    std::fs::create_dir_all(staging)?;
    let mut archive = tar::Archive::new(zstd::Decoder::new(file)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let path = entry.path()?.to_path_buf();
        if !(kind.is_file() || kind.is_dir()) {
            bail!("entry {} is not a plain file or folder", path.display());
        }
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            bail!("entry {} has an unsafe path", path.display());
        }
        if !entry.unpack_in(staging)? {
            bail!("entry {} would land outside the bundle", path.display());
        }
    }
    // Read to the end of the compressed stream: a cut-off frame is an error here.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
    Ok(())
}

/// Checks the staged bundle; returns its runs as (stage, key).
fn verify(staging: &Path) -> Result<Vec<(String, String)>> {
    let index_path = staging.join(INDEX_FILE);
    let index: Index = serde_json::from_slice(
        &std::fs::read(&index_path).context("no index (pgolf-bundle.json)")?,
    )
    .context("bad index")?;
    if index.format != FORMAT {
        bail!("format {} is not {FORMAT}", index.format);
    }
    let mut runs = Vec::new();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for run in &index.runs {
        let (stage, key) = split_run(run)?;
        let dir = staging.join(stage).join(key);
        let manifest = Manifest::read(&dir)
            .with_context(|| format!("run {run} is missing or has no manifest"))?;
        if manifest.stage != stage || manifest.key != key {
            bail!(
                "run {run}: its manifest names {}/{}",
                manifest.stage,
                manifest.key
            );
        }
        let input_keys = manifest
            .inputs
            .iter()
            .map(|(n, i)| (n.clone(), i.key.clone()))
            .collect();
        if run_key(
            &manifest.stage,
            &manifest.identity,
            &manifest.params,
            &input_keys,
            manifest.device.world_size,
        ) != key
        {
            bail!("run {run}: its manifest does not hash to its key (edited?)");
        }
        manifest
            .verify_hashes(&dir)
            .with_context(|| format!("run {run}"))?;
        expected
            .entry(stage.to_string())
            .or_default()
            .insert(key.to_string());
        runs.push((stage.to_string(), key.to_string()));
    }
    for entry in std::fs::read_dir(staging)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == INDEX_FILE {
            continue;
        }
        let Some(keys) = expected.get(&name) else {
            bail!("{name} is not listed in the index")
        };
        for run in std::fs::read_dir(entry.path())?.flatten() {
            let key = run.file_name().to_string_lossy().to_string();
            if !keys.contains(&key) {
                bail!("{name}/{key} is not listed in the index");
            }
        }
    }
    Ok(runs)
}

fn place(project: &Project, staging: &Path, runs: &[(String, String)]) -> Result<()> {
    for (stage, key) in runs {
        let _lock = KeyLock::acquire(&project.lock_path(stage, key), Duration::from_secs(600))?;
        if check(project, stage, key).is_fresh() {
            println!("already present {stage}/{}", short(key));
            continue;
        }
        let target = project.run_dir(stage, key);
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .with_context(|| format!("{}: cannot replace a damaged run", target.display()))?;
        }
        std::fs::rename(staging.join(stage).join(key), &target)
            .with_context(|| format!("{}: cannot move into place", target.display()))?;
        println!("imported {stage}/{}", short(key));
    }
    Ok(())
}
