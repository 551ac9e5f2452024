//! Content hashes (BLAKE3) of files. Hashing gigabytes of shards on every `pipeline status` would be
//! slow, so results are memoised in a small JSON cache keyed by path + size + mtime; a file whose
//! size or mtime changed is always re-hashed (the cache never decides freshness on mtime alone).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

/// BLAKE3 of a file's bytes (hex).
pub fn hash_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("{}: read failed", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct Entry {
    size: u64,
    mtime_ns: u128,
    blake3: String,
}

/// A memo of file hashes stored at `path` (e.g. `out/.hash-cache.json`).
pub struct HashCache {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    dirty: Mutex<bool>,
}

impl HashCache {
    pub fn open(path: &Path) -> Self {
        let entries = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
        }
    }

    pub fn hash(&self, file: &Path) -> Result<String> {
        let abs =
            fs::canonicalize(file).with_context(|| format!("{}: not found", file.display()))?;
        let meta =
            fs::metadata(&abs).with_context(|| format!("{}: cannot stat", file.display()))?;
        let mtime_ns = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = abs.to_string_lossy().to_string();
        if let Some(e) = self.entries.lock().unwrap().get(&name) {
            if e.size == meta.len() && e.mtime_ns == mtime_ns {
                return Ok(e.blake3.clone());
            }
        }
        let blake3 = hash_file(&abs)?;
        self.entries.lock().unwrap().insert(
            name,
            Entry {
                size: meta.len(),
                mtime_ns,
                blake3: blake3.clone(),
            },
        );
        *self.dirty.lock().unwrap() = true;
        Ok(blake3)
    }

    /// Writes the memo back (atomically) if anything was added.
    pub fn save(&self) -> Result<()> {
        if !*self.dirty.lock().unwrap() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&*self.entries.lock().unwrap())?;
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        write_atomic(&self.path, &bytes)
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so readers never see a
/// partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot rename into place", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_rehashes_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        fs::write(&file, b"one").unwrap();
        let cache = HashCache::open(&dir.path().join("cache.json"));
        let h1 = cache.hash(&file).unwrap();
        assert_eq!(h1, blake3::hash(b"one").to_hex().to_string());
        fs::write(&file, b"two!").unwrap(); // new size: must not come from the memo
        assert_eq!(
            cache.hash(&file).unwrap(),
            blake3::hash(b"two!").to_hex().to_string()
        );
        cache.save().unwrap();
        let reopened = HashCache::open(&dir.path().join("cache.json"));
        assert_eq!(
            reopened.hash(&file).unwrap(),
            blake3::hash(b"two!").to_hex().to_string()
        );
    }
}
