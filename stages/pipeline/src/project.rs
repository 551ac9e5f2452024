//! Where a pipeline lives: its `pipeline.yaml`, the folder raw inputs are relative to, and `out/`
//! beside it, with the driver's own bookkeeping files.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub const PIPELINE_FILE: &str = "pipeline.yaml";

pub struct Project {
    /// The YAML file as the user named it (for error messages).
    pub yaml_display: String,
    pub yaml: PathBuf,
    /// The folder holding the YAML: relative paths in it are relative to this.
    pub root: PathBuf,
    pub out: PathBuf,
}

impl Project {
    /// `file` from `-f`, else `pipeline.yaml` in the current directory.
    pub fn locate(file: Option<&Path>) -> Result<Project> {
        let given = file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(PIPELINE_FILE));
        if !given.is_file() {
            match file {
                Some(_) => bail!("{}: not found", given.display()),
                None => bail!("no {PIPELINE_FILE} in the current directory (use -f FILE)"),
            }
        }
        let yaml = std::fs::canonicalize(&given)
            .with_context(|| format!("{}: cannot resolve", given.display()))?;
        let root = yaml.parent().expect("a file has a parent").to_path_buf();
        let out = root.join("out");
        Ok(Project {
            yaml_display: given.display().to_string(),
            yaml,
            root,
            out,
        })
    }

    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.out.join(stage)
    }

    /// Where a finished run of `stage` with `key` lives.
    pub fn run_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.out.join(stage).join(key)
    }

    pub fn lock_path(&self, stage: &str, key: &str) -> PathBuf {
        self.out.join(stage).join(".locks").join(key)
    }

    /// Held shared by every driver whose plan uses the run (to run it, reuse it or read it), for
    /// the driver's whole life; `gc` removes a run only while it can hold it exclusively.
    pub fn use_lock_path(&self, stage: &str, key: &str) -> PathBuf {
        self.out
            .join(stage)
            .join(".locks")
            .join(format!("{key}.use"))
    }

    /// Memo of raw input content hashes, shared with the stages through `PGOLF_HASH_CACHE`.
    pub fn hash_cache(&self) -> PathBuf {
        self.out.join(".hash-cache.json")
    }

    /// Memo of `<exe> --identity`, so a no-op run spawns nothing.
    pub fn identity_cache(&self) -> PathBuf {
        self.out.join(".identity-cache.json")
    }

    /// Which key each node last ran or reused with, per profile (for `status` explanations).
    pub fn last_runs(&self) -> PathBuf {
        self.out.join(".last-runs.json")
    }

    /// A path from pipeline.yaml: relative to its folder.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

/// A well-formed run key: 64 lowercase hex digits.
pub fn is_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The first 8 hex digits, for status lines. Keys also come from manifests and folder names, so
/// the cut is by characters: a key that is not hex must not panic the driver (fuzz/).
pub fn short(key: &str) -> &str {
    key.char_indices().nth(8).map_or(key, |(i, _)| &key[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cuts_keys_by_characters() {
        assert_eq!(short(&"ab".repeat(32)), "abababab");
        assert_eq!(short("abc"), "abc");
        // A manifest's key or a folder under out/ need not be hex: no panic inside a character.
        assert_eq!(short("ééééééééé"), "éééééééé");
        assert_eq!(short("abcdefgé"), "abcdefgé");
    }
}
