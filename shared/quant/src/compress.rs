//! The artifact's compressors (REFERENCE.md §5.8): zstd (level 22 in the records) and byte shuffle
//! then brotli (quality 11). The byte shuffle writes all bytes at offset ≡ 0 (mod stride), then the
//! ones ≡ 1, …, so the high and low bytes of fp16 values form separate, more compressible runs.
//! Each call here makes or reads one standard stream; [`crate::chunks`] cuts an artifact body into
//! several of them so all cores compress. Reading is pgolf-evaluator's (re-exported here).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;

use crate::chunks::{DEFAULT_CHUNKS, MAX_CHUNKS};
/// The reading side (compressor ids, decompression, unshuffle) is the evaluator's.
pub use pgolf_evaluator::codec::{byte_unshuffle, decompress, decompress_stream, Codec};

/// How the artifact body is compressed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    pub codec: Codec,
    /// zstd level (1..=22) or brotli quality (0..=11); `None` = 22 for zstd, 11 for brotli.
    pub level: Option<i32>,
    /// Byte-shuffle stride applied before compressing; 1 = none. `None` = 2 for brotli (as R0405),
    /// 1 for zstd (as R0322).
    pub shuffle: Option<u8>,
    /// brotli window bits (Python's `brotli.compress` default is 22).
    pub brotli_lgwin: u32,
    /// Independently compressed chunks of an artifact body (frame version 2). A fixed number, not
    /// the machine's thread count, so the file's bytes do not depend on the machine.
    pub chunks: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            codec: Codec::Zstd,
            level: None,
            shuffle: None,
            brotli_lgwin: 22,
            chunks: DEFAULT_CHUNKS,
        }
    }
}

impl Compression {
    pub fn brotli() -> Compression {
        Compression {
            codec: Codec::Brotli,
            ..Compression::default()
        }
    }

    pub fn level(&self) -> i32 {
        self.level.unwrap_or(match self.codec {
            Codec::Zstd => 22,
            Codec::Brotli => 11,
            Codec::None => 0,
        })
    }

    pub fn stride(&self) -> u8 {
        self.shuffle
            .unwrap_or(if self.codec == Codec::Brotli { 2 } else { 1 })
    }

    pub fn validate(&self) -> Result<()> {
        let level = self.level();
        match self.codec {
            Codec::Zstd if !(1..=22).contains(&level) => bail!("zstd level {level} outside 1..=22"),
            Codec::Brotli if !(0..=11).contains(&level) => {
                bail!("brotli quality {level} outside 0..=11")
            }
            Codec::Brotli if !(10..=24).contains(&self.brotli_lgwin) => {
                bail!("brotli_lgwin {} outside 10..=24", self.brotli_lgwin)
            }
            _ => {}
        }
        if self.stride() == 0 {
            bail!("shuffle stride must be at least 1");
        }
        if !(1..=MAX_CHUNKS).contains(&self.chunks) {
            bail!("chunks {} outside 1..={MAX_CHUNKS}", self.chunks);
        }
        Ok(())
    }

    /// Shuffles (if asked) then compresses into one stream.
    pub fn compress(&self, data: &[u8]) -> Result<Vec<u8>> {
        self.validate()?;
        self.compress_stream(&byte_shuffle(data, self.stride()))
    }

    /// Compresses `data` as it is into one standard stream (a zstd frame or a brotli stream).
    pub(crate) fn compress_stream(&self, data: &[u8]) -> Result<Vec<u8>> {
        match self.codec {
            Codec::None => Ok(data.to_vec()),
            Codec::Zstd => zstd::bulk::compress(data, self.level()).context("zstd compression"),
            Codec::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(
                        &mut out,
                        1 << 16,
                        self.level() as u32,
                        self.brotli_lgwin,
                    );
                    w.write_all(data).context("brotli compression")?;
                }
                Ok(out)
            }
        }
    }
}

/// `D[0::k] ‖ D[1::k] ‖ … ‖ D[k−1::k]`.
pub fn byte_shuffle(data: &[u8], stride: u8) -> Vec<u8> {
    let k = stride as usize;
    if k <= 1 {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    for lane in 0..k {
        out.extend(data.iter().skip(lane).step_by(k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_groups_lanes_and_inverts() {
        assert_eq!(byte_shuffle(&[1, 2, 3, 4, 5], 2), vec![1, 3, 5, 2, 4]);
        assert_eq!(
            byte_shuffle(&[1, 2, 3, 4, 5, 6, 7], 3),
            vec![1, 4, 7, 2, 5, 3, 6]
        );
        for n in 0..20 {
            let d: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
            for k in 1..5 {
                assert_eq!(byte_unshuffle(&byte_shuffle(&d, k), k), d, "n={n} k={k}");
            }
        }
    }

    fn sample() -> Vec<u8> {
        // fp16-like data: slowly varying high bytes, noisy low bytes.
        (0..50_000u32)
            .flat_map(|i| {
                [
                    (i.wrapping_mul(2654435761) >> 24) as u8,
                    0x3c + (i % 3) as u8,
                ]
            })
            .collect()
    }

    #[test]
    fn shuffle_brotli_round_trips_and_helps() {
        let data = sample();
        let c = Compression::brotli();
        let packed = c.compress(&data).unwrap();
        assert_eq!(
            decompress(Codec::Brotli, 2, &packed, data.len()).unwrap(),
            data
        );
        let plain = Compression {
            shuffle: Some(1),
            ..c
        }
        .compress(&data)
        .unwrap();
        assert!(
            packed.len() < plain.len(),
            "shuffled {} vs plain {}",
            packed.len(),
            plain.len()
        );
    }

    #[test]
    fn zstd_round_trips() {
        let data = sample();
        let c = Compression {
            level: Some(3),
            ..Compression::default()
        };
        let packed = c.compress(&data).unwrap();
        assert_eq!(
            decompress(Codec::Zstd, 1, &packed, data.len()).unwrap(),
            data
        );
    }

    #[test]
    fn truncated_or_damaged_streams_are_errors() {
        let data = sample();
        for c in [
            Compression::brotli(),
            Compression {
                level: Some(3),
                ..Compression::default()
            },
        ] {
            let packed = c.compress(&data).unwrap();
            let cut = &packed[..packed.len() / 2];
            assert!(decompress(c.codec, c.stride(), cut, data.len()).is_err());
            assert!(decompress(c.codec, c.stride(), &packed, data.len() + 1).is_err());
            assert!(decompress(c.codec, c.stride(), &packed, data.len() - 1).is_err());
        }
    }

    #[test]
    fn bytes_after_the_end_of_a_stream_are_errors() {
        let data = sample();
        for c in [
            Compression::brotli(),
            Compression {
                level: Some(3),
                ..Compression::default()
            },
        ] {
            let mut packed = c.compress(&data).unwrap();
            packed.extend_from_slice(&[0, 1, 2]);
            let e = decompress(c.codec, c.stride(), &packed, data.len()).unwrap_err();
            assert!(e.to_string().contains("corrupt"), "{:?}: {e}", c.codec);
        }
    }
}
