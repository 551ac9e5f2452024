//! `out/.last-runs.json`: the key each node (per profile) last ran or reused with. Several nodes
//! may share a stage (`eval-flat` and `eval-sliding` both store under `out/ttt-eval/`), so the
//! newest run of the stage is not necessarily the node's; `status` uses this to explain a change
//! against the node's own previous run (or, after a profile switch, its run under another profile).

use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

use pgolf_store::hashing::write_atomic;

use crate::project::Project;

pub struct LastRuns {
    path: PathBuf,
    updates: BTreeMap<String, String>,
}

fn entry(profile: Option<&str>, node: &str) -> String {
    format!("{}/{node}", profile.unwrap_or("-"))
}

impl LastRuns {
    pub fn new(project: &Project) -> LastRuns {
        LastRuns {
            path: project.last_runs(),
            updates: BTreeMap::new(),
        }
    }

    fn read(&self) -> BTreeMap<String, String> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The keys `node` last had: under `profile` first, then under the other profiles.
    pub fn get(&self, profile: Option<&str>, node: &str) -> Vec<String> {
        let all = self.read();
        let mine = all.get(&entry(profile, node)).cloned();
        let others = all
            .iter()
            .filter(|(k, _)| k.rsplit_once('/').is_some_and(|(_, n)| n == node))
            .map(|(_, v)| v.clone());
        mine.into_iter().chain(others).collect()
    }

    pub fn record(&mut self, profile: Option<&str>, node: &str, key: &str) {
        self.updates.insert(entry(profile, node), key.to_string());
    }

    /// Merges this run's records into the file (re-read first: other drivers may have written).
    pub fn save(&self) -> Result<()> {
        if self.updates.is_empty() {
            return Ok(());
        }
        let mut all = self.read();
        let before = all.clone();
        all.extend(self.updates.clone());
        if all == before {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomic(&self.path, &serde_json::to_vec_pretty(&all)?)
    }
}
