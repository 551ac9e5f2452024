//! The few fields of a SentencePiece `.model` protobuf that byte accounting needs (REFERENCE.md
//! §1.3): `ModelProto.pieces` (field 1), each `SentencePiece { piece = 1, score = 2, type = 3 }`.
//! Declared by hand with `prost` derives so no `protoc` or build script is needed; every other
//! field of the model (trainer and normalizer specs) is skipped by the decoder.

use anyhow::{Context, Result};
use std::path::Path;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    #[prost(enumeration = "PieceType", optional, tag = "3")]
    pub r#type: Option<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl SentencePiece {
    /// The piece type; proto2 default NORMAL when absent.
    pub fn piece_type(&self) -> Result<PieceType> {
        let raw = self.r#type.unwrap_or(PieceType::Normal as i32);
        PieceType::try_from(raw).map_err(|_| anyhow::anyhow!("unknown piece type {raw}"))
    }

    pub fn text(&self) -> &str {
        self.piece.as_deref().unwrap_or("")
    }
}

impl ModelProto {
    pub fn read(path: &Path) -> Result<ModelProto> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read tokenizer model", path.display()))?;
        ModelProto::decode_bytes(&bytes).with_context(|| format!("{}", path.display()))
    }

    pub fn decode_bytes(bytes: &[u8]) -> Result<ModelProto> {
        let model = <ModelProto as prost::Message>::decode(bytes)
            .context("not a SentencePiece model (protobuf decode failed)")?;
        if model.pieces.is_empty() {
            anyhow::bail!("not a SentencePiece model (no pieces)");
        }
        Ok(model)
    }
}
