//! The artifact's compressors (REFERENCE.md §4, §5.8): zstd (level 22 in the records), byte shuffle
//! then brotli (quality 11), zlib (level 9: the baseline's `zlib.compress(…, 9)`) and LZMA (preset 6:
//! R0323's `lzma.compress(…, preset=6)`, an .xz stream with a CRC64 check). The byte shuffle writes all bytes at offset ≡ 0 (mod stride), then the
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
    /// zstd level (1..=22), brotli quality (0..=11), zlib level (0..=9) or xz preset (0..=9);
    /// `None` = 22, 11, 9 and 6.
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
            Codec::Zlib => 9,
            Codec::Lzma => 6,
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
            Codec::Zlib if !(0..=9).contains(&level) => bail!("zlib level {level} outside 0..=9"),
            Codec::Lzma if !(0..=9).contains(&level) => bail!("lzma preset {level} outside 0..=9"),
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

    /// Compresses `data` as it is into one standard stream (a zstd frame, a brotli, zlib or .xz
    /// stream).
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
            Codec::Zlib => {
                // flate2's C backend (the evaluator's Cargo.toml pins it, with zlib built in), with
                // Python's defaults: window 15, memLevel 8, the default strategy.
                let level = flate2::Compression::new(self.level() as u32);
                let mut w = flate2::write::ZlibEncoder::new(Vec::new(), level);
                w.write_all(data).context("zlib compression")?;
                w.finish().context("zlib compression")
            }
            Codec::Lzma => {
                use liblzma::stream::{Check, Stream};
                // Python's `lzma.compress(data, preset=p)`: the easy encoder, CRC64 check.
                let xz = Stream::new_easy_encoder(self.level() as u32, Check::Crc64)
                    .context("xz encoder")?;
                let mut w = liblzma::write::XzEncoder::new_stream(Vec::new(), xz);
                w.write_all(data).context("xz compression")?;
                w.finish().context("xz compression")
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

    /// One of each compressor: zstd at a fast level, the others at their defaults (brotli 11,
    /// zlib 9, xz preset 6), and `none`.
    fn every_codec() -> Vec<Compression> {
        let c = |codec| Compression {
            codec,
            ..Compression::default()
        };
        vec![
            Compression {
                level: Some(3),
                ..c(Codec::Zstd)
            },
            c(Codec::Brotli),
            c(Codec::Zlib),
            c(Codec::Lzma),
            c(Codec::None),
        ]
    }

    #[test]
    fn every_compressor_round_trips_bytes_exactly() {
        let data = sample();
        for c in every_codec() {
            for d in [&data[..], &data[..1], &[][..]] {
                let packed = c.compress(d).unwrap();
                let back = decompress(c.codec, c.stride(), &packed, d.len()).unwrap();
                assert!(back == d, "{:?}: {} bytes", c.codec, d.len());
            }
            // The frame's id names the codec, and the id reads back as it.
            assert_eq!(Codec::from_id(c.codec.id()).unwrap(), c.codec);
        }
        let small = Compression {
            level: Some(1),
            ..Compression::default()
        };
        for (codec, level) in [(Codec::Zlib, 0), (Codec::Zlib, 1), (Codec::Lzma, 0)] {
            let c = Compression {
                codec,
                level: Some(level),
                ..small
            };
            let packed = c.compress(&data).unwrap();
            assert_eq!(decompress(codec, 1, &packed, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn zlib_and_xz_write_the_standard_formats_at_the_records_settings() {
        let data = sample();
        let zlib = Compression {
            codec: Codec::Zlib,
            ..Compression::default()
        };
        assert_eq!((zlib.level(), zlib.stride()), (9, 1));
        let z = zlib.compress(&data).unwrap();
        // RFC 1950 header: deflate, 32 KiB window (0x78); FLEVEL 3 = "maximum" for level 9 (0xDA).
        assert_eq!(&z[..2], &[0x78, 0xda]);
        let xz = Compression {
            codec: Codec::Lzma,
            ..Compression::default()
        };
        assert_eq!((xz.level(), xz.stride()), (6, 1));
        let x = xz.compress(&data).unwrap();
        // .xz stream header: magic, then stream flags 0x00 0x04 (check = CRC64); footer magic "YZ".
        assert_eq!(&x[..8], &[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4]);
        assert_eq!(&x[x.len() - 2..], b"YZ");
        for (codec, level, what) in [
            (Codec::Zlib, 10, "zlib level 10 outside 0..=9"),
            (Codec::Lzma, 10, "lzma preset 10 outside 0..=9"),
        ] {
            let c = Compression {
                codec,
                level: Some(level),
                ..Compression::default()
            };
            assert_eq!(c.validate().unwrap_err().to_string(), what);
        }
    }

    /// The bytes Python writes: `zlib.compress(d, 9)` and `lzma.compress(d, preset=6)` of the
    /// evaluator's fixture input (shared/evaluator/tests/codec.rs says how they were made), with
    /// zlib 1.2.13 and xz 5.4.1 there and the bundled zlib and xz 5.8 here. Same format and
    /// settings; if a library update changes its output this fails, and the older files still read.
    #[test]
    fn zlib_9_and_xz_6_write_the_bytes_python_writes() {
        let mut d: Vec<u8> = (0..60)
            .flat_map(|i| format!("pgolf {} ", i * i % 97).into_bytes())
            .collect();
        d.extend(0..=255u8);
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../evaluator/tests/fixtures");
        for (codec, file) in [
            (Codec::Zlib, "python_zlib9.bin"),
            (Codec::Lzma, "python_xz6.bin"),
        ] {
            let c = Compression {
                codec,
                ..Compression::default()
            };
            let python = std::fs::read(dir.join(file)).unwrap();
            assert!(c.compress(&d).unwrap() == python, "{codec:?}");
        }
    }

    #[test]
    fn truncated_or_damaged_streams_are_errors() {
        let data = sample();
        for c in every_codec().into_iter().filter(|c| c.codec != Codec::None) {
            let packed = c.compress(&data).unwrap();
            let cut = &packed[..packed.len() / 2];
            assert!(decompress(c.codec, c.stride(), cut, data.len()).is_err());
            assert!(decompress(c.codec, c.stride(), &packed, data.len() + 1).is_err());
            assert!(decompress(c.codec, c.stride(), &packed, data.len() - 1).is_err());
            // The last bytes are the zlib stream's Adler-32 or the .xz footer: a flipped bit there
            // is refused (zstd and brotli frames as written here carry no checksum to test).
            if matches!(c.codec, Codec::Zlib | Codec::Lzma) {
                let mut flipped = packed.clone();
                *flipped.last_mut().unwrap() ^= 0x10;
                let e = decompress(c.codec, c.stride(), &flipped, data.len());
                assert!(e.is_err(), "{:?}", c.codec);
            }
        }
    }

    #[test]
    fn bytes_after_the_end_of_a_stream_are_errors() {
        let data = sample();
        for c in every_codec().into_iter().filter(|c| c.codec != Codec::None) {
            let mut packed = c.compress(&data).unwrap();
            packed.extend_from_slice(&[0, 1, 2]);
            let e = decompress(c.codec, c.stride(), &packed, data.len()).unwrap_err();
            assert!(e.to_string().contains("corrupt"), "{:?}: {e}", c.codec);
        }
    }
}
