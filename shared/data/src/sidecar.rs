//! Byte sidecars `fineweb_val_bytes_%06d.bin` (REFERENCE.md §1.1, §2.4): beside each val token
//! shard made with a text-transforming tokenizer (CaseOps), the same header and one count per
//! token, that token's bytes of the original text (BOS 0, an operator piece 0). They are the only
//! true byte denominator for such shards: the lookup tables charge each operator piece its own
//! three UTF-8 bytes, which are no bytes of the original text.
//!
//! The format is the token shard's exactly: every upstream writer (`prepare_caseops_data.py` of
//! the CaseOps records, R0427 and its PR #1729 lineage; `download_hf_docs_and_tokenize.py` of
//! PR1626) stores the counts as u16 (`<u2`) under the header's count N, and every upstream
//! reader loads them with the token-shard loader, which requires a file of exactly 1024 + 2N
//! bytes. So that is what is read and written here; anything else is an error naming the file.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::shard::{write_shard, Shard, HEADER_BYTES, SHARD_MAGIC, SHARD_VERSION};

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
    if payload.len() != 2 * n {
        let wide = if payload.len() == 4 * n && n > 0 {
            " (that is 4 bytes a count: the official sidecar holds u16 counts)"
        } else if payload.len() < 2 * n {
            " (truncated)"
        } else {
            " (padded)"
        };
        bail!(
            "{}: {} payload bytes for the header's {n} counts; an official sidecar is 1024 + 2·{n} bytes, one u16 per token{wide}",
            path.display(),
            payload.len()
        );
    }
    let counts: Vec<u32> = payload
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
        .collect();
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

/// Writes a byte sidecar in the official format (the token shard's: header, one u16 per token),
/// atomically. A count over 65,535 does not fit and is an error, never cut.
pub fn write_sidecar(path: &Path, counts: &[u32]) -> Result<()> {
    let narrow: Vec<u16> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            u16::try_from(c).map_err(|_| {
                anyhow::anyhow!(
                    "{}: token {i} stands for {c} bytes, more than a u16 sidecar count holds",
                    path.display()
                )
            })
        })
        .collect::<Result<_>>()?;
    write_shard(path, &narrow)
}

/// The byte counts of a split's val stream from its sidecars (`shards` in stream order), checked
/// against each shard; `None` when the shards have no sidecars.
pub fn read_val_sidecars(shards: &[PathBuf], bos: u16) -> Result<Option<Vec<u32>>> {
    let Some(sidecars) = val_sidecars(shards)? else {
        return Ok(None);
    };
    let mut counts = Vec::new();
    for (path, side) in shards.iter().zip(&sidecars) {
        counts.extend(read_sidecar(side, &Shard::open(path)?, bos)?);
    }
    Ok(Some(counts))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn reads_official_u16_counts_and_refuses_wider_ones() {
        let (_dir, shard, side) = shard_and_sidecar(&[1, 50, 60, 1, 70], &[0, 3, 1, 0, 2]);
        assert_eq!(read_sidecar(&side, &shard, 1).unwrap(), [0, 3, 1, 0, 2]);
        // The same counts as u32 under the same header: no upstream tool writes or reads that.
        let mut wide = std::fs::read(&side).unwrap()[..HEADER_BYTES].to_vec();
        for c in [0u32, 3, 1, 0, 2] {
            wide.extend_from_slice(&c.to_le_bytes());
        }
        std::fs::write(&side, wide).unwrap();
        let err = format!("{:#}", read_sidecar(&side, &shard, 1).unwrap_err());
        assert!(
            err.contains("fineweb_val_bytes_000000.bin")
                && err.contains("one u16 per token")
                && err.contains("4 bytes a count"),
            "{err}"
        );
    }

    #[test]
    fn writes_the_official_format_and_refuses_counts_over_u16() {
        let dir = tempfile::tempdir().unwrap();
        let shard_path = dir.path().join("fineweb_val_000000.bin");
        write_shard(&shard_path, &[1, 9, 9, 1, 9]).unwrap();
        let side = sidecar_path(&shard_path).unwrap();
        write_sidecar(&side, &[0, 65_535, 2, 0, 7]).unwrap();
        // Byte for byte what a token shard of the same numbers is.
        let as_shard = dir.path().join("as_shard.bin");
        write_shard(&as_shard, &[0, 65_535, 2, 0, 7]).unwrap();
        assert_eq!(
            std::fs::read(&side).unwrap(),
            std::fs::read(&as_shard).unwrap()
        );
        assert_eq!(
            read_val_sidecars(std::slice::from_ref(&shard_path), 1).unwrap(),
            Some(vec![0, 65_535, 2, 0, 7])
        );
        let err = format!("{:#}", write_sidecar(&side, &[0, 65_536]).unwrap_err());
        assert!(err.contains("token 1 stands for 65536 bytes"), "{err}");
        std::fs::remove_file(&side).unwrap();
        assert_eq!(read_val_sidecars(&[shard_path], 1).unwrap(), None);
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
        assert!(
            err.contains("5 payload bytes for the header's 2 counts"),
            "{err}"
        );

        std::fs::write(&side, b"not a sidecar").unwrap();
        let err = format!("{:#}", read_sidecar(&side, &shard, 1).unwrap_err());
        assert!(
            err.contains("fineweb_val_bytes_000000.bin: not a byte sidecar"),
            "{err}"
        );
    }
}
