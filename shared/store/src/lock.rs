//! An exclusive, advisory lock on a run key, so two drivers never run the same key at once. The OS
//! releases it when the holder dies (even by SIGKILL), so a crash never leaves a stuck lock.

use anyhow::{bail, Context, Result};
use fs4::fs_std::FileExt;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
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

    /// Whether some process holds the lock at `path` now (a missing lock file is not held). Opens
    /// read-only and creates nothing, so it works on a read-only `out/`.
    pub fn is_held(path: &Path) -> Result<bool> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(e).with_context(|| format!("{}: cannot open lock file", path.display()))
            }
        };
        let free = FileExt::try_lock_shared(&file).unwrap_or(false);
        if free {
            let _ = FileExt::unlock(&file);
        }
        Ok(!free)
    }

    /// A shared lock: any number of holders at once, while [`KeyLock::acquire`] (exclusive) waits
    /// for all of them. Blocks until granted. On a read-only file system an existing lock file is
    /// locked through a read-only handle, and a missing one is [`LockError::ReadOnly`] (nobody can
    /// remove anything there, so there is nothing to guard against).
    pub fn shared(path: &Path) -> Result<KeyLock, LockError> {
        let opened = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
            });
        let file = match opened {
            Ok(file) => file,
            Err(e) if is_read_only(&e) => File::open(path).map_err(|_| LockError::ReadOnly)?,
            Err(e) => return Err(LockError::Io(path.to_path_buf(), e)),
        };
        FileExt::lock_shared(&file).map_err(|e| LockError::Io(path.to_path_buf(), e))?;
        Ok(KeyLock { _file: file })
    }
}

fn is_read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied
    )
}

#[derive(Debug)]
pub enum LockError {
    /// The lock file cannot be created: the file system (or folder) is read-only.
    ReadOnly,
    Io(std::path::PathBuf, std::io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::ReadOnly => write!(f, "read-only: no lock file can be created"),
            LockError::Io(path, e) => write!(f, "{}: cannot lock: {e}", path.display()),
        }
    }
}

impl std::error::Error for LockError {}
