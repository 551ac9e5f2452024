//! The upstream token shard: a 1024-byte header of 256 little-endian i32 (magic 20240520, version 1,
//! token count N, the rest zero) followed by N little-endian u16 tokens. The file size must be exactly
//! 1024 + 2N. Shards written here feed the Python reference unchanged and official shards load here.

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const SHARD_MAGIC: i32 = 20240520;
pub const SHARD_VERSION: i32 = 1;
pub const HEADER_BYTES: usize = 1024;

/// A validated, memory-mapped shard.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    len: usize,
}

impl Shard {
    pub fn open(path: &Path) -> Result<Shard> {
        let file =
            File::open(path).with_context(|| format!("{}: cannot open shard", path.display()))?;
        let size = file.metadata()?.len() as usize;
        if size < HEADER_BYTES {
            bail!(
                "{}: {size} bytes is shorter than the 1024-byte shard header",
                path.display()
            );
        }
        // SAFETY: the map is read-only; shards are immutable once written (content-addressed outputs).
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("{}: cannot map", path.display()))?;
        let header: Vec<i32> = map[..12]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        if header[0] != SHARD_MAGIC {
            bail!(
                "{}: bad magic {} (expected {SHARD_MAGIC}; not a token shard)",
                path.display(),
                header[0]
            );
        }
        if header[1] != SHARD_VERSION {
            bail!(
                "{}: unsupported shard version {} (expected {SHARD_VERSION})",
                path.display(),
                header[1]
            );
        }
        if header[2] < 0 {
            bail!("{}: negative token count {}", path.display(), header[2]);
        }
        let len = header[2] as usize;
        let expected = HEADER_BYTES + 2 * len;
        if size != expected {
            bail!("{}: size {size} bytes does not match the header's {len} tokens (expected {expected}; truncated or padded)", path.display());
        }
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tokens, zero-copy (the payload starts at byte 1024 of a page-aligned map, so it is
    /// 2-byte aligned; shards are little-endian and so is every machine we target).
    pub fn tokens(&self) -> &[u16] {
        bytemuck::cast_slice(&self.map[HEADER_BYTES..HEADER_BYTES + 2 * self.len])
    }
}

/// Writes a shard atomically (temporary file, then rename).
pub fn write_shard(path: &Path, tokens: &[u16]) -> Result<()> {
    if tokens.len() >= (1usize << 31) {
        bail!(
            "{}: {} tokens do not fit a shard (< 2^31)",
            path.display(),
            tokens.len()
        );
    }
    let mut header = [0i32; 256];
    header[0] = SHARD_MAGIC;
    header[1] = SHARD_VERSION;
    header[2] = tokens.len() as i32;
    let tmp = path.with_extension("bin.partial");
    let mut file = std::io::BufWriter::new(
        File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?,
    );
    for v in header {
        file.write_all(&v.to_le_bytes())?;
    }
    for t in tokens {
        file.write_all(&t.to_le_bytes())?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    /// The split named `train` or `val`.
    pub fn from_name(name: &str) -> Option<Split> {
        match name {
            "train" => Some(Split::Train),
            "val" => Some(Split::Val),
            _ => None,
        }
    }

    /// `fineweb_train_000003.bin` etc.
    pub fn shard_name(self, index: usize) -> String {
        format!("fineweb_{}_{index:06}.bin", self.name())
    }
}

/// The shards of a split in `dir`, sorted by name. Byte sidecars (`fineweb_val_bytes_*.bin`) match
/// the upstream val glob but are not token shards, so they are left out (REFERENCE.md §1.1).
pub fn list_shards(dir: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let prefix = format!("fineweb_{}_", split.name());
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list shards", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&prefix) && name.ends_with(".bin") && !name.contains("_bytes_")
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The upstream sequential loader's stream (REFERENCE.md §1.5): shards in sorted order, concatenated,
/// wrapping to the first shard forever. No shuffling, no document alignment.
pub struct TokenStream {
    shards: Vec<Shard>,
    file: usize,
    pos: usize,
}

impl TokenStream {
    pub fn open(paths: &[PathBuf]) -> Result<TokenStream> {
        if paths.is_empty() {
            bail!("no shards to stream");
        }
        let shards = paths
            .iter()
            .map(|p| Shard::open(p))
            .collect::<Result<Vec<_>>>()?;
        if shards.iter().all(|s| s.is_empty()) {
            bail!("{}: all shards are empty", paths[0].display());
        }
        Ok(TokenStream {
            shards,
            file: 0,
            pos: 0,
        })
    }

    /// The next `n` tokens, crossing shard boundaries and wrapping at the end.
    pub fn take(&mut self, n: usize) -> Vec<u16> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let tokens = self.shards[self.file].tokens();
            if self.pos >= tokens.len() {
                self.file = (self.file + 1) % self.shards.len();
                self.pos = 0;
                continue;
            }
            let k = (n - out.len()).min(tokens.len() - self.pos);
            out.extend_from_slice(&tokens[self.pos..self.pos + k]);
            self.pos += k;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Split::Val.shard_name(0));
        write_shard(&path, &[1, 2, 65535]).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1024 + 6);
        assert_eq!(&bytes[0..4], &20240520i32.to_le_bytes());
        assert_eq!(&bytes[4..8], &1i32.to_le_bytes());
        assert_eq!(&bytes[8..12], &3i32.to_le_bytes());
        assert!(bytes[12..1024].iter().all(|&b| b == 0));
        assert_eq!(Shard::open(&path).unwrap().tokens(), &[1, 2, 65535]);
    }

    #[test]
    fn rejects_bad_shards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        write_shard(&path, &[5; 10]).unwrap();
        let good = fs::read(&path).unwrap();

        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        fs::write(&path, &bad_magic).unwrap();
        assert!(format!("{:#}", Shard::open(&path).err().unwrap()).contains("bad magic"));

        let mut bad_version = good.clone();
        bad_version[4] = 2;
        fs::write(&path, &bad_version).unwrap();
        assert!(format!("{:#}", Shard::open(&path).err().unwrap()).contains("version 2"));

        fs::write(&path, &good[..good.len() - 2]).unwrap();
        assert!(format!("{:#}", Shard::open(&path).err().unwrap()).contains("does not match"));
    }

    #[test]
    fn stream_wraps_and_lists_sorted_without_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        write_shard(&dir.path().join(Split::Train.shard_name(1)), &[3, 4]).unwrap();
        write_shard(&dir.path().join(Split::Train.shard_name(0)), &[1, 2]).unwrap();
        write_shard(&dir.path().join("fineweb_val_bytes_000000.bin"), &[9]).unwrap();
        write_shard(&dir.path().join(Split::Val.shard_name(0)), &[7]).unwrap();
        let train = list_shards(dir.path(), Split::Train).unwrap();
        assert_eq!(train.len(), 2);
        let val = list_shards(dir.path(), Split::Val).unwrap();
        assert_eq!(val, vec![dir.path().join("fineweb_val_000000.bin")]);
        let mut stream = TokenStream::open(&train).unwrap();
        assert_eq!(stream.take(3), vec![1, 2, 3]);
        assert_eq!(stream.take(3), vec![4, 1, 2]);
    }
}
