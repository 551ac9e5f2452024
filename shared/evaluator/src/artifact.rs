//! The artifact file (docs/ARTIFACT.md): a fixed 56-byte frame, then the compressed body.
//!
//! ```text
//! 0   4  magic "PGQA"
//! 4   1  frame version: 2 (written), 1 (still read)
//! 5   1  compressor: 0 none, 1 zstd, 2 brotli, 3 zlib, 4 lzma (.xz)
//! 6   1  byte-shuffle stride (1 = none)
//! 7   1  reserved, 0
//! 8   8  body length, u64 LE (uncompressed, unshuffled)
//! 16  8  stream length, u64 LE (the bytes after the frame)
//! 24 32  BLAKE3 of the body
//! 56  …  version 2: chunk table and chunks (crate::codec); version 1: one compressed stream
//! ```
//!
//! Reading checks each field, so a truncated, padded or corrupted file is refused with the reason.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::Path;

use crate::codec::{decompress, decompress_chunked, Codec};
use crate::container::{decode_body, StoredTensor};
use crate::dtype::DType;

pub const MAGIC: &[u8; 4] = b"PGQA";
/// The version written. Version 1 (one stream, no chunk table) is still read, so artifacts made
/// before chunking stay usable.
pub const FRAME_VERSION: u8 = 2;
pub const FRAME_BYTES: usize = 56;
/// Refuse to inflate a body beyond this (a corrupted length field must not exhaust memory).
const MAX_BODY: u64 = 4 << 30;

/// A decoded artifact: the model config and the stored tensors.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub config: Value,
    pub tensors: Vec<StoredTensor>,
    pub codec: Codec,
    pub shuffle: u8,
    /// The frame version it was read from (1: one stream; 2: chunks).
    pub frame_version: u8,
    /// Length of the file it was read from (or encoded to).
    pub file_bytes: u64,
}

/// A tensor as the model gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// The model's dtype; `data` holds values exactly representable in it.
    pub dtype: DType,
    pub data: Vec<f32>,
}

impl Artifact {
    /// Reads and fully checks an artifact file; errors name the file.
    pub fn read(path: &Path) -> Result<Artifact> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Artifact::from_bytes(&bytes).with_context(|| format!("{}", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact> {
        if bytes.len() < FRAME_BYTES {
            bail!(
                "truncated: {} bytes, shorter than the {FRAME_BYTES}-byte frame",
                bytes.len()
            );
        }
        if &bytes[..4] != MAGIC {
            bail!(
                "not a pgolf artifact (magic {:?}, expected \"PGQA\")",
                String::from_utf8_lossy(&bytes[..4])
            );
        }
        let frame_version = bytes[4];
        if !(1..=FRAME_VERSION).contains(&frame_version) {
            bail!("frame version {frame_version} is not supported (this reader knows 1 to {FRAME_VERSION})");
        }
        let codec = Codec::from_id(bytes[5])?;
        let shuffle = bytes[6];
        if shuffle == 0 || bytes[7] != 0 {
            bail!(
                "corrupted frame (shuffle stride {shuffle}, reserved byte {})",
                bytes[7]
            );
        }
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let (body_len, stream_len) = (u64_at(8), u64_at(16));
        let have = (bytes.len() - FRAME_BYTES) as u64;
        if stream_len > have {
            bail!("truncated: the frame announces {stream_len} compressed bytes, the file holds {have}");
        }
        if stream_len < have {
            bail!(
                "corrupted: {} bytes follow the {stream_len}-byte compressed stream",
                have - stream_len
            );
        }
        if body_len > MAX_BODY {
            bail!("corrupted frame: body length {body_len}");
        }
        let stream = &bytes[FRAME_BYTES..];
        let body = match frame_version {
            1 => decompress(codec, shuffle, stream, body_len as usize)?,
            _ => decompress_chunked(codec, shuffle, stream, body_len as usize)?,
        };
        if blake3::hash(&body).as_bytes() != &bytes[24..56] {
            bail!("corrupted: the body's BLAKE3 hash does not match the frame");
        }
        let (config, tensors) = decode_body(&body)?;
        Ok(Artifact {
            config,
            tensors,
            codec,
            shuffle,
            frame_version,
            file_bytes: bytes.len() as u64,
        })
    }

    /// The model config, as JSON text.
    pub fn config_json(&self) -> String {
        self.config.to_string()
    }

    /// Every tensor, dequantized, in the artifact's order.
    pub fn decode_all(&self) -> Result<Vec<DecodedTensor>> {
        self.tensors.iter().map(decode_tensor).collect()
    }

    /// One tensor by name, dequantized.
    pub fn decode(&self, name: &str) -> Result<DecodedTensor> {
        let t = self
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow!("artifact has no tensor {name}"))?;
        decode_tensor(t)
    }
}

fn decode_tensor(t: &StoredTensor) -> Result<DecodedTensor> {
    Ok(DecodedTensor {
        name: t.name.clone(),
        shape: t.shape.clone(),
        dtype: t.dtype,
        data: t.dequantize()?,
    })
}
