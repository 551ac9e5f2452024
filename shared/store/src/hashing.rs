//! Content hashes (BLAKE3) of files. Hashing gigabytes of shards on every `pipeline status` would be
//! slow, so results are memoised in a small JSON cache keyed by path + size + mtime + ctime + inode
//! (as git's index does): a file whose size, mtime, ctime or inode changed is always re-hashed, so a
//! file edited with its mtime put back (`touch -r`) is caught by its ctime, which no user call can set.
//! An entry made within [`RACY_WINDOW`] of the file's last change is not trusted either (a write in
//! the same timestamp tick as the hashing would leave every stamp unchanged). The memo is only for
//! planning: a stage re-hashes its own raw inputs ([`HashCache::refreshing`]), so a memo that lies
//! can make the driver's key differ from the stage's (refused), never publish a wrong key.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Entries hashed less than this after the file's last change are re-hashed next time.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

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

/// What identifies one version of a file without reading it.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub dev: u64,
    pub ino: u64,
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        let ns = |secs: i64, nsec: i64| secs as i128 * 1_000_000_000 + nsec as i128;
        Stamp {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// Whether a record of this stamp made at `recorded_ns` can be trusted later: the file had
    /// stopped changing [`RACY_WINDOW`] before.
    pub fn settled_at(&self, recorded_ns: i128) -> bool {
        self.mtime_ns.max(self.ctime_ns) + (RACY_WINDOW.as_nanos() as i128) < recorded_ns
    }
}

/// Now, in ns since the epoch (the clock the file stamps use).
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct Entry {
    stamp: Stamp,
    /// When the hash was taken (ns since the epoch).
    hashed_ns: i128,
    blake3: String,
}

/// A memo of file hashes stored at `path` (e.g. `out/.hash-cache.json`).
pub struct HashCache {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    dirty: Mutex<bool>,
    /// Whether a matching entry is used (planning) or every file is hashed again (a stage).
    trust: bool,
}

impl HashCache {
    /// Opens the memo at `path`; a missing, truncated or unreadable memo is an empty one.
    pub fn open(path: &Path) -> Self {
        let entries = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
            trust: true,
        }
    }

    /// The memo as a stage uses it: every file is hashed (a stage reads its raw inputs anyway, and
    /// the key it publishes must not rest on a memo), and the fresh hashes are written back so the
    /// driver's next plan agrees.
    pub fn refreshing(path: &Path) -> Self {
        HashCache {
            trust: false,
            ..HashCache::open(path)
        }
    }

    pub fn hash(&self, file: &Path) -> Result<String> {
        let abs =
            fs::canonicalize(file).with_context(|| format!("{}: not found", file.display()))?;
        let meta =
            fs::metadata(&abs).with_context(|| format!("{}: cannot stat", file.display()))?;
        let stamp = Stamp::of(&meta);
        let name = abs.to_string_lossy().to_string();
        if self.trust {
            if let Some(e) = self.entries.lock().unwrap().get(&name) {
                if e.stamp == stamp && stamp.settled_at(e.hashed_ns) && is_hex_hash(&e.blake3) {
                    return Ok(e.blake3.clone());
                }
            }
        }
        let hashed_ns = now_ns();
        let blake3 = hash_file(&abs)?;
        // Changed while we read it: the hash may mix two versions; use it, never memoise it.
        let after = fs::metadata(&abs).map(|m| Stamp::of(&m)).ok();
        let entry = Entry {
            stamp,
            hashed_ns,
            blake3: blake3.clone(),
        };
        let mut entries = self.entries.lock().unwrap();
        if after == Some(stamp) {
            if entries.get(&name) != Some(&entry) {
                entries.insert(name, entry);
                *self.dirty.lock().unwrap() = true;
            }
        } else if entries.remove(&name).is_some() {
            *self.dirty.lock().unwrap() = true;
        }
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

fn is_hex_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
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

    /// A memo entry whose size and mtime still match a file that was edited (mtime put back, as
    /// `touch -r` does), or whose hash was edited, or a memo cut short: never believed.
    #[test]
    fn cache_never_believes_a_lying_or_truncated_memo() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        let memo = dir.path().join("cache.json");
        fs::write(&file, b"one").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let cache = HashCache::open(&memo);
        assert_eq!(
            cache.hash(&file).unwrap(),
            blake3::hash(b"one").to_hex().to_string()
        );
        cache.save().unwrap();
        let saved: BTreeMap<String, Entry> =
            serde_json::from_slice(&fs::read(&memo).unwrap()).unwrap();
        let entry = saved.values().next().unwrap().clone();
        // Same content, but a recent ctime would be "racy": the file settled a minute before.
        assert!(!entry.stamp.settled_at(entry.hashed_ns));

        // Make the entry look settled, then edit the file and put its mtime back.
        let mut settled = saved.clone();
        for e in settled.values_mut() {
            e.hashed_ns = e.stamp.ctime_ns + 10 * RACY_WINDOW.as_nanos() as i128;
        }
        fs::write(&memo, serde_json::to_vec(&settled).unwrap()).unwrap();
        assert_eq!(
            HashCache::open(&memo).hash(&file).unwrap(),
            blake3::hash(b"one").to_hex().to_string(),
            "a settled entry is used"
        );
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&file, b"two").unwrap(); // same size
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let now = fs::metadata(&file).unwrap();
        assert_eq!(
            (now.len(), Stamp::of(&now).mtime_ns),
            (entry.stamp.size, entry.stamp.mtime_ns)
        );
        assert_eq!(
            HashCache::open(&memo).hash(&file).unwrap(),
            blake3::hash(b"two").to_hex().to_string(),
            "size and mtime kept, content changed: re-hashed (ctime)"
        );

        // A memo whose hash was edited, with every stamp right: a planning memo believes it,
        // a stage's does not.
        let mut lying = settled.clone();
        for e in lying.values_mut() {
            e.stamp = Stamp::of(&now);
            e.hashed_ns = e.stamp.ctime_ns + 10 * RACY_WINDOW.as_nanos() as i128;
            e.blake3 = "0".repeat(64);
        }
        fs::write(&memo, serde_json::to_vec(&lying).unwrap()).unwrap();
        assert_eq!(HashCache::open(&memo).hash(&file).unwrap(), "0".repeat(64));
        let stage = HashCache::refreshing(&memo);
        assert_eq!(
            stage.hash(&file).unwrap(),
            blake3::hash(b"two").to_hex().to_string()
        );
        stage.save().unwrap();
        assert_eq!(
            HashCache::open(&memo).hash(&file).unwrap(),
            blake3::hash(b"two").to_hex().to_string(),
            "the stage's fresh hash replaced the lie"
        );

        // Truncated memos read as empty.
        let bytes = fs::read(&memo).unwrap();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            fs::write(&memo, &bytes[..cut]).unwrap();
            assert_eq!(
                HashCache::open(&memo).hash(&file).unwrap(),
                blake3::hash(b"two").to_hex().to_string()
            );
        }
    }
}
