//! Is a run already there? A run is fresh when `out/<stage>/<key>/` holds a manifest that names
//! that stage and key and every listed file has its recorded size (hashes are checked on import;
//! sizes are cheap enough for every no-op run).

use std::path::Path;

use pgolf_store::Manifest;

use crate::project::Project;

pub enum RunState {
    Fresh(Box<Manifest>),
    Missing,
    /// The directory exists but is not a valid run of that key (the reason).
    Damaged(String),
}

impl RunState {
    pub fn is_fresh(&self) -> bool {
        matches!(self, RunState::Fresh(_))
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        match self {
            RunState::Fresh(m) => Some(m),
            _ => None,
        }
    }
}

pub fn check(project: &Project, stage: &str, key: &str) -> RunState {
    let dir = project.run_dir(stage, key);
    if !dir.exists() {
        return RunState::Missing;
    }
    match verified(&dir, stage, key) {
        Ok(m) => RunState::Fresh(Box::new(m)),
        Err(e) => RunState::Damaged(format!("{e:#}")),
    }
}

fn verified(dir: &Path, stage: &str, key: &str) -> anyhow::Result<Manifest> {
    let manifest = Manifest::read(dir)?;
    if manifest.stage != stage || manifest.key != key {
        anyhow::bail!(
            "{}: its manifest names {}/{}",
            dir.display(),
            manifest.stage,
            manifest.key
        );
    }
    manifest.verify_sizes(dir)?;
    Ok(manifest)
}
