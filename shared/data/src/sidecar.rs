//! Byte sidecars `fineweb_val_bytes_%06d.bin` (REFERENCE.md §1.1, §2.4): beside each val token
//! shard made with a text-transforming tokenizer (CaseOps), the same header and one count per
//! token, that token's bytes of the original text (BOS 0, an operator piece 0). They are the only
//! true byte denominator for such shards: the lookup tables charge each operator piece its own
//! three UTF-8 bytes, which are no bytes of the original text.
//!
//! The official files hold u16 counts (the token shard's layout); u32 counts are accepted too,
//! told apart by the file size the header's count implies.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::shard::{Shard, HEADER_BYTES, SHARD_MAGIC, SHARD_VERSION};

/// The sidecar of token shard `fineweb_val_000003.bin`: `fineweb_val_bytes_000003.bin`.
pub fn sidecar_path(token_shard: &Path) -> Option<PathBuf> {
    let name = token_shard.file_name()?.to_str()?;
    let index = name.strip_prefix("fineweb_val_")?;
    Some(token_shard.with_file_name(format!("fineweb_val_bytes_{index}")))
}

/// The byte sidecars of a split's val shards: all of them, or `None` when there are none; some
/// but not all is an error.
pub fn val_sidecars(shards: &[PathBuf]) -> Result<Option<Vec<PathBuf>>> {
    let sidecars: Vec<PathBuf> = shards.iter().filter_map(|p| sidecar_path(p)).collect();
    let present = sidecars.iter().filter(|p| p.exists()).count();
    if present == 0 {
        return Ok(None);
    }
    if let Some(missing) = sidecars.iter().find(|p| !p.exists()) {
        bail!(
            "{}: missing, while {present} other val shards have byte sidecars (either every val shard has one or none does)",
            missing.display()
        );
    }
    Ok(Some(sidecars))
}

/// Reads `path` as the byte sidecar of `shard`, checking it against the shard: header, one count
/// per token, and a count of 0 at every BOS (a sidecar that does not line up with its shard
/// fails here, not as a silently wrong BPB).
pub fn read_sidecar(path: &Path, shard: &Shard, bos: u16) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{}: cannot read the byte sidecar", path.display()))?;
    let header = |i: usize| -> i32 {
        bytes
            .get(4 * i..4 * i + 4)
            .map_or(-1, |b| i32::from_le_bytes(b.try_into().unwrap()))
    };
    if bytes.len() < HEADER_BYTES || header(0) != SHARD_MAGIC || header(1) != SHARD_VERSION {
        bail!(
            "{}: not a byte sidecar (expected the token shard header: magic {SHARD_MAGIC}, version {SHARD_VERSION})",
            path.display()
        );
    }
    let n = header(2);
    if n < 0 || n as usize != shard.len() {
        bail!(
            "{}: the sidecar holds {n} counts but its token shard {} holds {} tokens",
            path.display(),
            shard.path().display(),
            shard.len()
        );
    }
    let n = n as usize;
    let payload = &bytes[HEADER_BYTES..];
    let counts: Vec<u32> = if payload.len() == 2 * n {
        payload
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
            .collect()
    } else if payload.len() == 4 * n {
        payload
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    } else {
        bail!(
            "{}: {} payload bytes fit neither {n} u16 nor {n} u32 counts (truncated or padded)",
            path.display(),
            payload.len()
        );
    };
    if let Some(i) = (0..n).find(|&i| shard.tokens()[i] == bos && counts[i] != 0) {
        bail!(
            "{}: count {} at token {i}, a BOS of {}; a BOS stands for no bytes (the sidecar does not line up with its shard)",
            path.display(),
            counts[i],
            shard.path().display()
        );
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::write_shard;

    fn shard_and_sidecar(tokens: &[u16], counts: &[u16]) -> (tempfile::TempDir, Shard, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let shard_path = dir.path().join("fineweb_val_000000.bin");
        write_shard(&shard_path, tokens).unwrap();
        let side = sidecar_path(&shard_path).unwrap();
        write_shard(&side, counts).unwrap();
        let shard = Shard::open(&shard_path).unwrap();
        (dir, shard, side)
    }

    #[test]
    fn names_the_sidecar_of_a_val_shard_only() {
        let p = Path::new("/d/fineweb_val_000007.bin");
        assert_eq!(
            sidecar_path(p).unwrap(),
            Path::new("/d/fineweb_val_bytes_000007.bin")
        );
        assert!(sidecar_path(Path::new("/d/fineweb_train_000007.bin")).is_none());
    }

    #[test]
    fn reads_u16_and_u32_counts() {
        let (_dir, shard, side) = shard_and_sidecar(&[1, 50, 60, 1, 70], &[0, 3, 1, 0, 2]);
        assert_eq!(read_sidecar(&side, &shard, 1).unwrap(), [0, 3, 1, 0, 2]);
        let mut wide = std::fs::read(&side).unwrap()[..HEADER_BYTES].to_vec();
        for c in [0u32, 70_000, 1, 0, 2] {
            wide.extend_from_slice(&c.to_le_bytes());
        }
        std::fs::write(&side, wide).unwrap();
        assert_eq!(
            read_sidecar(&side, &shard, 1).unwrap(),
            [0, 70_000, 1, 0, 2]
        );
    }

    #[test]
    fn a_sidecar_that_does_not_line_up_is_one_clear_error() {
        let (_dir, shard, side) = shard_and_sidecar(&[1, 50, 60], &[0, 3]);
        let err = format!("{:#}", read_sidecar(&side, &shard, 1).unwrap_err());
        assert!(
            err.contains("holds 2 counts") && err.contains("holds 3 tokens"),
            "{err}"
        );

        let (_dir, shard, side) = shard_and_sidecar(&[1, 50, 1], &[0, 3, 2]);
        let err = format!("{:#}", read_sidecar(&side, &shard, 1).unwrap_err());
        assert!(err.contains("a BOS stands for no bytes"), "{err}");

        let (_dir, shard, side) = shard_and_sidecar(&[1, 50], &[0, 3]);
        let mut b = std::fs::read(&side).unwrap();
        b.push(0);
        std::fs::write(&side, b).unwrap();
        let err = format!("{:#}", read_sidecar(&side, &shard, 1).unwrap_err());
        assert!(err.contains("fit neither"), "{err}");

        std::fs::write(&side, b"not a sidecar").unwrap();
        let err = format!("{:#}", read_sidecar(&side, &shard, 1).unwrap_err());
        assert!(
            err.contains("fineweb_val_bytes_000000.bin: not a byte sidecar"),
            "{err}"
        );
    }
}
