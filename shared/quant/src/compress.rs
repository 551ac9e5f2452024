//! The artifact's compressors (REFERENCE.md §5.8): zstd (level 22 in the records) and byte shuffle
//! then brotli (quality 11). The byte shuffle writes all bytes at offset ≡ 0 (mod stride), then the
//! ones ≡ 1, …, so the high and low bytes of fp16 values form separate, more compressible runs.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    None,
    Zstd,
    Brotli,
}

impl Codec {
    pub fn id(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
            Codec::Brotli => 2,
        }
    }

    pub fn from_id(id: u8) -> Result<Codec> {
        Ok(match id {
            0 => Codec::None,
            1 => Codec::Zstd,
            2 => Codec::Brotli,
            other => bail!("unknown compressor id {other}"),
        })
    }
}

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
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            codec: Codec::Zstd,
            level: None,
            shuffle: None,
            brotli_lgwin: 22,
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
        Ok(())
    }

    /// Shuffles (if asked) then compresses.
    pub fn compress(&self, data: &[u8]) -> Result<Vec<u8>> {
        self.validate()?;
        let shuffled = byte_shuffle(data, self.stride());
        match self.codec {
            Codec::None => Ok(shuffled),
            Codec::Zstd => {
                zstd::bulk::compress(&shuffled, self.level()).context("zstd compression")
            }
            Codec::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(
                        &mut out,
                        1 << 16,
                        self.level() as u32,
                        self.brotli_lgwin,
                    );
                    w.write_all(&shuffled).context("brotli compression")?;
                }
                Ok(out)
            }
        }
    }
}

/// Decompresses `stream` (expected to give exactly `len` bytes) and undoes the shuffle.
pub fn decompress(codec: Codec, stride: u8, stream: &[u8], len: usize) -> Result<Vec<u8>> {
    let raw = match codec {
        Codec::None => stream.to_vec(),
        Codec::Zstd => zstd::bulk::decompress(stream, len)
            .map_err(|e| anyhow!("zstd stream is corrupt or truncated: {e}"))?,
        Codec::Brotli => {
            let mut out = Vec::with_capacity(len);
            // One byte more than expected is enough to notice a stream that is too long.
            brotli::Decompressor::new(stream, 1 << 16)
                .take(len as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| anyhow!("brotli stream is corrupt or truncated: {e}"))?;
            out
        }
    };
    if raw.len() != len {
        bail!("decompressed to {} bytes, the header says {len}", raw.len());
    }
    Ok(byte_unshuffle(&raw, stride))
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

/// The inverse of [`byte_shuffle`]: lane i holds `n/k + (i < n%k)` bytes.
pub fn byte_unshuffle(data: &[u8], stride: u8) -> Vec<u8> {
    let k = stride as usize;
    let n = data.len();
    if k <= 1 {
        return data.to_vec();
    }
    let mut out = vec![0u8; n];
    let mut src = 0;
    for lane in 0..k {
        let len = n / k + usize::from(lane < n % k);
        for (i, b) in data[src..src + len].iter().enumerate() {
            out[lane + i * k] = *b;
        }
        src += len;
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
        }
    }
}
