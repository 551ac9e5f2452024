//! Stage identities (`<exe> --identity`, `name@hash`), memoised in `out/.identity-cache.json` by
//! executable path + size + mtime + ctime + inode (a rebuilt binary gets a new inode or ctime even
//! when its size and mtime match), so a run where nothing changed spawns no process at all. A memo
//! that still lies can only make the driver's key differ from the one the stage writes, which the
//! driver refuses (and then drops this memo).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgolf_store::hashing::{now_ns, write_atomic, Stamp};

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct Entry {
    stamp: Stamp,
    /// When the identity was asked (ns since the epoch): an entry made while the executable was
    /// still being written is not trusted.
    asked_ns: i128,
    identity: String,
}

pub struct Identities {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
    dirty: bool,
}

impl Identities {
    pub fn open(path: &Path) -> Identities {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Identities {
            path: path.to_path_buf(),
            entries,
            dirty: false,
        }
    }

    /// The identity of the executable at `exe` (absolute).
    pub fn of(&mut self, exe: &Path) -> Result<String> {
        let meta = std::fs::metadata(exe)
            .with_context(|| format!("executable {} not found", exe.display()))?;
        let stamp = Stamp::of(&meta);
        let name = exe.to_string_lossy().to_string();
        if let Some(e) = self.entries.get(&name) {
            if e.stamp == stamp && stamp.settled_at(e.asked_ns) && stage_name(&e.identity).is_some()
            {
                return Ok(e.identity.clone());
            }
        }
        let asked_ns = now_ns();
        let identity = ask(exe)?;
        self.entries.insert(
            name,
            Entry {
                stamp,
                asked_ns,
                identity: identity.clone(),
            },
        );
        self.dirty = true;
        Ok(identity)
    }

    pub fn save(&self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_atomic(&self.path, &serde_json::to_vec_pretty(&self.entries)?)
    }
}

fn ask(exe: &Path) -> Result<String> {
    let out = Command::new(exe)
        .arg("--identity")
        .output()
        .with_context(|| format!("{}: cannot run", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || stage_name(&text).is_none() {
        bail!(
            "{} --identity printed {text:?}: not a pgolf stage (expected name@hash)",
            exe.display()
        );
    }
    Ok(text)
}

/// The stage name of an identity `name@hash` (the name outputs are stored under, `out/<name>/`).
pub fn stage_name(identity: &str) -> Option<&str> {
    let (name, hash) = identity.split_once('@')?;
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (plain(name) && plain(hash)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_name_of_identity() {
        assert_eq!(stage_name("ttt-eval@0123abcd"), Some("ttt-eval"));
        assert_eq!(stage_name("no-hash"), None);
        assert_eq!(stage_name("../x@1"), None);
        assert_eq!(stage_name("@1"), None);
    }
}
