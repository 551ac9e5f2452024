//! An exclusive, advisory lock on a run key, so two drivers never run the same key at once. The OS
//! releases it when the holder dies (even by SIGKILL), so a crash never leaves a stuck lock.

use anyhow::{bail, Context, Result};
use fs4::fs_std::FileExt;
use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct KeyLock {
    _file: File,
}

impl KeyLock {
    /// Waits up to `wait` for the lock at `path` (created if missing).
    pub fn acquire(path: &Path, wait: Duration) -> Result<KeyLock> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("{}: cannot open lock file", path.display()))?;
        let start = Instant::now();
        loop {
            if file.try_lock_exclusive().unwrap_or(false) {
                return Ok(KeyLock { _file: file });
            }
            if start.elapsed() >= wait {
                bail!(
                    "{}: another pipeline is running this stage key",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
